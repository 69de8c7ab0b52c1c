"""Attack x isolation mode -> outcome, on this machine; prints a Markdown table and writes JSON.

Every escape attempt of tests/hostile_modes.py (driver environment, ~/.ssh, world-readable
files, the run's SQLite store, /tmp, a TCP flood to a loopback service, a UNIX-socket daemon,
host process command lines, signals, ptrace, new namespaces) runs as a bin packing candidate
in every isolation mode this machine can give, plus the unconfined baseline (what
``--unsafe-no-sandbox`` allows where nothing else is available). An outcome is "blocked"
when the candidate scored honestly with nothing reached (files byte-identical, no
connection, no file in /tmp, the driver alive), else "ESCAPED" with what got through.
Also the cost of the kernel layers: evaluations/s of Best-Fit with and without them,
measured in the same run.

    PYTHONPATH=$PWD python benchmarks/isolation_matrix.py [--out benchmarks/isolation_matrix.json]

Modes with the workers as ``nobody`` need a Python installation that user can read (where it
lies under /root, run this in a private mount namespace that shows /root's Python to others).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hostile_modes import (BASELINES, BEST_FIT, CANARY, MODES, Secrets, attacks, pool_options,  # noqa: E402
                           token_files, unavailable)
from evaluators.confine import KernelLayers  # noqa: E402
from evaluators.pool import WorkerPool  # noqa: E402
from evaluators.sandbox import describe_layers  # noqa: E402

OPTIONS = {"train_instances": 1, "train_items": 200}


def judge(reply: dict, secrets: Secrets, before: dict, token: str, honest: float) -> str:
    found = []
    if "ESCAPED" in (reply.get("reason") or ""):
        found.append(reply["reason"].split("ESCAPED", 1)[1].strip()[:60])
    if secrets.snapshot() != before:
        found.append("files changed")
    if secrets.connections():
        found.append("connections")
    if token_files(token):
        found.append("/tmp files")
    if secrets.driver.poll() is not None:
        found.append("driver killed")
    if CANARY in (reply.get("reason") or "") + (reply.get("output") or ""):
        found.append("secret in the record")
    if found:
        return "ESCAPED: " + "; ".join(found)
    if reply["status"] == "ok" and reply["score"] == honest:
        return "blocked"
    return f"blocked ({reply['status']}: {(reply.get('reason') or '')[:50]})"


async def run_mode(mode: str, rate_jobs: int) -> dict:
    options = pool_options(mode)
    secrets = Secrets(pool_options(mode).get("user"))
    pool = WorkerPool("bin_packing", options=OPTIONS, workers=1, **options)
    try:
        await pool.start()
        honest = (await pool.run(BEST_FIT, "train"))["score"]
        outcomes = {}
        for name in attacks(secrets, "t"):
            token = uuid.uuid4().hex
            before = secrets.snapshot()
            reply = await pool.run(attacks(secrets, token)[name], "train", timeout_s=20)
            outcomes[name] = judge(reply, secrets, before, token, honest)
        start = time.perf_counter()
        for _ in range(rate_jobs):
            await pool.run(BEST_FIT, "probe")
        rate = rate_jobs / (time.perf_counter() - start)
        return {"layers": describe_layers(pool.info["isolation"]), "outcomes": outcomes, "probe_evals_per_s": rate}
    finally:
        await pool.close()
        secrets.close()


def layer_cost_ms(rounds: int = 200) -> dict:
    """What the kernel layers add to each candidate: the time ``apply`` takes inside a forked
    child (timed there, so fork and exit under the machine's load do not blur it), median of
    ``rounds``; and the one-off preparation per worker."""
    import ctypes
    import statistics
    import tempfile

    start = time.perf_counter()
    layers = KernelLayers(["/usr", "/lib", "/lib64", sys.base_prefix], [tempfile.gettempdir()], require=True)
    prepare = (time.perf_counter() - start) * 1e3
    libc = ctypes.CDLL(None)
    libc.prctl(38, 1, 0, 0, 0)  # no_new_privs in this process already, as the sandbox child sets it earlier
    times = []
    for _ in range(rounds):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            start = time.perf_counter()
            layers.apply()
            os.write(w, repr(time.perf_counter() - start).encode())
            os._exit(0)
        os.close(w)
        times.append(float(os.read(r, 100)) * 1e3)
        os.close(r)
        os.waitpid(pid, 0)
    return {"rounds": rounds, "prepare_ms": prepare, "apply_ms": statistics.median(times)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("isolation_matrix.json")))
    parser.add_argument("--rate-jobs", type=int, default=40, help="probe evaluations timed per mode")
    args = parser.parse_args()
    results = {}
    for mode in [*MODES, *BASELINES]:
        why = unavailable(mode)
        if why:
            results[mode] = {"unavailable": why}
            print(f"{mode}: unavailable here: {why}", file=sys.stderr)
            continue
        results[mode] = await run_mode(mode, args.rate_jobs)
        print(f"{mode}: {results[mode]['layers']}", file=sys.stderr)
    ran = [m for m in results if "outcomes" in results[m]]
    names = list(results[ran[0]]["outcomes"]) if ran else []
    print("| attack | " + " | ".join(ran) + " |")
    print("|---|" + "---|" * len(ran))
    for name in names:
        print(f"| {name} | " + " | ".join(results[m]["outcomes"][name] for m in ran) + " |")
    print("| probe evaluations/s | " + " | ".join(f"{results[m]['probe_evals_per_s']:.1f}" for m in ran) + " |")
    for mode in results:
        if "unavailable" in results[mode]:
            print(f"\n{mode}: not run here ({results[mode]['unavailable']})")
    cost = layer_cost_ms()
    print(f"\nkernel layers: {cost['apply_ms']:.3f} ms per candidate to apply in its forked child (median of "
          f"{cost['rounds']}), {cost['prepare_ms']:.3f} ms to prepare once per worker")
    meta = {"machine": platform.platform(), "euid": os.geteuid(), "command": " ".join(sys.argv),
            "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    Path(args.out).write_text(json.dumps({"meta": meta, "modes": results, "kernel_layer_cost": cost}, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())

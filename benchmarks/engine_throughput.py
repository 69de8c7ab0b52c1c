"""Engine throughput: what the loop itself costs, and how busy it keeps its slots under real latency.

1. instant: an in-process sampler answering at once (one of 16 programs, so after the first
   few every evaluation is a syntactic cache hit of the real Evaluator): candidates/s and the
   driver's CPU per candidate at each size, store bytes per program. Target: >= 2,000
   candidates/s, i.e. <= 0.5 ms of driver CPU per candidate.
2. store: a store of N committed programs (written directly, as a run of N would leave it;
   each row a ~400-byte program): the time ``--resume`` takes to rebuild the islands from it
   (the engine's replay) and the peak RSS of the process doing it, in a fresh process.
   Target at 10^6: resume < 60 s, RSS < 2 GB.
3. latency: a sampler answering after lognormal delays (sigma 1, mean ``--latency-s``) and
   evaluations of lognormal durations (sigma 0.5, mean ``--eval-s``; the Ray evaluator actors
   sleep a fixed mean, their sleep mode has no spread) on more slots than samples in flight,
   at C = 4, 32, 128 samples in flight, each commit mode, local and on a loopback Ray cluster
   (islands and evaluators in actors; the sampler in the driver). Ideal = C / (E[sample] +
   E[eval]) candidates/s; efficiency = measured / ideal, from the 10th percentile commit to the
   last (start-up excluded). Target: async >= 0.9 at C = 32 and 128.

The script also runs on older checkouts of the engine (only ordered commits there): copy it
into that checkout's benchmarks/ and run it from its root.

Run: RAY_AUTH_MODE=disabled python benchmarks/engine_throughput.py [--sizes 1000 10000 100000]
     [--store-size 1000000] [--json benchmarks/engine_throughput.json]
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluators.evaluator import Evaluator  # noqa: E402
from evosearch.config import RunConfig, make_config  # noqa: E402
from evosearch.engine import Engine  # noqa: E402
from evosearch.problem import load_problem  # noqa: E402
from evosearch.samplers.base import Sample, Sampler  # noqa: E402
from evosearch.store import Store  # noqa: E402

HAS_MODES = "commit_mode" in {f.name for f in dataclasses.fields(RunConfig)}
OPTIONS = {"train_items": 200, "test_items": 300}
CODE = "def priority(item, bins):\n    return -(bins - item) * {k}\n"


def config(**knobs) -> RunConfig:
    mode = knobs.pop("commit_mode", None)
    if HAS_MODES and mode:
        knobs["commit_mode"] = mode
    return make_config({"problem": "bin_packing", "problem_options": OPTIONS, "islands": 4, "seed": 0,
                        "quiet": True, "probe": False, "migration_interval": 50, **knobs})


class Instant(Sampler):
    name = "instant"
    llm = False
    edit_formats = ("full",)

    async def sample(self, prompt):
        return Sample(text=CODE.format(k=1 + prompt.seed % 16), model="instant")


class Lognormal(Sampler):
    """Answers after a lognormal delay (sigma 1, mean ``mean_s``), drawn from the sample's seed; every
    answer is a new program (no cache hits)."""
    name = "lognormal"
    edit_formats = ("full",)

    def __init__(self, mean_s: float, sigma: float = 1.0):
        self.mu, self.sigma = math.log(mean_s) - sigma ** 2 / 2, sigma

    async def sample(self, prompt):
        await asyncio.sleep(random.Random(prompt.seed).lognormvariate(self.mu, self.sigma))
        return Sample(text=CODE.format(k=prompt.seed), model="lognormal")


class SleepPool:
    """WorkerPool's interface, answering every job after a lognormal sleep (mean ``mean_s``, sigma
    ``sigma``; 0: instantly) on ``workers`` slots."""

    def __init__(self, workers: int, mean_s: float = 0.0, sigma: float = 0.5):
        self.info: dict = {}
        self.mean_s, self.sigma = mean_s, sigma
        self._slots = asyncio.Semaphore(workers)
        self._rng = random.Random(1)

    async def start(self):
        return self

    async def close(self):
        pass

    async def run(self, code, split, timeout_s=None, memory_mb=None) -> dict:
        if self.mean_s:
            async with self._slots:
                await asyncio.sleep(self._rng.lognormvariate(math.log(self.mean_s) - self.sigma ** 2 / 2, self.sigma))
        found = re.search(r"\* (\d+)", code)
        k = float(found.group(1)) if found else 1.0
        return {"status": "ok", "score": -(k % 97), "descriptors": {"full_bins": (k % 10) / 10}, "metrics": {},
                "eval_s": self.mean_s}


class Clock:
    """Stands in for the progress line: the time of every commit."""

    def __init__(self):
        self.times: list[float] = []

    def update(self, row, best, archipelago) -> None:
        self.times.append(time.perf_counter())


# --- 1. the instant sampler -------------------------------------------------------------------
async def instant(n: int, mode: str | None) -> dict:
    cfg = config(samples=n, concurrency=4, workers=4, commit_mode=mode)
    problem = load_problem("bin_packing", None, 0, OPTIONS)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "evosearch.db")
        engine = Engine(cfg, problem, store, Instant(), Evaluator(SleepPool(4), use_probe=False))
        cpu, wall = time.process_time(), time.perf_counter()
        await engine.run()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        store.close()
    return {"candidates": n, "mode": mode or "ordered", "wall_s": wall, "candidates_per_s": n / wall,
            "driver_cpu_ms_per_candidate": 1000 * cpu / n, "store_bytes_per_program": size / (n + 1),
            "ideal_per_s": 2000.0}


# --- 2. a large store: resume time and RSS ----------------------------------------------------
def write_store(path: Path, n: int) -> None:
    """n committed programs as a run leaves them (ok, on 4 islands, parents, descriptors, code)."""
    store = Store(path)
    columns = {r[1] for r in store.db.execute("PRAGMA table_info(programs)")}
    rng = random.Random(0)
    base = load_problem("bin_packing", None, 0, OPTIONS).skeleton
    code = base[:300] + "\n# {k}\n"
    has_seq = "commit_seq" in columns
    cols = "id, island, parents, sampler, status, score, descriptors, code, edit_format, epoch, created, finished" + (
        ", commit_seq, seen, staleness" if has_seq else "")
    marks = ", ".join("?" * len(cols.split(", ")))
    store.db.execute("BEGIN")
    batch = []
    for i in range(n + 1):
        score = -400 + rng.random() * 20
        desc = json.dumps({"full_bins": rng.random(), "size": rng.uniform(20, 200)})
        parents = json.dumps(sorted(rng.sample(range(i), min(i, 2)))) if i else "[]"
        row = (i, None if i == 0 else (i - 1) % 4, parents, "seed" if i == 0 else "mutate", "ok", score, desc,
               code.format(k=i), "full", 0, 0.0, 0.0) + ((i, max(0, i - 3), 3) if has_seq else ())
        batch.append(row)
        if len(batch) == 50_000:
            store.db.executemany(f"INSERT INTO programs ({cols}) VALUES ({marks})", batch)
            batch = []
    store.db.executemany(f"INSERT INTO programs ({cols}) VALUES ({marks})", batch)
    store.db.execute("COMMIT")
    store.set_meta("committed", n + 1)
    store.close()


def resume_here(path: str, n: int) -> dict:
    """In a fresh process: open the store and rebuild the islands as --resume does."""
    cfg = config(samples=n, concurrency=4)
    problem = load_problem("bin_packing", None, 0, OPTIONS)
    t, cpu = time.perf_counter(), time.process_time()
    store = Store(path)
    engine = Engine(cfg, problem, store, Instant(), None)
    (engine.replay if hasattr(engine, "replay") else engine._replay)()
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    return {"programs": n, "resume_s": wall, "resume_cpu_s": cpu, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "elites": sum(s["elites"] for s in engine.archipelago.stats())}


def big_store(n: int) -> dict:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        path = Path(tmp) / "evosearch.db"
        t = time.perf_counter()
        write_store(path, n)
        written = time.perf_counter() - t
        out = subprocess.run([sys.executable, __file__, "--resume-here", str(path), str(n)], capture_output=True,
                             text=True, timeout=3600, cwd=ROOT)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result.update(write_s=written, store_bytes_per_program=path.stat().st_size / (n + 1))
    return result


# --- 3. lognormal latency -----------------------------------------------------------------------
async def latency(c: int, mode: str | None, backend: str, latency_s: float, eval_s: float, samples: int,
                  address: str | None = None) -> dict:
    cfg = config(samples=samples, concurrency=c, workers=max(8, c), commit_mode=mode,
                 **({"backend": "ray", "address": address, "evaluator_actors": 4, "workers": max(2, c // 4 + 1),
                     "sandbox_resource": ""} if backend == "ray" else {}))
    problem = load_problem("bin_packing", None, 0, OPTIONS)
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "evosearch.db")
        if backend == "ray":
            from evosearch.ray_backend import RayBackend

            async with RayBackend(cfg, problem, Path(tmp), sleep_s=eval_s) as rb:
                engine = Engine(cfg, problem, store, Lognormal(latency_s), Evaluator(rb.pool, use_probe=False),
                                clock, make_archipelago=rb.make_archipelago)
                cpu = time.process_time()
                await engine.run()
                cpu = time.process_time() - cpu
        else:
            engine = Engine(cfg, problem, store, Lognormal(latency_s),
                            Evaluator(SleepPool(max(8, c), eval_s), use_probe=False), clock)
            cpu = time.process_time()
            await engine.run()
            cpu = time.process_time() - cpu
        staleness = None
        if "staleness" in {r[1] for r in store.db.execute("PRAGMA table_info(programs)")}:
            staleness = store.db.execute("SELECT AVG(staleness) FROM programs WHERE id > 0").fetchone()[0]
        store.close()
    skip = max(1, len(clock.times) // 10)
    wall = clock.times[-1] - clock.times[skip]
    rate = (len(clock.times) - 1 - skip) / wall
    ideal = c / (latency_s + eval_s)
    return {"backend": backend, "mode": mode or "ordered", "concurrency": c, "samples": samples,
            "candidates_per_s": rate, "ideal_per_s": ideal, "efficiency": rate / ideal,
            "driver_cpu_ms_per_candidate": 1000 * cpu / samples, "mean_staleness": staleness}


def table(out: dict) -> str:
    lines = [f"engine throughput ({out['code']}; {os.cpu_count()} cores; load {out['load']})", "",
             "1. instant sampler, cached evaluations, local (target >= 2000 candidates/s, <= 0.5 ms CPU each)",
             f"{'mode':>8} {'cands':>7} {'cands/s':>9} {'ideal':>6} {'CPU ms/cand':>11} {'store B/prog':>12}"]
    for r in out["instant"]:
        lines.append(f"{r['mode']:>8} {r['candidates']:>7} {r['candidates_per_s']:>9.0f} {r['ideal_per_s']:>6.0f} "
                     f"{r['driver_cpu_ms_per_candidate']:>11.3f} {r['store_bytes_per_program']:>12.0f}")
    if out.get("store"):
        s = out["store"]
        lines += ["", f"2. store of {s['programs']} programs: resume (rebuild islands) {s['resume_s']:.1f} s, "
                      f"{s.get('resume_cpu_s', float('nan')):.1f} s CPU "
                      f"(target < 60), peak RSS {s['peak_rss_mb']:.0f} MiB (target < 2048), "
                      f"{s['store_bytes_per_program']:.0f} B/program, written in {s['write_s']:.0f} s"]
    if out.get("latency"):
        lines += ["", f"3. lognormal sampler (sigma 1, mean {out['latency_s']} s), evaluations mean {out['eval_s']} s "
                      f"(target async >= 0.9 of ideal at C = 32, 128)",
                  f"{'backend':>7} {'mode':>8} {'C':>4} {'n':>5} {'cands/s':>8} {'ideal':>7} {'efficiency':>10} "
                  f"{'CPU ms/cand':>11} {'staleness':>9}"]
        for r in out["latency"]:
            stale = "" if r["mean_staleness"] is None else f"{r['mean_staleness']:.1f}"
            lines.append(f"{r['backend']:>7} {r['mode']:>8} {r['concurrency']:>4} {r['samples']:>5} "
                         f"{r['candidates_per_s']:>8.1f} {r['ideal_per_s']:>7.1f} {r['efficiency']:>10.2f} "
                         f"{r['driver_cpu_ms_per_candidate']:>11.2f} {stale:>9}")
    return "\n".join(lines)


def save(out: dict, path: str) -> None:
    Path(path).write_text(json.dumps(out, indent=2))  # after every case: a long run keeps what it measured


async def main(args) -> dict:
    modes = ["ordered", "async"] if HAS_MODES else [None]
    code = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    out = {"code": code, "load": os.getloadavg()[0], "instant": [], "latency": [], "latency_s": args.latency_s,
           "eval_s": args.eval_s}
    for n in args.sizes:
        for mode in modes:
            r = await instant(n, mode)
            out["instant"].append(r)
            save(out, args.json)
            print(f"instant {r['mode']} {n}: {r['candidates_per_s']:.0f}/s", file=sys.stderr)
        if n / out["instant"][-1]["candidates_per_s"] * 10 > args.max_case_s:
            print(f"the next size would take over {args.max_case_s} s: stopping at {n}", file=sys.stderr)
            break
    if args.store_size:
        out["store"] = big_store(args.store_size)
        save(out, args.json)
        print(f"store: {out['store']}", file=sys.stderr)
    cluster = None
    for backend in args.backends:
        if backend == "ray":
            sys.path.insert(0, str(ROOT / "tests"))
            from ray_cluster import LoopbackCluster

            os.environ.setdefault("RAY_raylet_start_wait_time_s", "300")  # a loaded machine starts nodes slowly
            try:
                cluster = LoopbackCluster().start()
            except RuntimeError as e:
                out["ray_error"] = str(e).splitlines()[0]
                print(f"no loopback Ray cluster: {out['ray_error']}", file=sys.stderr)
                continue
        try:
            for c in args.concurrency:
                samples = max(args.min_samples, 6 * c)
                for mode in modes:
                    r = await latency(c, mode, backend, args.latency_s, args.eval_s, samples,
                                      cluster.address if cluster else None)
                    out["latency"].append(r)
                    save(out, args.json)
                    print(f"latency {backend} {r['mode']} C={c}: {r['efficiency']:.2f}", file=sys.stderr)
        finally:
            if cluster is not None:
                import ray

                ray.shutdown()
                cluster.stop()
                cluster = None
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--resume-here":
        print(json.dumps(resume_here(sys.argv[2], int(sys.argv[3]))))
        sys.exit(0)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    p.add_argument("--max-case-s", type=float, default=300, help="skip an instant size predicted to take longer")
    p.add_argument("--store-size", type=int, default=1_000_000, help="programs in the resume test (0: skip)")
    p.add_argument("--concurrency", type=int, nargs="*", default=[4, 32, 128])
    p.add_argument("--backends", nargs="*", default=["local", "ray"])
    p.add_argument("--latency-s", type=float, default=0.5)
    p.add_argument("--eval-s", type=float, default=0.1)
    p.add_argument("--min-samples", type=int, default=200)
    p.add_argument("--json", default="benchmarks/engine_throughput.json")
    args = p.parse_args()
    result = asyncio.run(main(args))
    print(table(result))
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")

"""First-install time: a clean clone of this repository into a fresh venv (no system site-packages).

    python benchmarks/install_time.py [--extras local] [--extras local,ray] [--json benchmarks/install_time.json]

For each extras set: ``pip install --no-cache-dir --only-binary :all: -e .[EXTRAS]`` (a user's
first install: every wheel downloaded, nothing compiled), then the same into a second fresh venv
with pip's cache (what a later install gets). Wall times depend on the network and the load of
the machine, so the load average is recorded beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_install(clone: Path, venv: Path, extras: str, cache: bool) -> float:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cmd = [str(venv / "bin" / "pip"), "install", "-q", "--only-binary", ":all:", "-e", f"{clone}[{extras}]"]
    if not cache:
        cmd.insert(2, "--no-cache-dir")
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pip install .[{extras}] failed: {proc.stderr.strip()[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extras", action="append", help="extras sets to time (default: local)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "install_time.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="evosearch-install-") as tmp:
        clone = Path(tmp) / "evosearch"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        for extras in args.extras or ["local"]:
            for cache in (False, True):
                seconds = timed_install(clone, Path(tmp) / f"venv-{extras}-{cache}", extras, cache)
                rows.append({"extras": extras, "pip_cache": cache, "seconds": round(seconds, 1),
                             "load_avg_1min": round(os.getloadavg()[0], 1)})
                print(f".[{extras}] {'with' if cache else 'without'} pip cache: {seconds:.1f} s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    Path(args.json).write_text(json.dumps({"nproc": os.cpu_count(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

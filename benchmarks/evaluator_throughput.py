"""Evaluator throughput: sandbox fork overhead and pool evaluations per second.

    python benchmarks/evaluator_throughput.py [--workers 2] [--jobs 200] [--out evaluator_throughput.json]

Rows:
* fork overhead: one sandboxed child that runs an empty program on one no-op
  instance, timed in-process (fork, lock-down, exec, result pipe, reap), with and
  without the root-only layers (network namespace, uid drop);
* pool, trivial candidate: bin_packing probe split, ``return bins``;
* pool, Best-Fit on train (5 x 1000 items).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time

from evaluators import sandbox
from evaluators.pool import WorkerPool

TRIVIAL = "def priority(item, bins):\n    return bins\n"
BEST_FIT = "def priority(item, bins):\n    return -(bins - item)\n"


def fork_overhead_ms(runs: int, **layers) -> float:
    limits = sandbox.effective_limits(sandbox.Limits(timeout_s=10.0, memory_mb=1024, **layers))
    times = []
    for _ in range(runs):
        scratch = tempfile.mkdtemp(prefix="evosearch-bench-")
        start = time.perf_counter()
        outcome = sandbox.run_child("", lambda ns, inst: None, {"x": None}, limits, scratch)
        times.append(time.perf_counter() - start)
        shutil.rmtree(scratch, ignore_errors=True)
        assert outcome.status == "ok", outcome
    return 1000 * statistics.median(times)


async def pool_rate(pool: WorkerPool, codes: list[str], split: str) -> float:
    start = time.perf_counter()
    replies = await asyncio.gather(*(pool.run(code, split) for code in codes))
    elapsed = time.perf_counter() - start
    assert all(r["status"] == "ok" for r in replies), replies[0]
    return len(codes) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--out", default="evaluator_throughput.json")
    args = parser.parse_args()

    sandbox.become_subreaper()
    rows = {
        "fork overhead, all layers (ms)": fork_overhead_ms(100),
        "fork overhead, rlimits + setsid only (ms)": fork_overhead_ms(100, isolate_network=False,
                                                                       drop_privileges=False),
    }
    async with WorkerPool("bin_packing", workers=args.workers) as pool:
        await pool_rate(pool, [TRIVIAL] * 4, "probe")  # instances cached in every worker
        await pool_rate(pool, [BEST_FIT] * 4, "train")
        rows[f"pool, trivial candidate, probe split (evals/s, {args.workers} workers)"] = \
            await pool_rate(pool, [TRIVIAL] * args.jobs, "probe")
        rows[f"pool, Best-Fit, train split (evals/s, {args.workers} workers)"] = \
            await pool_rate(pool, [BEST_FIT] * max(args.jobs // 4, 8), "train")
        rows["isolation"] = pool.info["isolation"]
    rows["cpus"] = os.cpu_count()
    width = max(len(k) for k in rows)
    for key, value in rows.items():
        if isinstance(value, float):
            print(f"{key:<{width}}  {value:8.1f}")
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())

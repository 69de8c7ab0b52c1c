"""What a larger TSP training split costs: seconds per sandboxed training evaluation of the seed program.

    python benchmarks/tsp_split_cost.py [--instances 8 32] [--repeats 10] [--json tsp_split_cost.json]

For each ``train_instances``: a fresh ``WorkerPool`` (one worker, default isolation) scores the seed
program on the training split once (the worker builds the instances and their Held-Karp bounds) and
then ``--repeats`` more times. Reported: the first evaluation's seconds and the mean of the others.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluators.evaluator import Evaluator  # noqa: E402
from evaluators.pool import WorkerPool  # noqa: E402
from evosearch.problem import load_problem  # noqa: E402


async def measure(instances: int, repeats: int) -> dict:
    problem = load_problem("tsp")
    async with WorkerPool(problem.folder, None, 0, {"train_instances": instances}, workers=1) as pool:
        evaluator = Evaluator(pool, timeout_s=600)
        t0 = time.perf_counter()
        await evaluator.evaluate_split(problem.skeleton, "train")
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(repeats):
            result = await evaluator.evaluate_split(problem.skeleton, "train")
        return {"train_instances": instances, "first_s": first, "each_s": (time.perf_counter() - t0) / repeats,
                "gap_pct": result.metrics["gap_pct"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = [asyncio.run(measure(n, args.repeats)) for n in args.instances]
    print(f"{'train_instances':>15} {'first evaluation s':>19} {'then s each':>12} {'seed gap %':>11}")
    for r in rows:
        print(f"{r['train_instances']:>15} {r['first_s']:>19.2f} {r['each_s']:>12.3f} {r['gap_pct']:>11.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"benchmark": "tsp_split_cost", "command": " ".join(sys.argv),
                                               "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

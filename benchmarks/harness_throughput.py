"""What the trusted harness costs: evaluations/s of bin packing and planning, before and after.

    python benchmarks/harness_throughput.py --before /tmp/harness-before [--rounds 3] [--out harness_throughput.json]

``--before`` is a checkout of the code to compare with (e.g. ``git worktree add
/tmp/harness-before main``: the harness ran inside the candidate's process there). Each
measurement runs in a fresh Python whose ``PYTHONPATH`` is one checkout, through that
checkout's own ``WorkerPool`` (one worker, default isolation), on the seed program:

* bin packing, train split (5 instances x 1,000 items: 5,000 priority calls per evaluation)
  and probe split (one batched call per probe instance);
* planning (domain ferry, 10 training tasks, budget 2,000 heuristic calls per task);
* symbolic regression (duffing, BFGS: one call per function evaluation) and the optimizer
  problem (36 training runs of 200 steps, one call per step and run, in lockstep).

Rounds alternate between the checkouts, so load on a shared machine hits both alike.
Reported per case: evaluations/s (wall clock) and CPU seconds per evaluation (worker
plus candidate processes, from the worker's own accounting), medians over rounds; the
ratio after/before of each.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO.parent / "shared" / "data"
CASES = {  # name -> (problem, options, split, evaluations per measurement)
    "bin_packing train": ("bin_packing", {}, "train", 4),
    "bin_packing probe": ("bin_packing", {}, "probe", 20),
    "planning train (ferry)": ("planning", {"domain": "ferry"}, "train", 2),
    "symbolic_regression train": ("symbolic_regression", {}, "train", 2),
    "optimizer train": ("optimizer", {}, "train", 1),
}


def measure(case: str) -> dict:
    """In the measuring process: evaluations of the seed through this checkout's pool."""
    from evaluators.pool import WorkerPool
    from evosearch.problem import load_problem

    problem_name, options, split, count = CASES[case]
    data_dir = str(DATA) if problem_name == "planning" else None
    code = load_problem(problem_name, data_dir=data_dir, options=options).skeleton

    async def go():
        pool = WorkerPool(problem_name, data_dir=data_dir, options=options, workers=1)
        await pool.start()
        try:
            await pool.run(code, split)  # warm: instances built, caches filled
            start, cpu, scores = time.monotonic(), 0.0, set()
            for _ in range(count):
                reply = await pool.run(code, split)
                assert reply["status"] == "ok", reply
                cpu += reply["cpu_s"]
                scores.add(reply["score"] if split != "probe" else reply["functional_hash"])
            wall = time.monotonic() - start
            return {"evals_per_s": count / wall, "cpu_s_per_eval": cpu / count, "result": sorted(scores)}
        finally:
            await pool.close()

    return asyncio.run(go())


def run_in(checkout: Path, case: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure", case], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"measuring {case!r} in {checkout} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="checkout to compare with (e.g. a worktree of main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", type=Path, default=HERE / "harness_throughput.json")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    checkouts = {"after": REPO} | ({"before": args.before.resolve()} if args.before else {})
    runs: dict[str, dict[str, list[dict]]] = {case: {k: [] for k in checkouts} for case in args.cases}
    for r in range(args.rounds):
        for case in args.cases:
            for label, checkout in (checkouts.items() if r % 2 == 0 else reversed(checkouts.items())):
                runs[case][label].append(run_in(checkout, case))
                print(f"round {r + 1} {case:24s} {label:6s} {runs[case][label][-1]['evals_per_s']:.3f} evals/s",
                      file=sys.stderr)
    table = {}
    for case, by in runs.items():
        row = {}
        for label, results in by.items():
            row[label] = {"evals_per_s": statistics.median(x["evals_per_s"] for x in results),
                          "cpu_s_per_eval": statistics.median(x["cpu_s_per_eval"] for x in results),
                          "result": results[0]["result"]}
        if "before" in row:
            row["rate_ratio"] = row["after"]["evals_per_s"] / row["before"]["evals_per_s"]
            row["cpu_ratio"] = row["after"]["cpu_s_per_eval"] / row["before"]["cpu_s_per_eval"]
            row["same_result"] = row["after"]["result"] == row["before"]["result"]
        table[case] = row
    print(f"{'case':26s} {'before ev/s':>11s} {'after ev/s':>10s} {'ratio':>6s} {'before cpu':>10s} "
          f"{'after cpu':>9s} {'ratio':>6s}  same result")
    for case, row in table.items():
        b = row.get("before", {})
        print(f"{case:26s} {b.get('evals_per_s', float('nan')):11.3f} {row['after']['evals_per_s']:10.3f} "
              f"{row.get('rate_ratio', float('nan')):6.2f} {b.get('cpu_s_per_eval', float('nan')):10.3f} "
              f"{row['after']['cpu_s_per_eval']:9.3f} {row.get('cpu_ratio', float('nan')):6.2f}  "
              f"{row.get('same_result', '-')}")
    args.out.write_text(json.dumps({"rounds": args.rounds, "cases": table,
                                    "command": "python " + " ".join(sys.argv)}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

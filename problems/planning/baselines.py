"""Run the reference heuristics through the problem's own harness and print a coverage table.

    python -m problems.planning.baselines --data-dir ../shared/data [--domains blocksworld,ferry]
        [--heuristics blind,goal_count,hff] [--splits train,test] [--test-level easy] [--budget 2000] [--json PATH]

Runs in-process (trusted code only: these programs are ours): each program is
executed into a namespace, then ``run`` + ``score`` + ``aggregate`` go over the
split exactly as the evaluator would. Blind and hFF are pyperplan's own
implementations, on the same evaluation budget as evolved heuristics.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from evosearch.problem import Problem, evaluate_trusted, load_problem
from evosearch.program import replace_functions
from problems.planning.tasks import DOMAINS

FOLDER = Path(__file__).resolve().parent

BLIND = '''\
def heuristic(task):
    """pyperplan's blind heuristic: 0 at a goal state, 1 elsewhere."""
    from types import SimpleNamespace
    from pyperplan.heuristics.blind import BlindHeuristic
    blind = BlindHeuristic(task)
    return lambda state: blind(SimpleNamespace(state=state))
'''

HFF = '''\
def heuristic(task):
    """pyperplan's hFF (Hoffmann and Nebel 2001): length of a relaxed plan."""
    from types import SimpleNamespace
    from pyperplan.heuristics.relaxation import hFFHeuristic
    ff = hFFHeuristic(task)
    return lambda state: ff(SimpleNamespace(state=state))
'''


def programs(problem: Problem) -> dict[str, str]:
    """Name -> full program text (the skeleton with ``heuristic`` replaced)."""
    seed = problem.skeleton
    return {"blind": replace_functions(seed, {"heuristic": BLIND}), "goal_count": seed,
            "hff": replace_functions(seed, {"heuristic": HFF})}


evaluate = evaluate_trusted  # (Score, per-instance metrics) of trusted code over one split


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding planning/ipc2023-learning")
    parser.add_argument("--domains", default=",".join(DOMAINS))
    parser.add_argument("--heuristics", default="blind,goal_count,hff")
    parser.add_argument("--splits", default="train,test")
    parser.add_argument("--budget", type=int, default=None, help="heuristic calls per task (default: the problem's)")
    parser.add_argument("--test-level", default="easy", help="testing tasks of the held-out split: easy, medium, hard")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    options = ({} if args.budget is None else {"budget": args.budget}) | {"test_level": args.test_level}
    results, rows = {}, []
    for domain in args.domains.split(","):
        problem = load_problem(FOLDER, data_dir=args.data_dir, options={"domain": domain, **options})
        for split in args.splits.split(","):
            start = time.process_time()
            problem.instances(split)
            ground_s = time.process_time() - start
            for name in args.heuristics.split(","):
                start = time.process_time()
                score, per_instance = evaluate(problem, programs(problem)[name], split)
                cpu = time.process_time() - start
                m = score.metrics
                results.setdefault(domain, {}).setdefault(split, {})[name] = {
                    "score": score.score, "descriptors": score.descriptors, "metrics": m, "cpu_seconds": cpu,
                    "ground_seconds": ground_s, "solved": sorted(k for k, v in per_instance.items() if v["solved"])}
                quality = f"{m['quality']:.2f}" if "quality" in m else "-"  # test tasks only
                rows.append([domain, split, name, f"{m['solved']:.0f}/{m['tasks']:.0f}", f"{score.score:.4f}",
                             f"{m['evaluations']:.0f}", f"{m['plan_length']:.1f}", quality,
                             f"{score.descriptors['steps_per_goal']:.2f}", f"{cpu:.1f}", f"{ground_s:.2f}"])
                print(_table(["domain", "split", "heuristic", "solved", "score", "mean calls", "mean plan length",
                              "quality", "steps_per_goal", "cpu s", "grounding s"], rows[-1:]).splitlines()[-1],
                      flush=True)
    print()
    print(_table(["domain", "split", "heuristic", "solved", "score", "mean calls", "mean plan length", "quality",
                  "steps_per_goal", "cpu s", "grounding s"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

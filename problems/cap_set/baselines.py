"""Score reference priority functions with the problem's own harness and print a table.

    python -m problems.cap_set.baselines [--n 8] [--json PATH]

Runs in-process (trusted code only: these programs are ours): each program is
the skeleton with ``priority`` replaced, executed into a namespace, then
``run`` + ``score`` go over the instance exactly as the evaluator does.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from evosearch.problem import Problem, Score, evaluate_trusted, load_problem
from evosearch.program import replace_functions

FOLDER = Path(__file__).resolve().parent
# Published cap set sizes for n = 8 (Romera-Paredes et al. 2024): FunSearch's, and the best before it.
FUNSEARCH_8 = 512
PREVIOUS_BEST_8 = 496

RANDOM = '''\
def priority(el: tuple[int, ...], n: int) -> float:
    """A random order: a random maximal cap set."""
    return np.random.random()
'''

# Vectors of Hamming weight near 2n/3 first: a hand-written rule that beats the trivial one.
WEIGHT = '''\
def priority(el: tuple[int, ...], n: int) -> float:
    """Prefer vectors whose number of non-zero coordinates is near 2n/3."""
    return -abs(sum(x != 0 for x in el) - 2 * n / 3)
'''


def programs(problem: Problem) -> dict[str, str]:
    """Name -> full program text."""
    seed = problem.skeleton
    return {"trivial (seed)": seed,
            "random": replace_functions(seed, {"priority": RANDOM}),
            "weight near 2n/3": replace_functions(seed, {"priority": WEIGHT})}


def evaluate(problem: Problem, code: str, split: str = "train") -> Score:
    return evaluate_trusted(problem, code, split)[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="dimension (default 8)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    problem = load_problem(FOLDER, options={"n": args.n})
    results = {}
    for name, code in programs(problem).items():
        cpu = time.process_time()
        score = evaluate(problem, code)
        results[name] = {"size": score.score, **score.descriptors, "cpu_s": time.process_time() - cpu}
    print(f"| priority (n = {args.n}) | cap set size | weight | weight_spread | cpu s |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['size']:.0f} | {r['weight']:.3f} | {r['weight_spread']:.3f} | {r['cpu_s']:.2f} |")
    if args.n == 8:
        print(f"| best before FunSearch (published) | {PREVIOUS_BEST_8} | | | |")
        print(f"| FunSearch (published) | {FUNSEARCH_8} | | | |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

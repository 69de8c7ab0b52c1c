"""Score reference next-city rules with the problem's own harness and print a table.

    python -m problems.tsp.baselines --data-dir ../shared/data [--json PATH]

Runs in-process (trusted code only: these rules are ours): each program is the
skeleton with ``priority`` replaced, executed into a namespace, then ``run`` +
``score`` + ``aggregate`` go over a split exactly as the evaluator does.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from evosearch.problem import Problem, Score, evaluate_trusted, load_problem
from evosearch.program import replace_functions

FOLDER = Path(__file__).resolve().parent

RANDOM = '''\
def priority(current: int, start: int, unvisited: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Any unvisited city: the floor every rule must beat."""
    return np.random.random(len(unvisited))
'''

# Nearest neighbour that leaves the cities near the start for last, so the closing edge is short.
START_AWARE = '''\
def priority(current: int, start: int, unvisited: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Nearest neighbour, preferring cities far from the start while it can."""
    return -(distances[current, unvisited] - 0.3 * distances[start, unvisited])
'''


def programs(problem: Problem) -> dict[str, str]:
    """Name -> full program text."""
    seed = problem.skeleton
    return {"nearest neighbour (seed)": seed,
            "start-aware nearest neighbour": replace_functions(seed, {"priority": START_AWARE}),
            "random": replace_functions(seed, {"priority": RANDOM})}


def evaluate(problem: Problem, code: str, split: str) -> Score:
    return evaluate_trusted(problem, code, split)[0]


def measure(data_dir: str | None) -> dict[str, dict[str, dict]]:
    """Program -> column -> {"gap_pct", "greedy_rate", "long_edges", "cpu_s"}."""
    columns = {"train": (load_problem(FOLDER), "train"), "test": (load_problem(FOLDER), "test")}
    if data_dir:
        columns["tsplib"] = (load_problem(FOLDER, data_dir=data_dir), "test")
    for problem, split in columns.values():
        problem.instances(split)  # build instances (and Held-Karp bounds) before timing
    results: dict[str, dict[str, dict]] = {}
    for name, code in programs(columns["train"][0]).items():
        for column, (problem, split) in columns.items():
            cpu = time.process_time()
            score = evaluate(problem, code, split)
            results.setdefault(name, {})[column] = {**score.metrics, "cpu_s": time.process_time() - cpu}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="benchmark data (../shared/data) for the TSPLIB column")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = measure(args.data_dir)
    columns = list(next(iter(results.values())))
    sizes = load_problem(FOLDER).sizes  # the defaults' (instances, cities) per generated split
    heads = {split: f"{split}: {sizes[split][0]} x uniform {sizes[split][1]} (gap to HK bound)" for split in sizes}
    heads["tsplib"] = "TSPLIB: 46 instances (gap to optimum)"
    print("| rule | " + " | ".join(heads[c] for c in columns) + " | greedy_rate | long_edges | train cpu s |")
    print("|---|" + "---|" * (len(columns) + 3))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(f"{r[c]['gap_pct']:.2f}%" for c in columns)
              + f" | {r['train']['greedy_rate']:.3f} | {r['train']['long_edges']:.3f} | {r['train']['cpu_s']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Fit the reference equation skeletons with the problem's own harness and print a table.

    python -m problems.symbolic_regression.baselines [--data-dir ../shared/data] [--json PATH]

Runs in-process (trusted code only: these programs are ours): each program is
executed into a namespace, then ``run`` + ``score`` go over the train and test
splits exactly as the evaluator would. Without ``--data-dir`` only the built-in
``duffing`` data set is scored.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from evosearch.problem import Problem, load_problem
from evosearch.program import replace_functions
from problems.symbolic_regression import data
from problems.symbolic_regression.fitting import MAX_NPARAMS

FOLDER = Path(__file__).resolve().parent


def polynomial(names: list[str], terms: int = MAX_NPARAMS) -> str:
    """Sum of params[i] * monomial over the first ``terms`` monomials in graded order
    (1, then the inputs, then their degree-2 products, ...): linear in its parameters."""
    monomials = []
    for degree in itertools.count():
        for combo in itertools.combinations_with_replacement(names, degree):
            monomials.append(" * ".join(combo) if combo else "1")
            if len(monomials) == terms:
                return " + ".join(f"params[{i}]" + ("" if m == "1" else f" * {m}") for i, m in enumerate(monomials))


def programs(problem: Problem) -> dict[str, str]:
    """Name -> full program text (the data set's skeleton with ``equation`` replaced)."""
    seed = problem.skeleton
    names = [name for name, _ in problem.spec.inputs]
    header = f"def equation({', '.join(f'{n}: np.ndarray' for n in names)}, params: np.ndarray) -> np.ndarray:\n"
    poly = header + f"    return {polynomial(names)}\n"
    return {"linear (seed)": seed, "polynomial (10 terms)": replace_functions(seed, {"equation": poly})}


def evaluate(problem: Problem, code: str, split: str) -> dict[str, float]:
    """Execute the program and score it on one split, as the evaluator does (one instance per split)."""
    namespace: dict = {}
    exec(compile(code, "<program>", "exec"), namespace)
    (instance,) = problem.instances(split).values()
    return problem.score(instance, problem.output(namespace, instance))


def measure(data_dir: str | None, datasets: list[str]) -> dict:
    results = {}
    for name in datasets:
        problem = load_problem(FOLDER, data_dir=data_dir, options={"dataset": name})
        problem.dataset()  # load the data before timing
        for label, code in programs(problem).items():
            start = time.process_time()
            test = evaluate(problem, code, "test")  # fits once, predicts train, ID and OOD
            results.setdefault(name, {})[label] = {**test, "cpu_seconds": time.process_time() - start}
    return results


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="folder holding symbolic_regression/llm-sr (e.g. ../shared/data)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    datasets = (list(data.LLM_SR) if args.data_dir else []) + ["duffing"]
    results = measure(args.data_dir, datasets)
    print(_table(["data set", "skeleton", "NMSE train", "NMSE ID", "NMSE OOD", "free params", "cpu s"],
                 [[name, label, f"{r['nmse_train']:.3e}", f"{r['nmse_id']:.3e}", f"{r['nmse_ood']:.3e}",
                   f"{r['free_params']:.0f}", f"{r['cpu_seconds']:.2f}"]
                  for name, by_label in results.items() for label, r in by_label.items()]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

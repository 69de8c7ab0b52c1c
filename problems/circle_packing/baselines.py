"""Score reference packings with the problem's own harness and print a table.

    python -m problems.circle_packing.baselines [--n 26] [--json PATH]

Runs in-process (trusted code only: these programs are ours): each program is
the skeleton with ``construct_packing`` replaced, executed into a namespace,
then ``run`` + ``score`` go over the instance exactly as the evaluator does.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from evosearch.problem import Problem, Score, evaluate_trusted, load_problem
from evosearch.program import replace_functions

FOLDER = Path(__file__).resolve().parent
# Published sums of radii for n = 26 (AlphaEvolve, Novikov et al. 2025, appendix B.12).
ALPHAEVOLVE_26 = 2.6358627564
PREVIOUS_BEST_26 = 2.634

ROWS = '''\
def construct_packing(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 5 and 6 equal circles (5, 6, 5, 5, 5 for n = 26), radii by linear programming."""
    rows = [5, 6, 5, 5, 5] if n == 26 else [int(np.ceil(np.sqrt(n)))] * int(np.ceil(n / np.ceil(np.sqrt(n))))
    centers = np.array([((k + 0.5) / count, (r + 0.5) / len(rows))
                        for r, count in enumerate(rows) for k in range(count)])[:n]
    return centers, largest_radii(centers)
'''

# A hand-written optimiser: the rows layout, jittered, then SLSQP on centres and radii together
# (constraints as squared distances), then the exact radii of the final centres.
SLSQP = '''\
def construct_packing(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows layout polished by SLSQP over centres and radii."""
    from scipy.optimize import minimize
    rows = [5, 6, 5, 5, 5] if n == 26 else [int(np.ceil(np.sqrt(n)))] * int(np.ceil(n / np.ceil(np.sqrt(n))))
    start = np.array([((k + 0.5) / count, (r + 0.5) / len(rows))
                      for r, count in enumerate(rows) for k in range(count)])[:n]
    start = np.clip(start + np.random.normal(0, 0.02, start.shape), 0.05, 0.95)
    i, j = np.triu_indices(n, 1)

    def constraints(z):
        c, r = z[:2 * n].reshape(n, 2), z[2 * n:]
        apart = ((c[i] - c[j]) ** 2).sum(axis=1) - (r[i] + r[j]) ** 2
        inside = np.concatenate([c[:, 0] - r, 1 - c[:, 0] - r, c[:, 1] - r, 1 - c[:, 1] - r])
        return np.concatenate([apart, inside])

    gradient = np.concatenate([np.zeros(2 * n), -np.ones(n)])
    solved = minimize(lambda z: -z[2 * n:].sum(), np.concatenate([start.ravel(), largest_radii(start)]),
                      jac=lambda z: gradient, method="SLSQP", constraints=[{"type": "ineq", "fun": constraints}],
                      bounds=[(0, 1)] * (2 * n) + [(0, 0.5)] * n, options={"maxiter": 500, "ftol": 1e-12})
    centers = solved.x[:2 * n].reshape(n, 2)
    return centers, largest_radii(centers)
'''


def programs(problem: Problem) -> dict[str, str]:
    """Name -> full program text."""
    seed = problem.skeleton
    return {"grid (seed)": seed,
            "rows 5-6-5-5-5": replace_functions(seed, {"construct_packing": ROWS}),
            "rows + SLSQP": replace_functions(seed, {"construct_packing": SLSQP})}


def evaluate(problem: Problem, code: str, split: str = "train") -> Score:
    return evaluate_trusted(problem, code, split)[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=26, help="number of circles (default 26)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    problem = load_problem(FOLDER, options={"n": args.n})
    results = {}
    for name, code in programs(problem).items():
        cpu = time.process_time()
        score = evaluate(problem, code)
        results[name] = {"sum_radii": score.score, **score.descriptors, "cpu_s": time.process_time() - cpu}
    print(f"| program (n = {args.n}) | sum of radii | radius_spread | border_share | cpu s |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['sum_radii']:.10f} | {r['radius_spread']:.3f} | {r['border_share']:.3f} "
              f"| {r['cpu_s']:.2f} |")
    if args.n == 26:
        print(f"| previous best (published) | {PREVIOUS_BEST_26} | | | |")
        print(f"| AlphaEvolve (published) | {ALPHAEVOLVE_26} | | | |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

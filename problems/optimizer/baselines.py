"""Score the reference optimizers with the problem's own harness and print a table.

    python -m problems.optimizer.baselines [--json PATH]

Runs in-process (trusted code only: these programs are ours): each program text
is executed into a namespace, then ``run`` + ``score`` + ``aggregate`` go over
the train and test splits exactly as the evaluator would.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from evosearch.problem import Problem, evaluate_trusted, load_problem
from evosearch.program import replace_functions

FOLDER = Path(__file__).resolve().parent

SGD_MOMENTUM = '''\
def update(params: dict, grads: dict, state: dict, step: int, lr: float) -> tuple[dict, dict]:
    """SGD with heavy-ball momentum."""
    momentum = 0.9
    if not state:
        state = {"v": {k: np.zeros_like(p) for k, p in params.items()}}
    new_params = {}
    for k, p in params.items():
        v = momentum * state["v"][k] + grads[k]
        state["v"][k] = v
        new_params[k] = p - lr * v
    return new_params, state
'''

LION = '''\
def update(params: dict, grads: dict, state: dict, step: int, lr: float) -> tuple[dict, dict]:
    """Lion (Chen et al. 2023): sign of an interpolation of momentum and gradient."""
    beta1, beta2, weight_decay = 0.9, 0.99, 0.01
    if not state:
        state = {"m": {k: np.zeros_like(p) for k, p in params.items()}}
    new_params = {}
    for k, p in params.items():
        g, m = grads[k], state["m"][k]
        c = beta1 * m + (1 - beta1) * g
        new_params[k] = p - lr * (np.sign(c) + weight_decay * p)
        state["m"][k] = beta2 * m + (1 - beta2) * g
    return new_params, state
'''

# A rule that never moves: the floor every useful program must beat.
NO_OP = '''\
def update(params: dict, grads: dict, state: dict, step: int, lr: float) -> tuple[dict, dict]:
    return params, state
'''


def programs(problem: Problem) -> dict[str, str]:
    """Name -> full program text (the skeleton with ``update`` replaced)."""
    seed = problem.skeleton
    return {"AdamW (seed)": seed,
            "SGD-momentum": replace_functions(seed, {"update": SGD_MOMENTUM}),
            "Adam (weight_decay=0)": seed.replace("1e-8, 0.01", "1e-8, 0.0"),
            "Lion": replace_functions(seed, {"update": LION}),
            "no-op": replace_functions(seed, {"update": NO_OP})}


evaluate = evaluate_trusted  # (Score, per-instance metrics) of trusted code over one split


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    problem = load_problem(FOLDER)
    for split in ("probe", "train", "test"):
        problem.instances(split)  # load the data before timing
    results = {}
    for name, code in programs(problem).items():
        results[name] = {}
        for split in ("train", "test", "probe"):
            start, cpu = time.perf_counter(), time.process_time()
            score, per_instance = evaluate(problem, code, split)
            results[name][split] = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                                    "score": score.score, "descriptors": score.descriptors,
                                    "metrics": score.metrics, "per_instance": per_instance}
    print(_table(["program", "train score", "test score", "test grid mean", "best lr (train)", "diverged (train/test)",
                  "param_growth", "update_uniformity", "train cpu s", "test cpu s", "probe cpu s"],
                 [[name, f"{r['train']['score']:.6f}", f"{r['test']['score']:.6f}",
                   f"{r['test']['metrics']['grid_mean_normalized_loss']:.3f}",
                   f"{10 ** r['train']['metrics']['best_log10_lr']:.3g}",
                   f"{r['train']['metrics']['diverged']:.2f}/{r['test']['metrics']['diverged']:.2f}",
                   f"{r['train']['descriptors']['param_growth']:.3f}",
                   f"{r['train']['descriptors']['update_uniformity']:.3f}",
                   *(f"{r[s]['cpu_seconds']:.2f}" for s in ("train", "test", "probe"))]
                  for name, r in results.items()]))
    # Test normalized loss at each lr, averaged over tasks and seeds: where each rule works.
    lrs = sorted({inst["lr"] for inst in problem.instances("test").values()})
    rows = []
    for name, r in results.items():
        cells = []
        for lr in lrs:
            vals = [m["normalized_loss"] for i, m in r["test"]["per_instance"].items()
                    if problem.instances("test")[i]["lr"] == lr]
            cells.append(f"{sum(vals) / len(vals):.2f}")
        rows.append([name, *cells])
    print()
    print(_table(["program", *(f"lr={lr:g}" for lr in lrs)], rows))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

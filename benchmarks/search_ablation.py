"""Search-quality ablation on FunSearch's bin packing (Weibull), LLM-free ``mutate`` sampler.

    python benchmarks/search_ablation.py [--samples 300] [--seeds 0 1 2 3 4] [--arms default funsearch eps random]
        [--problem-options '{train_instances: 2, train_items: 500}'] [--out runs/ablation] [--json ablation.json]

Each (arm, seed) is one real run through the CLI (``python -m evosearch run``: real
sandbox workers, real store), with the same sample budget. Arms:

* ``default``   the default configuration: 4 MAP-Elites islands (GridArchive over
                full_bins x size), uniform parent selection, ring migration.
* ``funsearch`` FunSearch-style islands without a grid: 4 islands of score clusters
                (``--archive clusters``), Boltzmann selection over clusters, resets of
                the weaker half every samples/4 results, no migration (FunSearch has none).
* ``eps``       (1+1)-EPS hill climbing (Zhang et al. 2024, LLM4AD): one island, one
                parent, always the current best.
* ``random``    random mutation of the seed: one parent, always the seed program.
* ``grid_boltzmann``, ``grid_dgm`` (extra, ``--arms``): the default islands with
                FunSearch's or the DGM's parent selection instead of uniform.

Reported per arm over the seeds: median and spread (min..max) of the best program's
held-out (test split) score, of its gain over the seed program on the same held-out
instances (each seed draws its own instances), and of the QD score of everything the run found: every
ok program of the run inserted into one fresh GridArchive over the engine's axes
(full_bins x size, 10 x 10), offset by the worst possible training score (one bin per
item), so arms with and without a grid are measured alike.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from ribs.archives import GridArchive

ROOT = Path(__file__).resolve().parent.parent

ARMS = {
    "default": [],
    "funsearch": ["--archive", "clusters", "--selection", "boltzmann", "--reset-interval", "{reset}",
                  "--migration-interval", "0"],
    "eps": ["--islands", "1", "--parents", "1", "--selection", "best"],
    "random": ["--islands", "1", "--parents", "1", "--selection", "seed"],
    # Extra arms (not in the default list): the grid with score-aware parent selection.
    "grid_boltzmann": ["--selection", "boltzmann"],
    "grid_dgm": ["--selection", "dgm"],
    "exploit50": ["--selection", "exploit", "--exploit-share", "0.5"],
    "exploit80": ["--selection", "exploit", "--exploit-share", "0.8"],
}
DEFAULT_ARMS = ["default", "funsearch", "eps", "random"]


def qd_score(db: Path, axes, offset: float) -> tuple[float, int]:
    """QD score and filled cells of all ok programs of a run on one grid."""
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, score, descriptors FROM programs WHERE status = 'ok' ORDER BY id").fetchall()
    con.close()
    grid = GridArchive(solution_dim=(), solution_dtype=np.int64, dims=[d.bins for d in axes],
                       ranges=[(d.low, d.high) for d in axes], qd_score_offset=offset, seed=0)
    for pid, score, desc in rows:
        desc = json.loads(desc or "{}")
        values = np.clip([desc.get(d.name, d.low) for d in axes], [d.low for d in axes], [d.high for d in axes])
        grid.add_single(solution=pid, objective=score, measures=values)
    return float(grid.stats.qd_score), len(grid)


def run_one(arm: str, seed: int, args, out: Path) -> dict:
    from evosearch.engine import SIZE
    from problems.bin_packing.problem import BinPacking

    run_dir = out / f"{arm}-s{seed}"
    if (run_dir / "summary.json").is_file():  # done in an earlier invocation: reuse
        summary = json.loads((run_dir / "summary.json").read_text())
        wall = summary.get("ablation_wall_s")
    else:
        extra = [a.format(reset=max(1, args.samples // 4)) for a in ARMS[arm]]
        cmd = [sys.executable, "-m", "evosearch", "run", "bin_packing", "--sampler", "mutate",
               "--samples", str(args.samples), "--seed", str(seed), "--workers", str(args.workers),
               "--problem-options", args.problem_options, "--out", str(run_dir), "--quiet", *extra]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{arm} seed {seed} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["ablation_wall_s"] = wall
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    axes = (*BinPacking.descriptors, SIZE)
    # Offset: the worst possible training score, one bin per item, so every filled cell adds.
    train_items = (yaml.safe_load(args.problem_options) or {}).get("train_items", 1000)
    qd, cells = qd_score(run_dir / "evosearch.db", axes, offset=-float(train_items))
    return {"arm": arm, "seed": seed, "samples": args.samples, "best_test": summary["best"]["test"],
            "seed_test": summary["seed"]["test"], "best_train": summary["best"]["train"], "qd_score": qd,
            "cells": cells, "archipelago_qd": sum(s["qd_score"] for s in summary["islands"]["final"]),
            "outcomes": summary["outcomes"], "wall_s": wall}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):9.4f} [{min(values):.4f} .. {max(values):.4f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=300, help="sample budget per run (the seed program excluded)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--problem-options", default="{train_instances: 2, train_items: 500}",
                    help="bin packing options (smaller training set: the ablation fits a 2-core machine)")
    ap.add_argument("--out", default="runs/ablation", help="folder of the runs (an existing run is reused)")
    ap.add_argument("--json", default=None, help="write rows and summary here (default: OUT/ablation.json)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:  # seed-major: an interrupted ablation still has paired arms
        for arm in args.arms:
            r = run_one(arm, seed, args, out)
            rows.append(r)
            print(f"{arm:10} seed {seed}: best test {r['best_test']:.4f} (seed {r['seed_test']:.4f})  "
                  f"QD {r['qd_score']:.3f} over {r['cells']} cells  {r['wall_s'] or 0:.0f}s", flush=True)
    print(f"\nbin packing (Weibull), mutate sampler, {args.samples} samples per run, seeds {args.seeds}, "
          f"problem options {args.problem_options}")
    print(f"{'arm':15} {'best held-out score: median [min .. max]':>44} {'held-out gain over the seed':>38}"
          f" {'QD score: median [min .. max]':>42} {'wins vs eps':>12} {'vs random':>10}")
    summary = {}
    by = {arm: {r["seed"]: r for r in rows if r["arm"] == arm} for arm in args.arms}
    for arm in args.arms:
        tests = [r["best_test"] for r in by[arm].values()]
        qds = [r["qd_score"] for r in by[arm].values()]
        gains = [r["best_test"] - r["seed_test"] for r in by[arm].values()]
        wins = {}
        for other in ("eps", "random"):
            paired = [s for s in by[arm] if s in by.get(other, {})]  # wins: strictly better held-out score
            wins[other] = f"{sum(by[arm][s]['best_test'] > by[other][s]['best_test'] for s in paired)}/{len(paired)}"
        summary[arm] = {"best_test_median": statistics.median(tests), "best_test_min": min(tests),
                        "best_test_max": max(tests), "gain_median": statistics.median(gains),
                        "gain_min": min(gains), "gain_max": max(gains), "qd_median": statistics.median(qds), "qd_min": min(qds),
                        "qd_max": max(qds), "wins_vs_eps": wins["eps"], "wins_vs_random": wins["random"]}
        print(f"{arm:15} {spread(tests):>44} {spread(gains):>38} {spread(qds):>42} {wins['eps']:>12}"
              f" {wins['random']:>10}")
    path = Path(args.json) if args.json else out / "ablation.json"
    path.write_text(json.dumps({"benchmark": "search_ablation", "samples": args.samples, "seeds": args.seeds,
                                "problem_options": args.problem_options, "command": " ".join(sys.argv),
                                "rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()

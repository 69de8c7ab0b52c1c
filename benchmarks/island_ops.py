"""Speed of the island operations the engine calls once per sample: Island.add and
Island.select_parents, on a pyribs GridArchive of a few sizes.

    python benchmarks/island_ops.py [--ops 20000] [--json out.json]

Prints a table; with --json also writes the rows as JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from evosearch.problem import Descriptor
from islands import Island

GRIDS = {"1 cell (no descriptors)": (), "10x10": (10, 10), "32x32": (32, 32), "10x10x10": (10, 10, 10)}


def measure(bins: tuple[int, ...], ops: int, k: int, seed: int) -> dict:
    descriptors = [Descriptor(f"d{i}", 0.0, 1.0, b) for i, b in enumerate(bins)]
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=ops).tolist()
    desc = rng.uniform(-0.1, 1.1, size=(ops, len(bins))).tolist()  # some out of range: clipped
    island = Island(descriptors)
    island.add(0, -10.0, [0.5] * len(bins))  # the seed fixes the QD offset
    t0 = time.perf_counter()
    for i in range(ops):
        island.add(i + 1, scores[i], desc[i])
    t_add = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(ops):
        island.select_parents(rng, k)
    t_select = time.perf_counter() - t0
    return {"grid": bins, "cells": island.cells, "elites": len(island), "ops": ops, "k": k,
            "add_per_s": ops / t_add, "add_us": 1e6 * t_add / ops,
            "select_per_s": ops / t_select, "select_us": 1e6 * t_select / ops}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=20000, help="calls of each operation per grid")
    ap.add_argument("-k", type=int, default=2, help="parents per select_parents call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    rows = []
    print(f"{'grid':<24}{'cells':>7}{'elites':>8}{'add/s':>10}{'µs':>7}{'select/s':>11}{'µs':>7}")
    for name, bins in GRIDS.items():
        r = measure(bins, args.ops, args.k, args.seed)
        rows.append({"name": name, **r})
        print(f"{name:<24}{r['cells']:>7}{r['elites']:>8}{r['add_per_s']:>10.0f}{r['add_us']:>7.1f}"
              f"{r['select_per_s']:>11.0f}{r['select_us']:>7.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "island_ops", "python": platform.python_version(),
                       "machine": platform.machine(), "k": args.k, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

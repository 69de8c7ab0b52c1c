"""Speed and memory of the island operations the engine calls once per sample:
Island.add and Island.select_parents (each strategy), on pyribs archives of a few sizes;
10^6 inserts into one island; memory per stored elite.

    python benchmarks/island_ops.py [--ops 20000] [--million 1000000] [--json out.json]

Prints tables; with --json also writes the rows as JSON.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import time
import tracemalloc

import numpy as np

from evosearch.problem import Descriptor
from islands import ClusterIsland, Island

GRIDS = {"1 cell (no descriptors)": (), "10x10": (10, 10), "32x32": (32, 32), "10x10x10": (10, 10, 10)}
STRATEGIES = ("uniform", "boltzmann", "dgm", "best")


def axes(bins: tuple[int, ...]) -> list[Descriptor]:
    # The last axis is named "size" so Boltzmann's within-cluster length preference is exercised.
    return [Descriptor("size" if i == len(bins) - 1 else f"d{i}", 0.0, 1.0, b) for i, b in enumerate(bins)]


def fill(island, ops: int, dims: int, rng: np.random.Generator, increasing: bool = False) -> float:
    """Offer ``ops`` programs; returns seconds. Scores rounded to 2 decimals so clusters share scores."""
    scores = np.round(rng.normal(size=ops), 2)
    if increasing:  # every offer improves its cell: each one reaches pyribs (the worst case)
        scores = np.sort(scores) + np.arange(ops) * 1e-3
    scores = scores.tolist()
    desc = rng.uniform(-0.1, 1.1, size=(ops, dims)).tolist()  # some out of range: clipped
    island.add(0, -10.0, [0.5] * dims)  # the seed fixes the QD offset
    t0 = time.perf_counter()
    for i in range(ops):
        island.add(i + 1, scores[i], desc[i])
    return time.perf_counter() - t0


def measure(bins: tuple[int, ...], ops: int, k: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    island = Island(axes(bins))
    t_add = fill(island, ops, len(bins), rng)
    row = {"grid": bins, "cells": island.cells, "elites": len(island), "ops": ops, "k": k,
           "add_us": 1e6 * t_add / ops}
    for s in STRATEGIES:
        n = max(1, ops // 10)
        t0 = time.perf_counter()
        for _ in range(n):
            island.select_parents(rng, k, s)
        row[f"select_{s}_us"] = 1e6 * (time.perf_counter() - t0) / n
    return row


def million(n: int, seed: int) -> list[dict]:
    """n inserts into one 10x10 island (bin packing's full_bins x size grid): random scores, and
    the worst case where every insert improves its cell."""
    rows = []
    for label, increasing, n_ops in (("random scores", False, n), ("every insert improves", True, n // 10)):
        rng = np.random.default_rng(seed)
        island = Island(axes((10, 10)))
        secs = fill(island, n_ops, 2, rng, increasing)
        rows.append({"case": label, "inserts": n_ops, "seconds": secs, "us_per_insert": 1e6 * secs / n_ops,
                     "elites": len(island), "projected_s_per_million": secs * 1e6 / n_ops})
    return rows


def memory(seed: int) -> list[dict]:
    """Traced Python + numpy memory of a full island, per cell and per stored elite."""
    rows = []
    for name, make, bins in (("grid 100x100", lambda: Island(axes((100, 100))), (100, 100)),
                             ("clusters 256x4", lambda: ClusterIsland(axes((10, 10)), max_clusters=256,
                                                                      cluster_cap=4), (10, 10))):
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        island = make()
        empty = tracemalloc.get_traced_memory()[0] - base
        rng = np.random.default_rng(seed)
        fill(island, 200_000, len(bins), rng)
        island.record_child([e.program_id for e in island.elites()])  # one DGM count per elite
        full = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        rows.append({"island": name, "elites": len(island), "cells": island.cells, "empty_bytes": empty,
                     "full_bytes": full, "bytes_per_elite": full / max(1, len(island)),
                     "bytes_per_elite_added": (full - empty) / max(1, len(island))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=20000, help="add calls per grid (select calls: ops / 10 per strategy)")
    ap.add_argument("--million", type=int, default=1_000_000, help="inserts into one island for the 10^6 test")
    ap.add_argument("-k", type=int, default=2, help="parents per select_parents call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args()
    rows = []
    print(f"{'grid':<24}{'cells':>7}{'elites':>8}{'add µs':>9}" + "".join(f"{s + ' µs':>14}" for s in STRATEGIES))
    for name, bins in GRIDS.items():
        r = measure(bins, args.ops, args.k, args.seed)
        rows.append({"name": name, **r})
        print(f"{name:<24}{r['cells']:>7}{r['elites']:>8}{r['add_us']:>9.1f}"
              + "".join(f"{r[f'select_{s}_us']:>14.1f}" for s in STRATEGIES))
    print(f"\n{'one 10x10 island':<24}{'inserts':>10}{'seconds':>10}{'µs/insert':>11}{'s per 10^6':>12}")
    big = million(args.million, args.seed)
    for r in big:
        print(f"{r['case']:<24}{r['inserts']:>10}{r['seconds']:>10.2f}{r['us_per_insert']:>11.2f}"
              f"{r['projected_s_per_million']:>12.1f}")
    print(f"\n{'memory (tracemalloc)':<24}{'elites':>8}{'cells':>7}{'empty KiB':>11}{'full KiB':>10}{'B/elite':>9}")
    mem = memory(args.seed)
    for r in mem:
        print(f"{r['island']:<24}{r['elites']:>8}{r['cells']:>7}{r['empty_bytes'] / 1024:>11.0f}"
              f"{r['full_bytes'] / 1024:>10.0f}{r['bytes_per_elite']:>9.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "island_ops", "python": platform.python_version(),
                       "machine": platform.machine(), "k": args.k, "rows": rows, "million": big, "memory": mem},
                      f, indent=2)


if __name__ == "__main__":
    main()

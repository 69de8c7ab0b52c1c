"""Functional dedup on a recorded stream of sampled programs: work saved, probe cost, false merges.

    evosearch run bin_packing --sampler mutate --samples 2000 --workers 2 --out runs/stream
    python benchmarks/dedup.py --run runs/stream [--workers 2] [--limit 2000] [--out dedup.json]
    python benchmarks/dedup.py --generate 2000   # no recorded run: a mutate chain from the skeleton

The stream (every sampled program of the run, in sample order, whatever its
outcome) goes through a fresh ``Evaluator`` on real sandbox workers, exactly as
in a run: syntactic hash, probe run, functional hash, full evaluation on a miss.
Then every hit (syntactic or functional) is evaluated again in full, uncached,
and compared with the result the cache gave it: any difference in status,
score, descriptors or metrics is a false merge. Reported:

* the fraction of full evaluations avoided (against evaluating every parsed program);
* the probe's cost relative to a full evaluation, medians per sandboxed run of the
  CPU time it took (worker and candidate: what dedup adds to every candidate, the
  same on a busy machine as on an idle one) and of its wall time, and as in-process
  compute (the problem's ``probe`` against its ``run``, no sandbox);
* false merges and their rate among hits, at the chosen hash precision.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import time
from pathlib import Path

from evaluators.evaluator import Evaluator
from evaluators.hashing import DEFAULT_MANTISSA_BITS
from evaluators.pool import WorkerPool
from evosearch.problem import load_problem


class RecordingPool:
    """A WorkerPool seen through a window that notes the wall time of every sandboxed run."""

    def __init__(self, pool: WorkerPool):
        self.pool, self.times, self.cpu = pool, {}, {}

    @property
    def info(self):
        return self.pool.info

    async def start(self):
        return await self.pool.start()

    async def run(self, code, split, **limits):
        reply = await self.pool.run(code, split, **limits)
        self.times.setdefault(split, []).append(float(reply["eval_s"]))
        self.cpu.setdefault(split, []).append(float(reply["cpu_s"]))
        return reply


def recorded_stream(run_dir: Path, limit: int) -> tuple[str, list[str]]:
    db = sqlite3.connect(f"file:{run_dir / 'evosearch.db'}?mode=ro", uri=True)
    config = json.loads(db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
    codes = [row[0] for row in db.execute("SELECT code FROM programs WHERE code IS NOT NULL ORDER BY id LIMIT ?",
                                          (limit,))]
    return config["problem"], codes


def generated_stream(problem: str, count: int, seed: int) -> list[str]:
    """A stand-in for a run: each sample mutates a random earlier one (no selection)."""
    import random

    from evosearch.extract import extract_functions
    from evosearch.program import evolvable_functions, replace_functions
    from evosearch.samplers.mutate import mutate

    rng = random.Random(seed)
    skeleton = load_problem(problem).skeleton
    codes, names = [skeleton], list(evolvable_functions(skeleton))
    while len(codes) < count:
        parent = rng.choice(codes)
        # mutate() returns the changed functions only: spliced into the parent, as the engine does.
        functions = extract_functions(mutate(parent, seed=rng.randrange(1 << 30)), names, program=parent)
        codes.append(replace_functions(parent, functions))
    return codes


def in_process_ratio(problem_ref: str, codes: list[str], sample: int) -> float:
    """Median over programs of (probe compute) / (full compute), both in this process."""
    problem = load_problem(problem_ref)
    probe_set, train_set = problem.instances("probe"), problem.instances("train")
    ratios = []
    for code in codes[:: max(len(codes) // sample, 1)][:sample]:
        namespace = {}
        try:
            exec(code, namespace)
            start = time.perf_counter()
            for inst in probe_set.values():
                problem.probe(namespace, inst)
            middle = time.perf_counter()
            for inst in train_set.values():
                problem.run(namespace, inst)
            end = time.perf_counter()
        except Exception:
            continue
        ratios.append((middle - start) / (end - middle))
    return statistics.median(ratios)


def same(a, b) -> bool:
    return (a.status, a.score, a.descriptors, a.metrics) == (b.status, b.score, b.descriptors, b.metrics)


async def measure(problem: str, codes: list[str], workers: int, mantissa_bits: int) -> dict:
    async with WorkerPool(problem, workers=workers, mantissa_bits=mantissa_bits) as pool:
        recorder = RecordingPool(pool)
        evaluator = Evaluator(recorder)
        gate = asyncio.Semaphore(workers * 2)

        async def one(i, code):
            async with gate:
                return await evaluator.evaluate(code, key=i)

        start = time.perf_counter()
        results = await asyncio.gather(*(one(i, code) for i, code in enumerate(codes)))
        stream_s = time.perf_counter() - start
        stats = evaluator.stats()
        hits = [i for i, r in enumerate(results) if r.cache_hit]

        async def check(i):
            async with gate:
                full = await evaluator.evaluate_split(codes[i], "train")
                return i, full

        start = time.perf_counter()
        checks = await asyncio.gather(*(check(i) for i in hits))
        check_s = time.perf_counter() - start
        false = [(i, results[i], full) for i, full in checks if not same(results[i], full)]
        layers = pool.info["isolation"]
    parsed = len(codes) - stats["syntax_errors"]
    probe_s, full_s = recorder.times.get("probe", [0.0]), recorder.times.get("train", [float("nan")])
    probe_cpu, full_cpu = recorder.cpu.get("probe", [0.0]), recorder.cpu.get("train", [float("nan")])
    return {
        "problem": problem, "programs": len(codes), "syntax_errors": stats["syntax_errors"],
        "probe_failures": sum(1 for r in results if r.status != "syntax" and not r.cache_hit
                              and r.functional_hash is None and not r.ok),
        "syntactic_hits": stats["syntactic_hits"], "functional_hits": stats["functional_hits"],
        "full_evaluations": stats["full_runs"], "distinct_functions": len(evaluator.entries()),
        "avoided_fraction": 1 - stats["full_runs"] / max(parsed, 1),
        "avoided_by_hits": len(hits) / max(len(hits) + stats["full_runs"], 1),
        "probe_ms_median": 1000 * statistics.median(probe_s), "full_ms_median": 1000 * statistics.median(full_s),
        "probe_cost_sandboxed": statistics.median(probe_s) / statistics.median(full_s),
        "probe_cpu_ms_median": 1000 * statistics.median(probe_cpu), "full_cpu_ms_median": 1000 * statistics.median(full_cpu),
        "probe_cost_sandboxed_cpu": statistics.median(probe_cpu) / statistics.median(full_cpu),
        "hits_rechecked": len(hits), "false_merges": len(false), "false_merge_rate": len(false) / max(len(hits), 1),
        "false_merge_examples": [{"program": i, "cached": [c.status, c.score], "full": [f.status, f.score]}
                                 for i, c, f in false[:5]],
        "mantissa_bits": mantissa_bits, "workers": workers, "stream_s": stream_s, "recheck_s": check_s,
        "isolation": layers, "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="a run directory (its evosearch.db holds the stream)")
    source.add_argument("--generate", type=int, metavar="N", help="generate N programs with the mutate sampler")
    parser.add_argument("--problem", default="bin_packing", help="with --generate (default: bin_packing)")
    parser.add_argument("--limit", type=int, default=2000, help="first N programs of a recorded run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mantissa-bits", type=int, default=DEFAULT_MANTISSA_BITS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="dedup.json")
    args = parser.parse_args()
    if args.run is not None:
        if not (args.run / "evosearch.db").is_file():
            sys.exit(f"dedup.py: error: {args.run} holds no evosearch.db (run `evosearch run ... --out DIR` first)")
        problem, codes = recorded_stream(args.run, args.limit)
    else:
        problem, codes = args.problem, generated_stream(args.problem, args.generate, args.seed)
    row = asyncio.run(measure(problem, codes, args.workers, args.mantissa_bits))
    row["probe_cost_in_process"] = in_process_ratio(problem, codes, sample=60)
    row["source"] = str(args.run) if args.run else f"generated {args.generate}"
    table = [
        ("programs in the stream", f"{row['programs']}"),
        ("syntax errors (no sandbox)", f"{row['syntax_errors']}"),
        ("syntactic hits", f"{row['syntactic_hits']}"),
        ("functional hits", f"{row['functional_hits']}"),
        ("full evaluations run", f"{row['full_evaluations']}"),
        ("full evaluations avoided", f"{100 * row['avoided_fraction']:.1f}%  (target >= 40%)"),
        ("probe / full, sandboxed CPU time", f"{100 * row['probe_cost_sandboxed_cpu']:.1f}%  ({row['probe_cpu_ms_median']:.1f} "
                                             f"ms / {row['full_cpu_ms_median']:.1f} ms median; target <= 5%)"),
        ("probe / full, sandboxed wall time", f"{100 * row['probe_cost_sandboxed']:.1f}%  ({row['probe_ms_median']:.1f} ms / "
                                              f"{row['full_ms_median']:.1f} ms median, load {row['load_average'][0]:.1f})"),
        ("probe / full, in-process compute", f"{100 * row['probe_cost_in_process']:.1f}%"),
        ("hits re-evaluated in full", f"{row['hits_rechecked']}"),
        ("false merges", f"{row['false_merges']}  (rate {row['false_merge_rate']:.4f}; target 0)"),
        ("mantissa bits", f"{row['mantissa_bits']}"),
    ]
    width = max(len(k) for k, _ in table)
    print(f"dedup on {row['source']} ({row['problem']}, {row['workers']} workers)")
    for key, value in table:
        print(f"{key:<{width}}  {value}")
    Path(args.out).write_text(json.dumps(row, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Evaluator throughput: the sandbox against spawning a Python per candidate and against no sandbox.

    python benchmarks/evaluator_throughput.py [--workers 2] [--seconds 24] [--out evaluator_throughput.json]

Two candidates, each scored on bin packing's train split by the same trusted scorer:

* trivial: ``return bins`` on one 1-item instance: the evaluation itself costs
  nothing, so the rate is the sandbox's own overhead;
* Best-Fit on the real train split (5 instances x 1000 items).

Ways to evaluate them, side by side (measured in interleaved rounds, so load on
a shared machine hits every way alike):

* in-process: exec + the problem's ``run`` + scoring in this process, no isolation;
* unsandboxed fork: a warm process (numpy and the problem loaded, as in a worker)
  forks a child per candidate, which runs it and sends JSON back on a pipe, and
  scores it; no limits, no lock-down, no pool;
* sandboxed: ``WorkerPool`` end to end (asyncio -> worker -> forked, locked-down
  child -> trusted scoring), with every layer active here (bubblewrap where it
  works), and once more without bubblewrap;
* spawn per candidate: a fresh ``python`` per candidate that imports numpy and
  the problem, runs the candidate and prints JSON (what FunSearch's, LLM4AD's
  and ShinkaEvolve's evaluators do).

One-at-a-time rates compare per-candidate costs; the pool and spawn are also
measured with ``--workers`` in parallel. Beside each rate: CPU milliseconds per
evaluation (every process involved: driver, worker, candidate, spawned Python),
which a busy shared machine distorts far less than wall-clock rates.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from evaluators.pool import WorkerPool
from evosearch.problem import load_problem

CANDIDATES = {
    "trivial": ("def priority(item, bins):\n    return bins\n", {"train_instances": 1, "train_items": 1}),
    "best_fit": ("import numpy as np\n\ndef priority(item, bins):\n    return -(bins - item)\n", {}),
}
SPAWNED = """import json, sys
import numpy
from evosearch.problem import load_problem
problem = load_problem("bin_packing", options=json.loads(sys.argv[1]))
namespace = {}
exec(sys.stdin.read(), namespace)
print(json.dumps({name: problem.run(namespace, inst) for name, inst in problem.instances("train").items()}))
"""
FORKING = """import gc, json, os, resource, sys, time
import numpy
from evosearch.problem import load_problem
problem = load_problem("bin_packing", options=json.loads(sys.argv[1]))
instances = problem.instances("train")
code = sys.stdin.read()
gc.freeze()

def once():
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            namespace = {}
            exec(code, namespace)
            data = json.dumps({n: problem.run(namespace, i) for n, i in instances.items()}).encode()
            while data:
                data = data[os.write(write_fd, data):]
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 1 << 20):
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    outputs = json.loads(b"".join(chunks))
    per = {name: problem.score(inst, outputs[name]) for name, inst in instances.items()}
    return problem.aggregate(per).score

def cpu():
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

score = once()
start, cpu0 = time.perf_counter(), cpu()
stop, count = start + float(sys.argv[2]), 0
while True:
    once()
    count += 1
    if time.perf_counter() >= stop:
        break
print(json.dumps([count, time.perf_counter() - start, cpu() - cpu0, score]))
"""
REPO = str(Path(__file__).resolve().parent.parent)


class Case:
    """One candidate with the trusted side that scores its raw outputs."""

    def __init__(self, code: str, options: dict):
        self.code, self.options = code, options
        self.problem = load_problem("bin_packing", options=options)
        self.instances = self.problem.instances("train")

    def score(self, outputs: dict) -> float:
        per = {name: self.problem.score(inst, outputs[name]) for name, inst in self.instances.items()}
        return self.problem.aggregate(per).score

    def in_process(self) -> float:
        namespace = {}
        exec(self.code, namespace)
        return self.score({name: self.problem.run(namespace, inst) for name, inst in self.instances.items()})

    def fork(self, seconds: float) -> tuple[int, float, float]:
        """Forks per candidate from a lean warm process (numpy and the problem loaded, like a
        worker, but no sandbox): (calls completed in about ``seconds``, wall s, CPU s)."""
        env = {**os.environ, "PYTHONPATH": REPO, "OPENBLAS_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-c", FORKING, json.dumps(self.options), str(seconds)],
                              input=self.code, capture_output=True, text=True, env=env, check=True)
        count, elapsed, cpu, score = json.loads(done.stdout)
        assert score == self.in_process()
        return count, elapsed, cpu

    def spawn(self) -> float:
        env = {**os.environ, "PYTHONPATH": REPO, "OPENBLAS_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-c", SPAWNED, json.dumps(self.options)], input=self.code,
                              capture_output=True, text=True, env=env, check=True)
        return self.score(json.loads(done.stdout))


def cpu_now() -> float:
    """CPU seconds of this process and its reaped children (spawned Pythons)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn, seconds: float, parallel: int = 1) -> tuple[int, float, float]:
    """Calls of ``fn`` with ``parallel`` callers for about ``seconds``: (count, wall s, CPU s)."""
    stop = time.perf_counter() + seconds
    start, cpu = time.perf_counter(), cpu_now()

    def loop():
        n = 0
        while True:
            fn()
            n += 1
            if time.perf_counter() >= stop:
                return n
    if parallel == 1:
        count = loop()
    else:
        with ThreadPoolExecutor(parallel) as ex:
            count = sum(ex.map(lambda _: loop(), range(parallel)))
    return count, time.perf_counter() - start, cpu_now() - cpu


async def pool_timed(pool: WorkerPool, code: str, seconds: float, parallel: int) -> tuple[int, float, float]:
    """Like ``timed`` for pool jobs; CPU: the driver's plus what each worker reports for its job."""
    stop = time.perf_counter() + seconds
    start, cpu = time.perf_counter(), cpu_now()
    worker_cpu = []

    async def loop():
        n = 0
        while True:
            reply = await pool.run(code, "train")
            assert reply["status"] == "ok", reply
            worker_cpu.append(reply["cpu_s"])
            n += 1
            if time.perf_counter() >= stop:
                return n
    counts = await asyncio.gather(*(loop() for _ in range(parallel)))
    return sum(counts), time.perf_counter() - start, cpu_now() - cpu + sum(worker_cpu)


async def measure(workers: int, seconds: float, rounds: int) -> dict:
    results = {}
    for name, (code, options) in CANDIDATES.items():
        case = Case(code, options)
        expected = case.in_process()
        assert case.spawn() == expected
        pools = {"sandboxed": WorkerPool("bin_packing", options=options, workers=1),
                 "sandboxed, no bubblewrap": WorkerPool("bin_packing", options=options, workers=1, bubblewrap=False),
                 f"sandboxed, {workers} workers": WorkerPool("bin_packing", options=options, workers=workers)}
        for pool in pools.values():
            await pool.start()
            assert (await pool.run(code, "train"))["score"] == expected  # warm: instances built in the worker
        totals = {}

        def add(way, counted):
            old = totals.get(way, (0, 0.0, 0.0))
            totals[way] = tuple(a + b for a, b in zip(old, counted))
        slice_s = seconds / rounds / (4 + len(pools))
        for _ in range(rounds):
            add("in-process", timed(case.in_process, slice_s))
            add("unsandboxed fork", case.fork(slice_s))
            for way, pool in pools.items():
                add(way, await pool_timed(pool, code, slice_s, pool.workers))
            add("spawn per candidate", timed(case.spawn, slice_s))
            add(f"spawn per candidate, {workers} in parallel", timed(case.spawn, slice_s, workers))
        isolation = pools["sandboxed"].info["isolation"]
        for pool in pools.values():
            await pool.close()
        rates = {way: count / elapsed for way, (count, elapsed, _) in totals.items()}
        cpu_ms = {way: 1000 * cpu / count for way, (count, _, cpu) in totals.items()}
        parallel_spawn = f"spawn per candidate, {workers} in parallel"
        results[name] = {
            "rates": rates, "cpu_ms": cpu_ms, "counts": {way: t[0] for way, t in totals.items()},
            "ratios": {
                "sandboxed / spawn per candidate": rates["sandboxed"] / rates["spawn per candidate"],
                f"sandboxed / spawn, {workers} in parallel": rates[f"sandboxed, {workers} workers"] / rates[parallel_spawn],
                "unsandboxed fork / sandboxed": rates["unsandboxed fork"] / rates["sandboxed"],
                "in-process / sandboxed": rates["in-process"] / rates["sandboxed"]},
            "cpu_ratios": {
                "sandboxed / spawn per candidate": cpu_ms["spawn per candidate"] / cpu_ms["sandboxed"],
                f"sandboxed / spawn, {workers} in parallel": cpu_ms[parallel_spawn] / cpu_ms[f"sandboxed, {workers} workers"],
                "unsandboxed fork / sandboxed": cpu_ms["sandboxed"] / cpu_ms["unsandboxed fork"],
                "in-process / sandboxed": cpu_ms["sandboxed"] / cpu_ms["in-process"]},
            "isolation": isolation}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=24.0, help="measuring time per candidate")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="evaluator_throughput.json")
    args = parser.parse_args()
    results = asyncio.run(measure(args.workers, args.seconds, args.rounds))
    first = next(iter(results.values()))
    width = max(map(len, list(first["rates"]) + list(first["ratios"])))
    names = list(results)
    print(f"{'':<{width}}  " + "  ".join(f"{n + ' evals/s':>17}  {'CPU ms/eval':>11}" for n in names))
    for way in first["rates"]:
        print(f"{way:<{width}}  " + "  ".join(f"{r['rates'][way]:17.1f}  {r['cpu_ms'][way]:11.2f}"
                                             for r in results.values()))
    print(f"{'ratios (by rate / by CPU per evaluation)':<{width}}")
    for ratio in first["ratios"]:
        print(f"{ratio:<{width}}  " + "  ".join(f"{r['ratios'][ratio]:16.1f}x  {r['cpu_ratios'][ratio]:10.1f}x"
                                               for r in results.values()))
    print("targets (trivial): sandboxed / spawn >= 30x; unsandboxed fork / sandboxed <= 3x")
    print("sandbox layers: " + ", ".join(k for k, v in first["isolation"].items() if v.startswith("active")))
    results["cpus"] = os.cpu_count()
    results["load_average"] = os.getloadavg()
    print(f"load average {results['load_average'][0]:.1f} on {results['cpus']} CPUs")
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

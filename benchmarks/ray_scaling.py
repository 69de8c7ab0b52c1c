"""Ray backend scaling: throughput against the number of evaluator actors, and the
control-plane cost per candidate.

Evaluations are sleep-bound (``--sleep-ms``, default 50 ms, on one slot per actor,
as a one-worker sandbox pool would be), so the numbers measure Ray's control plane
(dispatch, actor calls, results coming back), not the cores of this machine.

1. dispatch: the driver-side ``RayWorkerPool`` keeps every actor's slot busy with
   sleep jobs; ideal throughput is actors / sleep. Efficiency = measured / ideal;
   overhead per job = (wall x slots - jobs x sleep) / jobs.
2. round trip: one actor, zero sleep, calls one after another: the latency of one
   driver -> actor -> driver call.
3. engine: the whole engine on the Ray backend (mutate sampler actor, island actors,
   sleep-bound evaluator actors, SQLite store in the driver), timed from the 20th
   commit to the last (steady state): candidates/s; and with zero sleep,
   wall / candidates = everything the control plane and the driver spend per candidate.

Run: RAY_AUTH_MODE=disabled python benchmarks/ray_scaling.py [--address HOST:PORT] [--json out.json]
(no --address: a private Ray instance on this machine.)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402

from evaluators.actor import RayWorkerPool  # noqa: E402
from evaluators.evaluator import Evaluator  # noqa: E402
from evosearch.config import make_config  # noqa: E402
from evosearch.engine import Engine  # noqa: E402
from evosearch.problem import load_problem  # noqa: E402
from evosearch.ray_backend import RayBackend, connect  # noqa: E402
from evosearch.store import Store  # noqa: E402

ACTORS = (1, 2, 4, 8)


async def dispatch(n: int, sleep_s: float, jobs_per_actor: int) -> dict:
    pool = RayWorkerPool(n, {"problem_folder": None, "workers": 1}, sleep_s=sleep_s, resources={"sandbox": 1})
    await pool.start()
    await asyncio.gather(*(pool.run("x", "train") for _ in range(2 * n)))  # warm: actors up, code paths hot
    jobs = jobs_per_actor * n
    t = time.perf_counter()
    await asyncio.gather(*(pool.run("x", "train") for _ in range(jobs)))
    wall = time.perf_counter() - t
    await pool.close()
    ideal = n / sleep_s
    return {"actors": n, "jobs": jobs, "wall_s": wall, "jobs_per_s": jobs / wall, "ideal_per_s": ideal,
            "efficiency": jobs / wall / ideal, "overhead_ms_per_job": 1000 * (wall * n - jobs * sleep_s) / jobs}


async def round_trip(calls: int) -> float:
    pool = RayWorkerPool(1, {"problem_folder": None, "workers": 1}, sleep_s=0.0, resources={"sandbox": 1})
    await pool.start()
    for _ in range(20):
        await pool.run("x", "train")
    t = time.perf_counter()
    for _ in range(calls):
        await pool.run("x", "train")
    wall = time.perf_counter() - t
    await pool.close()
    return 1000 * wall / calls


class Clock:
    """Stands in for the progress line: the time of every commit, for steady-state rates
    (actor start-up, seconds on these cores, is not what is measured)."""

    def __init__(self):
        self.times: list[float] = []

    def update(self, row, best, archipelago) -> None:
        self.times.append(time.perf_counter())


async def engine(n: int, sleep_s: float, samples: int, warmup: int = 20) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config({"problem": "bin_packing", "sampler": "mutate", "samples": samples, "islands": 4,
                           "seed": 0, "workers": 1, "concurrency": 2 * n, "probe": False, "backend": "ray",
                           "evaluator_actors": n, "quiet": True, "migration_interval": 50,
                           "problem_options": {"train_items": 200, "test_items": 300}})
        problem = load_problem(cfg.problem, None, cfg.seed, cfg.problem_options)
        store = Store(Path(tmp) / "evosearch.db")
        async with RayBackend(cfg, problem, Path(tmp), sleep_s=sleep_s) as backend:
            evaluator = Evaluator(backend.pool, use_probe=False)
            clock = Clock()
            eng = Engine(cfg, problem, store, backend.sampler, evaluator, clock,
                         make_archipelago=backend.make_archipelago)
            await eng.run()
            # Evaluations (pool runs: duplicates are answered from the cache) of the measured candidates.
            runs = store.count(f"id > {warmup} AND cache_hit IS NULL")
        store.close()
    return rates(n, sleep_s, clock, warmup, runs)


def rates(n: int, sleep_s: float, clock, warmup: int, runs: int) -> dict:
    """Candidates and evaluations per second after the warm-up, from the commit clock."""
    counted = len(clock.times) - 1 - warmup
    wall = clock.times[-1] - clock.times[warmup]
    return {"actors": n, "sleep_ms": 1000 * sleep_s, "candidates": counted, "evaluations": runs, "wall_s": wall,
            "candidates_per_s": counted / wall, "evaluations_per_s": runs / wall,
            "ms_per_candidate": 1000 * wall / counted}


class SleepPool:
    """In-process stand-in for WorkerPool (the local backend's) with the same sleep-bound jobs
    on ``workers`` slots: the baseline that shows what the Ray backend adds per candidate."""

    def __init__(self, workers: int, sleep_s: float):
        self.info: dict = {}
        self.sleep_s = sleep_s
        self._slots = asyncio.Semaphore(workers)

    async def start(self):
        return self

    async def run(self, code, split, timeout_s=None, memory_mb=None) -> dict:
        async with self._slots:
            await asyncio.sleep(self.sleep_s)
        return {"status": "ok", "score": 0.0, "descriptors": {}, "metrics": {}, "eval_s": self.sleep_s}


async def local_engine(n: int, sleep_s: float, samples: int, warmup: int = 20) -> dict:
    from evosearch.samplers import make_sampler
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config({"problem": "bin_packing", "sampler": "mutate", "samples": samples, "islands": 4,
                           "seed": 0, "workers": 1, "concurrency": 2 * n, "probe": False, "quiet": True,
                           "migration_interval": 50, "problem_options": {"train_items": 200, "test_items": 300}})
        problem = load_problem(cfg.problem, None, cfg.seed, cfg.problem_options)
        store = Store(Path(tmp) / "evosearch.db")
        clock = Clock()
        eng = Engine(cfg, problem, store, make_sampler("mutate"), Evaluator(SleepPool(n, sleep_s), use_probe=False),
                     clock)
        await eng.run()
        runs = store.count(f"id > {warmup} AND cache_hit IS NULL")
        store.close()
    return rates(n, sleep_s, clock, warmup, runs)


async def main(args) -> dict:
    sleep_s = args.sleep_ms / 1000
    out = {"sleep_ms": args.sleep_ms, "ray": ray.__version__, "cpus": os.cpu_count(), "dispatch": [], "engine": []}
    for n in ACTORS:
        out["dispatch"].append(await dispatch(n, sleep_s, args.jobs_per_actor))
    out["round_trip_ms"] = await round_trip(200)
    if not args.no_engine:
        for n in ACTORS:
            out["engine"].append(await engine(n, sleep_s, args.samples))
        out["engine_zero_sleep"] = await engine(max(ACTORS), 0.0, args.samples)
        out["local_engine"] = [await local_engine(n, sleep_s, args.samples) for n in ACTORS]
        out["local_engine_zero_sleep"] = await local_engine(max(ACTORS), 0.0, args.samples)
    return out


def table(out: dict) -> str:
    lines = [f"dispatch: sleep-bound jobs of {out['sleep_ms']:g} ms, one slot per evaluator actor "
             f"(ray {out['ray']}, {out['cpus']} cores)",
             f"{'actors':>6} {'jobs':>5} {'jobs/s':>8} {'ideal':>7} {'efficiency':>10} {'overhead ms/job':>15}"]
    for r in out["dispatch"]:
        lines.append(f"{r['actors']:>6} {r['jobs']:>5} {r['jobs_per_s']:>8.1f} {r['ideal_per_s']:>7.1f} "
                     f"{r['efficiency']:>10.3f} {r['overhead_ms_per_job']:>15.2f}")
    lines.append(f"round trip driver -> evaluator actor -> driver: {out['round_trip_ms']:.2f} ms")
    if out["engine"]:
        lines += ["", "engine on the Ray backend (mutate sampler actor, 4 island actors, sleep-bound evaluator actors)",
                  f"{'actors':>6} {'cands':>5} {'evals':>5} {'cands/s':>8} {'evals/s':>8} {'ideal evals/s':>13}"]
        for r in out["engine"]:
            lines.append(f"{r['actors']:>6} {r['candidates']:>5} {r['evaluations']:>5} {r['candidates_per_s']:>8.1f} "
                         f"{r['evaluations_per_s']:>8.1f} {r['actors'] / (r['sleep_ms'] / 1000):>13.1f}")
        lines += ["", "the same engine on the local backend (in-process islands and sampler, sleep-bound slots)",
                  f"{'slots':>6} {'cands':>5} {'evals':>5} {'cands/s':>8} {'evals/s':>8} {'ideal evals/s':>13}"]
        for r in out["local_engine"]:
            lines.append(f"{r['actors']:>6} {r['candidates']:>5} {r['evaluations']:>5} {r['candidates_per_s']:>8.1f} "
                         f"{r['evaluations_per_s']:>8.1f} {r['actors'] / (r['sleep_ms'] / 1000):>13.1f}")
        z, zl = out["engine_zero_sleep"], out["local_engine_zero_sleep"]
        lines.append(f"zero-sleep evaluations, {z['actors']} actors/slots: ray {z['ms_per_candidate']:.2f} ms per "
                     f"candidate, local {zl['ms_per_candidate']:.2f} ms: the Ray backend adds "
                     f"{z['ms_per_candidate'] - zl['ms_per_candidate']:.2f} ms per candidate")
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", help="Ray cluster to join (default: a private instance)")
    p.add_argument("--sleep-ms", type=float, default=50.0)
    p.add_argument("--jobs-per-actor", type=int, default=60)
    p.add_argument("--samples", type=int, default=200, help="engine runs: candidates per run")
    p.add_argument("--no-engine", action="store_true", help="dispatch and round trip only")
    p.add_argument("--json", default="benchmarks/ray_scaling.json")
    args = p.parse_args()
    connect(args.address, resources={"sandbox": float(max(ACTORS))}, quiet=True)
    result = asyncio.run(main(args))
    ray.shutdown()
    print(table(result))
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")

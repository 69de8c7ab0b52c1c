"""Evaluation on Ray: ``EvaluatorActor`` owns a ``WorkerPool`` of warm sandbox workers on
its node; ``RayWorkerPool`` is the driver-side stand-in with WorkerPool's
``run / info / start / close`` interface, spreading jobs over the actors.

Candidate code runs only in the pool's sandbox worker subprocesses, never in the
actor's own process. The actor's process needs no secrets and gets none: the
driver passes API keys only to sampler actors (see evosearch/ray_backend.py).

Fault tolerance: actors restart (``max_restarts``); a job whose actor dies is sent
once more (to the least loaded actor, which may be the restarted one); a second
loss is answered as a "crash" with the reason, like a worker that dies twice.
"""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import psutil
import ray
from ray.exceptions import RayActorError

from evaluators.pool import PoolError, WorkerPool, _failure


DOWN_S = 10.0  # an actor that just failed is picked last for this long (Ray is restarting it)
RESTART_WAIT_S = 120.0


async def wait_alive(actor, timeout_s: float = RESTART_WAIT_S) -> None:
    """Until a restarting actor answers (or the timeout: the call that follows then fails as lost)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(asyncio.wrap_future(actor.ping.remote().future()), timeout=5.0)
            return
        except (RayActorError, asyncio.TimeoutError):
            await asyncio.sleep(0.2)


@ray.remote(num_cpus=0)
class EvaluatorActor:
    """Async actor: jobs interleave, and the pool bounds how many run at once (its workers)."""

    def __init__(self, pool_kwargs: dict[str, Any], sleep_s: float | None = None):
        pool_kwargs = dict(pool_kwargs)
        relative = pool_kwargs.pop("problem_relative", None)
        folder = pool_kwargs.get("problem_folder")
        if folder and Path(folder).is_absolute() and not Path(folder).is_dir() and relative and Path(relative).is_dir():
            # A user's problem folder from a Ray job's working dir: unpacked at another path on this node.
            pool_kwargs["problem_folder"] = str(Path(relative).resolve())
        self.pool = WorkerPool(**pool_kwargs)
        # Benchmarks only (benchmarks/ray_scaling.py): a job is a fixed sleep on one of the pool's
        # slots instead of a sandbox run, so what is measured is the control plane, not these cores.
        self.sleep_s = sleep_s
        self._slots = asyncio.Semaphore(self.pool.workers) if sleep_s is not None else None

    async def start(self) -> dict:
        if self.sleep_s is not None:
            return {}
        await self.pool.start()  # concurrent first jobs of a restarted actor share one start
        return self.pool.info

    async def run(self, code: str, split: str, timeout_s: float | None = None, memory_mb: int | None = None) -> dict:
        if self.sleep_s is not None:
            async with self._slots:
                await asyncio.sleep(self.sleep_s)
            return {**_failure("ok", None, self.sleep_s), "score": 0.0}
        await self.start()
        return await self.pool.run(code, split, timeout_s=timeout_s, memory_mb=memory_mb)

    async def close(self) -> None:
        await self.pool.close()

    def ping(self) -> bool:
        return True

    def facts(self) -> dict:
        """Where this actor runs and what it can see (tests and reports)."""
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(),
                "worker_pids": self.pool.pids, "env": sorted(os.environ),
                "children": len(psutil.Process().children())}  # worker processes started (bwrap or plain)


class RayWorkerPool:
    """WorkerPool's interface over ``n`` EvaluatorActors (least-loaded dispatch)."""

    def __init__(self, n: int, pool_kwargs: dict[str, Any], *, resources: dict[str, float] | None = None,
                 sleep_s: float | None = None, max_restarts: int = -1, actor_name: str | None = None):
        if n < 1:
            raise ValueError(f"need at least one evaluator actor, not {n}")
        pool_kwargs = dict(pool_kwargs)
        folder = pool_kwargs.get("problem_folder")
        if folder and Path(folder).is_dir():  # a user's folder (a built-in or installed name stays a name)
            folder = Path(folder).resolve()
            pool_kwargs["problem_folder"] = str(folder)
            if folder.is_relative_to(Path.cwd()):
                pool_kwargs["problem_relative"] = str(folder.relative_to(Path.cwd()))
        self.pool_kwargs = pool_kwargs
        options = dict(max_restarts=max_restarts, max_task_retries=0, resources=resources or {})
        self.actors = [EvaluatorActor.options(**options, **({"name": f"{actor_name}-{k}"} if actor_name else {}))
                       .remote(pool_kwargs, sleep_s) for k in range(n)]
        self._load = [0] * n
        self._down_until = [0.0] * n
        self._next = 0
        self.info: dict[str, Any] = {}
        self.actor_failures = 0  # calls that found their actor dead (each retried once)
        self._started = False
        self._closed = False

    async def start(self) -> "RayWorkerPool":
        if self._closed:
            raise PoolError("the evaluation pool is closed")
        if not self._started:
            infos = await asyncio.gather(*(a.start.remote() for a in self.actors))
            self.info = infos[0]
            self._started = True
        return self

    def _pick(self, avoid: int | None = None) -> int:
        n = len(self.actors)
        now = time.monotonic()
        # Least loaded, actors that just failed last (they are restarting), round robin among equals.
        i = min(range(n), key=lambda k: (k == avoid, self._down_until[k] > now, self._load[k], (k - self._next) % n))
        self._next = (i + 1) % n
        return i

    async def run(self, code: str, split: str, timeout_s: float | None = None, memory_mb: int | None = None) -> dict:
        if not self._started:
            await self.start()
        if self._closed:
            raise PoolError("the evaluation pool is closed")
        failed = None
        for attempt in (1, 2):
            i = self._pick(avoid=failed)
            if i == failed:  # the only actor: the retry waits for its restart rather than hitting it mid-restart
                await wait_alive(self.actors[i])
            self._load[i] += 1
            try:
                return await self.actors[i].run.remote(code, split, timeout_s, memory_mb)
            except RayActorError as e:
                self.actor_failures += 1
                self._down_until[i] = time.monotonic() + DOWN_S
                failed = i
                if attempt == 2:
                    return _failure("crash", f"evaluator actor lost twice: {type(e).__name__}")
            finally:
                self._load[i] -= 1
        raise AssertionError("unreachable")

    async def facts(self) -> list[dict]:
        """Each actor's facts, once it answers (one killed a moment ago is restarting)."""
        await asyncio.gather(*(wait_alive(a) for a in self.actors))
        return await asyncio.gather(*(a.facts.remote() for a in self.actors))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(a.close.remote() for a in self.actors), return_exceptions=True)
        for a in self.actors:
            ray.kill(a, no_restart=True)

    async def __aenter__(self) -> "RayWorkerPool":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

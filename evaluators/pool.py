"""A pool of warm evaluation workers, driven from asyncio.

Each worker is a separate Python process (``python -m evaluators.worker``,
started with ``subprocess.Popen``, never forked from the driver) that has
already imported numpy and loaded the problem. Concurrency is the number of
workers: a job waits for an idle worker, and the blocking pipe I/O runs in a
dedicated thread pool. A worker that dies is replaced; one that served
``recycle_every`` jobs is restarted, so leaks in problem code stay bounded.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is a declared dependency
    psutil = None

from evaluators.hashing import DEFAULT_MANTISSA_BITS

REPLY_LIMIT = 4 << 20  # worker replies are small (score, metrics); a bigger one means a broken worker
START_TIMEOUT_S = 120.0
GUARD_S = 30.0  # on top of a job's timeout: time the worker gets to kill, clean up and score
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class PoolError(RuntimeError):
    """The pool cannot serve jobs (a worker cannot start, or the pool is closed)."""


class WorkerDied(Exception):
    """The worker process went away or stopped speaking the protocol."""


def _failure(status: str, reason: str, eval_s: float = 0.0) -> dict:
    return {"status": status, "reason": reason, "score": None, "descriptors": {}, "metrics": {},
            "functional_hash": None, "eval_s": eval_s}


class _WorkerProcess:
    """One ``evaluators.worker`` process and its line protocol (blocking calls)."""

    def __init__(self, config: dict, start_timeout_s: float):
        env = dict(os.environ)
        # One BLAS thread per worker: workers are the unit of parallelism, and forking a
        # process that owns BLAS threads is unsafe.
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")])))
        self.scratch_root = tempfile.mkdtemp(prefix="evosearch-worker-")
        config = {**config, "scratch_root": self.scratch_root}
        self.proc = subprocess.Popen([sys.executable, "-m", "evaluators.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, bufsize=0)
        self.jobs = 0
        self._buffer = b""
        try:
            self._send(config)
            self.info = self._receive(start_timeout_s)
        except WorkerDied as e:
            self.kill()
            raise PoolError(f"evaluation worker failed to start: {e}") from None
        if not self.info.get("ready"):
            self.kill()
            raise PoolError(f"evaluation worker cannot load the problem: {self.info.get('error')}")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def _send(self, message: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        except (BrokenPipeError, OSError) as e:
            raise WorkerDied(f"cannot write to the worker ({type(e).__name__})") from None

    def _receive(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerDied(f"no answer within {timeout_s:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    code = self.proc.poll()
                    raise WorkerDied("the worker exited" + (f" with code {code}" if code is not None else ""))
                self._buffer += chunk
                if len(self._buffer) > REPLY_LIMIT:
                    raise WorkerDied("oversized reply")
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            raise WorkerDied("unreadable reply") from None
        if not isinstance(message, dict):
            raise WorkerDied("unreadable reply")
        return message

    def request(self, job: dict, timeout_s: float) -> dict:
        self._send(job)
        self.jobs += 1
        return self._receive(timeout_s)

    def kill(self, grace_s: float = 1.0) -> None:
        """Stop the worker and everything it started. SIGTERM first: the worker then
        kills its running candidate's process tree; SIGKILL (plus a sweep of the
        descendants, which the worker could not do itself) if it does not comply."""
        if self.proc.poll() is None:
            descendants = []
            if psutil is not None:
                try:
                    descendants = psutil.Process(self.proc.pid).children(recursive=True)
                except psutil.Error:
                    pass
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for p in descendants:
                try:
                    p.kill()
                except psutil.Error:
                    pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        shutil.rmtree(self.scratch_root, ignore_errors=True)  # what a killed job left behind


def _kill_all(slots: list) -> None:
    for i, worker in enumerate(slots):
        if worker is not None:
            worker.kill(grace_s=0.5)
            slots[i] = None


_live_pools: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()


@atexit.register
def _kill_leftover_workers() -> None:
    for pool in list(_live_pools):
        _kill_all(pool._slots)


class WorkerPool:
    """Warm sandbox workers for one problem.

    ``await pool.run(code, split)`` returns the worker's reply: a dict with
    ``status``, ``reason``, ``score``, ``descriptors``, ``metrics``,
    ``functional_hash`` (split "probe" only) and ``eval_s``.
    """

    def __init__(self, problem_folder: str | Path, data_dir: str | Path | None = None, seed: int = 0,
                 options: dict[str, Any] | None = None, workers: int = 2, recycle_every: int = 200,
                 mantissa_bits: int = DEFAULT_MANTISSA_BITS, isolate_network: bool = True,
                 drop_privileges: bool = True, start_timeout_s: float = START_TIMEOUT_S):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if recycle_every < 1:
            raise ValueError(f"recycle_every must be at least 1, not {recycle_every}")
        self.config = {"problem_folder": str(problem_folder), "data_dir": str(data_dir) if data_dir else None,
                       "seed": seed, "options": options or {}, "mantissa_bits": mantissa_bits,
                       "isolate_network": isolate_network, "drop_privileges": drop_privileges}
        self.workers = workers
        self.recycle_every = recycle_every
        self.start_timeout_s = start_timeout_s
        self.info: dict[str, Any] = {}  # the first worker's ready message: problem, timeout_s, memory_mb, isolation
        self.restarts = 0
        self._slots: list[_WorkerProcess | None] = [None] * workers
        self._idle: asyncio.Queue[int] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> "WorkerPool":
        """Start every worker; raises PoolError (one line) if the problem cannot be loaded."""
        if self._closed:
            raise PoolError("the evaluation pool is closed")
        if self._started:
            return self
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="evaluator-pool")
        self._idle = asyncio.Queue()
        _live_pools.add(self)
        weakref.finalize(self, _kill_all, self._slots)
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(self._executor, self._spawn, i)
                                         for i in range(self.workers)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close()
            raise errors[0]
        self.info = self._slots[0].info
        for i in range(self.workers):
            self._idle.put_nowait(i)
        self._started = True
        return self

    def _spawn(self, slot: int) -> _WorkerProcess:
        worker = _WorkerProcess(self.config, self.start_timeout_s)
        with self._lock:
            if self._closed:  # close() ran while this one was starting
                worker.kill()
                raise PoolError("the evaluation pool is closed")
            self._slots[slot] = worker
        return worker

    async def close(self) -> None:
        """Kill every worker (and the candidates they run). Idempotent."""
        with self._lock:
            self._closed = True
        if self._executor is not None:
            loop = asyncio.get_running_loop()
            # Not in the pool's executor: its threads may be blocked on the workers being killed.
            await loop.run_in_executor(None, _kill_all, self._slots)
            self._executor.shutdown(wait=False)
        else:
            _kill_all(self._slots)
        _live_pools.discard(self)

    async def __aenter__(self) -> "WorkerPool":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and `doctor`-style reports)."""
        return [w.proc.pid for w in self._slots if w is not None and w.alive]

    # ------------------------------------------------------------------ jobs

    async def run(self, code: str, split: str, timeout_s: float | None = None,
                  memory_mb: int | None = None) -> dict:
        """Evaluate ``code`` on ``split`` ("probe", "train" or "test") in a sandbox.
        Candidate failures come back as a status, never as an exception."""
        if split not in ("probe", "train", "test"):
            raise ValueError(f"split must be 'probe', 'train' or 'test', not {split!r}")
        if not self._started:
            await self.start()
        if self._closed:
            raise PoolError("the evaluation pool is closed")
        timeout = float(timeout_s or self.info.get("timeout_s") or 10.0)
        job = {"code": code, "split": split, "timeout_s": timeout, "memory_mb": memory_mb}
        loop = asyncio.get_running_loop()
        slot = await self._idle.get()
        try:
            # A worker dead before the job (killed between jobs) or during it is replaced and the
            # job retried once; a candidate that kills its worker twice is answered "crash".
            for attempt in (1, 2):
                worker = self._slots[slot]
                if worker is None or not worker.alive:
                    if worker is not None:
                        self.restarts += 1
                        await loop.run_in_executor(self._executor, worker.kill)
                    worker = await loop.run_in_executor(self._executor, self._spawn, slot)
                try:
                    reply = await loop.run_in_executor(self._executor, worker.request, job, timeout + GUARD_S)
                except asyncio.CancelledError:
                    # The thread still talks to this worker: discard it rather than reuse it mid-job.
                    self._slots[slot] = None
                    worker.kill(grace_s=0.0)
                    raise
                except WorkerDied as e:
                    if self._closed:
                        raise PoolError("the evaluation pool is closed") from None
                    await loop.run_in_executor(self._executor, worker.kill)
                    self._slots[slot] = None
                    self.restarts += 1
                    if attempt == 2:
                        return _failure("crash", f"evaluation worker died twice: {e}")
                    continue
                if worker.jobs >= self.recycle_every:
                    await loop.run_in_executor(self._executor, worker.kill)
                    self._slots[slot] = None  # the next job on this slot starts a fresh worker
                return reply
        finally:
            self._idle.put_nowait(slot)
        raise AssertionError("unreachable")

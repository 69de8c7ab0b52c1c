"""A pool of warm evaluation workers, driven from asyncio.

Each worker is a separate Python process (``python -m evaluators.worker``,
started with ``subprocess.Popen`` and a clean environment, never forked from the
driver) that has already imported numpy and loaded the problem; where bubblewrap
works, the worker runs inside it (see :mod:`evaluators.bubblewrap`), and where the kernel
offers Landlock and seccomp every candidate child is confined by them too (see
:mod:`evaluators.confine`), bubblewrap or not. With neither, the pool refuses to start
unless ``unsafe_no_sandbox`` says the user accepts that candidates run with their powers. Concurrency
is the number of workers: a job waits for an idle worker, and the blocking pipe
I/O runs in a dedicated thread pool. A worker that dies is replaced; one that
served ``recycle_every`` jobs is restarted, so leaks in problem code stay bounded.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import os
import re
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

import psutil

from evaluators import bubblewrap, landlock, sandbox

REPLY_LIMIT = 4 << 20  # worker replies are small (score, metrics); a bigger one means a broken worker
START_TIMEOUT_S = 120.0
GUARD_S = 30.0  # on top of a job's timeout: time the worker gets to kill, clean up and score
SCRATCH_MB = 128  # bubblewrap: size of the private /tmp that holds every job's scratch directory
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# The only variables a worker inherits: no API keys or tokens reach it, nor its candidates.
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "LD_LIBRARY_PATH")
SCRATCH_PREFIX = "evosearch-worker-"  # + the owning process's pid + "-": stale ones are found by that pid
NO_SANDBOX = ("no sandbox on this machine (no usable bubblewrap, no Landlock): candidates would run with your "
              "user's full powers over files, network and processes; install bubblewrap, or pass "
              "--unsafe-no-sandbox to run them anyway")


class PoolError(RuntimeError):
    """The pool cannot serve jobs (a worker cannot start, or the pool is closed)."""


class WorkerDied(Exception):
    """The worker process went away or stopped speaking the protocol."""


def _failure(status: str, reason: str, eval_s: float = 0.0) -> dict:
    return {"status": status, "reason": reason, "score": None, "descriptors": {}, "metrics": {},
            "functional_hash": None, "eval_s": eval_s, "output": ""}


def _worker_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    # One BLAS thread per worker: workers are the unit of parallelism, and forking a
    # process that owns BLAS threads is unsafe.
    # A fixed hash seed: a candidate iterating over a set of strings gives the same
    # answer every run, so functional hashes and scores do not depend on the process.
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")])))
    return env


def _needed_paths(problem_folder: str | None, data_dir: str | None) -> list[str]:
    """What a worker reads besides Python itself: the engine's packages, the problem, its data."""
    import evosearch.problem

    paths = [Path(__file__).resolve().parent, Path(evosearch.problem.__file__).resolve().parent,
             evosearch.problem.BUILTIN_DIR]
    if problem_folder:
        paths.append(evosearch.problem.resolve_folder(problem_folder))
    if data_dir:
        paths.append(Path(data_dir))
    return [str(p) for p in paths]


def clean_stale_scratch(folder: str | None = None) -> list[str]:
    """Remove scratch folders of killed runs: ``evosearch-worker-<pid>-*`` of this user whose
    process <pid> is gone (a live owner's folders, and anything else, are left alone)."""
    folder = folder or tempfile.gettempdir()
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = re.fullmatch(re.escape(SCRATCH_PREFIX) + r"(\d+)-\w+", entry.name)
        try:
            if not match or not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != os.geteuid():
                continue
        except OSError:
            continue
        if not psutil.pid_exists(int(match.group(1))):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


class _WorkerProcess:
    """One ``evaluators.worker`` process (inside bwrap when the pool uses it) and its
    line protocol (blocking calls)."""

    def __init__(self, config: dict, start_timeout_s: float, bwrap_paths: list[str] | None,
                 hidden: list[str] = (), bwrap: str | None = None, user: int | None = None):
        env = _worker_env()
        argv = [sys.executable, "-P", "-m", "evaluators.worker"]  # -P: no cwd on sys.path
        if bwrap_paths is not None:
            self.scratch_root = None
            env["HOME"] = bubblewrap.SCRATCH
            config = {**config, "scratch_root": bubblewrap.JOBS}
            argv = bubblewrap.command(argv, env, bwrap_paths, config["scratch_mb"], hidden, bwrap)
        else:
            argv.append("--reaper")  # no PID namespace: a reaper process kills what the worker leaves when it dies
            self.scratch_root = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")
            if user is not None:
                os.chown(self.scratch_root, user, user)
            env["HOME"] = self.scratch_root
            config = {**config, "scratch_root": self.scratch_root}
        # A session of its own: a Ctrl-C at the driver's terminal is the driver's to handle (it closes
        # the pool), not a signal that kills workers mid-job; the driver's death still stops them (PDEATHSIG).
        as_user = {} if user is None else {"user": user, "group": user, "extra_groups": []}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0,
                                     cwd=self.scratch_root or "/", start_new_session=True, **as_user)
        self.uid = None
        if config.get("drop_privileges") and os.geteuid() == 0 and user is None:
            # Unique among live workers (the pid is): candidates of two workers never share a uid,
            # so they cannot signal each other, and "kill every process of this uid" is exact.
            self.uid = config["uid"] = sandbox.CANDIDATE_UID_BASE + self.proc.pid
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
        self.pid = self._worker_pid()
        if not self.info.get("isolation", {}).get("privileges", "").startswith("active"):
            self.uid = None

    def _worker_pid(self) -> int:
        """Host pid of the worker itself (a child of its reaper, or under bwrap of the bwrap process)."""
        if self.scratch_root is not None:
            return int(self.info.get("pid") or self.proc.pid)
        try:
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                if p.name() != "bwrap":
                    return p.pid
        except psutil.Error:
            pass
        return self.proc.pid

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
            try:
                descendants = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                descendants = []
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
            psutil.wait_procs(descendants, timeout=5)  # not our children: wait until they are gone
        if self.uid is not None:  # a worker killed mid-job orphans its candidate's processes: find them by uid
            _kill_uid_processes(self.uid)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if self.scratch_root is not None:  # (under bubblewrap, scratch is a tmpfs that died with the worker)
            shutil.rmtree(self.scratch_root, ignore_errors=True)  # what a killed job left behind


def _kill_uid_processes(uid: int, rounds: int = 10) -> None:
    for _ in range(rounds):
        left = [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid]
        if not left:
            return
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=1)


def _kill_all(*slot_lists: list) -> None:
    for slots in slot_lists:
        for i, worker in enumerate(slots):
            if worker is not None:
                worker.kill(grace_s=0.5)
                slots[i] = None


_live_pools: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()


@atexit.register
def _kill_leftover_workers() -> None:
    for pool in list(_live_pools):
        _kill_all(pool._slots, pool._spares)


class WorkerPool:
    """Warm sandbox workers for one problem.

    ``await pool.run(code, split)`` returns the worker's reply: a dict with
    ``status``, ``reason``, ``score``, ``descriptors``, ``metrics``,
    ``functional_hash`` (split "probe" only), ``eval_s`` and ``output`` (what the
    candidate printed, capped; shown, never believed).

    ``bubblewrap``: None uses it where it works, True requires it (PoolError
    naming why not), False never uses it; ``hide``: paths candidates must not see
    even where they lie inside a folder the worker reads (the run directory, when
    it sits inside the problem folder). ``drop_privileges`` (root only) runs
    every candidate under a uid of its own; ``isolate_network`` gives each
    worker an empty network namespace even without bubblewrap (root only).
    ``bubblewrap`` may also be the path of a bwrap binary to use. ``kernel``: Landlock
    and seccomp in every candidate child, None where the kernel offers them, True required,
    False never. ``unsafe_no_sandbox``: start even where neither bubblewrap nor Landlock
    confines candidates (otherwise PoolError, one line). ``user`` (root only): run the
    workers under this uid (and gid), as an unprivileged user's install would.
    ``pool.info["isolation"]`` says which layers are active and why any is missing.
    """

    def __init__(self, problem_folder: str | Path, data_dir: str | Path | None = None, seed: int = 0,
                 options: dict[str, Any] | None = None, workers: int = 2, recycle_every: int = 200,
                 mantissa_bits: int | None = None, isolate_network: bool = True, drop_privileges: bool = True,
                 bubblewrap: bool | str | None = None, scratch_mb: int = SCRATCH_MB, hide: list[str | Path] = (),
                 start_timeout_s: float = START_TIMEOUT_S, kernel: bool | None = None,
                 unsafe_no_sandbox: bool = False, user: int | None = None):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        if recycle_every < 1:
            raise ValueError(f"recycle_every must be at least 1, not {recycle_every}")
        if scratch_mb < 1:
            raise ValueError(f"scratch_mb must be at least 1, not {scratch_mb}")
        self.config = {"problem_folder": str(problem_folder) if problem_folder else None,
                       "data_dir": str(Path(data_dir).resolve()) if data_dir else None,  # as bound in the sandbox
                       "seed": seed, "options": options or {},
                       "mantissa_bits": mantissa_bits, "isolate_network": isolate_network,
                       "drop_privileges": drop_privileges, "scratch_mb": scratch_mb, "kernel": kernel}
        self.bubblewrap = bubblewrap
        self._bwrap = bubblewrap if isinstance(bubblewrap, str) else None
        self.unsafe_no_sandbox = unsafe_no_sandbox
        self.user = user
        self.hide = [str(p) for p in hide]
        self.workers = workers
        self.recycle_every = recycle_every
        self.start_timeout_s = start_timeout_s
        self.info: dict[str, Any] = {}  # the first worker's ready message: problem, timeout_s, isolation, cascade...
        self.restarts = 0
        self._bwrap_paths: list[str] | None = None
        self._slots: list[_WorkerProcess | None] = [None] * workers
        # A worker's successor starts while it serves its last jobs, so recycling costs no job a wait.
        self._spares: list[_WorkerProcess | None] = [None] * workers
        self._spare_tasks: list[asyncio.Future | None] = [None] * workers
        self._background: set[asyncio.Future] = set()
        self._idle: asyncio.Queue[int] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._started = False
        self._starting: asyncio.Future | None = None

    # ------------------------------------------------------------------ lifecycle

    def _choose_sandbox(self) -> None:
        clean_stale_scratch()
        why = "disabled" if self.bubblewrap is False else bubblewrap.unusable_reason(self._bwrap)
        try:
            needed = _needed_paths(self.config["problem_folder"], self.config["data_dir"])
        except Exception:  # an unknown problem: the worker names it in one line
            needed = _needed_paths(None, None)
        readonly = bubblewrap.readonly_paths(needed, private=[os.getcwd(), _PACKAGE_ROOT])
        # What candidate children may read under Landlock: what bwrap would show them (the same paths).
        self.config["allow_read"] = landlock.excluding(
            [*bubblewrap.SYSTEM_DIRS, *bubblewrap.ETC_FILES, *readonly], self.hide)
        if why is None:
            self.config.update(sandbox="bubblewrap", bubblewrap=bubblewrap.version(self._bwrap))
            self._bwrap_paths = readonly
        elif self.bubblewrap:
            raise PoolError(f"bubblewrap required but unusable: {why}")
        else:
            self.config.update(sandbox="plain", bubblewrap=why)

    def _check_confined(self, info: dict) -> None:
        """Refuse to run candidates nothing confines, unless the user accepted the risk."""
        layers = info.get("isolation", {})
        if not layers.get("processes", "").startswith("active"):
            sandbox.undumpable()  # candidates could read this process's /proc: not its environment, at least
        if self.unsafe_no_sandbox or any(layers.get(name, "").startswith("active")
                                         for name in ("bubblewrap", "landlock")):
            return
        raise PoolError(NO_SANDBOX)

    def start_blocking(self) -> "WorkerPool":
        """Start one worker in this thread (no event loop), for reports such as `evosearch doctor`."""
        self._choose_sandbox()
        self._slots[0] = self._spawn_process()
        self.info = self._slots[0].info
        try:
            self._check_confined(self.info)
        except PoolError:
            self.close_blocking()
            raise
        return self

    async def start(self) -> "WorkerPool":
        """Start every worker; raises PoolError (one line) if the problem cannot be loaded."""
        if self._closed:
            raise PoolError("the evaluation pool is closed")
        # Concurrent first jobs (a restarted Ray actor gets several at once) must share one start.
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)
        return self

    async def _start(self) -> None:
        self._choose_sandbox()
        # Threads: one per worker for its job, one per worker for starting its successor or retiring it.
        self._executor = ThreadPoolExecutor(max_workers=2 * self.workers, thread_name_prefix="evaluator-pool")
        self._idle = asyncio.Queue()
        _live_pools.add(self)
        weakref.finalize(self, _kill_all, self._slots, self._spares)
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(self._executor, self._spawn, i)
                                         for i in range(self.workers)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            try:
                self._check_confined(self._slots[0].info)
            except PoolError as e:
                errors = [e]
        if errors:
            await self.close()
            raise errors[0]
        self.info = self._slots[0].info
        for i in range(self.workers):
            self._idle.put_nowait(i)
        self._started = True

    def _spawn_process(self) -> _WorkerProcess:
        return _WorkerProcess(dict(self.config), self.start_timeout_s, self._bwrap_paths, self.hide, self._bwrap,
                              self.user)

    def _spawn_spare(self, slot: int) -> None:
        try:
            worker = self._spawn_process()
        except PoolError:
            return  # the job that needs a worker on this slot starts one itself, and reports why it cannot
        with self._lock:
            if self._closed or self._spares[slot] is not None:
                worker.kill()
                return
            self._spares[slot] = worker

    async def _replace(self, slot: int) -> _WorkerProcess:
        """A live worker for ``slot``: its successor if one was started, else a new one."""
        loop = asyncio.get_running_loop()
        task, self._spare_tasks[slot] = self._spare_tasks[slot], None
        if task is not None:
            await task
            with self._lock:
                spare, self._spares[slot] = self._spares[slot], None
            if spare is not None and spare.alive and not self._closed:
                self._slots[slot] = spare
                return spare
            if spare is not None:
                await loop.run_in_executor(self._executor, spare.kill)
        return await loop.run_in_executor(self._executor, self._spawn, slot)

    def _in_background(self, future: asyncio.Future) -> None:
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    def _spawn(self, slot: int) -> _WorkerProcess:
        worker = self._spawn_process()
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
            await loop.run_in_executor(None, _kill_all, self._slots, self._spares)
            await asyncio.gather(*self._background, *filter(None, self._spare_tasks), return_exceptions=True)
            await loop.run_in_executor(None, _kill_all, self._spares)  # successors that finished starting meanwhile
            self._executor.shutdown(wait=False)
        else:
            _kill_all(self._slots, self._spares)
        _live_pools.discard(self)

    def close_blocking(self) -> None:
        self._closed = True
        _kill_all(self._slots, self._spares)

    async def __aenter__(self) -> "WorkerPool":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def pids(self) -> list[int]:
        """Host process ids of the live workers themselves (for tests and reports)."""
        return [w.pid for w in self._slots if w is not None and w.alive]

    @property
    def candidate_uids(self) -> list[int]:
        """The uids the live workers run candidates under (empty without privilege dropping)."""
        return [w.uid for w in self._slots if w is not None and w.alive and w.uid is not None]

    # ------------------------------------------------------------------ jobs

    async def run(self, code: str, split: str, timeout_s: float | None = None,
                  memory_mb: int | None = None) -> dict:
        """Evaluate ``code`` on ``split`` ("probe", "train", "test", a cascade stage's split or the problem's
        "valid") in a sandbox. Candidate failures come back as a status, never as an exception."""
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a split name, not {split!r}")
        if not self._started:
            await self.start()
        if self._closed:
            raise PoolError("the evaluation pool is closed")
        allowed = set(self.info["splits"])  # the worker's: what its problem can evaluate
        if split not in allowed:
            raise ValueError(f"split must be one of {sorted(allowed)}, not {split!r}")
        timeout = float(timeout_s or (self.info.get("split_timeouts") or {}).get(split)  # the problem's, per split
                        or self.info.get("timeout_s") or 10.0)
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
                    worker = await self._replace(slot)
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
                if worker.jobs >= self.recycle_every - max(1, self.recycle_every // 10) \
                        and self._spare_tasks[slot] is None and not self._closed:
                    self._spare_tasks[slot] = loop.run_in_executor(self._executor, self._spawn_spare, slot)
                if worker.jobs >= self.recycle_every:
                    self._slots[slot] = None  # the next job on this slot takes the successor
                    self._in_background(loop.run_in_executor(self._executor, worker.kill))
                return reply
        finally:
            self._idle.put_nowait(slot)
        raise AssertionError("unreachable")


def isolation_layers(**pool_options) -> dict[str, str]:
    """Which isolation layers a candidate gets on this machine: each "active: how" or
    "missing: why". Observed by starting one real worker the way a pool does (about a
    second), so the report cannot drift from what runs. ``pool_options`` as for WorkerPool."""
    pool = WorkerPool(None, workers=1, **{"unsafe_no_sandbox": True, **pool_options})  # runs no candidate
    try:
        pool.start_blocking()
        return dict(pool.info["isolation"])
    finally:
        pool.close_blocking()

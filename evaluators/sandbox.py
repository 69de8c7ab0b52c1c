"""One candidate run in a forked, OS-limited child process (Linux).

The evaluation worker (trusted) forks a child per job. The child locks itself
down (own session, rlimits, private scratch dir as cwd, clean environment, no
inherited descriptors, stdout/stderr into a capped pipe and, where the worker
may, the uid of a dedicated unprivileged user), executes the candidate and
sends the problem's raw outputs back as JSON on a pipe. The worker enforces the
deadline, kills the child's whole process tree and parses the bytes with size
and value limits. Nothing from the child is unpickled or believed beyond plain
JSON data; the score is computed from that data by trusted code.

Layers that cost a few milliseconds per process (network namespace, bubblewrap's
filesystem view and PID namespace) are set up once per worker instead (see
:mod:`evaluators.worker` and :mod:`evaluators.bubblewrap`): every child inherits them.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import resource
import select
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import psutil

MAX_RESULT_BYTES = 64 << 20  # bigger results are "invalid", never an OOM of the worker
OUTPUT_BYTES = 16 << 10  # what is kept of the candidate's stdout/stderr (the rest is read and dropped)
FILE_SIZE_LIMIT = 16 << 20  # any one file the candidate writes
OPEN_FILES_LIMIT = 64
PROCESS_LIMIT = 64  # per uid; the uid is dedicated to one worker, and root would ignore the limit
RESULT_FD = 3  # the child's descriptors: 0 /dev/null, 1 and 2 the output pipe, 3 the result pipe
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
CANDIDATE_UID_BASE = 1_999_900_000  # worker slot k runs candidates as uid/gid BASE + k: no account owns these

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int) -> bool:
    return _libc.prctl(option, arg, 0, 0, 0) == 0


def become_subreaper() -> bool:
    """Orphaned descendants (e.g. a grandchild that called setsid) get re-parented
    to this process instead of init, so it can find, kill and reap them."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Receive ``sig`` when the parent process dies."""
    return _prctl(PR_SET_PDEATHSIG, int(sig))


def undumpable() -> bool:
    """Make this process's /proc/<pid>/environ, mem and fds readable by root only, and refuse
    ptrace from its own uid: for a driver holding API keys whose candidates nothing else
    keeps from other processes (exec resets it, so the workers it starts are unaffected)."""
    return _prctl(PR_SET_DUMPABLE, 0)


def unshare_network() -> None:
    """Move this process into a new, empty network namespace (loopback only, down)."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


@dataclass
class Limits:
    timeout_s: float
    memory_mb: int
    uid: int | None = None  # run the candidate as this uid (and gid); None: keep the worker's
    output_bytes: int = OUTPUT_BYTES
    confine: Any = None  # prepared kernel layers (evaluators.confine.KernelLayers): applied last

    @property
    def cpu_s(self) -> int:
        return math.ceil(self.timeout_s) + 1


@dataclass
class Outcome:
    """What the trusted side learned from one child: raw JSON outputs or a failure."""

    status: str  # "ok" | "syntax" | "timeout" | "memory" | "crash" | "invalid"
    reason: str | None = None
    outputs: dict[str, Any] | None = None
    wall_s: float = 0.0
    output: str = ""  # the first ``output_bytes`` of stdout/stderr: shown, never believed
    output_dropped: int = 0  # bytes of stdout/stderr read and thrown away


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


# ----------------------------------------------------------------------------- child side

CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
             "MKL_NUM_THREADS": "1"}


def _lock_down(limits: Limits, scratch: str, output_fd: int, result_fd: int) -> None:
    os.setsid()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGCHLD):  # not the worker's handlers
        signal.signal(sig, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.dup2(result_fd, RESULT_FD)
    kept = RESULT_FD + 1
    if limits.confine is not None:  # the prepared Landlock ruleset's descriptor, closed once applied
        kept = limits.confine.hold(kept)
    os.closerange(kept, 1 << 20)  # close_range(2): every other inherited descriptor
    os.chdir(scratch)
    os.umask(0o077)
    os.environ.clear()
    os.environ.update(CHILD_ENV, HOME=scratch, TMPDIR=scratch)
    if limits.uid is not None:
        os.setgroups([])
        os.setgid(limits.uid)
        os.setuid(limits.uid)  # can no longer signal, ptrace or read the worker, nor undo any of this
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    die_with_parent()  # after setuid, which clears it
    memory = limits.memory_mb << 20
    caps = [(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1)), (resource.RLIMIT_AS, (memory, memory)),
            (resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT)),
            (resource.RLIMIT_NOFILE, (OPEN_FILES_LIMIT, OPEN_FILES_LIMIT)), (resource.RLIMIT_CORE, (0, 0))]
    if limits.uid not in (None, 0):  # NPROC counts per uid: meaningful only for the dedicated uid
        caps.append((resource.RLIMIT_NPROC, (PROCESS_LIMIT, PROCESS_LIMIT)))
    for res, value in caps:
        resource.setrlimit(res, value)
    if limits.confine is not None:
        limits.confine.apply()  # Landlock and seccomp: from here on, only scratch and read-only paths


def describe_exception(e: BaseException) -> str:
    """One capped line for an exception a candidate raised (its __str__ may be hostile)."""
    try:
        text = str(e)
    except BaseException:  # a candidate's exception with a hostile __str__
        text = "(unprintable)"
    return one_line(f"{type(e).__name__}: {text}" if text else type(e).__name__)


def _execute(code: str, call: Callable[[dict, Any], Any], instances: dict[str, Any]) -> dict:
    """Run the candidate; return the message for the trusted side."""
    try:
        compiled = compile(code, "<candidate>", "exec")
    except (SyntaxError, ValueError) as e:
        return {"error": "syntax", "reason": describe_exception(e)}
    namespace: dict[str, Any] = {"__name__": "__candidate__"}
    failure = None
    try:
        exec(compiled, namespace)
        outputs = {name: call(namespace, instance) for name, instance in instances.items()}
        return {"outputs": outputs}
    except MemoryError as e:
        failure = {"error": "memory", "reason": describe_exception(e)}
    except BaseException as e:  # SystemExit and KeyboardInterrupt from the candidate are crashes too
        failure = {"error": "crash", "reason": describe_exception(e)}
    namespace.clear()  # free what the candidate allocated before serializing the verdict
    return failure


def child_main(code: str, call: Callable[[dict, Any], Any], instances: dict[str, Any],
               limits: Limits, scratch: str, output_fd: int, result_fd: int) -> None:
    """Runs in the forked child; never returns."""
    status = 70
    try:
        try:
            _lock_down(limits, scratch, output_fd, result_fd)
        except Exception as e:
            message = {"error": "crash", "reason": one_line(f"sandbox setup failed: {type(e).__name__}: {e}")}
            try:  # the failure may have come before the result pipe moved to RESULT_FD
                os.dup2(result_fd, RESULT_FD)
            except OSError:  # already moved, and the original closed
                pass
        else:
            message = _execute(code, call, instances)
        try:
            data = json.dumps(message).encode()  # NaN passes here; the trusted parser rejects it
        except (TypeError, ValueError, RecursionError) as e:
            data = json.dumps({"error": "invalid", "reason": one_line(f"output is not JSON data: {e}")}).encode()
        except MemoryError:
            data = b'{"error": "memory", "reason": "MemoryError while serializing the output"}'
        view = memoryview(data)
        while view:
            view = view[os.write(RESULT_FD, view):]
        status = 0
        for stream in (sys.stdout, sys.stderr):  # what the candidate printed, for the record
            try:
                stream.flush()
            except BaseException:
                pass
    finally:
        os._exit(status)


# ----------------------------------------------------------------------------- parent side

def _reject_constant(name: str) -> None:
    raise ValueError(f"non-finite number {name} in output")


def parse_result(data: bytes) -> Outcome:
    """Trusted parse of the child's bytes: strict JSON, finite numbers, known shape."""
    try:
        message = json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        return Outcome("invalid", "output nests too deeply")
    except ValueError as e:  # includes JSONDecodeError and non-finite numbers
        if "non-finite" in str(e):
            return Outcome("invalid", one_line(str(e)))
        return Outcome("crash", "garbage on the result pipe")
    if isinstance(message, dict) and isinstance(message.get("outputs"), dict) and len(message) == 1:
        return Outcome("ok", outputs=message["outputs"])
    if isinstance(message, dict) and message.get("error") in ("syntax", "memory", "crash", "invalid") \
            and set(message) <= {"error", "reason"}:
        return Outcome(message["error"], one_line(str(message.get("reason") or message["error"])))
    return Outcome("crash", "malformed message on the result pipe")


def reap_zombies() -> bool:
    """Reap every finished child; True while some child is still running."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` at once: kill(-1) run as that uid. The kernel
    signals them all under one lock, so not even a fork bomb slips through."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)  # everyone this uid may signal, except the caller
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def kill_descendants(uid: int | None = None, rounds: int = 100) -> int:
    """SIGKILL and reap every descendant of this process (a subreaper, so orphans that
    left the process group come back to it). With ``uid`` (a dedicated candidate uid),
    first kill everything that uid runs. Returns how many processes were signalled."""
    killed = 0
    me = os.getpid()
    # A live descendant implies a live or zombie child (orphans come back to the
    # subreaper), so "no child at all" (ECHILD, one syscall) ends the common case.
    if uid is not None and reap_zombies():
        kill_uid(uid)
    while rounds and reap_zombies():
        rounds -= 1
        procs = psutil.Process().children(recursive=True)
        for p in procs:
            try:
                p.kill()
                killed += 1
            except psutil.NoSuchProcess:
                pass
        for p in procs:  # wait for our direct children; grandchildren come back to us as orphans
            try:
                if p.ppid() == me:
                    os.waitpid(p.pid, 0)
            except (psutil.NoSuchProcess, ChildProcessError):
                pass
    return killed


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _describe_exit(status: int, limits: Limits) -> Outcome:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return Outcome("timeout", f"CPU time limit of {limits.cpu_s} s exceeded")
        if sig == signal.SIGXFSZ:
            return Outcome("crash", f"file size limit of {FILE_SIZE_LIMIT >> 20} MiB exceeded")
        return Outcome("crash", f"killed by {signal.Signals(sig).name}")
    return Outcome("crash", f"exited with code {os.WEXITSTATUS(status)} without a result")


class _Output:
    """Keeps the first ``limit`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int):
        self.limit, self.kept, self.dropped = limit, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        room = max(self.limit - len(self.kept), 0)
        self.kept += chunk[:room]
        self.dropped += max(len(chunk) - room, 0)

    def text(self) -> str:
        return self.kept.decode("utf-8", errors="replace")


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""


def run_child(code: str, call: Callable[[dict, Any], Any], instances: dict[str, Any],
              limits: Limits, scratch: str, max_result_bytes: int = MAX_RESULT_BYTES) -> Outcome:
    """Fork, run the candidate under ``limits``, wait for it with the deadline,
    kill its whole process tree and classify what happened."""
    result_r, result_w = os.pipe()
    output_r, output_w = os.pipe()
    sys.stdout.flush()  # nothing of the worker's may reach the candidate's output
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which always _exits
        os.close(result_r)
        os.close(output_r)
        child_main(code, call, instances, limits, scratch, output_w, result_w)
    os.close(result_w)
    os.close(output_w)
    deadline = start + limits.timeout_s
    chunks, size, status, outcome = [], 0, None, None
    output = _Output(limits.output_bytes)
    pidfd = os.pidfd_open(pid)
    try:
        watch = [result_r, output_r, pidfd]
        while status is None:
            left = deadline - time.monotonic()
            if left <= 0:
                outcome = Outcome("timeout", f"wall-clock deadline of {limits.timeout_s:g} s exceeded")
                break
            ready, _, _ = select.select(watch, [], [], left)
            if result_r in ready:
                chunk = os.read(result_r, 1 << 20)
                if not chunk:  # EOF: the child (and anything holding the pipe) closed it
                    watch.remove(result_r)
                    continue
                chunks.append(chunk)
                size += len(chunk)
                if size > max_result_bytes:
                    outcome = Outcome("invalid", f"output exceeds {max_result_bytes >> 20} MiB")
                    break
            if output_r in ready:  # drained even when over the cap, so a flood never blocks the child
                chunk = os.read(output_r, 1 << 20)
                if chunk:
                    output.add(chunk)
                else:
                    watch.remove(output_r)
            if pidfd in ready:
                _, status = os.waitpid(pid, 0)
        _kill_group(pid)
        if status is None:
            _, status = os.waitpid(pid, 0)
        kill_descendants(limits.uid)  # before draining: nobody may still be writing
        # Drain what the child wrote before it exited; stop at the cap.
        for fd in (result_r, output_r):
            os.set_blocking(fd, False)
        while outcome is None and (chunk := _read(result_r)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_result_bytes:
                outcome = Outcome("invalid", f"output exceeds {max_result_bytes >> 20} MiB")
        while chunk := _read(output_r):
            output.add(chunk)
    finally:
        for fd in (result_r, output_r, pidfd):
            os.close(fd)
        kill_descendants(limits.uid)
    wall = time.monotonic() - start
    if outcome is None:
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and size:
            outcome = parse_result(b"".join(chunks))
        else:
            outcome = _describe_exit(status, limits)
    outcome.wall_s = wall
    outcome.output, outcome.output_dropped = output.text(), output.dropped
    return outcome


def probe_in_child(setup: Callable[[], None]) -> str | None:
    """Run ``setup`` in a throwaway forked process: None if it worked, else why not."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        code = 1
        try:
            os.close(read_fd)
            setup()
            code = 0
        except BaseException as e:
            os.write(write_fd, one_line(f"{type(e).__name__}: {e}").encode()[:500])
        finally:
            os._exit(code)
    os.close(write_fd)
    why = os.read(read_fd, 1000).decode(errors="replace")
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    return None if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else (why or "failed")


def empty_folder(folder: str) -> None:
    """Remove everything inside ``folder`` (a worker's scratch root, after each job)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            try:
                os.unlink(entry.path)
            except OSError:
                pass


def drop_to(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


# ----------------------------------------------------------------------------- reporting

ALWAYS_ON = ("rlimits", "deadline", "environment", "results")  # every mode has these: not worth a word per run


def describe_layers(layers: dict[str, str]) -> str:
    """One short line for the start of a run: the active layers, then the missing ones by name."""
    active = [name for name, state in layers.items() if state.startswith("active") and name not in ALWAYS_ON]
    missing = [name for name, state in layers.items() if not state.startswith("active")]
    unsafe = not any(layers.get(name, "").startswith("active") for name in ("bubblewrap", "landlock"))
    return ("UNSAFE, candidates are not confined; " if unsafe else "") + \
        f"active: {', '.join(active) or 'rlimits only'}" + (f"; missing: {', '.join(missing)}" if missing else "")

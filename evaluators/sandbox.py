"""One candidate run in a forked, OS-limited child process (Linux).

The evaluation worker (trusted) forks a child per job. The child locks itself
down (own session, rlimits, private scratch dir, clean environment, no
inherited descriptors, and where the worker runs as root: its own network
namespace and the uid of ``nobody``), executes the candidate and sends the
problem's raw outputs back as JSON on a pipe. The worker enforces the
deadline, kills the child's whole process tree and parses the bytes with size
and value limits. Nothing from the child is unpickled or believed beyond plain
JSON data; the score is computed from that data by trusted code.
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import os
import resource
import select
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable

try:  # kills descendants that left the process group; without it only the group is killed
    import psutil
except ImportError:  # pragma: no cover - psutil is a declared dependency
    psutil = None

MAX_OUTPUT_BYTES = 64 << 20  # bigger outputs are "invalid", never an OOM of the worker
FILE_SIZE_LIMIT = 16 << 20  # scratch files the candidate may write
OPEN_FILES_LIMIT = 64
PROCESS_LIMIT = 64  # per uid; bites only when the child is not root
NOBODY_UID = NOBODY_GID = 65534
RESULT_FD = 3  # the only descriptor the child keeps besides 0-2 (which point to /dev/null)
CLONE_NEWNET = 0x40000000
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int) -> bool:
    return _libc.prctl(option, arg, 0, 0, 0) == 0


def become_subreaper() -> bool:
    """Orphaned descendants (e.g. a grandchild that called setsid) get re-parented
    to this process instead of init, so it can find, kill and reap them."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


@dataclass
class Limits:
    timeout_s: float
    memory_mb: int
    isolate_network: bool = True
    drop_privileges: bool = True


@dataclass
class Outcome:
    """What the trusted side learned from one child: raw JSON outputs or a failure."""

    status: str  # "ok" | "syntax" | "timeout" | "memory" | "crash" | "invalid"
    reason: str | None = None
    outputs: dict[str, Any] | None = None
    wall_s: float = 0.0


# ----------------------------------------------------------------------------- child side

def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _lock_down(limits: Limits, scratch: str) -> None:
    os.setsid()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):  # not the worker's handlers
        signal.signal(sig, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # nothing the candidate prints reaches anyone
        os.dup2(devnull, fd)
    os.closerange(RESULT_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir(scratch)
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
                       "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    if limits.isolate_network:
        _try_unshare_net()
    dropped = limits.drop_privileges
    if dropped:
        os.chown(scratch, NOBODY_UID, NOBODY_GID)
        os.setgroups([])
        os.setgid(NOBODY_GID)
        os.setuid(NOBODY_UID)  # can no longer signal, ptrace or read the fds of the worker
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    cpu = math.ceil(limits.timeout_s) + 1
    memory = limits.memory_mb << 20
    caps = [(resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (memory, memory)),
            (resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT)),
            (resource.RLIMIT_NOFILE, (OPEN_FILES_LIMIT, OPEN_FILES_LIMIT)), (resource.RLIMIT_CORE, (0, 0))]
    if dropped:  # NPROC counts per uid: only meaningful for the dedicated uid, ignored for root
        caps.append((resource.RLIMIT_NPROC, (PROCESS_LIMIT, PROCESS_LIMIT)))
    for res, value in caps:
        resource.setrlimit(res, value)


def _execute(code: str, call: Callable[[dict, Any], Any], instances: dict[str, Any]) -> dict:
    """Run the candidate; return the message for the trusted side."""
    try:
        compiled = compile(code, "<candidate>", "exec")
    except (SyntaxError, ValueError) as e:
        return {"error": "syntax", "reason": _one_line(f"{type(e).__name__}: {e}")}
    namespace: dict[str, Any] = {"__name__": "__candidate__"}
    failure = None
    try:
        exec(compiled, namespace)
        outputs = {name: call(namespace, instance) for name, instance in instances.items()}
        return {"outputs": outputs}
    except MemoryError as e:
        failure = {"error": "memory", "reason": _one_line(f"MemoryError: {e}" if str(e) else "MemoryError")}
    except BaseException as e:  # SystemExit and KeyboardInterrupt from the candidate are crashes too
        failure = {"error": "crash", "reason": _one_line(f"{type(e).__name__}: {e}")}
    namespace.clear()  # free what the candidate allocated before serializing the verdict
    return failure


def child_main(code: str, call: Callable[[dict, Any], Any], instances: dict[str, Any],
               limits: Limits, scratch: str, result_fd: int) -> None:
    """Runs in the forked child; never returns."""
    status = 70
    try:
        if result_fd != RESULT_FD:
            os.dup2(result_fd, RESULT_FD)
        try:
            _lock_down(limits, scratch)
        except Exception as e:
            message = {"error": "crash", "reason": _one_line(f"sandbox setup failed: {type(e).__name__}: {e}")}
        else:
            message = _execute(code, call, instances)
        try:
            data = json.dumps(message).encode()  # NaN passes here; the trusted parser rejects it
        except (TypeError, ValueError, RecursionError) as e:
            data = json.dumps({"error": "invalid", "reason": _one_line(f"output is not JSON data: {e}")}).encode()
        except MemoryError:
            data = b'{"error": "memory", "reason": "MemoryError while serializing the output"}'
        view = memoryview(data)
        while view:
            view = view[os.write(RESULT_FD, view):]
        status = 0
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
            return Outcome("invalid", _one_line(str(e)))
        return Outcome("crash", "garbage on the result pipe")
    if isinstance(message, dict) and isinstance(message.get("outputs"), dict) and len(message) == 1:
        return Outcome("ok", outputs=message["outputs"])
    if isinstance(message, dict) and message.get("error") in ("syntax", "memory", "crash", "invalid") \
            and set(message) <= {"error", "reason"}:
        return Outcome(message["error"], _one_line(str(message.get("reason") or message["error"])))
    return Outcome("crash", "malformed message on the result pipe")


def kill_descendants(rounds: int = 100) -> int:
    """SIGKILL and reap every descendant of this process (it must be a subreaper for
    re-parented orphans to show up). Returns how many were killed."""
    killed = 0
    me = os.getpid()
    # A live descendant implies a live or zombie child (orphans come back to the
    # subreaper), so "no child at all" (ECHILD, one syscall) ends the common case.
    while rounds and reap_zombies() and psutil is not None:
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


def reap_zombies() -> bool:
    """Reap every finished child; True while some child is still running."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _describe_exit(status: int, limits: Limits) -> Outcome:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return Outcome("timeout", f"CPU time limit of {math.ceil(limits.timeout_s) + 1} s exceeded")
        if sig == signal.SIGXFSZ:
            return Outcome("crash", f"file size limit of {FILE_SIZE_LIMIT >> 20} MiB exceeded")
        return Outcome("crash", f"killed by {signal.Signals(sig).name}")
    return Outcome("crash", f"exited with code {os.WEXITSTATUS(status)} without a result")


def run_child(code: str, call: Callable[[dict, Any], Any], instances: dict[str, Any],
              limits: Limits, scratch: str, max_output_bytes: int = MAX_OUTPUT_BYTES) -> Outcome:
    """Fork, run the candidate under ``limits``, wait for it with the deadline,
    kill its whole process tree and classify what happened."""
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which always _exits
        os.close(read_fd)
        child_main(code, call, instances, limits, scratch, write_fd)
    os.close(write_fd)
    deadline = start + limits.timeout_s
    chunks, size, status, outcome = [], 0, None, None
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # no pidfd: poll waitpid between short selects
        pidfd = None
    try:
        watch = [read_fd] + ([pidfd] if pidfd is not None else [])
        pipe_open = True
        while status is None:
            left = deadline - time.monotonic()
            if left <= 0:
                outcome = Outcome("timeout", f"wall-clock deadline of {limits.timeout_s:g} s exceeded")
                break
            ready, _, _ = select.select(watch, [], [], left if pidfd is not None else min(left, 0.01))
            if read_fd in ready:
                chunk = os.read(read_fd, 1 << 20)
                if chunk:
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > max_output_bytes:
                        outcome = Outcome("invalid", f"output exceeds {max_output_bytes >> 20} MiB")
                        break
                elif pipe_open:  # EOF: the child (and anything holding the pipe) closed it
                    pipe_open = False
                    watch.remove(read_fd)
            if pidfd is None or pidfd in ready or not pipe_open:
                done, st = os.waitpid(pid, 0 if (pidfd is not None and pidfd in ready) else os.WNOHANG)
                if done:
                    status = st
        _kill_group(pid)
        if status is None:
            _, status = os.waitpid(pid, 0)
        # Drain what the child wrote before it exited; stop at the cap.
        os.set_blocking(read_fd, False)
        while outcome is None:
            try:
                chunk = os.read(read_fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_output_bytes:
                outcome = Outcome("invalid", f"output exceeds {max_output_bytes >> 20} MiB")
    finally:
        os.close(read_fd)
        if pidfd is not None:
            os.close(pidfd)
        kill_descendants()
    wall = time.monotonic() - start
    if outcome is None:
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and chunks:
            outcome = parse_result(b"".join(chunks))
        else:
            outcome = _describe_exit(status, limits)
    outcome.wall_s = wall
    return outcome


# ----------------------------------------------------------------------------- reporting

def _probe_child(setup: Callable[[], None]) -> bool:
    """Whether ``setup`` succeeds in a throwaway forked process."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        code = 1
        try:
            setup()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _try_unshare_net() -> None:
    if _libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare")


def _try_drop() -> None:
    os.setgroups([])
    os.setgid(NOBODY_GID)
    os.setuid(NOBODY_UID)


def effective_limits(limits: Limits) -> Limits:
    """``limits`` without the layers this machine cannot provide (probed once by the
    worker, so a child never fails half-way through its lock-down)."""
    root = os.geteuid() == 0
    return dataclasses.replace(
        limits,
        drop_privileges=limits.drop_privileges and root and _probe_child(_try_drop),
        isolate_network=limits.isolate_network and root and _probe_child(_try_unshare_net))


def isolation_layers(limits: Limits | None = None, probe: bool = True) -> dict[str, str]:
    """Which isolation layers a candidate child gets, in words. With ``probe`` the
    privileged layers are first checked by forking a throwaway process."""
    requested = limits or Limits(timeout_s=10.0, memory_mb=1024)
    limits = effective_limits(requested) if probe else requested
    layers = {
        "rlimits": (f"address space {limits.memory_mb} MiB, CPU {math.ceil(limits.timeout_s) + 1} s, "
                    f"files {FILE_SIZE_LIMIT >> 20} MiB, {OPEN_FILES_LIMIT} descriptors, no core dumps"
                    + (f", {PROCESS_LIMIT} processes per uid" if limits.drop_privileges else "")),
        "session": "setsid; the process group is SIGKILLed after every run",
        "subreaper": ("PR_SET_CHILD_SUBREAPER: descendants that escape the group are found and killed"
                      if psutil else "unavailable without psutil: only the process group is killed"),
        "deadline": "wall-clock deadline enforced by the worker (SIGKILL)",
        "descriptors": "stdin/stdout/stderr on /dev/null, inherited descriptors closed, clean environment",
        "filesystem": "fresh scratch directory as cwd; the rest of the filesystem is visible (no bubblewrap)",
    }
    if limits.drop_privileges:
        layers["privileges"] = f"runs as uid {NOBODY_UID} (nobody): cannot signal or inspect the worker"
    else:
        why = "disabled" if not requested.drop_privileges else "needs root"
        layers["privileges"] = f"same uid as the worker ({why}): a candidate could signal or inspect it"
    if limits.isolate_network:
        layers["network"] = "own empty network namespace: no network"
    else:
        why = "disabled" if not requested.isolate_network else "needs root with CAP_SYS_ADMIN"
        layers["network"] = f"not isolated ({why})"
    return layers

"""Candidate processes that never held the harness: forked from a zygote, driven over a socket.

A worker of an interactive problem (see :mod:`evaluators.episode`) forks a *zygote* before
it builds the problem or reads any instance. For each job the worker hands the zygote
two descriptors (one end of a socket pair, the output pipe) and the zygote forks the
candidate's process from its own clean memory: the program, the arguments of each call
and the imported libraries are all a candidate can find there, however it walks frames,
scans ``gc`` or patches code. The episode itself (instances, budgets, counters) runs in
the worker, which is another process (and, with privilege dropping, another uid).

The candidate's process locks itself down exactly as :func:`evaluators.sandbox.child_main`
does (the same ``_lock_down``: session, rlimits, uid, descriptors, environment), then
serves calls until the worker closes the socket. The zygote is the candidates'
subreaper: it reaps each one, kills whatever it left behind, and reports the exit status
and CPU time. It never sees the program's source (that goes to the candidate directly).
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import select
import signal
import socket
import sys
import time
from dataclasses import asdict, replace
from typing import Any, Callable

import greenlet

from evaluators import sandbox
from evaluators.episode import _LEN, MAX_FRAME_BYTES, Candidate, CandidateFailed, Channel, Server

NAME = "evosearch-zygote"  # its process name (comm, 15 bytes): the worker's one child that is not a candidate
PR_SET_NAME = 15
EXIT_GRACE_S = 1.0  # after the episode: time for the candidate to exit on EOF before it is killed


def _send_frame(sock: socket.socket, frame: bytes) -> None:
    sock.sendall(_LEN.pack(len(frame)) + frame)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


# ----------------------------------------------------------------------------- candidate process

def _candidate_main(sock_fd: int, output_fd: int, job: dict, confine: Any) -> None:
    """In the zygote's fork: lock down, then answer calls until EOF. Never returns."""
    status = 70
    try:
        try:
            limits = sandbox.Limits(**{**job["limits"], "confine": confine})
            sandbox._lock_down(limits, job["scratch"], output_fd, sock_fd)
        except Exception as e:  # tell the worker why, on whichever descriptor the socket is now
            for fd in (sandbox.RESULT_FD, sock_fd):
                try:
                    frame = Server().error("crash", RuntimeError(f"sandbox setup failed: {type(e).__name__}: {e}"))
                    os.write(fd, _LEN.pack(len(frame)) + frame)
                    break
                except OSError:
                    continue
            return
        sock = socket.socket(fileno=sandbox.RESULT_FD)
        server = Server()
        while True:
            head = _recv_exact(sock, 4)
            if head is None:
                break
            frame = _recv_exact(sock, _LEN.unpack(head)[0])
            if frame is None:
                break
            _send_frame(sock, server.handle(frame))
        status = 0
    finally:
        for stream in (sys.stdout, sys.stderr):  # what the candidate printed, for the record
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(status)


# ----------------------------------------------------------------------------- zygote process

def _zygote_main(sock: socket.socket, confine: Any) -> None:
    """Fork a candidate per request; reap it, clean up after it, report how it ended.
    ``sock`` is a SOCK_SEQPACKET socket: one message per job, per "k" (kill) and per answer."""
    sandbox.become_subreaper()  # orphans of a candidate come back here, not to the worker
    sandbox.die_with_parent(signal.SIGKILL)
    ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(NAME.encode()), 0, 0, 0)  # for ps and tests
    gc.freeze()
    while True:
        message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 2)
        if not message:
            break  # the worker is gone
        if message == b"k" or len(fds) != 2:  # a late kill for a candidate already reaped
            for fd in fds:
                os.close(fd)
            continue
        job = json.loads(message)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the candidate
            sock.close()
            _candidate_main(fds[0], fds[1], job, confine)
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps({"pid": pid}).encode())
        pidfd = os.pidfd_open(pid)
        while pidfd not in select.select([pidfd, sock], [], [])[0]:
            if not sock.recv(16):
                os._exit(0)  # the worker is gone (and the candidate dies with us)
            try:  # "k": the deadline passed
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        os.close(pidfd)
        _, status, usage = os.wait4(pid, 0)
        try:
            os.killpg(pid, signal.SIGKILL)  # what it started in its session
        except (ProcessLookupError, PermissionError):
            pass
        sandbox.kill_descendants(job["limits"].get("uid"))
        sock.send(json.dumps({"status": status, "cpu_s": usage.ru_utime + usage.ru_stime}).encode())
    os._exit(0)


class Zygote:
    """The worker's handle on its zygote. Start it before building the problem."""

    def __init__(self, preload: tuple[str, ...] = (), confine: Any = None):
        # confine: the worker's prepared kernel layers (Landlock + seccomp); the zygote inherits them
        # by fork and every candidate applies them last in its lock-down, as sandboxed children do.
        # Imported here, as the worker's uid: a candidate's uid may be unable to read them later.
        # numpy.random: NumPy 2 loads it lazily, and every program's process seeds it.
        for name in ("numpy.random", *preload):
            __import__(name)
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the zygote, until the worker goes
            mine.close()
            try:
                _zygote_main(theirs, confine)
            finally:
                os._exit(0)
        theirs.close()
        self.pid, self.sock = pid, mine

    def _message(self, deadline: float | None) -> dict:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError
        message = self.sock.recv(1 << 16)
        if not message:
            raise RuntimeError("the zygote died")
        return json.loads(message)

    def spawn(self, sock_fd: int, output_fd: int, limits: sandbox.Limits, scratch: str) -> int:
        job = {"limits": asdict(replace(limits, confine=None)), "scratch": scratch}  # the zygote has its own
        socket.send_fds(self.sock, [json.dumps(job).encode()], [sock_fd, output_fd])
        return int(self._message(None)["pid"])

    def kill(self) -> None:
        self.sock.send(b"k")

    def ended(self, deadline: float | None) -> dict:
        """The candidate's exit: {"status": wait status, "cpu_s": its CPU seconds}."""
        return self._message(deadline)

    def close(self) -> None:
        self.sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


# ----------------------------------------------------------------------------- worker side

class _Connection(Channel):
    """The worker's end of one candidate process: every exchange waits under the job's deadline
    while draining the candidate's stdout/stderr, so a chatty candidate never blocks."""

    def __init__(self, sock: socket.socket, output_r: int, output: sandbox._Output, deadline: float,
                 limits: sandbox.Limits, zygote: Zygote):
        self.sock, self.output_r, self.output, self.deadline = sock, output_r, output, deadline
        self.limits, self.zygote = limits, zygote
        self.poll = select.poll()
        self.poll.register(sock, select.POLLIN)
        self.poll.register(output_r, select.POLLIN)
        self.buffer = bytearray()
        self.calls = 0

    def _fill(self) -> None:
        """Wait for more bytes from the candidate (or its death, or the deadline)."""
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise CandidateFailed("timeout", f"wall-clock deadline of {self.limits.timeout_s:g} s exceeded")
            for fd, _ in self.poll.poll(left * 1000):
                if fd == self.output_r:
                    chunk = os.read(self.output_r, 1 << 16)
                    if chunk:
                        self.output.add(chunk)
                    else:
                        self.poll.unregister(self.output_r)
                    continue
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise _Gone
                self.buffer += chunk
                return

    def exchange(self, frame: bytes) -> bytes:
        self.calls += 1
        try:
            self.sock.sendall(_LEN.pack(len(frame)) + frame)
        except OSError:
            raise _Gone from None
        while len(self.buffer) < 4:
            self._fill()
        (size,) = _LEN.unpack_from(self.buffer)
        if size > MAX_FRAME_BYTES:
            raise CandidateFailed("invalid", f"answer exceeds {MAX_FRAME_BYTES >> 20} MiB")
        while len(self.buffer) < 4 + size:
            self._fill()
        answer = bytes(self.buffer[4:4 + size])
        del self.buffer[:4 + size]
        return answer


class _Gone(Exception):
    """The candidate's process closed the socket (it exited or was killed)."""


class _Suspend(Channel):
    """An episode's channel in lockstep: a call hands its frame to the scheduler (the greenlet
    that plays the episodes) and resumes with the answer."""

    def __init__(self, scheduler: greenlet.greenlet):
        self.scheduler = scheduler

    def exchange(self, frame: bytes) -> bytes:
        return self.scheduler.switch(frame)


def _batch(connection: _Connection, frames: list[bytes]) -> list[bytes]:
    """One round trip for the next call of every live episode, answered in the same order."""
    if len(frames) == 1:
        return [connection.exchange(frames[0])]
    batch = connection.exchange(b"B" + b"".join(_LEN.pack(len(f)) + f for f in frames))
    answers, at = [], 1
    while batch[:1] == b"B" and at + 4 <= len(batch):
        (n,) = _LEN.unpack_from(batch, at)
        answers.append(batch[at + 4:at + 4 + n])
        at += 4 + n
    if len(answers) != len(frames) or at != len(batch):
        raise CandidateFailed("invalid", "a malformed batch of answers")
    return answers


def _play(episode, instances: dict[str, Any], connection: _Connection) -> dict[str, Any]:
    """Every instance's episode at once, each in its own greenlet: every round, the next call of
    every live episode goes out in one frame, ordered by instance, so the number of round trips does
    not grow with the number of instances and the candidate sees a fixed order. Episodes are
    resumed in instance order, so the first to fail in a round ends them all. Greenlets, not
    threads: a switch costs under a microsecond (0.16 us here), where waking five threads every
    round through a condition variable made a bin packing evaluation cost 1.8 times the CPU
    (benchmarks/harness_throughput_greenlet.json)."""
    if len(instances) == 1:
        return {name: episode(instance, Candidate(connection)) for name, instance in instances.items()}
    scheduler = greenlet.getcurrent()
    episodes = [greenlet.greenlet(lambda _, instance=instance: episode(instance, Candidate(_Suspend(scheduler))))
                for instance in instances.values()]
    outputs: dict[int, Any] = {}
    pending: dict[int, bytes | None] = dict.fromkeys(range(len(episodes)))  # slot -> the answer it resumes with
    while pending:
        calls = {}
        for slot, answer in pending.items():
            step = episodes[slot].switch(answer)  # runs it to its next call or its end; a raise ends all
            if episodes[slot].dead:  # it returned: ``step`` is its output
                outputs[slot] = step
            else:
                calls[slot] = step
        pending = dict(zip(calls, _batch(connection, list(calls.values())))) if calls else {}
    return {name: outputs[slot] for slot, name in enumerate(instances)}


def run_episodes(zygote: Zygote, code: str, episode: Callable[[Any, Candidate], Any], instances: dict[str, Any],
                 limits: sandbox.Limits, scratch: str) -> tuple[sandbox.Outcome, float]:
    """Run ``episode(instance, candidate)`` for every instance against one candidate process.
    Returns the outcome (outputs computed here, by trusted code) and the candidate's CPU seconds."""
    from evosearch.problem import InvalidOutput

    start = time.monotonic()
    deadline = start + limits.timeout_s
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    output_r, output_w = os.pipe()
    try:
        zygote.spawn(theirs.fileno(), output_w, limits, scratch)
    finally:
        theirs.close()
        os.close(output_w)
    output = sandbox._Output(limits.output_bytes)
    connection = _Connection(mine, output_r, output, deadline, limits, zygote)
    outcome = None
    try:
        connection.call(b"X", code)
        outputs = _play(episode, instances, connection)
        outcome = sandbox.Outcome("ok", outputs=outputs)
    except CandidateFailed as e:
        outcome = sandbox.Outcome(e.status, e.reason)
    except _Gone:
        pass  # described from its exit status below
    except InvalidOutput as e:
        outcome = sandbox.Outcome("invalid", sandbox.one_line(str(e)))
    except MemoryError:
        outcome = sandbox.Outcome("invalid", "the harness ran out of memory on the candidate's answers")
    except Exception as e:  # the harness rejected an answer (wrong shape, wrong type...)
        outcome = sandbox.Outcome("crash", sandbox.one_line(f"{type(e).__name__}: {e}"))
    mine.shutdown(socket.SHUT_RDWR)  # EOF: the candidate's serve loop ends, it flushes its output and exits
    mine.close()
    if outcome is not None and outcome.status == "timeout":
        zygote.kill()
    try:
        ended = zygote.ended(time.monotonic() + EXIT_GRACE_S)
    except TimeoutError:  # it ignores EOF: it is busy or hostile
        zygote.kill()
        ended = zygote.ended(None)
    os.set_blocking(output_r, False)
    while chunk := sandbox._read(output_r):
        output.add(chunk)
    os.close(output_r)
    if outcome is None:
        outcome = sandbox._describe_exit(ended["status"], limits)
    outcome.wall_s = time.monotonic() - start
    outcome.output, outcome.output_dropped = output.text(), output.dropped
    return outcome, float(ended["cpu_s"])

"""The interactive protocol: the trusted side owns the episode, the candidate answers calls.

A problem in the interactive form (``Problem.episode``) runs its whole harness on the
trusted side and reaches the candidate's program only through a :class:`Candidate`:
``candidate.priority(item, bins)`` sends the arguments to the candidate's process and
returns what the function answered, as plain data. The candidate's process holds the
program and the arguments it was sent, nothing else (see :mod:`evaluators.zygote` for
how that process is made), so walking frames, scanning ``gc`` or patching code there
reaches no instance, counter or harness.

Wire: one frame per message, a 4-byte little-endian length then a one-byte tag.

* trusted -> candidate: ``X`` the program's source; ``C`` pickle((target, args)) one call;
  ``M`` pickle((target, [args, ...])) one call per args tuple, answered as one list;
  ``P`` pickle(value) keep a value there (large inputs sent once) and answer its handle;
  ``c`` a call in brief (a name, then numbers and arrays, no pickle); ``B`` a batch of
  frames (one call per episode played in lockstep), answered by a ``B`` of answers.
  ``target`` is a function name of the program or the index of a kept value.
* candidate -> trusted: ``A`` one numeric array (dtype, shape, raw bytes); ``F`` one float
  (8 bytes); ``V`` any other value: JSON with placeholders plus raw array buffers;
  ``E`` JSON [status, reason]: the program raised.

The trusted side pickles (the candidate may unpickle what it was sent); the candidate
answers in JSON and raw numbers only, parsed with size and dtype limits: nothing it sends
is unpickled or executed. A value that is not plain data (a function, an object, a dict
with non-string keys) stays in the candidate's process and comes back as a :class:`Remote`
handle, callable and passable as an argument again.
"""
from __future__ import annotations

import json
import math
import pickle
import random
import struct
from typing import Any

import numpy as np

from evaluators.sandbox import describe_exception, one_line

MAX_FRAME_BYTES = 64 << 20  # a bigger answer is "invalid", never an OOM of the trusted side
_LEN = struct.Struct("<I")
# Placeholder keys inside the JSON part: {ARRAY: i} is the i-th raw buffer, {HANDLE: i} a kept object.
ARRAY, HANDLE = "\x00array", "\x00handle"
# Array dtypes that travel raw (np.frombuffer of these is plain numbers, whatever the bytes).
WIRE_DTYPES = frozenset(np.dtype(f"<{c}{n}").str for c, sizes in (("f", (4, 8)), ("i", (1, 2, 4, 8)),
                                                                     ("u", (1, 2, 4, 8))) for n in sizes) | {"|b1"}


class CandidateFailed(BaseException):
    """The candidate raised, died, ran out of time or answered garbage. A BaseException so that
    an episode's own ``except Exception`` cannot swallow it: the worker records ``status``."""

    def __init__(self, status: str, reason: str):
        super().__init__(f"{status}: {reason}")
        self.status, self.reason = status, reason


class Kept:
    """A reference to a value kept in the candidate's process (pickled to it, resolved there)."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self):
        return Kept, (self.index,)


# ----------------------------------------------------------------------------- candidate side

_DOUBLE = struct.Struct("<d")


def _array_bytes(v: np.ndarray) -> bytes:
    dtype = v.dtype.str.encode()
    return (bytes((len(dtype),)) + dtype + struct.pack(f"<B{v.ndim}q", v.ndim, *v.shape)
            + np.ascontiguousarray(v).tobytes())


class Server:
    """Answers the trusted side's calls on the candidate's program (runs next to the candidate)."""

    def __init__(self):
        self.namespace: dict[str, Any] | None = None
        self.kept: list[Any] = []

    def handle(self, frame: bytes) -> bytes:
        tag, body = frame[:1], frame[1:]
        if tag == b"B":  # a batch: one call per episode in lockstep, each answered on its own
            answers, at = [], 0
            while at < len(body):
                (n,) = _LEN.unpack_from(body, at)
                answers.append(self.handle(body[at + 4:at + 4 + n]))
                at += 4 + n
            return b"B" + b"".join(_LEN.pack(len(a)) + a for a in answers)
        try:
            if tag == b"X":
                compiled = compile(body.decode(), "<candidate>", "exec")
                random.seed(0)  # a program that draws random numbers draws the same ones every run
                np.random.seed(0)
                self.namespace = {"__name__": "__candidate__"}
                exec(compiled, self.namespace)
                return self.encode(None)
            if tag == b"P":  # shared once and passed to many calls: its arrays are read-only
                value = pickle.loads(body)
                for array in (value, *(value if type(value) in (tuple, list) else ())):
                    if isinstance(array, np.ndarray):
                        array.setflags(write=False)
                self.kept.append(value)
                return self.encode(Kept(len(self.kept) - 1))
            if tag == b"c":  # the compact form of a common call (see _pack_call)
                tag, (target, args) = b"C", _unpack_call(body)
            else:
                target, args = pickle.loads(body)
            function = self._target(target)
            if tag == b"C":
                return self.encode(function(*self._resolve(args)))
            if tag == b"M":
                return self.encode([function(*self._resolve(a)) for a in args])
            raise ValueError(f"unknown request {tag!r}")
        except SyntaxError as e:
            return self.error("syntax" if tag == b"X" else "crash", e)
        except MemoryError as e:
            return self.error("memory", e)
        except BaseException as e:  # SystemExit and KeyboardInterrupt from the candidate are crashes too
            return self.error("crash", e)

    def _target(self, target):
        if isinstance(target, int):
            return self.kept[target]
        if self.namespace is None or target not in self.namespace:
            raise NameError(f"the program defines no {target!r}")
        return self.namespace[target]

    def _resolve(self, value):
        if isinstance(value, Kept):
            return self.kept[value.index]
        if type(value) in (tuple, list):
            return type(value)(self._resolve(v) for v in value)
        if type(value) is dict:
            return {k: self._resolve(v) for k, v in value.items()}
        return value

    def error(self, status: str, e: BaseException) -> bytes:
        return b"E" + json.dumps([status, describe_exception(e)]).encode()

    def encode(self, value) -> bytes:
        """Plain data as JSON, numeric arrays as raw buffers, anything else kept here as a handle."""
        kind = type(value)
        if kind is np.ndarray and value.dtype.str in WIRE_DTYPES:  # the common answers first
            return b"A" + _array_bytes(value)
        if kind is float or kind is np.float64:
            return b"F" + _DOUBLE.pack(value)
        buffers: list[bytes] = []

        def plain(v):
            if v is None or type(v) in (bool, int, float, str):
                return v
            if isinstance(v, np.ndarray) and v.dtype.str in WIRE_DTYPES:
                buffers.append(_array_bytes(v))
                return {ARRAY: len(buffers) - 1}
            if isinstance(v, (np.bool_, np.integer, np.floating)):
                return v.item()
            if isinstance(v, (bool, int, float)):  # subclasses: their plain value, not their behaviour
                return type(v).__mro__[-2](v)
            if type(v) in (list, tuple):
                return [plain(x) for x in v]
            if type(v) is dict and all(type(k) is str for k in v):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, Kept):
                return {HANDLE: v.index}
            self.kept.append(v)
            return {HANDLE: len(self.kept) - 1}

        head = json.dumps(plain(value), allow_nan=True).encode()
        return b"V" + _LEN.pack(len(head)) + head + b"".join(_LEN.pack(len(b)) + b for b in buffers)


# ----------------------------------------------------------------------------- calls in brief
# A call whose target is a name and whose arguments are numbers and numeric arrays (bin packing's
# priority(item, bins), a fitting loop's params) skips pickle: ``c`` + name + typed arguments.

_INT64 = struct.Struct("<q")


def _pack_call(target, args) -> bytes | None:
    if type(target) is not str or len(target) > 255:
        return None
    name = target.encode()
    parts = [b"c", bytes((len(name),)), name]
    for a in args:
        kind = type(a)
        if kind is int and -(1 << 63) <= a < (1 << 63):
            parts += (b"i", _INT64.pack(a))
        elif kind is float:
            parts += (b"f", _DOUBLE.pack(a))
        elif kind is np.ndarray and a.dtype.str in WIRE_DTYPES:
            blob = _array_bytes(a)
            parts += (b"a", _LEN.pack(len(blob)), blob)
        else:
            return None
    return b"".join(parts)


def _unpack_call(body: bytes) -> tuple[str, tuple]:
    at = body[0] + 1
    target, args = body[1:at].decode(), []
    while at < len(body):
        kind, at = body[at:at + 1], at + 1
        if kind == b"i":
            args.append(_INT64.unpack_from(body, at)[0])
            at += 8
        elif kind == b"f":
            args.append(_DOUBLE.unpack_from(body, at)[0])
            at += 8
        else:
            (n,) = _LEN.unpack_from(body, at)
            args.append(_array(body, at + 4, at + 4 + n).copy())  # writable, as the candidate's own
            at += 4 + n
    return target, tuple(args)


# ----------------------------------------------------------------------------- trusted side

_DTYPES = {d: np.dtype(d) for d in WIRE_DTYPES}


def _array(frame: bytes, at: int, end: int) -> np.ndarray:
    """The array encoded in ``frame[at:end]``: a whitelisted dtype, a shape that fits the bytes."""
    n = frame[at]
    dtype = _DTYPES.get(frame[at + 1:at + 1 + n].decode("ascii", errors="replace"))
    if dtype is None:
        raise ValueError("array of an unsupported dtype")
    at += 1 + n
    ndim = frame[at]
    shape = struct.unpack_from(f"<{ndim}q", frame, at + 1)
    at += 1 + 8 * ndim
    count = math.prod(shape)
    if any(s < 0 for s in shape) or count * dtype.itemsize != end - at:
        raise ValueError("array size does not match its shape")
    return np.frombuffer(frame, dtype=dtype, count=count, offset=at).reshape(shape)


class Channel:
    """How a :class:`Candidate` reaches the program: ``exchange(frame) -> frame``."""

    def exchange(self, frame: bytes) -> bytes:
        raise NotImplementedError

    def call(self, tag: bytes, payload) -> Any:
        if tag == b"C":
            frame = _pack_call(*payload)
            if frame is not None:
                return self.decode(self.exchange(frame))
        body = payload.encode() if tag == b"X" else pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        return self.decode(self.exchange(tag + body))

    def decode(self, frame: bytes) -> Any:
        if len(frame) > MAX_FRAME_BYTES:
            raise CandidateFailed("invalid", f"answer exceeds {MAX_FRAME_BYTES >> 20} MiB")
        tag = frame[:1]
        try:
            if tag == b"A":
                return _array(frame, 1, len(frame))
            if tag == b"F" and len(frame) == 9:
                return _DOUBLE.unpack_from(frame, 1)[0]
            if tag == b"E":
                status, reason = json.loads(frame[1:])
                if status not in ("syntax", "crash", "memory"):
                    status = "crash"
                raise CandidateFailed(status, one_line(str(reason)))
            if tag != b"V":
                raise ValueError("unknown answer")
            (size,) = _LEN.unpack_from(frame, 1)
            head = json.loads(frame[5:5 + size])
            buffers, at = [], 5 + size
            while at < len(frame):
                (n,) = _LEN.unpack_from(frame, at)
                buffers.append(_array(frame, at + 4, at + 4 + n))
                at += 4 + n
            return self._rebuild(head, buffers)
        except CandidateFailed:
            raise
        except RecursionError:
            raise CandidateFailed("invalid", "answer nests too deeply") from None
        except (ValueError, TypeError, IndexError, KeyError, struct.error, UnicodeDecodeError) as e:
            raise CandidateFailed("invalid", one_line(f"unreadable answer: {e}")) from None

    def _rebuild(self, v, buffers):
        if type(v) is list:
            return [self._rebuild(x, buffers) for x in v]
        if type(v) is dict:
            if len(v) == 1 and ARRAY in v:
                return buffers[v[ARRAY]]
            if len(v) == 1 and HANDLE in v and type(v[HANDLE]) is int:
                return Remote(self, v[HANDLE])
            return {k: self._rebuild(x, buffers) for k, x in v.items()}
        return v


class Frozen:
    """A large argument that does not change between evaluations (a grounded task, a data set),
    pickled once here and sent as those bytes every time: ``candidate.f(Frozen(task))`` gives
    the candidate ``task``. Build it once per instance, not per call."""

    __slots__ = ("data",)

    def __init__(self, value):
        self.data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def __reduce__(self):
        return pickle.loads, (self.data,)


class Remote:
    """A function (or any value) of the candidate's, used from the trusted side."""

    __slots__ = ("_channel", "_target")

    def __init__(self, channel: Channel, target: str | int):
        self._channel, self._target = channel, target

    def __call__(self, *args) -> Any:
        """One call; the answer as plain data (lists, dicts, numbers, numpy arrays, Remotes)."""
        return self._channel.call(b"C", (self._target, args))

    def map(self, calls) -> list:
        """Several independent calls in one round trip: ``[f(*args) for args in calls]``."""
        return self._channel.call(b"M", (self._target, [tuple(a) for a in calls]))

    def __reduce__(self):  # passed back as an argument: the candidate gets its own object
        if not isinstance(self._target, int):
            raise TypeError("pass the candidate's functions by name, not as arguments")
        return Kept, (self._target,)

    def __repr__(self):
        return f"<candidate's {self._target if isinstance(self._target, str) else 'value'}>"


class Candidate:
    """The candidate's program as an episode sees it: ``candidate.<function>(*args)``.

    Send only what the candidate may see; every argument is copied to its process.
    ``share(value)`` sends a large input once; pass the handle it returns instead."""

    def __init__(self, channel: Channel):
        self._channel = channel

    def __getattr__(self, name: str) -> Remote:
        if name.startswith("_"):
            raise AttributeError(name)
        return Remote(self._channel, name)

    def share(self, value) -> Remote:
        return self._channel.call(b"P", value)


class LocalChannel(Channel):
    """In-process transport through the same encoding: for trusted code only (baselines,
    tests, ``evaluate_trusted``); answers look exactly as they would from a sandbox."""

    def __init__(self, code_or_namespace: str | dict):
        self.server = Server()
        if isinstance(code_or_namespace, dict):
            random.seed(0)  # as the X request does for a sandboxed program
            np.random.seed(0)
            self.server.namespace = code_or_namespace
        else:
            self.call(b"X", code_or_namespace)

    def exchange(self, frame: bytes) -> bytes:
        return self.server.handle(frame)


def local_candidate(code_or_namespace: str | dict) -> Candidate:
    """A Candidate over a trusted program in this process (source code or an executed namespace)."""
    return Candidate(LocalChannel(code_or_namespace))

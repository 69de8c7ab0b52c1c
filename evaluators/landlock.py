"""Landlock (Linux 5.13+): an unprivileged, per-process allow-list of what a candidate may touch.

A :class:`Ruleset` is prepared once per worker (one open ``O_PATH`` descriptor per allowed
path) and each forked candidate child calls :meth:`Ruleset.restrict_self`: one system call,
after which that process and everything it starts may only

* read (and execute) files beneath the allowed read-only paths (system libraries, Python,
  the engine's packages, the problem and its data), and write beneath its scratch folder;
  nothing else of the filesystem, ``/proc`` included (no other process's environment or
  command line, no ``/proc/<pid>/mem``);
* (ABI 4+) neither bind nor connect any TCP port;
* (ABI 6+) neither signal processes outside its own Landlock domain nor connect to
  abstract UNIX sockets outside it.

Each right the running kernel does not know is dropped (best effort), and :attr:`Ruleset.abi`
says what was granted. Works as any user, in or out of bubblewrap, with no_new_privs set.
"""
from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path
from typing import Iterable

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # the same on every architecture
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8, 1 << 9
MAKE_FIFO, MAKE_BLOCK, MAKE_SYM, REFER, TRUNCATE, IOCTL_DEV = 1 << 10, 1 << 11, 1 << 12, 1 << 13, 1 << 14, 1 << 15
FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # the rights a rule on a non-directory may hold
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

# Filesystem rights each ABI version knows (what we may ask to handle).
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
READ = EXECUTE | READ_FILE | READ_DIR
READ_WRITE = (1 << 16) - 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock {what}: {os.strerror(err)}")
    return result


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 where Landlock is missing or disabled."""
    result = _libc.syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION))
    return max(int(result), 0)


def fs_rights(abi: int) -> int:
    return _FS_BY_ABI[max(v for v in _FS_BY_ABI if v <= abi)]


class Ruleset:
    """Allow ``read`` paths read-only and ``write`` paths read-write; deny the rest (and TCP,
    and signals and abstract sockets leaving the domain, where the kernel can)."""

    def __init__(self, read: Iterable[str | Path], write: Iterable[str | Path]):
        self.abi = abi_version()
        if self.abi < 1:
            raise OSError("Landlock is not available in this kernel")
        handled = fs_rights(self.abi)
        net = NET_BIND_TCP | NET_CONNECT_TCP if self.abi >= 4 else 0
        scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if self.abi >= 6 else 0
        attr = struct.pack("=QQQ", handled, net, scoped)[:8 if self.abi < 4 else 16 if self.abi < 6 else 24]
        self.fd = _check(_libc.syscall(SYS_CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0)),
                         "create_ruleset")
        self.read, self.write = [], []
        try:
            for paths, rights, granted in ((read, READ, self.read), (write, READ_WRITE, self.write)):
                for path in paths:
                    if self._allow(str(path), rights & handled):
                        granted.append(str(path))
        except BaseException:
            self.close()
            raise

    def _allow(self, path: str, rights: int) -> bool:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return False  # absent here (say /lib32): nothing to allow
        try:
            if not os.path.isdir(path):
                rights &= FILE_ONLY
            rule = struct.pack("=Qi", rights, fd)  # struct landlock_path_beneath_attr is packed
            _check(_libc.syscall(SYS_ADD_RULE, self.fd, ctypes.c_int(RULE_PATH_BENEATH), rule, ctypes.c_uint32(0)),
                   f"add_rule {path}")
        finally:
            os.close(fd)
        return True

    def restrict_self(self) -> None:
        """Confine the calling process (needs no_new_privs); irreversible, inherited by children."""
        _check(_libc.syscall(SYS_RESTRICT_SELF, self.fd, ctypes.c_uint32(0)), "restrict_self")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def describe(self) -> str:
        parts = ["files"] + (["TCP"] if self.abi >= 4 else []) + (["signals", "abstract sockets"] if self.abi >= 6 else [])
        return f"Landlock ABI {self.abi}: {', '.join(parts)}"


def excluding(paths: Iterable[str | Path], hidden: Iterable[str | Path]) -> list[str]:
    """``paths`` with every ``hidden`` path carved out: an allowed folder that holds a hidden
    one is replaced by its other entries (Landlock can only add, never subtract)."""
    hidden = [Path(h).resolve() for h in hidden]
    out: list[str] = []

    def add(path: Path) -> None:
        if any(path == h or path.is_relative_to(h) for h in hidden):
            return
        if any(h.is_relative_to(path) for h in hidden) and path.is_dir():
            for entry in sorted(path.iterdir()):
                add(entry)
        else:
            out.append(str(path))

    for p in paths:
        add(Path(p).resolve())
    return out

"""A seccomp-BPF filter for candidate processes (Linux, x86-64 and aarch64), built with ctypes.

A deny list, not an allow list: a candidate is ordinary Python plus numpy (threads, fork,
files, pipes), and what it must never do is short and stable. Refused with EPERM:

* networking: ``socket`` (every family: no TCP, UDP, netlink or UNIX-socket connection;
  ``socketpair`` and pipes stay, so an inherited-fd protocol with the worker keeps working);
* reaching other processes: ``ptrace``, ``process_vm_readv``/``writev``, ``pidfd_getfd``,
  ``kcmp``, ``process_madvise``;
* kernel attack surface with no use in a candidate: ``bpf``, ``userfaultfd``, ``io_uring_*``,
  ``perf_event_open``, the key ring, module loading, ``kexec``;
* changing its view of the system: ``mount`` and the new mount API, ``unshare``, ``setns``,
  ``chroot``, ``pivot_root``, and ``clone`` with any namespace flag (``clone3``, whose flags
  sit in memory a filter cannot read, answers ENOSYS so libc falls back to ``clone``).

Other architectures' system calls (i386 via ``int 0x80``, x32) kill the process. The
filter is built once per worker (:func:`program`) and installed in each forked child
(:func:`install`, after ``no_new_privs``); children inherit it across fork and exec.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

# BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
LD_W_ABS, JEQ_K, JSET_K, JGE_K, RET_K = 0x20, 0x15, 0x45, 0x35, 0x06
RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
SECCOMP_MODE_FILTER = 2
PR_SET_SECCOMP = 22
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0 = 0, 4, 16  # struct seccomp_data (arg0's low word, little-endian)
X32_SYSCALL_BIT = 0x40000000
CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 \
    | 0x00000080  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME

DENIED = ("socket", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "process_madvise",
          "bpf", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "perf_event_open",
          "keyctl", "add_key", "request_key", "init_module", "finit_module", "delete_module", "kexec_load",
          "kexec_file_load", "mount", "umount2", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount",
          "fspick", "mount_setattr", "unshare", "setns", "chroot", "pivot_root", "open_by_handle_at",
          "name_to_handle_at", "fanotify_init", "quotactl", "swapon", "swapoff", "reboot", "syslog", "acct",
          "settimeofday", "clock_settime", "memfd_secret", "lookup_dcookie", "iopl", "ioperm", "modify_ldt",
          "uselib", "_sysctl")

# Syscall numbers from the kernel headers (asm/unistd_64.h; asm-generic/unistd.h for aarch64).
_X86_64 = dict(socket=41, ptrace=101, process_vm_readv=310, process_vm_writev=311, pidfd_getfd=438, kcmp=312,
               process_madvise=440, bpf=321, userfaultfd=323, io_uring_setup=425, io_uring_enter=426,
               io_uring_register=427, perf_event_open=298, keyctl=250, add_key=248, request_key=249,
               init_module=175, finit_module=313, delete_module=176, kexec_load=246, kexec_file_load=320,
               mount=165, umount2=166, move_mount=429, open_tree=428, fsopen=430, fsconfig=431, fsmount=432,
               fspick=433, mount_setattr=442, unshare=272, setns=308, chroot=161, pivot_root=155,
               open_by_handle_at=304, name_to_handle_at=303, fanotify_init=300, quotactl=179, swapon=167,
               swapoff=168, reboot=169, syslog=103, acct=163, settimeofday=164, clock_settime=227,
               memfd_secret=447, lookup_dcookie=212, iopl=172, ioperm=173, modify_ldt=154, uselib=134,
               _sysctl=156, clone=56, clone3=435)
_AARCH64 = dict(socket=198, ptrace=117, process_vm_readv=270, process_vm_writev=271, pidfd_getfd=438, kcmp=272,
                process_madvise=440, bpf=280, userfaultfd=282, io_uring_setup=425, io_uring_enter=426,
                io_uring_register=427, perf_event_open=241, keyctl=219, add_key=217, request_key=218,
                init_module=105, finit_module=273, delete_module=106, kexec_load=104, kexec_file_load=294,
                mount=40, umount2=39, move_mount=429, open_tree=428, fsopen=430, fsconfig=431, fsmount=432,
                fspick=433, mount_setattr=442, unshare=97, setns=268, chroot=51, pivot_root=41,
                open_by_handle_at=265, name_to_handle_at=264, fanotify_init=262, quotactl=60, swapon=224,
                swapoff=225, reboot=142, syslog=116, acct=89, settimeofday=170, clock_settime=112,
                memfd_secret=447, lookup_dcookie=18, clone=220, clone3=435)
ARCHES = {"x86_64": (0xC000003E, _X86_64), "aarch64": (0xC00000B7, _AARCH64)}  # AUDIT_ARCH_*

_libc = ctypes.CDLL(None, use_errno=True)


class _Filter(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def unsupported_reason() -> str | None:
    if platform.system() != "Linux":
        return "not Linux"
    if platform.machine() not in ARCHES:
        return f"no syscall table for {platform.machine()}"
    return None


def program(machine: str | None = None) -> bytes:
    """The filter's BPF instructions for ``machine`` (default: this one)."""
    arch, numbers = ARCHES[machine or platform.machine()]
    denied = sorted({numbers[name] for name in DENIED if name in numbers})
    deny = _insn(RET_K, RET_ERRNO | errno.EPERM)
    body = [_insn(LD_W_ABS, OFFSET_NR)]
    if arch == ARCHES["x86_64"][0]:
        body.append(_insn(JGE_K, X32_SYSCALL_BIT, 0, 1))  # x32 ABI: kill
        body.append(_insn(RET_K, RET_KILL_PROCESS))
    for nr in denied:
        body += [_insn(JEQ_K, nr, 0, 1), deny]
    body += [_insn(JEQ_K, numbers["clone3"], 0, 1), _insn(RET_K, RET_ERRNO | errno.ENOSYS),
             _insn(JEQ_K, numbers["clone"], 0, 3), _insn(LD_W_ABS, OFFSET_ARG0),
             _insn(JSET_K, CLONE_NAMESPACES, 0, 1), deny, _insn(RET_K, RET_ALLOW)]
    head = [_insn(LD_W_ABS, OFFSET_ARCH), _insn(JEQ_K, arch, 1, 0), _insn(RET_K, RET_KILL_PROCESS)]
    return b"".join(head + body)


class Prepared:
    """``prog`` laid out as the kernel's struct sock_fprog, once (a worker prepares it before forking)."""

    def __init__(self, prog: bytes):
        self.buffer = ctypes.create_string_buffer(prog, len(prog))
        self.fprog = _Filter(len(prog) // 8, ctypes.cast(self.buffer, ctypes.c_void_p))
        self.ref = ctypes.byref(self.fprog)
        self.prctl = _libc.prctl


def install(prog: bytes | Prepared) -> None:
    """Install ``prog`` on the calling process (needs no_new_privs, or CAP_SYS_ADMIN); the kernel
    copies it, and every thread and child created afterwards inherits it."""
    prepared = prog if isinstance(prog, Prepared) else Prepared(prog)
    if prepared.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prepared.ref, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter refused: {os.strerror(err)}")

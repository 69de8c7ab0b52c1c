"""The kernel layers every candidate child gets where the kernel offers them, with or
without bubblewrap, as any user: Landlock (:mod:`evaluators.landlock`) and a seccomp filter
(:mod:`evaluators.seccomp`).

:class:`KernelLayers` is prepared once per worker (a Landlock ruleset over the worker's
read-only paths plus its scratch folder, and the BPF program) and :meth:`KernelLayers.apply`
runs in each forked child as the last step of its lock-down (about 0.2 ms): after it the
child and its descendants see no file outside those paths (``/proc`` included: no other
process's environment or command line), open no socket, trace no process and create no
namespace.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from evaluators import landlock, seccomp

# Device files a Python process may need; nothing else of /dev.
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


class KernelLayers:
    """``require``: raise OSError naming the cause instead of leaving a layer out."""

    def __init__(self, read: Iterable[str | Path], write: Iterable[str | Path], require: bool = False):
        self.ruleset: landlock.Ruleset | None = None
        self.filter: seccomp.Prepared | None = None
        self.notes: dict[str, str] = {}
        try:
            self.ruleset = landlock.Ruleset(list(read) + list(DEVICES[1:]), list(write) + [DEVICES[0]])
        except OSError as e:
            self.notes["landlock"] = str(e.strerror or e)
        why = seccomp.unsupported_reason()
        if why is None:
            self.filter = seccomp.Prepared(seccomp.program())
        else:
            self.notes["seccomp"] = why
        if require and self.notes:
            raise OSError("; ".join(f"{k}: {v}" for k, v in self.notes.items()))

    def hold(self, fd: int) -> int:
        """In the child: move the ruleset's descriptor to ``fd`` (the child closes every other);
        returns the first descriptor not held."""
        if self.ruleset is None:
            return fd
        os.dup2(self.ruleset.fd, fd)
        self.ruleset.fd = fd
        return fd + 1

    def apply(self) -> None:
        """In the child, after no_new_privs (and after dropping privileges): irreversible."""
        if self.ruleset is not None:
            self.ruleset.restrict_self()
            self.ruleset.close()  # the candidate inherits no handle on it
        if self.filter is not None:
            seccomp.install(self.filter)  # last: the filter refuses nothing the steps above need

    def report(self) -> dict[str, str]:
        layers = {}
        if self.ruleset is not None:
            layers["landlock"] = (f"active: {self.ruleset.describe()}; reads only system, Python, engine and "
                                  "problem paths, writes only scratch, no /proc")
        else:
            layers["landlock"] = f"missing: {self.notes.get('landlock', 'disabled')}"
        if self.filter is not None:
            layers["seccomp"] = "active: no socket, ptrace, process_vm_*, bpf, io_uring, mount or namespaces"
        else:
            layers["seccomp"] = f"missing: {self.notes.get('seccomp', 'disabled')}"
        return layers

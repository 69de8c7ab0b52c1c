"""The kernel layers on their own (evaluators/landlock.py, seccomp.py, confine.py), each
checked in a real forked child that applies them and then tries what they must refuse and
what a candidate (and a pipe protocol with its worker) must still be able to do."""
import errno
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from evaluators import landlock, seccomp
from evaluators.confine import KernelLayers


def in_child(setup, probes: dict) -> dict:
    """Fork; in the child run ``setup`` and then each probe; return probe -> "ok" or the errno name."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child always _exits
        os.close(r)
        results = {}
        try:
            setup()
            for name, probe in probes.items():
                try:
                    probe()
                    results[name] = "ok"
                except OSError as e:
                    results[name] = errno.errorcode.get(e.errno, str(e.errno))
        except BaseException as e:
            results["setup"] = repr(e)
        os.write(w, repr(results).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return eval(data.decode())


def no_new_privs():
    import ctypes
    assert ctypes.CDLL(None).prctl(38, 1, 0, 0, 0) == 0


@pytest.fixture
def place():
    root = Path(tempfile.mkdtemp(prefix="evosearch-kernel-"))
    (root / "scratch").mkdir()
    (root / "secret.txt").write_text("secret")
    (root / "readable").mkdir()
    (root / "readable" / "data.txt").write_text("data")
    yield root
    import shutil
    shutil.rmtree(root)


def test_landlock_abi_is_reported():
    assert landlock.abi_version() >= 1, "these tests need Landlock; evosearch doctor says why it is missing"


def test_landlock_allows_only_the_listed_paths(place):
    rules = landlock.Ruleset(read=["/usr", "/lib", "/lib64", sys.base_prefix, place / "readable"],
                             write=[place / "scratch"])

    def setup():
        no_new_privs()
        rules.restrict_self()

    seen = in_child(setup, {
        "read allowed": lambda: open(place / "readable" / "data.txt").read(),
        "write allowed": lambda: open(place / "scratch" / "out", "w").write("x"),
        "read secret": lambda: open(place / "secret.txt").read(),
        "write readable": lambda: open(place / "readable" / "new", "w"),
        "proc": lambda: os.listdir("/proc"),
        "parent environ": lambda: open(f"/proc/{os.getppid()}/environ", "rb").read(),
        "etc": lambda: open("/etc/hostname").read(),
        "tcp": lambda: socket.create_connection(("127.0.0.1", 9), timeout=1),
        "signal parent": lambda: os.kill(os.getppid(), 0),
        "exec": lambda: subprocess.run(["/usr/bin/true"], check=True),
    })
    rules.close()
    assert seen["read allowed"] == seen["write allowed"] == seen["exec"] == "ok"
    for name in ("read secret", "write readable", "proc", "parent environ", "etc"):
        assert seen[name] == "EACCES", (name, seen)
    if landlock.abi_version() >= 4:
        assert seen["tcp"] == "EACCES"
    if landlock.abi_version() >= 6:
        assert seen["signal parent"] == "EPERM"


def test_excluding_carves_a_hidden_folder_out(place):
    (place / "readable" / "runs" / "r1").mkdir(parents=True)
    (place / "readable" / "sub").mkdir()
    allowed = landlock.excluding([place / "readable", "/usr"], [place / "readable" / "runs"])
    assert sorted(allowed) == sorted([str(place / "readable" / "data.txt"), str(place / "readable" / "sub"), "/usr"])
    assert landlock.excluding([place], [place]) == []


def test_seccomp_numbers_match_the_kernel_headers():
    headers = {"x86_64": "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "aarch64": "/usr/include/asm-generic/unistd.h"}
    checked = 0
    for machine, path in headers.items():
        if not os.path.exists(path):  # linux-libc-dev: on Debian and Ubuntu dev machines and CI images
            continue
        text = Path(path).read_text()
        table = {m[1]: int(m[2]) for m in re.finditer(r"#define __NR3?2?_?(\w+)\s+(\d+)\b", text)}
        for name, number in seccomp.ARCHES[machine][1].items():
            assert table[name] == number, (machine, name)
        checked += 1
    assert checked, "no kernel headers to check the syscall tables against (apt-get install linux-libc-dev)"


def test_seccomp_refuses_the_listed_calls_and_keeps_python_working():
    assert seccomp.unsupported_reason() is None
    prog = seccomp.program()
    r, w = os.pipe()  # a pipe inherited from the worker: the protocol a trusted harness would use

    def setup():
        no_new_privs()
        seccomp.install(prog)

    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    def call(rc):
        if rc != 0:
            raise OSError(ctypes.get_errno(), "refused")

    def spawn_thread():
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()

    def fork_and_wait():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

    seen = in_child(setup, {
        "socket": lambda: socket.socket(),
        "unix socket": lambda: socket.socket(socket.AF_UNIX),
        "socketpair": lambda: socket.socketpair(),
        "pipe protocol": lambda: (os.write(w, b"ping"), os.read(r, 4)),
        "ptrace": lambda: call(libc.ptrace(16, os.getppid(), None, None)),
        "unshare": lambda: call(libc.unshare(0x10000000)),
        "clone newuser": lambda: call(-1 if libc.syscall(56, 0x10000000 | 17, None, None, None, None) < 0 else 0),
        "mount": lambda: call(libc.mount(b"none", b"/mnt", b"tmpfs", 0, None)),
        "thread": spawn_thread,
        "fork": fork_and_wait,
        "subprocess": lambda: subprocess.run(["/bin/true"], check=True),
    })
    os.close(r)
    os.close(w)
    for name in ("socket", "unix socket", "ptrace", "unshare", "clone newuser", "mount"):
        assert seen[name] == "EPERM", (name, seen)
    for name in ("socketpair", "pipe protocol", "thread", "fork", "subprocess"):
        assert seen[name] == "ok", (name, seen)


def test_seccomp_kills_other_abis():
    prog = seccomp.program()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        no_new_privs()
        seccomp.install(prog)
        import ctypes
        ctypes.CDLL(None).syscall(0x40000000 | 39)  # x32 getpid: a way around a filter keyed on x86-64 numbers
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 31  # SIGSYS


def test_kernel_layers_report_and_apply(place):
    layers = KernelLayers(read=["/usr", "/lib", "/lib64", sys.base_prefix], write=[place / "scratch"], require=True)
    report = layers.report()
    assert report["landlock"].startswith("active") and report["seccomp"].startswith("active")

    def setup():
        no_new_privs()
        fd = layers.hold(50)  # what the child's lock-down does before closing every other descriptor
        assert fd == 51
        layers.apply()

    seen = in_child(setup, {"secret": lambda: open(place / "secret.txt").read(),
                            "devnull": lambda: open(os.devnull, "w").write("x"),
                            "urandom": lambda: open("/dev/urandom", "rb").read(1),
                            "held fd closed": lambda: os.fstat(50),
                            "socket": lambda: socket.socket()})
    assert seen == {"secret": "EACCES", "devnull": "ok", "urandom": "ok", "held fd closed": "EBADF", "socket": "EPERM"}

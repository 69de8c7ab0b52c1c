"""Hostile candidates: each attack is a bin packing program evaluated the way a run does it
(``Evaluator.evaluate``: probe, then the full split) on real sandbox workers, once with
bubblewrap (where it works on this machine) and once without it (rlimits-only mode plus
what root allows). After every attack:

* the candidate is recorded with the expected status and reason, or, where the attack is
  harmless, scored exactly as the same program scores without the attack;
* no score is forged (an "ok" is only ever the honest score);
* the engine survives: the same workers still score Best-Fit honestly;
* no process of the candidate is left (below the workers, or under the candidate's uid);
* no file outside scratch changed: the test's secrets folder (a run directory with a real
  SQLite store, a home with ~/.ssh, a daemon's socket) is byte-identical, and no file
  named with the attack's token appeared in /tmp, /var/tmp or /dev/shm.

An attack that a missing layer would let through (say, writing to /tmp without
bubblewrap) is skipped with that layer's own report as the reason: the test suite
asserts the layer list matches what candidates actually observe (test_layers_*).
"""
import asyncio
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest

from evaluators import bubblewrap
from evaluators.evaluator import Evaluator
from evaluators.pool import PoolError, WorkerPool
from evaluators.sandbox import OUTPUT_BYTES, describe_layers
from evosearch.problem import load_problem
from evosearch.store import Store

OPTIONS = {"train_instances": 1, "train_items": 200}  # small: the attacks, not the packing, take the time
TIMEOUT_S = 1.5
MEMORY_MB = 768
CANARY_VAR = "EVOSEARCH_TEST_CANARY"
CANARY = f"canary-{uuid.uuid4().hex}"
os.environ[CANARY_VAR] = CANARY  # any process started from here that leaks its environment leaks this

BEST_FIT = "import numpy as np\n\n\ndef priority(item, bins):\n    return -(bins - item)\n"


def program(body: str = "return -(bins - item)", prelude: str = "") -> str:
    """A bin packing candidate: module-level ``prelude`` (runs when the program is loaded),
    then ``priority`` running ``body``."""
    return f"import numpy as np\n{textwrap.dedent(prelude)}\n\ndef priority(item, bins):\n" + \
        textwrap.indent(textwrap.dedent(body), "    ")


def in_process_score(priority) -> float:
    """Trusted score of a harmless (test-written) priority function, no sandbox."""
    problem = load_problem("bin_packing", options=OPTIONS)
    instances = problem.instances("train")
    return problem.aggregate({name: problem.score(inst, problem.output({"priority": priority}, inst))
                              for name, inst in instances.items()}).score


HONEST = in_process_score(lambda item, bins: -(bins - item))


# ---------------------------------------------------------------- what the attacks go after


class Secrets:
    """Test-owned things outside any scratch directory, laid out like the real ones."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="evosearch-secrets-"))
        self.root.chmod(0o755)  # like a checkout or a home: anyone may look inside
        self.home = self.root / "home"
        (self.home / ".ssh").mkdir(parents=True)
        (self.home / ".ssh").chmod(0o700)
        self.key = self.home / ".ssh" / "id_ed25519"
        self.key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{CANARY}\n")
        self.key.chmod(0o600)
        self.run_dir = self.root / "runs" / "bin_packing-1"
        self.run_dir.mkdir(parents=True)  # default permissions, as `evosearch run` makes them
        self.store_path = self.run_dir / "evosearch.db"
        store = Store(self.store_path)
        store.begin(0, island=None, parents=[], sampler="seed")
        store.update(0, code=f"# {CANARY}\n{BEST_FIT}", status="ok", score=-1.0)
        store.close()
        self.daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a local service anyone may talk to
        self.daemon_path = self.run_dir / "daemon.sock"
        self.daemon.bind(str(self.daemon_path))
        self.daemon_path.chmod(0o777)
        self.daemon.listen()
        self.daemon.setblocking(False)
        self.listener = socket.create_server(("127.0.0.1", 0))  # a loopback service of the host
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]

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
        self.daemon.close()
        self.listener.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def secrets():
    s = Secrets()
    yield s
    s.close()


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module", params=["bubblewrap", "plain"])
def sandbox(request, loop, secrets):
    """A pool of two workers in one isolation mode, and what it reports."""
    if request.param == "bubblewrap" and bubblewrap.unusable_reason():
        pytest.skip(f"bubblewrap mode unavailable on this machine: {bubblewrap.unusable_reason()}")
    pool = WorkerPool("bin_packing", options=OPTIONS, workers=2, bubblewrap=request.param == "bubblewrap")
    loop.run_until_complete(pool.start())
    yield pool
    loop.run_until_complete(pool.close())


def needs(pool, *layers):
    """Skip unless one of ``layers`` is active: the attack would get through without it."""
    isolation = pool.info["isolation"]
    if not any(isolation[name].startswith("active") for name in layers):
        pytest.skip("; ".join(f"{name} {isolation[name]}" for name in layers))


def leftovers(pool) -> list:
    from evaluators.zygote import NAME  # each worker's zygote (interactive problems) is no leftover
    below = [p for pid in pool.pids for p in psutil.Process(pid).children(recursive=True)
             if not (p.ppid() == pid and p.name() == NAME[:15])]
    uids = set(pool.candidate_uids)
    owned = [p for p in psutil.process_iter(["uids"]) if uids and p.info["uids"] and p.info["uids"].real in uids]
    return below + owned


def token_files(token: str) -> list[str]:
    found = []
    for folder in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            found += [os.path.join(folder, n) for n in os.listdir(folder) if token in n]
        except OSError:
            pass
    return found


def attack(loop, pool, secrets, code: str, token: str | None = None, **limits):
    """Evaluate ``code`` as a run would, check every invariant, and return the Evaluation.
    ``token``: a name part of every file the attack tries to create outside scratch."""
    token = token or code_token(code)
    before = secrets.snapshot()
    evaluator = Evaluator(pool, timeout_s=limits.get("timeout_s", TIMEOUT_S), memory_mb=limits.get("memory_mb"))
    result = loop.run_until_complete(evaluator.evaluate(code, key=1))
    print(f"[{'bubblewrap' if pool.info['isolation']['bubblewrap'].startswith('active') else 'plain'}] "
          f"{result.status}: {result.reason}")
    assert not leftovers(pool), "a process of the candidate outlived its job"
    assert secrets.snapshot() == before, "a file outside scratch changed"
    assert not token_files(token), "the candidate wrote outside its scratch directory"
    assert secrets.connections() == 0, "the candidate reached a host service"
    assert result.status != "ok" or result.score == result_if_honest(code), "a forged score"
    survivor = loop.run_until_complete(pool.run(BEST_FIT, "train"))
    assert survivor["status"] == "ok" and survivor["score"] == HONEST, "the engine did not survive"
    return result


_HONEST_SCORES: dict[str, float] = {}


def result_if_honest(code: str) -> float:
    return _HONEST_SCORES.get(code, HONEST)


def code_token(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- time, memory, processes


def test_infinite_loop(loop, sandbox, secrets):
    result = attack(loop, sandbox, secrets, program("while True:\n    pass"))
    assert result.status == "timeout" and f"deadline of {TIMEOUT_S:g} s" in result.reason


def test_sleep_past_the_deadline(loop, sandbox, secrets):
    result = attack(loop, sandbox, secrets, program("import time\ntime.sleep(3600)"))
    assert result.status == "timeout" and "wall-clock deadline" in result.reason


def test_sigterm_handler_that_ignores_termination(loop, sandbox, secrets):
    prelude = "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n    signal.signal(s, signal.SIG_IGN)"
    result = attack(loop, sandbox, secrets, program("while True:\n    pass", prelude))
    assert result.status == "timeout"


def test_memory_bomb(loop, sandbox, secrets):
    result = attack(loop, sandbox, secrets, program(prelude="hog = bytearray(8 << 30)"), memory_mb=MEMORY_MB)
    assert result.status == "memory" and result.reason.startswith("MemoryError")
    result = attack(loop, sandbox, secrets, program("blocks = []\nwhile True:\n    blocks.append(np.empty(1 << 22))"),
                    memory_mb=MEMORY_MB)
    assert result.status == "memory"


def test_fork_bomb(loop, sandbox, secrets):
    needs(sandbox, "privileges")  # the process-count limit binds only a uid of its own
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    result = attack(loop, sandbox, secrets, program(prelude=bomb))
    assert result.status in ("timeout", "crash")  # the first copy to hit EAGAIN may die first


def test_setsid_grandchild_is_killed(loop, sandbox, secrets):
    marker = f"{uuid.uuid4().int % 10**7}.5"  # sleep's argument names the daemon uniquely
    daemon = f'''
        import os
        r, w = os.pipe()
        if os.fork() == 0:
            os.setsid()  # leaves the candidate's process group
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "{marker}"])
            os._exit(0)
        os.close(w)
        os.read(r, 1)  # EOF once the daemon exec'd (the pipe is close-on-exec)
    '''
    result = attack(loop, sandbox, secrets, program(prelude=daemon))
    assert result.status == "ok" and result.score == HONEST
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", marker]]


def test_threads_left_running(loop, sandbox, secrets):
    prelude = '''
        import threading, time
        def linger():
            while True:
                time.sleep(0.05)
        for _ in range(4):
            threading.Thread(target=linger).start()  # not daemons: they would keep a process alive
    '''
    result = attack(loop, sandbox, secrets, program(prelude=prelude))
    assert result.status == "ok" and result.score == HONEST


def test_disk_fill_one_file(loop, sandbox, secrets):
    prelude = "with open('fill', 'wb') as f:\n    for _ in range(64):\n        f.write(bytes(4 << 20))"
    result = attack(loop, sandbox, secrets, program(prelude=prelude))
    # Python ignores SIGXFSZ, so the write past RLIMIT_FSIZE fails with EFBIG instead of killing it.
    assert result.status == "crash" and result.reason == "OSError: [Errno 27] File too large"


def test_disk_fill_many_files(loop, sandbox, secrets):
    # 40 files of 8 MiB: more than the 128 MiB scratch tmpfs, each under the per-file limit.
    prelude = "for i in range(40):\n    with open(f'fill{i}', 'wb') as f:\n        f.write(bytes(8 << 20))"
    result = attack(loop, sandbox, secrets, program(prelude=prelude), timeout_s=20)
    if sandbox.info["isolation"]["filesystem"].startswith("active"):
        assert result.status == "crash" and "No space left on device" in result.reason
    else:  # rlimits-only: bounded per file and by the deadline; the scratch directory is removed after
        assert result.status == "ok" and result.score == HONEST
    for worker in sandbox._slots:
        if worker is not None and worker.scratch_root is not None:
            assert os.listdir(worker.scratch_root) == []


def test_stdout_flood(loop, sandbox, secrets):
    prelude = "import sys\nfor _ in range(3000):\n    sys.stdout.write('x' * 10000 + '\\n')"
    result = attack(loop, sandbox, secrets, program(prelude=prelude))
    assert result.status == "ok" and result.score == HONEST
    assert result.output.startswith("x" * 100) and "more bytes dropped" in result.output
    assert len(result.output) < OUTPUT_BYTES + 100


def test_deep_recursion(loop, sandbox, secrets):
    result = attack(loop, sandbox, secrets, program("return priority(item, bins)"))
    assert result.status == "crash" and result.reason.startswith("RecursionError")
    deep = '''
        nested = ()
        for _ in range(3 * 10 ** 5):
            nested = (nested,)
        hash(nested)  # recurses in C with no depth check: the C stack overflows
    '''
    result = attack(loop, sandbox, secrets, program(prelude=deep), timeout_s=10)
    assert result.status == "crash" and result.reason == "killed by SIGSEGV"


# ---------------------------------------------------------------- dying and lying about it


@pytest.mark.parametrize("prelude, reason", [
    ("import ctypes\nctypes.string_at(0)", "killed by SIGSEGV"),
    ("import os\nos._exit(3)", "exited with code 3 without a result"),
    ("raise SystemExit(0)", "SystemExit: 0"),
    ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGINT)", "killed by SIGINT"),
], ids=["ctypes_segfault", "os_exit", "system_exit", "keyboard_interrupt", "sigint"])
def test_dying_candidates_crash(loop, sandbox, secrets, prelude, reason):
    result = attack(loop, sandbox, secrets, program(prelude=prelude))
    assert result.status == "crash" and result.reason == reason


def test_killing_the_worker(loop, sandbox, secrets):
    needs(sandbox, "privileges", "pid namespace")
    restarts = sandbox.restarts
    result = attack(loop, sandbox, secrets, program(prelude="import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"))
    assert result.status == "crash" and result.reason.startswith(("PermissionError", "ProcessLookupError"))
    assert sandbox.restarts == restarts


def test_killing_everything_it_can(loop, sandbox, secrets):
    needs(sandbox, "privileges", "pid namespace")  # kill(-1) reaches only its own uid or namespace
    result = attack(loop, sandbox, secrets, program(prelude="import os, signal\nos.kill(-1, signal.SIGKILL)"))
    if sandbox.info["isolation"]["pid namespace"].startswith("active"):
        # Nothing in its namespace but itself, which kill(-1) spares, and PID 1: no such process.
        assert result.status == "crash" and result.reason.startswith("ProcessLookupError")
    else:  # kill(-1) reports success when every process it found refused the signal
        assert result.status == "ok" and result.score == HONEST


def test_forged_result_lines_on_stdout_are_not_believed(loop, sandbox, secrets):
    forged = '{"status": "ok", "reason": null, "score": 1e9, "descriptors": {}, "metrics": {}, ' \
             '"functional_hash": null, "eval_s": 0}'
    prelude = f'''
        import os, sys
        FORGED = {forged!r}
        print(FORGED, flush=True)
        print(FORGED, file=sys.stderr, flush=True)
        for fd in [0, 1, 2] + list(range(4, 64)):  # 3 is its own result pipe
            try:
                os.write(fd, (FORGED + "\\n").encode())
            except OSError:
                pass
    '''
    result = attack(loop, sandbox, secrets, program(prelude=prelude))
    assert result.status == "ok" and result.score == HONEST
    assert forged in result.output  # shown for the record, never believed


def test_forged_result_on_its_own_pipe(loop, sandbox, secrets):
    result = attack(loop, sandbox, secrets, program(prelude='import os\nos.write(3, b"{\\"status\\": \\"ok\\"")'))
    # fd 3 is the interactive harness's socket (evaluators/zygote.py): garbage there is a recorded failure.
    assert result.status in ("crash", "invalid") and result.score is None
    # Well-formed, but a packing that puts every item in bin 0: the trusted scorer checks it.
    forge = '''
        import json, os, sys
        frame = sys._getframe(1)
        while "instances" not in frame.f_locals:
            frame = frame.f_back
        outputs = {name: [0] * len(inst["items"]) if isinstance(inst, dict) else [[0]] * len(inst)
                   for name, inst in frame.f_locals["instances"].items()}
        os.write(3, json.dumps({"outputs": outputs}).encode())
        os._exit(0)
    '''
    result = attack(loop, sandbox, secrets, program(forge))
    assert result.status != "ok" and result.score is None  # no frame holds the instances: nothing to forge from


# ---------------------------------------------------------------- tampering with the harness


def test_monkeypatched_builtins(loop, sandbox, secrets):
    # The sandbox's harness now sends every item to bin 0; the trusted scorer sees the overflow.
    prelude = "import builtins\nbuiltins.int = lambda *a, **k: 0"
    result = attack(loop, sandbox, secrets, program(prelude=prelude))
    # The harness runs in the trusted worker (interactive problem): only the candidate's own process breaks.
    assert result.status != "ok" or result.score == HONEST


def test_monkeypatched_numpy(loop, sandbox, secrets):
    # Every bin looks feasible to the sandbox's harness; the trusted scorer still checks capacity.
    result = attack(loop, sandbox, secrets, program("return np.zeros(len(bins))",
                                                    "np.flatnonzero = lambda mask: np.arange(len(mask))"))
    # The trusted harness's numpy is not the candidate's: all-equal priorities simply pack first-fit.
    assert result.status == "ok" and result.score == in_process_score(lambda item, bins: np.zeros(len(bins)))


def test_monkeypatched_scoring_harness(loop, sandbox, secrets):
    prelude = '''
        import sys
        for module in list(sys.modules.values()):
            for name in ("BinPacking", "Worker", "Evaluator"):
                cls = getattr(module, name, None)
                if isinstance(cls, type):
                    for attr in ("score", "aggregate", "handle"):
                        if hasattr(cls, attr):
                            setattr(cls, attr, lambda *a, **k: {"score": 1e9})
            if hasattr(module, "functional_hash"):
                module.functional_hash = lambda *a, **k: "0" * 64
    '''
    result = attack(loop, sandbox, secrets, program(prelude=prelude))
    assert result.status == "ok" and result.score == HONEST


def test_shortened_instance(loop, sandbox, secrets):
    # Edits the sandbox's copy of the instance; the trusted side holds its own.
    body = '''
        import sys
        frame = sys._getframe(1)
        while frame is not None and "items" not in frame.f_locals:  # absent in the probe run
            frame = frame.f_back
        if frame is not None and len(frame.f_locals["items"]) > 10:
            del frame.f_locals["items"][10:]
        return -(bins - item)
    '''
    result = attack(loop, sandbox, secrets, program(body))
    assert result.status == "ok" and result.score == HONEST  # no frame of the candidate's holds the items


def test_huge_output(loop, sandbox, secrets):
    body = '''
        import sys
        frame = sys._getframe(1)
        while frame is not None and "assignment" not in frame.f_locals:  # absent in the probe run
            frame = frame.f_back
        if frame is not None and not padded:  # once: about 70 MB of JSON in the first instance's output
            padded.append(True)
            frame.f_locals["assignment"].extend(["x" * 1000] * 70000)
        return -(bins - item)
    '''
    result = attack(loop, sandbox, secrets, program(body, prelude="padded = []"), memory_mb=1024, timeout_s=10)
    assert result.status == "ok" and result.score == HONEST  # the assignment lives in the trusted worker


# ---------------------------------------------------------------- strange return values


def test_nan_and_inf_priorities_score_as_what_they_are(loop, sandbox, secrets):
    for value in ("np.nan", "np.inf", "-np.inf"):
        code = program(f"return np.full(len(bins), {value})")
        _HONEST_SCORES[code] = in_process_score(lambda item, bins, v=eval(value): np.full(len(bins), v))
        result = attack(loop, sandbox, secrets, code)
        assert result.status == "ok" and result.score == _HONEST_SCORES[code]


def test_huge_array(loop, sandbox, secrets):
    result = attack(loop, sandbox, secrets, program("return np.ones(len(bins) + 10 ** 10)"), memory_mb=MEMORY_MB)
    assert result.status == "memory"


def test_ndarray_subclass(loop, sandbox, secrets):
    prelude = '''
        class Liar(np.ndarray):
            def __eq__(self, other):
                return True
            def __len__(self):
                return 10 ** 9
            def __float__(self):
                return 1e300
    '''
    result = attack(loop, sandbox, secrets, program("return (-(bins - item)).view(Liar)", prelude))
    assert result.status == "ok" and result.score == HONEST


def test_object_with_lying_dunders(loop, sandbox, secrets):
    prelude = '''
        class Liar:
            def __eq__(self, other):
                return True
            def __len__(self):
                return 10 ** 9
            def __float__(self):
                return float("inf")
            def __index__(self):
                return 0
    '''
    result = attack(loop, sandbox, secrets, program("return Liar()", prelude))
    assert result.status == "crash" and result.score is None


# ---------------------------------------------------------------- escaping: files, secrets, network


def escape_attempt(targets: list[str], how: str) -> str:
    """A candidate that tries ``how`` on every target and raises naming any that worked."""
    return program(prelude=f'''
        import os
        worked = []
        for target in {targets!r}:
            try:
                {how}
                worked.append(target)
            except Exception:  # OSError, sqlite3.OperationalError...: it did not work
                pass
        if worked:
            raise RuntimeError(f"ESCAPED {{worked}}")
    ''')


def test_writes_into_the_engines_files(loop, sandbox, secrets):
    needs(sandbox, "privileges", "filesystem")
    token = uuid.uuid4().hex
    targets = [str(secrets.run_dir / f"evil-{token}"), str(secrets.home / f"evil-{token}"),
               str(secrets.home / ".ssh" / "authorized_keys"), str(secrets.store_path),
               str(secrets.run_dir / "evosearch.db-wal")]
    result = attack(loop, sandbox, secrets, escape_attempt(targets, "open(target, 'ab').write(b'x')"))
    assert result.status == "ok" and result.score == HONEST


def test_writes_to_world_writable_places(loop, sandbox, secrets):
    needs(sandbox, "filesystem")
    token = uuid.uuid4().hex
    code = escape_attempt([f"/tmp/escape-{token}", f"/var/tmp/escape-{token}", f"/dev/shm/escape-{token}"],
                          "open(target, 'wb').write(b'x')")
    result = attack(loop, sandbox, secrets, code, token=token)
    assert result.status == "ok" and result.score == HONEST


def test_reading_ssh_keys(loop, sandbox, secrets):
    needs(sandbox, "privileges", "filesystem")
    targets = [str(secrets.key), os.path.expanduser("~/.ssh/id_rsa"), os.path.expanduser("~/.ssh/id_ed25519")]
    result = attack(loop, sandbox, secrets, escape_attempt(targets, "open(target, 'rb').read(1)"))
    assert result.status == "ok" and result.score == HONEST


def test_reading_the_store(loop, sandbox, secrets):
    needs(sandbox, "filesystem")  # the store is world-readable, as run directories are made
    code = escape_attempt([str(secrets.store_path)],
                          "import sqlite3\n"
                          "                sqlite3.connect(f'file:{target}?mode=ro', uri=True)"
                          ".execute('SELECT code FROM programs').fetchall()")
    result = attack(loop, sandbox, secrets, code)
    assert result.status == "ok" and result.score == HONEST
    code = escape_attempt([str(secrets.store_path)], "open(target, 'rb').read(100)")
    result = attack(loop, sandbox, secrets, code)
    assert result.status == "ok" and result.score == HONEST


def test_reading_other_processes_environment(loop, sandbox, secrets):
    needs(sandbox, "privileges", "pid namespace")
    prelude = f'''
        import os
        try:
            mine = open("/proc/self/environ", "rb").read()
        except OSError:  # after dropping root the process is not dumpable: not even it may read this
            mine = b""
        if {CANARY!r}.encode() in mine or {CANARY_VAR!r} in os.environ:
            raise RuntimeError("ESCAPED: the canary is in the candidate's own environment")
        read = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.stat(f"/proc/{{pid}}").st_uid == os.getuid():
                    continue  # its own processes
                open(f"/proc/{{pid}}/environ", "rb").read()
                read.append(pid)
            except OSError:
                pass
        if read:
            raise RuntimeError(f"ESCAPED: read the environment of {{read[:5]}}")
    '''
    result = attack(loop, sandbox, secrets, program(prelude=prelude))
    assert result.status == "ok" and result.score == HONEST


def test_loopback_socket(loop, sandbox, secrets):
    needs(sandbox, "network")
    prelude = f'''
        import socket
        socket.create_connection(("127.0.0.1", {secrets.port}), timeout=5)
        raise RuntimeError("ESCAPED: connected")
    '''
    result = attack(loop, sandbox, secrets, program(prelude=prelude))
    assert result.status == "crash"
    assert result.reason.startswith(("ConnectionRefusedError", "OSError: [Errno 101]")), result.reason


def test_public_address_socket(loop, sandbox, secrets):
    needs(sandbox, "network")  # without it nothing is sent: no traffic to public addresses, ever
    prelude = '''
        import socket
        socket.create_connection(("1.1.1.1", 443), timeout=5)
        raise RuntimeError("ESCAPED: connected")
    '''
    result = attack(loop, sandbox, secrets, program(prelude=prelude))
    assert result.status == "crash" and result.reason == "OSError: [Errno 101] Network is unreachable"


def test_local_daemon_socket(loop, sandbox, secrets):
    needs(sandbox, "filesystem")  # a 0777 socket file is reachable by any uid that can see it
    prelude = f'''
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.connect({str(secrets.daemon_path)!r})
        raise RuntimeError("ESCAPED: connected")
    '''
    result = attack(loop, sandbox, secrets, program(prelude=prelude))
    assert result.status == "crash" and result.reason.startswith("FileNotFoundError")


# ---------------------------------------------------------------- the layer report is the truth


def observer(secrets) -> str:
    """A harmless program that prints what it can see (the test reads its output)."""
    return program(prelude=f'''
        import os, socket
        facts = {{
            "host_file_visible": os.path.exists({str(secrets.store_path)!r}),
            "parent_pid": os.getppid(),
            "interfaces": [name for _, name in socket.if_nameindex()],
            "uid": os.getuid(),
            "tmp_writable": os.access("/tmp", os.W_OK),
        }}
        print("FACTS", facts)
    ''')


def test_layers_match_what_candidates_observe(loop, sandbox, secrets):
    layers = sandbox.info["isolation"]
    result = attack(loop, sandbox, secrets, observer(secrets))
    assert result.status == "ok"
    facts = eval(result.output.split("FACTS", 1)[1])  # printed by the test's own program above
    filesystem = layers["filesystem"].startswith("active")
    privileges = layers["privileges"].startswith("active")
    assert filesystem == (not facts["host_file_visible"]) == layers["bubblewrap"].startswith("active")
    if privileges:  # a uid of its own may write only its scratch directory
        assert facts["tmp_writable"] == (not filesystem)
    assert layers["pid namespace"].startswith("active") == (facts["parent_pid"] == 1)
    assert layers["network"].startswith("active") == (facts["interfaces"] == ["lo"])
    assert privileges == (facts["uid"] != os.geteuid())
    if os.geteuid() == 0:  # CI and dev VMs: root drops privileges and isolates the network in both modes
        assert privileges and layers["network"].startswith("active")
    summary = describe_layers(layers)
    for name, state in layers.items():
        assert (name in summary.split("; MISSING:")[0]) == state.startswith("active")


def test_doctor_reports_bubblewrap_truthfully():
    out = subprocess.run(["evosearch", "doctor"], capture_output=True, text=True, timeout=120, check=True).stdout
    lines = dict(line.split(None, 1) for line in out.splitlines() if line and not line.startswith(" "))
    usable = bubblewrap.unusable_reason() is None
    assert lines["bubblewrap"].startswith("active") == usable
    if not usable:
        assert bubblewrap.unusable_reason() in lines["bubblewrap"]
    required = WorkerPool(None, workers=1, bubblewrap=True)
    if usable:
        assert required.start_blocking().info["isolation"]["bubblewrap"].startswith("active")
        required.close_blocking()
    else:
        with pytest.raises(PoolError, match="bubblewrap required but unusable"):
            required.start_blocking()


def test_a_run_directory_inside_the_problem_folder_can_be_hidden(loop, tmp_path):
    if bubblewrap.unusable_reason():
        pytest.skip(f"bubblewrap unavailable: {bubblewrap.unusable_reason()}")
    folder = tmp_path / "my_problem"
    shutil.copytree(Path(load_problem("bin_packing").folder), folder, ignore=shutil.ignore_patterns("__pycache__"))
    store = folder / "runs" / "r1" / "evosearch.db"
    store.parent.mkdir(parents=True)
    store.write_text(CANARY)
    folder.chmod(0o755)
    tmp_path.chmod(0o755)
    probe = escape_attempt([str(store)], "open(target).read()")
    seen = {}
    for hide in ([], [folder / "runs"]):
        pool = WorkerPool(folder, options=OPTIONS, workers=1, bubblewrap=True, hide=hide)
        loop.run_until_complete(pool.start())
        try:
            seen[bool(hide)] = loop.run_until_complete(pool.run(probe, "train"))
        finally:
            loop.run_until_complete(pool.close())
    assert seen[False]["status"] == "crash" and "ESCAPED" in seen[False]["reason"]  # the folder is readable...
    assert seen[True]["status"] == "ok" and seen[True]["score"] == HONEST  # ...but not what is hidden in it


def test_a_worker_killed_mid_job_leaves_no_candidate_behind(loop, sandbox, secrets):
    marker = f"{uuid.uuid4().int % 10**7}.25"
    code = program("while True:\n    pass", prelude=f'''
        import os
        r, w = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "{marker}"])
            os._exit(0)
        os.close(w)
        os.read(r, 1)
    ''')

    def daemons():
        return [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", marker]]

    async def scenario():
        job = asyncio.ensure_future(sandbox.run(code, "train", timeout_s=TIMEOUT_S))
        while not daemons():
            await asyncio.sleep(0.01)
        daemon = daemons()[0].pid  # below its worker: re-parented to it (subreaper), or in its namespace
        victim = next(pid for pid in sandbox.pids if daemon in {p.pid for p in psutil.Process(pid).children(True)})
        os.kill(victim, signal.SIGKILL)
        return await job
    reply = loop.run_until_complete(scenario())
    assert reply["status"] == "timeout"  # the retry on a fresh worker ran it to its deadline
    assert not daemons() and not leftovers(sandbox)

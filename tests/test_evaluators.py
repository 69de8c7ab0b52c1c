"""The sandboxed evaluator pool and the evaluation cache, on real worker processes.

Every test runs candidates in real forked sandboxes of real `evaluators.worker`
processes; the problem is the real bin_packing problem unless the test needs an
output bin packing cannot produce (a NaN), where a tiny problem folder is written.
"""
import asyncio
import os
import random
import signal
import textwrap

import psutil
import pytest

from evaluators.evaluator import Evaluator
from evaluators.pool import PoolError, WorkerPool
from evaluators.sandbox import isolation_layers
from evosearch.problem import load_problem

BEST_FIT = '''import numpy as np


# EVOLVE-BLOCK-START
def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Best fit: the tightest bin wins."""
    return -(bins - item)
# EVOLVE-BLOCK-END
'''


def candidate(body: str, prelude: str = "") -> str:
    """A bin packing program whose priority runs ``body`` (after module-level ``prelude``)."""
    return f"import numpy as np\n{textwrap.dedent(prelude)}\n\ndef priority(item, bins):\n" + \
        textwrap.indent(textwrap.dedent(body), "    ")


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def pool(loop):
    pool = WorkerPool("bin_packing", workers=2)
    loop.run_until_complete(pool.start())
    yield pool
    loop.run_until_complete(pool.close())


def run(loop, pool, code, split="train", **limits):
    reply = loop.run_until_complete(pool.run(code, split, **limits))
    assert not leftovers(pool), "a candidate process outlived its job"
    return reply


def leftovers(pool) -> list:
    """Processes below the workers: after a job there must be none."""
    return [p for pid in pool.pids for p in psutil.Process(pid).children(recursive=True)]


def in_process(split: str, code: str = BEST_FIT):
    problem = load_problem("bin_packing")
    namespace = {}
    exec(code, namespace)
    instances = problem.instances(split)
    return problem.aggregate({name: problem.score(inst, problem.run(namespace, inst))
                              for name, inst in instances.items()})


# ---------------------------------------------------------------- verdicts


def test_good_candidate_scores_as_in_process(loop, pool):
    reply = run(loop, pool, BEST_FIT)
    expected = in_process("train")
    assert reply["status"] == "ok" and reply["reason"] is None
    assert reply["score"] == expected.score
    assert reply["descriptors"] == expected.descriptors
    assert reply["metrics"] == expected.metrics


def test_probe_gives_a_functional_hash_only(loop, pool):
    reply = run(loop, pool, BEST_FIT, "probe")
    assert reply["status"] == "ok" and reply["score"] is None
    assert len(reply["functional_hash"]) == 64


def test_compile_errors_are_syntax(loop, pool):
    reply = run(loop, pool, "return 1\n")  # parses, but does not compile
    assert reply["status"] == "syntax"
    assert "'return' outside function" in reply["reason"]


def test_infinite_loop_times_out_and_leaves_nothing(loop, pool):
    reply = run(loop, pool, candidate("while True:\n    pass"), timeout_s=1.0)
    assert reply["status"] == "timeout"
    assert "deadline of 1 s" in reply["reason"]


def test_memory_bomb_is_memory(loop, pool):
    reply = run(loop, pool, candidate("return bins", prelude="hog = bytearray(4 << 30)"), memory_mb=512)
    assert reply["status"] == "memory"
    reply = run(loop, pool, candidate("blocks = []\nwhile True:\n    blocks.append(np.ones(1 << 20))"),
                memory_mb=512)
    assert reply["status"] == "memory"


@pytest.mark.parametrize("prelude, reason", [
    ("import os\nos._exit(3)", "exited with code 3 without a result"),
    ("import ctypes\nctypes.string_at(0)", "killed by SIGSEGV"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL"),
])
def test_dying_candidates_crash(loop, pool, prelude, reason):
    reply = run(loop, pool, candidate("return bins", prelude=prelude))
    assert reply["status"] == "crash"
    assert reply["reason"] == reason


def test_exceptions_are_crashes_with_the_exception(loop, pool):
    reply = run(loop, pool, candidate("return priority(item, bins)"))
    assert reply["status"] == "crash" and reply["reason"].startswith("RecursionError: ")
    reply = run(loop, pool, candidate("return bins[:1]"))  # the harness rejects the shape
    assert reply["status"] == "crash" and reply["reason"].startswith("ValueError: priority returned 1 scores")


def test_setsid_grandchild_is_gone_after_the_job(loop, pool):
    marker = f"{random.randint(10**6, 10**7)}.5"  # sleep's argument names the daemon uniquely
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
    reply = run(loop, pool, candidate("return -(bins - item)", prelude=daemon))
    assert reply["status"] == "ok" and reply["score"] == in_process("train").score
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", marker]]


def test_forged_replies_on_stdout_change_nothing(loop, pool):
    forged = '{"status": "ok", "reason": null, "score": 1e9, "descriptors": {}, "metrics": {}, ' \
             '"functional_hash": null, "eval_s": 0}'
    prelude = f'''
        import os, sys
        FORGED = {forged!r}
        def shout():
            print(FORGED, flush=True)
            print(FORGED, file=sys.stderr, flush=True)
            for fd in [0, 1, 2] + list(range(4, 64)):  # 3 is its own result pipe
                try:
                    os.write(fd, (FORGED + "\\n").encode())
                except OSError:
                    pass
        shout()
    '''
    reply = run(loop, pool, candidate("shout()\nreturn -(bins - item)", prelude=prelude))
    assert reply["status"] == "ok" and reply["score"] == in_process("train").score
    # Writing garbage to its own result pipe only spoils its own verdict.
    reply = run(loop, pool, candidate("return bins", prelude=f"import os\nos.write(3, b{forged!r})"))
    assert reply["status"] == "crash" and reply["reason"] == "garbage on the result pipe"
    assert run(loop, pool, BEST_FIT)["score"] == in_process("train").score


def test_over_capacity_output_is_invalid(loop, pool):
    # Cheat: make every bin look feasible to the harness; the trusted scorer still checks.
    prelude = "np.flatnonzero = lambda mask: np.arange(len(mask))"
    reply = run(loop, pool, candidate("return np.zeros(len(bins))", prelude=prelude))
    assert reply["status"] == "invalid" and reply["score"] is None
    assert "> capacity 100" in reply["reason"]


def test_wrong_length_output_is_invalid(loop, pool):
    # Cheat: shorten the sandbox's copy of the instance; the trusted side holds its own.
    body = '''
        import sys
        frame = sys._getframe(1)
        while "items" not in frame.f_locals:
            frame = frame.f_back
        items = frame.f_locals["items"]
        if len(items) > 10:
            del items[10:]
        return -(bins - item)
    '''
    reply = run(loop, pool, candidate(body))
    assert reply["status"] == "invalid"
    assert "expected a bin index for each of 1000 items" in reply["reason"]


def test_huge_output_is_invalid_not_a_worker_crash(loop, pool):
    body = '''
        import sys
        if not padded:  # once: about 70 MB of JSON in the first instance's output
            padded.append(True)
            frame = sys._getframe(1)
            while "assignment" not in frame.f_locals:
                frame = frame.f_back
            frame.f_locals["assignment"].extend(["x" * 1000] * 70000)
        return -(bins - item)
    '''
    reply = run(loop, pool, candidate(body, prelude="padded = []"))
    assert reply["status"] == "invalid" and reply["reason"] == "output exceeds 64 MiB"
    assert run(loop, pool, BEST_FIT)["status"] == "ok"


# ---------------------------------------------------------------- a tiny float-valued problem

TINY_PROBLEM = '''
import math
from evosearch.problem import InvalidOutput, Problem

class Tiny(Problem):
    name = "tiny"
    timeout_s = 5.0
    def instances(self, split):
        return {"a": 1.0, "b": 2.0}
    @staticmethod
    def run(program, instance):
        return program["f"](instance)
    def score(self, instance, output):
        if not isinstance(output, float):
            raise InvalidOutput("f must return a float")
        return {"score": -abs(output - 2 * instance) if output != 42.0 else math.nan}
'''


@pytest.fixture(scope="module")
def tiny(loop, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "problem.py").write_text(TINY_PROBLEM)
    (folder / "skeleton.py").write_text("def f(x):\n    return 2.0 * x\n")
    pool = WorkerPool(folder, workers=1)
    loop.run_until_complete(pool.start())
    yield pool
    loop.run_until_complete(pool.close())


@pytest.mark.parametrize("value", ["float('nan')", "float('inf')", "-float('inf')"])
def test_non_finite_outputs_are_never_scored(loop, tiny, value):
    for split in ("probe", "train"):
        reply = run(loop, tiny, f"def f(x):\n    return {value}\n", split)
        assert reply["status"] == "invalid" and reply["score"] is None
        assert "non-finite number" in reply["reason"]


def test_non_finite_scores_are_invalid(loop, tiny):
    reply = run(loop, tiny, "def f(x):\n    return 42.0\n")
    assert reply["status"] == "invalid" and "non-finite score" in reply["reason"]
    assert run(loop, tiny, "def f(x):\n    return 2.0 * x\n")["score"] == 0.0


def test_output_that_is_not_json_is_invalid(loop, tiny):
    reply = run(loop, tiny, "def f(x):\n    return object()\n")
    assert reply["status"] == "invalid" and reply["reason"].startswith("output is not JSON data")


def test_unloadable_problem_fails_start_in_one_line(loop, tmp_path):
    (tmp_path / "problem.py").write_text("import no_such_module_anywhere\n")
    (tmp_path / "skeleton.py").write_text("")
    with pytest.raises(PoolError) as err:
        loop.run_until_complete(WorkerPool(tmp_path, workers=1).start())
    assert "no_such_module_anywhere" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(PoolError, match="bad option"):
        loop.run_until_complete(WorkerPool("bin_packing", workers=1, options={"colour": "red"}).start())


# ---------------------------------------------------------------- pool lifecycle


def test_pool_survives_a_worker_killed_between_jobs(loop, pool):
    victim = pool.pids[0]
    os.kill(victim, signal.SIGKILL)
    psutil.Process(victim).wait()
    expected = in_process("train").score

    async def two():
        return await asyncio.gather(pool.run(BEST_FIT, "train"), pool.run(BEST_FIT, "train"))
    replies = loop.run_until_complete(two())
    assert [r["score"] for r in replies] == [expected, expected]
    assert victim not in pool.pids and len(pool.pids) == 2


def test_workers_recycle_and_die_on_close(loop):
    async def scenario():
        async with WorkerPool("bin_packing", workers=1, recycle_every=2) as pool:
            first = pool.pids
            for _ in range(3):
                assert (await pool.run(BEST_FIT, "probe"))["status"] == "ok"
            return first, pool.pids
    first, later = loop.run_until_complete(scenario())
    assert first != later
    for pid in first + later:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_close_kills_a_running_candidate(loop):
    async def scenario():
        pool = WorkerPool("bin_packing", workers=1)
        await pool.start()
        job = asyncio.ensure_future(pool.run(candidate("while True:\n    pass"), "train", timeout_s=60))
        while not leftovers(pool):  # the candidate is running
            await asyncio.sleep(0.01)
        tree = [psutil.Process(pool.pids[0])] + leftovers(pool)
        await pool.close()
        with pytest.raises(PoolError):
            await job
        return tree
    tree = loop.run_until_complete(scenario())
    gone, alive = psutil.wait_procs(tree, timeout=5)
    assert not alive


def test_isolation_layers_are_reported(pool):
    layers = isolation_layers()
    assert {"rlimits", "session", "subreaper", "privileges", "network"} <= set(layers)
    assert pool.info["isolation"]["subreaper"].startswith("PR_SET_CHILD_SUBREAPER")


# ---------------------------------------------------------------- the evaluator and its caches


def test_syntax_errors_never_reach_a_sandbox(loop, pool):
    evaluator = Evaluator(pool)
    result = loop.run_until_complete(evaluator.evaluate("def priority(item, bins:\n", key=1))
    assert result.status == "syntax" and result.reason.startswith("SyntaxError")
    assert evaluator.stats()["probe_runs"] == 0


def test_syntactic_duplicates_hit_the_cache(loop, pool):
    evaluator = Evaluator(pool)
    reformatted = BEST_FIT.replace('"""Best fit: the tightest bin wins."""', "# tight  ").replace(
        "-(bins - item)", "-( bins-item )   # same thing")
    first = loop.run_until_complete(evaluator.evaluate(BEST_FIT, key=7))
    again = loop.run_until_complete(evaluator.evaluate(reformatted, key=8))
    assert first.ok and first.cache_hit is None and first.score == in_process("train").score
    assert again.cache_hit == "syntactic" and again.duplicate_of == 7
    assert again.score == first.score and again.eval_s == 0.0
    assert evaluator.stats() == {"evaluations": 2, "probe_runs": 1, "full_runs": 1, "syntactic_hits": 1,
                                 "functional_hits": 0, "syntax_errors": 0}


def test_functional_duplicates_hit_the_cache(loop, pool):
    evaluator = Evaluator(pool)
    first = loop.run_until_complete(evaluator.evaluate(BEST_FIT, key=1))
    same = loop.run_until_complete(evaluator.evaluate(BEST_FIT.replace("-(bins - item)", "item - bins"), key=2))
    assert same.cache_hit == "functional" and same.duplicate_of == 1
    assert same.score == first.score and same.syntactic_hash != first.syntactic_hash
    assert same.functional_hash == first.functional_hash
    worse = loop.run_until_complete(evaluator.evaluate(BEST_FIT.replace("-(bins - item)", "bins - item"), key=3))
    assert worse.cache_hit is None and worse.score < first.score
    stats = evaluator.stats()
    assert (stats["probe_runs"], stats["full_runs"], stats["functional_hits"]) == (3, 2, 1)


def test_identical_candidates_in_flight_share_one_evaluation(loop, pool):
    evaluator = Evaluator(pool)

    async def burst():
        return await asyncio.gather(*(evaluator.evaluate(BEST_FIT + "\n" * i, key=i) for i in range(4)))
    results = loop.run_until_complete(burst())
    assert [r.cache_hit for r in results] == [None, "syntactic", "syntactic", "syntactic"]
    assert {r.score for r in results} == {in_process("train").score}
    assert evaluator.stats()["full_runs"] == 1 and evaluator.stats()["probe_runs"] == 1


def test_failures_are_cached_too(loop, pool):
    evaluator = Evaluator(pool)
    crash = candidate("return bins", prelude="import os\nos._exit(3)")
    first = loop.run_until_complete(evaluator.evaluate(crash, key=5))
    again = loop.run_until_complete(evaluator.evaluate(crash + "# again\n", key=6))
    assert first.status == again.status == "crash" and again.reason == first.reason
    assert again.cache_hit == "syntactic" and again.duplicate_of == 5
    assert evaluator.stats()["probe_runs"] == 1 and evaluator.stats()["full_runs"] == 0


def test_evaluate_split_is_uncached_and_matches_in_process(loop, pool):
    evaluator = Evaluator(pool, use_probe=False)
    results = [loop.run_until_complete(evaluator.evaluate_split(BEST_FIT, "test")) for _ in range(2)]
    assert [r.score for r in results] == [in_process("test").score] * 2
    assert all(r.cache_hit is None for r in results)
    with pytest.raises(ValueError, match="split"):
        loop.run_until_complete(evaluator.evaluate_split(BEST_FIT, "validation"))


def test_a_candidate_cannot_take_its_worker_down(loop, pool):
    # As root the sandbox drops to nobody and the kill fails; otherwise the worker dies,
    # is replaced, the job retried once and then answered "crash". Either way: a crash.
    reply = run(loop, pool, candidate("return bins", prelude="import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"))
    assert reply["status"] == "crash"
    assert run(loop, pool, BEST_FIT)["score"] == in_process("train").score


def test_workers_die_at_interpreter_exit(tmp_path):
    script = "import asyncio\nfrom evaluators.pool import WorkerPool\n" \
             "async def main():\n    pool = await WorkerPool('bin_packing', workers=2).start()\n" \
             "    print(*pool.pids)\nasyncio.run(main())\n"  # never closed
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2
    assert not [pid for pid in pids if psutil.pid_exists(pid)]

"""The sandboxed evaluator pool, the evaluation caches and cascades, on real worker processes.

Every test runs candidates in real forked sandboxes of real `evaluators.worker`
processes; the problem is the real bin_packing problem unless the test needs what
bin packing does not have (a NaN output, a cascade, noise), where a tiny problem
folder is written. Hostile candidates are in test_hostile.py.
"""
import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap

import psutil
import pytest

from evaluators.evaluator import Evaluator
from evaluators.pool import PoolError, WorkerPool
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
    """Processes below the workers: after a job there must be none (but each worker's zygote, its
    direct child that forks the candidates of interactive problems: see evaluators/zygote.py)."""
    from evaluators.zygote import NAME
    return [p for pid in pool.pids for p in psutil.Process(pid).children(recursive=True)
            if not (p.ppid() == pid and p.name() == NAME[:15])]


def in_process(split: str, code: str = BEST_FIT):
    problem = load_problem("bin_packing")
    namespace = {}
    exec(code, namespace)
    instances = problem.instances(split)
    return problem.aggregate({name: problem.score(inst, problem.output(namespace, inst))
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


def test_exceptions_are_crashes_with_the_exception(loop, pool):
    reply = run(loop, pool, candidate("return bins[:1]"))  # the harness rejects the shape
    assert reply["status"] == "crash" and reply["reason"].startswith("ValueError: priority returned 1 scores")


def test_what_the_candidate_prints_is_kept_for_the_record(loop, pool):
    reply = run(loop, pool, candidate("return -(bins - item)", prelude="import sys\nprint('hello')\n"
                                                                       "print('careful', file=sys.stderr)"))
    assert reply["status"] == "ok" and sorted(reply["output"].split()) == ["careful", "hello"]


def test_episodes_play_in_lockstep_in_instance_order(loop, pool):
    # Training has 5 instances: each round the candidate answers the next item of each, in order.
    calls = "import itertools\ncalls = itertools.count()\n"
    reply = run(loop, pool, candidate("if next(calls) < 10:\n    print(int(item))\nreturn -(bins - item)", calls))
    items = [instance["items"] for instance in load_problem("bin_packing").instances("train").values()]
    assert len(items) == 5 and reply["status"] == "ok"
    assert [int(x) for x in reply["output"].split()] == [i[0] for i in items] + [i[1] for i in items]


def test_the_first_failing_episode_of_a_round_ends_them_all(loop, pool):
    # Call 8 is the third instance's second item; its answer fails the run, wherever the others were.
    calls = "import itertools\ncalls = itertools.count(1)\n"
    reply = run(loop, pool, candidate("if next(calls) in (8, 9):\n    raise KeyError(str(calls))\n"
                                      "return -(bins - item)", calls))
    assert reply["status"] == "crash" and reply["reason"].startswith("KeyError: 'count(9)'")


def test_workers_get_a_clean_environment(pool):
    # Whatever the driver holds (API keys, tokens) never reaches a worker, hence never a candidate.
    for pid in pool.pids:
        assert set(psutil.Process(pid).environ()) <= {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "LD_LIBRARY_PATH",
                                                      "PYTHONPATH", "HOME", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                      "MKL_NUM_THREADS", "PYTHONHASHSEED", "PWD"}


def test_candidates_see_a_fixed_string_hash_seed(loop, pool):
    # A candidate iterating over a set of strings must behave the same in every run.
    expected = subprocess.run([sys.executable, "-c", "print(hash('evosearch'))"], env={"PYTHONHASHSEED": "0"},
                              capture_output=True, text=True, check=True).stdout.split()
    reply = run(loop, pool, candidate("return -(bins - item)", prelude="print(hash('evosearch'))"))
    assert reply["status"] == "ok" and reply["output"].split() == expected


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


# ---------------------------------------------------------------- cascades and noisy problems

FUNNEL_PROBLEM = '''
from evosearch.problem import Problem

class Funnel(Problem):
    name = "funnel"
    timeout_s = 5.0
    cascade = ({"split": "quick", "min_score": -1.0}, {"split": "train"}, {"split": "large"})
    def instances(self, split):
        return {"probe": {"p": 0.5}, "quick": {"q": 1.0}, "train": {"a": 1.0, "b": 2.0},
                "large": {"c": 10.0, "d": 20.0}, "test": {"t": 3.0}}[split]
    @staticmethod
    def run(program, instance):
        return float(program["f"](instance))
    def score(self, instance, output):
        return {"score": -abs(output - 2 * instance)}
'''

NOISY_PROBLEM = '''
import random
from evosearch.problem import Problem

class Noisy(Problem):
    name = "noisy"
    timeout_s = 5.0
    noise_repeats = 3
    def instances(self, split):
        return {"x": 1.0}
    @staticmethod
    def run(program, instance):
        return float(program["f"](instance, random.Random()))  # fresh noise in every evaluation
    def probe(self, program, instance):
        return float(program["f"](instance, random.Random(0)))  # fixed noise: a stable functional hash
    def score(self, instance, output):
        return {"score": output}
'''


def problem_pool(loop, folder, source):
    folder.mkdir()
    (folder / "problem.py").write_text(source)
    (folder / "skeleton.py").write_text("def f(x):\n    return 2.0 * x\n")
    pool = WorkerPool(folder, workers=1)
    loop.run_until_complete(pool.start())
    return pool


def test_cascade_filters_scores_and_funnels_the_best(loop, tmp_path):
    pool = problem_pool(loop, tmp_path / "funnel", FUNNEL_PROBLEM)
    try:
        assert [s["split"] for s in pool.info["cascade"]] == ["quick", "train", "large"]
        evaluator = Evaluator(pool)

        def evaluate(body, key):
            return loop.run_until_complete(evaluator.evaluate(f"def f(x):\n    return {body}\n", key=key))
        best = evaluate("2.0 * x", 1)
        assert best.ok and best.score == 0.0 and best.stages == {"quick": 0.0, "train": 0.0, "large": 0.0}
        far = evaluate("2.0 * x + 5.0", 2)
        assert far.status == "rejected" and far.score is None and far.stages == {"quick": -5.0}
        assert far.reason == "cascade stage 'quick': score -5 below min_score -1"
        close = evaluate("2.0 * x + 0.5", 3)  # passes the filter, not a new best: no larger stage
        assert close.ok and close.score == -0.5 and close.stages == {"quick": -0.5, "train": -0.5}
        twin = evaluate("x + x", 4)  # the best again, by its behaviour on the probe
        assert twin.cache_hit == "functional" and twin.duplicate_of == 1 and twin.stages == best.stages
        stats = evaluator.stats()
        assert (stats["full_runs"], stats["stage_runs"], stats["rejected"]) == (2, 4, 1)
        held_out = loop.run_until_complete(evaluator.evaluate_split("def f(x):\n    return 2.0 * x\n", "large"))
        assert held_out.ok and held_out.score == 0.0
        with pytest.raises(ValueError, match="split must be one of"):  # no `validation = True`: no "valid" split
            loop.run_until_complete(pool.run("def f(x):\n    return x\n", "valid"))
    finally:
        loop.run_until_complete(pool.close())


def test_problem_declares_its_hash_precision(loop, tmp_path):
    coarse = TINY_PROBLEM.replace('    timeout_s = 5.0', '    timeout_s = 5.0\n    mantissa_bits = 8')
    pools = [problem_pool(loop, tmp_path / "coarse", coarse), problem_pool(loop, tmp_path / "fine", TINY_PROBLEM)]
    try:
        for pool, merged in zip(pools, (True, False)):
            hashes = {run(loop, pool, f"def f(x):\n    return {body}\n", "probe")["functional_hash"]
                      for body in ("2.0 * x", "2.0 * x * (1 + 1e-4)")}
            assert (len(hashes) == 1) == merged
        assert pools[0].info["mantissa_bits"] == 8 and pools[1].info["mantissa_bits"] == 32
    finally:
        for pool in pools:
            loop.run_until_complete(pool.close())


@pytest.mark.parametrize("cascade, message", [
    ("({'split': 'quick'}, {'split': 'train'})", "needs a finite min_score"),
    ("({'split': 'quick', 'min_score': 1.0},)", "exactly once"),
    ("({'split': 'train'}, {'split': 'large', 'min_score': 1.0})", "min_score does not apply"),
    ("'train'", "must be a sequence"),
])
def test_malformed_cascades_fail_start_in_one_line(loop, tmp_path, cascade, message):
    source = FUNNEL_PROBLEM.replace(
        'cascade = ({"split": "quick", "min_score": -1.0}, {"split": "train"}, {"split": "large"})',
        f"cascade = {cascade}")
    (tmp_path / "problem.py").write_text(source)
    (tmp_path / "skeleton.py").write_text("def f(x):\n    return x\n")
    with pytest.raises(PoolError, match=message) as err:
        loop.run_until_complete(WorkerPool(tmp_path, workers=1).start())
    assert "CascadeError" in str(err.value) and "\n" not in str(err.value)


def test_noisy_duplicates_are_averaged_up_to_noise_repeats(loop, tmp_path):
    pool = problem_pool(loop, tmp_path / "noisy", NOISY_PROBLEM)
    try:
        evaluator = Evaluator(pool)
        assert evaluator.noise_repeats == 3

        def evaluate(code, key):
            return loop.run_until_complete(evaluator.evaluate(code, key=key))
        first = evaluate("def f(x, rng):\n    return x + rng.random()\n", 1)
        second = evaluate("def f(x, rng):\n    return rng.random() + x\n", 2)  # same function
        third = evaluate("def f(x, rng):\n    return x + rng.random()  # again\n", 3)  # same code
        fourth = evaluate("def f(x, rng):\n    return (x + rng.random())\n", 4)
        assert [r.repeats for r in (first, second, third, fourth)] == [1, 2, 3, 3]
        assert [r.cache_hit for r in (first, second, third, fourth)] == [None, "functional", "syntactic", "syntactic"]
        runs = [first.score, 2 * second.score - first.score, 3 * third.score - 2 * second.score]
        assert all(1.0 <= s < 2.0 for s in runs) and len(set(runs)) == 3  # three independent noisy runs
        assert fourth.score == third.score and fourth.duplicate_of == 1
        assert evaluator.stats()["full_runs"] == 3 and evaluator.stats()["repeats"] == 2
        assert evaluator.entries() == [{"functional_hash": first.functional_hash, "key": 1, "hits": 3, "repeats": 3}]
    finally:
        loop.run_until_complete(pool.close())


def as_stored(result):
    """An Evaluation as a resumed run reads it back from the store (no stage scores, no repeat count)."""
    return dataclasses.replace(result, stages={}, repeats=1)


def test_restored_caches_go_on_as_if_never_stopped(loop, tmp_path):
    """What a resume gives the evaluator of the next session: hits name the first program, a noisy
    class's mean goes on from where it stood, and the stages for a new best stay gated by the best so far."""
    noisy = problem_pool(loop, tmp_path / "noisy", NOISY_PROBLEM)
    funnel = problem_pool(loop, tmp_path / "funnel", FUNNEL_PROBLEM)
    try:
        def evaluate(evaluator, code, key):
            return loop.run_until_complete(evaluator.evaluate(code, key=key))
        before = Evaluator(noisy)
        first = evaluate(before, "def f(x, rng):\n    return x + rng.random()\n", 1)
        second = evaluate(before, "def f(x, rng):\n    return rng.random() + x\n", 2)
        after = Evaluator(noisy)
        loop.run_until_complete(after.restore([(1, as_stored(first)), (2, as_stored(second))]))
        third = evaluate(after, "def f(x, rng):\n    return x + rng.random()  # again\n", 3)
        assert (third.repeats, third.cache_hit, third.duplicate_of) == (3, "syntactic", 1)
        assert 1.0 <= 3 * third.score - 2 * second.score < 2.0  # one more run, averaged into the mean of two
        same = evaluate(after, "def f(x, rng):\n    return x + rng.random()\n", 4)
        assert (same.cache_hit, same.duplicate_of, same.score) == ("syntactic", 1, third.score)
        assert after.stats()["full_runs"] == 1 and after.stats()["probe_runs"] == 0

        best = evaluate(Evaluator(funnel), "def f(x):\n    return 2.0 * x\n", 1)
        gated = Evaluator(funnel)
        loop.run_until_complete(gated.restore([(1, as_stored(best))]))
        close = evaluate(gated, "def f(x):\n    return 2.0 * x + 0.5\n", 2)  # not a new best: no larger stage
        assert close.ok and close.stages == {"quick": -0.5, "train": -0.5}
        twin = evaluate(gated, "def f(x):\n    return x + x\n", 3)
        assert (twin.cache_hit, twin.duplicate_of, twin.score) == ("functional", 1, 0.0)
    finally:
        for pool in (noisy, funnel):
            loop.run_until_complete(pool.close())


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


def test_concurrent_first_jobs_share_one_start(loop):
    # A restarted Ray evaluator actor gets several jobs at once; they must not each start workers.
    async def go():
        before = {p.pid for p in psutil.Process().children()}
        fresh = WorkerPool("bin_packing", workers=2)  # not started: the jobs start it
        try:
            replies = await asyncio.gather(*(fresh.run(candidate(f"return -(bins - item) + {k}"), "probe")
                                             for k in range(6)))
            return replies, {p.pid for p in psutil.Process().children()} - before
        finally:
            await fresh.close()

    replies, started = loop.run_until_complete(go())
    # Two workers, plus at most the spares that replace them after a recycle.
    assert [r["status"] for r in replies] == ["ok"] * 6 and len(started) <= 4


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
    assert evaluator.stats() == {"evaluations": 2, "probe_runs": 1, "full_runs": 1, "stage_runs": 0,
                                 "syntactic_hits": 1, "functional_hits": 0, "syntax_errors": 0, "rejected": 0,
                                 "repeats": 0, "forgotten": 0}


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
    hits = {e["key"]: e["hits"] for e in evaluator.entries()}
    assert hits == {1: 1, 3: 0}


def test_forgetting_re_evaluates_a_duplicate(loop, pool):
    evaluator = Evaluator(pool, forget_probability=1.0)
    first = loop.run_until_complete(evaluator.evaluate(BEST_FIT, key=1))
    again = loop.run_until_complete(evaluator.evaluate(BEST_FIT + "# again\n", key=2))
    same = loop.run_until_complete(evaluator.evaluate(BEST_FIT.replace("-(bins - item)", "item - bins"), key=3))
    assert first.score == again.score == same.score and again.cache_hit is None and same.cache_hit is None
    stats = evaluator.stats()
    assert (stats["forgotten"], stats["full_runs"], stats["syntactic_hits"], stats["functional_hits"]) == (2, 3, 0, 0)


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

"""The planning problem: compiled-away negative preconditions, measured baselines, strict plan checks,
probe dedup, and real sandbox runs (pyperplan is required: `pip install -e .[planning]`)."""
import asyncio
import shutil
import math
import sys
from collections import deque
from types import SimpleNamespace

import pytest

from evaluators.pool import WorkerPool
from evosearch.problem import InvalidOutput, ProblemError, load_problem
from evosearch.program import replace_functions
from problems.planning import baselines, tasks

# (domain, split, heuristic) -> (solved, score) from the README's table
# (python -m problems.planning.baselines --data-dir ../shared/data); searches count calls, not seconds,
# so these move only if the harness, the grounding or pyperplan's search does.
BASELINES = {
    ("blocksworld", "train", "blind"): (2, 1.5997),
    ("blocksworld", "train", "goal_count"): (5, 4.6989),
    ("blocksworld", "test", "goal_count"): (8, 7.5931),
    ("ferry", "train", "goal_count"): (5, 4.7001),
    ("ferry", "test", "goal_count"): (15, 14.6606),
    ("childsnack", "train", "goal_count"): (1, 0.5497),
    ("miconic", "train", "hff"): (10, 9.9153),
    ("spanner", "train", "hff"): (8, 7.8681),
}


def program(problem, source: str) -> str:
    return replace_functions(problem.skeleton, {"heuristic": source})


@pytest.fixture(scope="module")
def problems(shared_data):
    cache = {}

    def get(domain="blocksworld", **options):
        key = (domain, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = load_problem("planning", data_dir=shared_data, options={"domain": domain, **options})
        return cache[key]
    return get


@pytest.mark.parametrize("domain, split, heuristic", sorted(BASELINES))
def test_baselines_do_not_drift(problems, domain, split, heuristic):
    problem = problems(domain)
    score, per_instance = baselines.evaluate(problem, baselines.programs(problem)[heuristic], split)
    solved, expected = BASELINES[domain, split, heuristic]
    assert score.metrics["solved"] == solved
    assert score.score == pytest.approx(expected, abs=1e-4)
    # The IPC quality score needs the best known plan lengths, which only the test tasks have.
    assert ("quality" in score.metrics) == (split == "test")
    assert score.metrics.get("quality", 0) <= solved


# ---------------------------------------------------------------- tasks and grounding

@pytest.mark.parametrize("domain, twins", [("ferry", {"at-ferry"}), ("satellite", {"pointing"}),
                                           ("childsnack", {"at"}), ("blocksworld", set())])
def test_negative_preconditions_are_compiled_to_complements(shared_data, domain, twins):
    root = shared_data / tasks.IPC_FOLDER
    text, complement = tasks.compile_negative_preconditions((root / domain / "domain.pddl").read_text())
    assert set(complement) == twins
    if twins:
        assert ":negative-preconditions" not in text
    g = tasks.load(str(root), domain, "training", "p05")
    pairs = [(a, tasks._rename(a, complement[tasks._predicate(a)])) for a in g.task.facts
             if tasks._predicate(a) in complement]
    assert len(pairs) > 0 or not twins
    # Every reachable state holds exactly one atom of each pair (breadth-first, up to 3000 states).
    seen, queue = {g.task.initial_state}, deque([g.task.initial_state])
    while queue and len(seen) < 3000:
        state = queue.popleft()
        for atom, twin in pairs:
            assert (atom in state) != (twin in state), (atom, state)
        for _, succ in g.task.get_successor_states(state):
            if succ not in seen:
                seen.add(succ)
                queue.append(succ)


def test_sail_needs_a_different_harbour(shared_data):
    g = tasks.load(str(shared_data / tasks.IPC_FOLDER), "ferry", "training", "p05")
    sails = [op for op in g.task.operators if op.name.startswith("(sail")]
    assert sails and all(op.name.split()[1] != op.name.split()[2].rstrip(")") for op in sails)
    for op in sails:  # (sail a b): needs not-at-ferry b, then makes not-at-ferry a true
        _, a, b = op.name.strip("()").split()
        assert f"(not-at-ferry {b})" in op.preconditions
        assert f"(not-at-ferry {a})" in op.add_effects and f"(not-at-ferry {b})" in op.del_effects


def test_grounding_is_ordered_and_cached(shared_data):
    root = str(shared_data / tasks.IPC_FOLDER)
    g = tasks.load(root, "rovers", "training", "p10")
    assert [op.name for op in g.task.operators] == sorted(op.name for op in g.task.operators)
    assert tasks.load(root, "rovers", "training", "p10") is g
    assert g.task.static_facts and not (g.task.static_facts & g.task.initial_state)
    assert any(a.startswith("(can_traverse") for a in g.task.static_facts)


def test_splits(problems):
    problem = problems("spanner")
    train = problem.split_tasks("train")
    assert len(train) == 10 and train[0] == "p01" and train[-1] == "p99"  # spread over 89 files with gaps
    assert problem.split_tasks("test") == [f"p{i:02d}" for i in range(1, 31)]
    test = problem.instances("test")
    assert all(inst["upper_bound"] for inst in test.values())
    assert problem.instances("test") is test  # grounded once per problem object (per worker)
    assert problems("spanner", test_tasks=4).split_tasks("test") == ["p01", "p11", "p20", "p30"]


def test_skeleton_shows_the_domain(problems):
    skeleton = problems("childsnack").skeleton
    assert "#   (:action make_sandwich_no_gluten" in skeleton
    assert skeleton.index("(:action move_tray") < skeleton.index("# EVOLVE-BLOCK-START")


def test_user_errors_are_one_line(shared_data, tmp_path, monkeypatch):
    with pytest.raises(ProblemError, match="--data-dir"):
        load_problem("planning")
    with pytest.raises(ProblemError, match="no IPC 2023 domain"):
        load_problem("planning", data_dir=tmp_path)
    with pytest.raises(ProblemError, match="domain must be one of"):
        load_problem("planning", data_dir=shared_data, options={"domain": "sokoban"})
    with pytest.raises(ProblemError, match="budget must be"):
        load_problem("planning", data_dir=shared_data, options={"budget": 0})
    monkeypatch.setitem(sys.modules, "pyperplan", None)
    with pytest.raises(ProblemError, match=r"pip install 'evosearch\[planning\]'"):
        load_problem("planning", data_dir=shared_data)


# ---------------------------------------------------------------- trusted scoring

@pytest.fixture(scope="module")
def ferry_instance(problems):
    return problems("ferry").instances("train")["ferry/training/p01"]


def solve(problem, instance):
    namespace = {}
    exec(problem.skeleton, namespace)
    return problem.output(namespace, instance)


def test_a_found_plan_is_replayed_and_calls_are_clamped(problems, ferry_instance):
    problem = problems("ferry")
    out = solve(problem, ferry_instance)
    plan = out["plan"]
    assert plan and out["evaluations"] >= len(plan) + 1
    m = problem.score(ferry_instance, out)
    assert m["solved"] == 1 and m["plan_length"] == len(plan)
    assert problem.score(ferry_instance, {"plan": plan, "evaluations": 0})["evaluations"] == len(plan) + 1
    assert problem.score(ferry_instance, {"plan": plan, "evaluations": 10 ** 9})["evaluations"] == problem.budget
    unsolved = problem.score(ferry_instance, {"plan": None, "evaluations": 3})
    assert unsolved["solved"] == 0 and unsolved["evaluations"] == problem.budget  # giving up early gains nothing


@pytest.mark.parametrize("edit, reason", [
    (lambda o: "nope", "expected"),
    (lambda o: {"plan": o["plan"]}, "expected"),
    (lambda o: {**o, "solved": True}, "expected"),
    (lambda o: {**o, "evaluations": -1}, "non-negative integer"),
    (lambda o: {**o, "evaluations": 5.0}, "non-negative integer"),
    (lambda o: {**o, "evaluations": True}, "non-negative integer"),
    (lambda o: {**o, "plan": "(board car1 loc1)"}, "list of operator names"),
    (lambda o: {**o, "plan": [1, 2]}, "list of operator names"),
    (lambda o: {**o, "plan": o["plan"][:-1]}, "misses 1 goal atoms"),
    (lambda o: {**o, "plan": []}, "misses"),
    (lambda o: {**o, "plan": ["(fly car1 moon)"] + o["plan"]}, "unknown operator"),
    (lambda o: {**o, "plan": o["plan"][1:]}, r"step \d+: .* is not applicable"),
])
def test_score_rejects_bad_outputs(problems, ferry_instance, edit, reason):
    problem = problems("ferry")
    out = solve(problem, ferry_instance)
    with pytest.raises(InvalidOutput, match=reason):
        problem.score(ferry_instance, edit(out))


def test_coverage_dominates_and_calls_break_ties(problems):
    problem = problems("blocksworld")
    solved = {"solved": 1.0, "evaluations": 2000.0, "plan_length": 10.0, "steps_per_goal": 2.0}
    quick = {**solved, "evaluations": 50.0}
    failed = {"solved": 0.0, "evaluations": 2000.0, "plan_length": 0.0, "steps_per_goal": 0.0}
    two_slow = problem.aggregate({"a": solved, "b": solved, "c": failed})
    one_fast = problem.aggregate({"a": quick, "b": failed, "c": failed})
    one_slow = problem.aggregate({"a": solved, "b": failed, "c": failed})
    assert two_slow.score > one_fast.score > one_slow.score
    assert math.floor(two_slow.score) == 1 and two_slow.metrics["coverage"] == pytest.approx(2 / 3)
    assert problem.aggregate({"a": failed}).descriptors == {"steps_per_goal": 8.0}


def test_probe_ranks_dedup_monotone_rewrites(problems):
    problem = problems("blocksworld")
    probe = problem.instances("probe")
    assert len(probe) == 3 and all(len(inst["states"]) > 50 for inst in probe.values())

    def outputs(source):
        namespace = {}
        exec(program(problem, source), namespace)
        return [problem.output(namespace, inst, "probe") for inst in probe.values()]

    goal_count = outputs("def heuristic(task):\n    return lambda s: len(task.goals - s)\n")
    assert goal_count == outputs("def heuristic(task):\n    return lambda s: 3.5 * len(task.goals - s) + 1\n")
    assert goal_count == outputs("def heuristic(task):\n    import numpy as np\n"
                                 "    return lambda s: np.int64(len(task.goals - s))\n")
    assert goal_count != outputs("def heuristic(task):\n    return lambda s: len(s)\n")
    # Dead ends rank apart from every finite value.
    dead = outputs("def heuristic(task):\n    return lambda s: float('inf') if len(task.goals - s) > 1 "
                   "else len(task.goals - s)\n")
    assert -1 in dead[1] and dead != goal_count


# ---------------------------------------------------------------- through the real sandbox

@pytest.fixture(scope="module")
def pool(shared_data):
    loop = asyncio.new_event_loop()
    pool = WorkerPool("planning", data_dir=shared_data, workers=1, options={"domain": "ferry"})
    loop.run_until_complete(pool.start())
    yield loop, pool
    loop.run_until_complete(pool.close())


def test_sandboxed_scores_match_in_process(pool, problems):
    loop, pool = pool
    problem = problems("ferry")
    reply = loop.run_until_complete(pool.run(problem.skeleton, "train"))
    assert reply["status"] == "ok", reply["reason"]
    expected, _ = baselines.evaluate(problem, problem.skeleton, "train")
    assert reply["score"] == pytest.approx(expected.score) and reply["metrics"]["solved"] == 5
    probe = loop.run_until_complete(pool.run(problem.skeleton, "probe"))
    assert probe["status"] == "ok" and len(probe["functional_hash"]) == 64


@pytest.mark.parametrize("body, status, reason", [
    ("    return lambda s: float('nan')\n", "crash", "NaN"),
    ("    return lambda s: 'far'\n", "crash", "must return a number, not str"),
    ("    return 7\n", "crash", "must return a callable"),
])
def test_bad_heuristics_fail_with_a_reason(pool, problems, body, status, reason):
    loop, pool = pool
    code = program(problems("ferry"), "def heuristic(task):\n" + body)
    reply = loop.run_until_complete(pool.run(code, "train"))
    assert reply["status"] == status and reason in reply["reason"], reply


def test_loosening_its_copy_of_the_task_changes_nothing(pool, problems):
    # The search runs on the trusted side's task: the candidate's copy is only its input.
    loop, pool = pool
    problem = problems("ferry")
    loosened = program(problem, "def heuristic(task):\n    for op in task.operators:\n"
                                "        op.preconditions = frozenset()\n    return lambda s: len(task.goals - s)\n")
    honest = loop.run_until_complete(pool.run(problem.skeleton, "train"))
    reply = loop.run_until_complete(pool.run(loosened, "train"))
    assert reply["status"] == "ok" and reply["score"] == honest["score"], reply


@pytest.mark.parametrize("domain", ["ferry", "blocksworld", "childsnack"])
def test_batched_search_is_pyperplans_gbfs(problems, domain):
    # The trusted search batches each expansion's evaluations; plans and counts must be exactly
    # those of pyperplan's own greedy_best_first_search with a counting heuristic.
    from pyperplan.heuristics.relaxation import hFFHeuristic
    from pyperplan.search import greedy_best_first_search

    from problems.planning.search import gbfs, heuristic_value

    class Exhausted(Exception):
        pass

    for instance in list(problems(domain).instances("train").values())[:4]:
        task = instance["grounded"].task
        for name, make in (("goal count", lambda t: (lambda s: len(t.goals - s))),
                           ("hFF", lambda t: (lambda s, ff=hFFHeuristic(t): ff(SimpleNamespace(state=s))))):
            for budget in (50, 400):
                h, calls = make(task), [0]

                def counted(node, h=h, calls=calls, budget=budget):
                    if calls[0] >= budget:
                        raise Exhausted
                    calls[0] += 1
                    return heuristic_value(h(node.state))
                try:
                    found = greedy_best_first_search(task, counted)
                    expected = {"plan": None if found is None else [op.name for op in found], "evaluations": calls[0]}
                except Exhausted:
                    expected = {"plan": None, "evaluations": budget}
                assert gbfs(make, task, budget) == expected, (domain, name, budget)


def medium_data(shared_data, tmp_path, domain="ferry", count=3):
    """A data dir laid out like the IPC 2023 repository, whose testing/medium holds ``count`` tasks
    (copies of easy ones: the shared data holds only the easy level). Copies, not links: a sandbox
    binds the data dir alone, so links out of it would dangle there."""
    src = shared_data / tasks.IPC_FOLDER
    root = tmp_path / tasks.IPC_FOLDER
    (root / domain / "testing" / "medium").mkdir(parents=True)
    shutil.copy(src / domain / "domain.pddl", root / domain / "domain.pddl")
    shutil.copytree(src / domain / "training", root / domain / "training")
    shutil.copytree(src / domain / "testing" / "easy", root / domain / "testing" / "easy")
    for name in tasks.task_files(src, domain, "testing")[:count]:
        shutil.copy(src / domain / "testing" / "easy" / f"{name}.pddl", root / domain / "testing" / "medium" / f"{name}.pddl")
    return tmp_path


def test_held_out_level_is_an_option_with_its_own_deadline(shared_data, tmp_path):
    data = medium_data(shared_data, tmp_path)
    easy = load_problem("planning", data_dir=data, options={"domain": "ferry"})
    medium = load_problem("planning", data_dir=data, options={"domain": "ferry", "test_level": "medium"})
    assert list(medium.instances("test")) == [f"ferry/testing/medium/p0{i}" for i in (1, 2, 3)]
    # Same tasks on disk (copies), so the same search outcomes; only names and bounds differ.
    assert all(inst["upper_bound"] is None for inst in medium.instances("test").values())
    # Deadlines per split: the same allowance per task, scaled by level; training keeps its 120 s.
    assert easy.timeout_for("train") == medium.timeout_for("train") == 120.0
    assert easy.timeout_for("test") == 12.0 * 30 and medium.timeout_for("test") == 12.0 * 3 * 4
    bigger = load_problem("planning", data_dir=data, options={"domain": "ferry", "test_level": "medium",
                                                              "test_budget": 20000})
    assert {i["budget"] for i in bigger.instances("test").values()} == {20000}
    assert {i["budget"] for i in bigger.instances("train").values()} == {2000}
    assert bigger.timeout_for("test") == 12.0 * 3 * 4 * 10 and bigger.timeout_for("train") == 120.0
    with pytest.raises(ProblemError, match="no hard testing tasks of 'ferry'"):
        load_problem("planning", data_dir=data, options={"domain": "ferry", "test_level": "hard"})
    with pytest.raises(ProblemError, match="test_level must be one of easy, medium, hard"):
        load_problem("planning", data_dir=data, options={"domain": "ferry", "test_level": "expert"})


def test_the_pool_gives_each_split_its_deadline(shared_data, tmp_path):
    data = medium_data(shared_data, tmp_path)

    async def go():
        pool = WorkerPool("planning", data_dir=data, workers=1, options={"domain": "ferry", "test_level": "medium",
                                                                         "task_timeout_s": 0.5})
        await pool.start()
        try:
            # A heuristic that sleeps 0.2 s per call: too slow for 3 medium tasks at 0.5 s x 4 each.
            slow = program(load_problem("planning", data_dir=data, options={"domain": "ferry"}),
                           "def heuristic(task):\n    import time\n"
                           "    return lambda s: time.sleep(0.2) or len(task.goals - s)\n")
            return pool.info["split_timeouts"], await pool.run(slow, "test")
        finally:
            await pool.close()

    timeouts, reply = asyncio.run(go())
    assert timeouts == {"probe": 1.5, "train": 5.0, "test": 6.0}
    assert reply["status"] == "timeout" and "6 s" in reply["reason"], reply

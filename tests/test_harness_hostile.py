"""Hostile candidates against the trusted harness (interactive problems), through the real sandbox.

Each attack walks every frame it can reach, scans ``gc.get_objects()`` and patches the
code of every harness function it can find (at import time and at call time), then
uses what it found: it reads the instance's future inputs, lifts the budget, raises
counters, forges the scorer. Against a harness that runs beside the candidate these
attacks change the outcome (the issue measured -403.4 bins against an honest -419.6);
here each must end with exactly the honest score or a recorded failure, never a
better one, and what the attack reached is printed and checked too.
"""
from __future__ import annotations

import asyncio
import os
import pwd

import pytest

from evaluators.pool import WorkerPool
from evosearch.problem import load_problem
from hostile_modes import _python_reachable_by

# Searches everything reachable from the candidate's process. SECRET(obj): whether obj is the
# harness's data or counter (per problem); TAMPER: key or attribute -> forged value, applied to
# what was found. PATCH: which functions to overwrite with one returning FORGED:
# "harness" (the problem's own harness functions, wherever found), "all" (also the transport).
ATTACK = '''
import gc, sys, types

FOUND, PATCHED, DONE = [], [], [False]
HARNESS = ("episode", "probe_episode", "gbfs", "score", "aggregate", "run", "probe", "_priorities", "check_plan",
           "heuristic_value", "__call__", "fit", "nmse", "greedy_best_first_search")
TRANSPORT = ("handle", "encode", "exchange", "decode", "_recv_exact", "_send_frame", "call")


def _forged(*args, **kwargs):
    return FORGED


def _patchable(fn):
    if not isinstance(fn, types.FunctionType) or fn.__code__.co_freevars or fn is _forged:
        return False
    names = HARNESS + (TRANSPORT if PATCH == "all" else ())
    module = fn.__module__ or ""
    return fn.__name__ in names and (PATCH == "all" or not module.startswith("evaluators"))


def _inspect(obj):
    try:
        secret = obj is not TAMPER and SECRET(obj)
    except Exception:
        secret = False
    if secret:
        FOUND.append(type(obj).__name__ + (str(sorted(obj)[:6]) if isinstance(obj, dict) else ""))
        for k, v in TAMPER.items():
            try:
                if isinstance(obj, dict):
                    obj[k] = v
                else:
                    setattr(obj, k, v)
            except Exception:
                pass
    if PATCH and _patchable(obj):
        obj.__code__ = _forged.__code__
        obj.__globals__.setdefault("FORGED", FORGED)
        PATCHED.append(obj.__name__)


def _attack():
    if DONE[0]:
        return bool(FOUND)
    DONE[0] = True
    seen = []
    frame = sys._getframe(1)
    while frame is not None:  # every frame's locals and globals, and one level into objects
        for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
            seen.append(value)
            try:
                if not isinstance(value, types.ModuleType):
                    seen.extend(vars(value).values())
            except Exception:  # no __dict__, or a lazy module that fails to load
                pass
        frame = frame.f_back
    for module in list(sys.modules.values()):
        try:
            for value in list(vars(module).values()):
                seen.append(value)
                if isinstance(value, type):
                    seen.extend(getattr(v, "__func__", v) for v in list(vars(value).values()))
        except Exception:
            pass
    seen.extend(gc.get_objects())  # everything the collector tracks
    for value in seen:
        _inspect(value)
    print("REACHED", sorted(set(FOUND)), "PATCHED", len(PATCHED))
    return bool(FOUND)


_attack()  # at import time
DONE[0] = False  # and again at the first call
'''


def attack_program(skeleton: str, function: str, secret: str, tamper: dict, forged, body: str,
                   patch: str | None) -> str:
    """The seed program with ``function``'s body replaced: attack first, then ``body``
    (which may use FOUND to deviate from the honest behaviour when something was reached)."""
    head = (f"SECRET = lambda obj: {secret}\nTAMPER = {tamper!r}\nFORGED = {forged!r}\nPATCH = {patch!r}\n"
            + ATTACK)
    start = skeleton.index(f"def {function}(")
    end = skeleton.index("# EVOLVE-BLOCK-END")
    signature = skeleton[start:skeleton.index(":\n", start) + 2]
    return skeleton[:start] + head + "\n\n" + signature + "    _attack()\n" + body + "\n" + skeleton[end:]


def evaluate(problem_name, programs, split="train", **pool_options):
    async def go():
        pool = WorkerPool(problem_name, workers=1, **pool_options)
        await pool.start()
        try:
            assert pool.info["interactive"], "this problem's harness should be interactive"
            return [await pool.run(code, split) for code in programs]
        finally:
            await pool.close()
    return asyncio.run(go())


def assert_honest(honest: dict, attacked: dict, may_fail: bool = False) -> None:
    """The honest score, or (``may_fail``: it broke its own process) a recorded failure; and the
    attack reached none of the harness's state."""
    assert honest["status"] == "ok", honest
    if attacked["status"] == "ok" or not may_fail:
        assert attacked["status"] == "ok", attacked
        assert attacked["score"] == honest["score"], (attacked["score"], honest["score"], attacked["output"][-500:])
        assert "REACHED []" in attacked["output"], attacked["output"][-1000:]
    else:
        assert attacked["reason"], attacked


MODES = {"frames and gc": None, "patching the harness": "harness", "patching everything": "all"}


# ---------------------------------------------------------------- bin packing: online order

BIN_SECRET = "isinstance(obj, dict) and isinstance(obj.get('items'), list) and 'capacity' in obj"
BIN_BODY = """    if FOUND:  # it saw the harness: pack differently (a real cheat would steer to an offline packing)
        return bins - item
    return -(bins - item)
"""


@pytest.fixture(scope="module")
def bin_packing_replies():
    skeleton = load_problem("bin_packing").skeleton
    attacks = [attack_program(skeleton, "priority", BIN_SECRET, {"items": [1], "capacity": 10 ** 6}, -1.0, BIN_BODY,
                              patch) for patch in MODES.values()]
    return dict(zip(["honest", *MODES], evaluate("bin_packing", [skeleton, *attacks])))


@pytest.mark.parametrize("mode", list(MODES))
def test_bin_packing_attacks_reach_nothing_and_score_honestly(bin_packing_replies, mode):
    honest = bin_packing_replies["honest"]
    assert honest["score"] == pytest.approx(-419.6)  # Best Fit on the default train split
    assert_honest(honest, bin_packing_replies[mode], may_fail=mode == "patching everything")


def reaches_in_process(problem, function, secret, body) -> list:
    """The attack run where the harness does run beside the candidate (trusted in-process
    evaluation, as a `run` harness would be): what it found. Shows the sandboxed tests have teeth."""
    attack = attack_program(problem.skeleton, function, secret, {}, 0.0, body, None)
    namespace: dict = {}
    exec(attack, namespace)
    namespace["DONE"][0] = False
    problem.output(namespace, next(iter(problem.instances("train").values())))
    return namespace["FOUND"]


def test_bin_packing_attack_in_process_does_reach_the_harness():
    problem = load_problem("bin_packing", options={"train_instances": 1, "train_items": 50})
    assert reaches_in_process(problem, "priority", BIN_SECRET, BIN_BODY)


# ---------------------------------------------------------------- planning: node budget

PLAN_SECRET = "isinstance(obj, dict) and isinstance(obj.get('budget'), int) and 'grounded' in obj"
PLAN_BODY = """    goals = task.goals
    if FOUND:  # it saw the harness: search differently
        return lambda s: -len(goals - s)
    return lambda s: len(goals - s)
"""


@pytest.fixture(scope="module")
def planning_replies(shared_data):
    options = {"domain": "ferry", "budget": 40, "train_tasks": 4}
    skeleton = load_problem("planning", data_dir=shared_data, options=options).skeleton
    attacks = [attack_program(skeleton, "heuristic", PLAN_SECRET, {"budget": 10 ** 9, "evaluations": 0}, 99.0,
                              PLAN_BODY, patch) for patch in MODES.values()]
    replies = evaluate("planning", [skeleton, *attacks], data_dir=shared_data, options=options)
    return dict(zip(["honest", *MODES], replies))


def test_planning_attack_in_process_does_reach_the_harness(shared_data):
    problem = load_problem("planning", data_dir=shared_data, options={"domain": "ferry", "train_tasks": 1})
    assert reaches_in_process(problem, "heuristic", PLAN_SECRET, PLAN_BODY)


@pytest.mark.parametrize("mode", list(MODES))
def test_planning_attacks_cannot_lift_the_budget(planning_replies, mode):
    honest = planning_replies["honest"]
    assert honest["metrics"]["solved"] < 4  # the small budget binds, so lifting it would show
    assert_honest(honest, planning_replies[mode], may_fail=mode == "patching everything")


def _replies(problem_name, function, secret, tamper, forged, body, options=None, **pool_options):
    """The honest program (the same code, its search finding nothing by construction) and the attacks."""
    skeleton = load_problem(problem_name, data_dir=pool_options.get("data_dir"), options=options).skeleton
    honest = attack_program(skeleton, function, "False", {}, forged, body, None)
    attacks = [attack_program(skeleton, function, secret, tamper, forged, body, patch) for patch in MODES.values()]
    replies = evaluate(problem_name, [honest, *attacks], options=options or {}, **pool_options)
    return dict(zip(["honest", *MODES], replies))


# ---------------------------------------------------------------- symbolic regression: hidden targets

SR_SECRET = "isinstance(obj, dict) and isinstance(obj.get('target'), np.ndarray) and 'inputs' in obj"
SR_BODY = """    if FOUND:  # it saw the targets: fit differently
        return x * 0.0 + params[0]
    return params[0] * x + params[1] * v + params[2]
"""


@pytest.fixture(scope="module")
def symbolic_regression_replies():
    return _replies("symbolic_regression", "equation", SR_SECRET, {"target": None}, 20.0, SR_BODY)


def test_symbolic_regression_attack_in_process_does_reach_the_harness():
    assert reaches_in_process(load_problem("symbolic_regression"), "equation", SR_SECRET, SR_BODY)


@pytest.mark.parametrize("mode", list(MODES))
def test_symbolic_regression_attacks_never_see_the_targets(symbolic_regression_replies, mode):
    assert_honest(symbolic_regression_replies["honest"], symbolic_regression_replies[mode],
                  may_fail=mode == "patching everything")


# ---------------------------------------------------------------- optimizer: data and step count

OPT_SECRET = "isinstance(obj, dict) and isinstance(obj.get('X'), np.ndarray) and 'steps' in obj"
OPT_BODY = """    if FOUND:  # it saw the data or the step count: train differently
        return params, state
    return {k: p - lr * grads[k] for k, p in params.items()}, state
"""
OPT_OPTIONS = {"steps": 20, "seeds_per_task": 1, "lr_grid": [0.01, 0.1]}


@pytest.fixture(scope="module")
def optimizer_replies():
    return _replies("optimizer", "update", OPT_SECRET, {"steps": 1}, 0.0, OPT_BODY, options=OPT_OPTIONS)


def test_optimizer_attack_in_process_does_reach_the_harness():
    assert reaches_in_process(load_problem("optimizer", options=OPT_OPTIONS), "update", OPT_SECRET, OPT_BODY)


@pytest.mark.parametrize("mode", list(MODES))
def test_optimizer_attacks_cannot_take_extra_steps_or_see_the_data(optimizer_replies, mode):
    assert_honest(optimizer_replies["honest"], optimizer_replies[mode], may_fail=mode == "patching everything")


MEMORY_ATTACK = '''
def priority(item, bins):
    import os
    # The worker (the zygote's parent) holds the episode: try its memory and its tracer slot.
    zygote = os.getppid()
    worker = int([line.split()[1] for line in open(f"/proc/{zygote}/status") if line.startswith("PPid:")][0])
    for path in (f"/proc/{worker}/mem", f"/proc/{worker}/environ"):
        try:
            open(path, "rb").close()  # opening is the access check (ptrace mode)
        except OSError:
            continue
        raise SystemExit(f"READ {path}")
    return -(bins - item)
'''


def test_an_unconfined_same_uid_candidate_cannot_read_the_workers_memory():
    # The weakest mode a user can ask for: no bubblewrap, no kernel layers, no uid drop. The worker
    # holds the episode (future items); a candidate of its own uid must still not read its memory.
    # As root the workers run as nobody (a normal user's case; root's candidates may read anything).
    user = None
    if os.geteuid() == 0:
        user = pwd.getpwnam("nobody").pw_uid
        why = _python_reachable_by(user)
        if why:
            pytest.skip(why)
    problem = load_problem("bin_packing")
    code = problem.skeleton[:problem.skeleton.index("def priority(")] + MEMORY_ATTACK.lstrip() + "\n# EVOLVE-BLOCK-END\n"
    [reply] = evaluate("bin_packing", [code], bubblewrap=False, kernel=False, drop_privileges=False,
                       unsafe_no_sandbox=True, user=user)
    assert reply["status"] == "ok", (reply["reason"], reply.get("output"))
    assert "READ" not in (reply.get("output") or "") + (reply.get("reason") or "")

"""Constant tuning (evosearch.tuning): literals, substitution, CMA-ES ask/tell and its replay."""
from __future__ import annotations

import ast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evosearch.program import EditError, check_frozen, evolvable_functions
from evosearch.tuning import Tuning, implicit_coefficients, literals, substitute

PROGRAM = '''"""A test program."""
import numpy as np

HELPER_CONSTANT = 7.5


def trusted(x):
    return x * 3.25


# EVOLVE-BLOCK-START
def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Docstring stays."""
    w = np.zeros(3)
    score = -(bins - item) ** 1.5 + 0.3 * (bins < 2 * item)
    for k in range(4):
        score = score - 0.01 * k
    return score * -2.5 + w[1] + (True * 1)
# EVOLVE-BLOCK-END
'''


def test_literals_are_floats_and_arithmetic_integers_in_evolve_blocks_only():
    found = literals(PROGRAM)
    assert {lit.function for lit in found} == {"priority"}  # 7.5 and 3.25 are outside the blocks
    # 1.5, 0.3, 2 (operand of *), 0.01, -2.5 (sign included), 1 (operand of *); not 3 (call
    # argument), 4 (range), 1 of w[1] (index), True (a bool).
    assert sorted(lit.value for lit in found) == sorted([1.5, 0.3, 2.0, 0.01, -2.5, 1.0])


def test_substitute_with_the_same_values_keeps_the_program_and_the_frozen_code():
    params = literals(PROGRAM)
    same = substitute(PROGRAM, params, [p.value for p in params])
    check_frozen(PROGRAM, same)
    assert ast.dump(ast.parse(evolvable_functions(same)["priority"])) == \
        ast.dump(ast.parse(evolvable_functions(PROGRAM)["priority"]))


def test_substitute_sets_values_and_parenthesises_negatives():
    params = literals(PROGRAM)
    new = [-p.value for p in params]
    code = substitute(PROGRAM, params, new)
    check_frozen(PROGRAM, code)
    assert sorted(p.value for p in literals(code)) == sorted(new)  # read back exactly
    ns: dict = {}
    exec(compile(code, "<tuned>", "exec"), ns)  # trusted test code: the program is ours
    bins = np.array([0.5, 1.0])
    # -1.5 as the exponent and (-0.3) as a factor: the same value as written by hand.
    expected = (-(bins - 0.2) ** -1.5 + -0.3 * (bins < -2.0 * 0.2) + sum(0.01 * k for k in range(4))) * 2.5 \
        + 0.0 + (True * -1.0)
    np.testing.assert_allclose(ns["priority"](0.2, bins), expected)


def _block(body: str) -> str:
    return PROGRAM.split("# EVOLVE-BLOCK-START")[0] + "# EVOLVE-BLOCK-START\n" + body + "# EVOLVE-BLOCK-END\n"


def test_no_literal_and_no_sum_no_tuning():
    lone = _block("def priority(item, bins):\n    return -bins[::2]\n")
    assert literals(lone) == [] and implicit_coefficients(lone, 16) == lone
    with pytest.raises(EditError):
        Tuning(lone, seed=0, evaluations=8)


def _call(code: str, *args):
    ns: dict = {}
    exec(compile(code, "<tuned>", "exec"), ns)  # trusted test code: the program is ours
    return ns["priority"](*args)


def test_terms_of_a_sum_without_a_factor_get_a_coefficient():
    """``back - step`` (TSP, as a small model writes it) becomes ``1.0 * back - 1.0 * step``; a term with
    a numeric factor, a number, and sums in an index or range() get none."""
    code = _block("def priority(back, step, a, n):\n"
                  "    s = 0\n"
                  "    for i in range(n - 1):\n"
                  "        s += a[i + 1] * step / n\n"
                  "    return back - step + 0.5 * a[n - 1] + 2 + s\n")
    exposed = implicit_coefficients(code, 16)
    check_frozen(code, exposed)
    src = evolvable_functions(exposed)["priority"]
    assert "s += 1.0 * a[i + 1] * step / n" in src and "range(n - 1)" in src
    assert "return 1.0 * back - 1.0 * step + 0.5 * a[n - 1] + 2 + 1.0 * s" in src
    args = (np.array([3.0, 1.0]), np.array([0.5, 2.0]), np.array([1.0, 2.0, 4.0]), 3)
    np.testing.assert_allclose(_call(exposed, *args), _call(code, *args))  # the same program
    # The budget: coefficients in source order up to the cap.
    assert [p.value for p in literals(implicit_coefficients(code, 1))].count(1.0) == 1
    # A tuning writes them out only where the program has no literal of its own (this one has 0.5 and 2).
    assert sorted(p.value for p in Tuning(code, seed=0, evaluations=8).params) == [0.5, 2]
    bare = _block("def priority(back, step, a):\n    return back - step + a[1]\n")
    assert [p.value for p in Tuning(bare, seed=0, evaluations=8, max_params=2).params] == [1.0, 1.0]


def test_a_tuning_weighs_the_terms_of_a_mix():
    """The elite ``back - step`` has no literal; its tuning finds the weight of ``back`` that a score
    peaked at 0.5 asks for, and every trial is the elite's program with two coefficients."""
    code = _block("def priority(back, step):\n    return back - step\n")

    def score(trial):
        weights = [p.value for p in literals(trial)]
        return -(weights[0] / weights[1] - 0.5) ** 2  # only the ratio matters to an argmax

    tuning = Tuning(code, seed=1, evaluations=60)
    trials = _run(tuning, score, 60)
    assert all(len(literals(t)) == 2 for t in trials)
    assert max(score(t) for t in trials) > -0.01  # the ratio within 0.1 of 0.5 (from 1.0)


def _run(tuning: Tuning, score, upto: int) -> list[str]:
    """Ask and tell trials 0..upto-1 in order; the programs asked."""
    out = []
    for k in range(upto):
        out.append(tuning.trial(k))
        tuning.tell(k, score(out[-1]))
    return out


def _quadratic(code: str) -> float:
    values = np.array([p.value for p in literals(code)])
    return -float(np.sum((values - 1.0) ** 2))


def test_cma_es_improves_the_constants_of_a_smooth_score():
    tuning = Tuning(PROGRAM, seed=3, evaluations=120)
    codes = _run(tuning, _quadratic, 120)
    start = _quadratic(PROGRAM)
    best = max(_quadratic(c) for c in codes)
    assert best > start + 0.5 * (0 - start)  # closes most of the gap to the optimum (0)


def test_a_generation_waits_for_the_previous_one():
    tuning = Tuning(PROGRAM, seed=0, evaluations=40, batch=4)
    for k in range(4):
        assert tuning.ready(k)
        tuning.trial(k)
    assert not tuning.ready(4)
    with pytest.raises(ValueError):
        tuning.trial(4)
    for k in range(3):
        tuning.tell(k, -1.0)
    assert not tuning.ready(4)
    tuning.tell(3, None)  # a failed trial is ranked last
    assert tuning.ready(4) and not tuning.ready(8)
    with pytest.raises(ValueError):
        tuning.tell(3, 0.0)
    with pytest.raises(ValueError):
        tuning.tell(9, 0.0)  # generation 2 cannot be asked before generation 1 is told


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(0, 30), fail=st.integers(2, 7))
def test_replay_from_recorded_scores_asks_the_same_next_trials(seed, cut, fail):
    """A tuning rebuilt from the first ``cut`` trials' recorded scores (what resume does with the
    store's trial rows) asks exactly the trials the uninterrupted tuning asked after them."""
    def score(code):  # some failures (None) mixed in, deterministically
        s = _quadratic(code)
        return None if int(abs(s) * 1000) % fail == 0 else s

    whole = Tuning(PROGRAM, seed=seed, evaluations=30, batch=5)
    codes = _run(whole, score, 30)
    replayed = Tuning(PROGRAM, seed=seed, evaluations=30, batch=5)
    np.random.seed(seed % 1000)  # numpy's global generator is not the tuning's: touching it changes nothing
    np.random.rand(7)
    # Replay: the recorded trials' scores are told in order, without asking (as the engine's replay does).
    for k in range(cut):
        replayed.tell(k, score(codes[k]))
    # A trial of the current generation launched before the kill but not finished is asked again.
    for k in range(cut, 30):
        assert replayed.trial(k) == codes[k]
        replayed.tell(k, score(codes[k]))
    assert replayed.done()


def test_seeds_give_different_trials():
    a = Tuning(PROGRAM, seed=1, evaluations=8).trial(0)
    b = Tuning(PROGRAM, seed=2, evaluations=8).trial(0)
    assert a != b and a == Tuning(PROGRAM, seed=1, evaluations=8).trial(0)


def test_a_single_literal_is_tuned():
    one = PROGRAM.split("# EVOLVE-BLOCK-START")[0] + \
        "# EVOLVE-BLOCK-START\ndef priority(item, bins):\n    return -(bins - item) * 1.5\n# EVOLVE-BLOCK-END\n"
    tuning = Tuning(one, seed=0, evaluations=12)
    values = {literals(c)[0].value for c in _run(tuning, _quadratic, 12)}
    assert len(values) == 12 and tuning.done()

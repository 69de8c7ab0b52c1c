"""Syntactic and functional hashes: pure functions, checked with hypothesis."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluators.hashing import functional_hash, round_mantissa, syntactic_hash

PROGRAM = '''import numpy as np


def priority(item, bins):
    """Best fit."""
    return -(bins - item)
'''


def test_syntactic_hash_ignores_comments_docstrings_and_layout():
    variant = '''import numpy as np
# a comment the LLM added
def priority(item,bins):   # trailing comment
    """A different docstring,
    over two lines."""

    return -( bins-item )
'''
    assert syntactic_hash(variant) == syntactic_hash(PROGRAM)


def test_syntactic_hash_sees_real_changes():
    assert syntactic_hash(PROGRAM) != syntactic_hash(PROGRAM.replace("-(bins - item)", "item - bins"))
    assert syntactic_hash(PROGRAM) != syntactic_hash(PROGRAM.replace("priority(item, bins)", "priority(item, b)"))
    # A string that is not a docstring is code.
    assert syntactic_hash("x = 1\n") != syntactic_hash("x = 1\n'note'\n")
    assert syntactic_hash("def f():\n    '''doc'''\n") == syntactic_hash("def f():\n    pass\n")


def test_syntactic_hash_rejects_bad_code():
    with pytest.raises(SyntaxError):
        syntactic_hash("def f(:\n")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["", "  ", "\t"]), st.text(st.characters(blacklist_characters="\n\r\x00"),
                                                                           max_size=20)), min_size=5, max_size=5),
       st.integers(0, 3))
def test_syntactic_hash_invariant_under_comments(comments, blank_lines):
    lines = PROGRAM.splitlines()
    edited = []
    for i, line in enumerate(lines):
        pad, text = comments[i % len(comments)]
        edited.append(f"{line}{pad}  # {text}" if line.strip() and '"""' not in line else line)
        edited.extend([""] * (blank_lines if i == 0 else 0))
    assert syntactic_hash("\n".join(edited)) == syntactic_hash(PROGRAM)


finite = st.floats(allow_nan=False, allow_infinity=False)
json_data = st.recursive(st.none() | st.booleans() | st.integers() | finite | st.text(max_size=5),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                                      max_size=4),
                         max_leaves=20)


@given(finite, st.integers(1, 60))
def test_round_mantissa_is_close_and_idempotent(x, bits):
    r = round_mantissa(x, bits)
    assert round_mantissa(r, bits) == r
    if bits < 53 and math.isfinite(r):
        assert abs(r - x) <= abs(x) * 2.0 ** -bits
    else:
        assert r == x


@given(json_data)
def test_functional_hash_is_deterministic_and_order_free(data):
    assert functional_hash(data) == functional_hash(data)
    if isinstance(data, dict):
        assert functional_hash(dict(reversed(list(data.items())))) == functional_hash(data)


@given(st.floats(min_value=1e-300, max_value=1e300), st.integers(-4, 4))
def test_functional_hash_absorbs_last_bit_noise(x, ulps):
    # Reassociated arithmetic moves a few ulps; rounding to 32 bits absorbs it unless
    # the value sits next to a rounding boundary, which hypothesis may find: check
    # the hash agrees exactly when the rounded values agree.
    y = x
    for _ in range(abs(ulps)):
        y = math.nextafter(y, math.inf if ulps > 0 else -math.inf)
    same = round_mantissa(x, 32) == round_mantissa(y, 32)
    assert (functional_hash([x]) == functional_hash([y])) == same


def test_functional_hash_distinguishes_what_scorers_distinguish():
    assert functional_hash({"a": [1, 2]}) != functional_hash({"a": [1.0, 2.0]})  # int vs float
    assert functional_hash([True]) != functional_hash([1])
    assert functional_hash([0.1]) != functional_hash([0.1000001])
    assert functional_hash([1.0 + 2 ** -45]) == functional_hash([1.0])
    assert functional_hash([1.0 + 2 ** -45], mantissa_bits=60) != functional_hash([1.0], mantissa_bits=60)
    assert functional_hash([-0.0]) == functional_hash([0.0])
    assert functional_hash([math.nan]) == functional_hash([math.nan]) != functional_hash([math.inf])
    assert functional_hash(np.array([1.5, 2.5])) == functional_hash([1.5, 2.5])
    with pytest.raises(TypeError):
        functional_hash([object()])


@settings(max_examples=30, deadline=None)
@given(st.floats(-3, 3), st.floats(-3, 3), st.integers(1, 20), st.booleans())
def test_bin_packing_probe_is_dense_ranks_per_state(a, b, step, ties):
    # The probe ranks every state at once; a per-state np.unique is the plain definition.
    from evosearch.problem import load_problem
    from problems.bin_packing.problem import _priorities

    def priority(item, bins):
        scores = a * bins + b * item * np.sqrt(bins)
        return np.floor(scores / step) if ties else scores
    problem = load_problem("bin_packing")
    states = next(iter(problem.instances("probe").values()))
    expected = [r for s in states for r in np.unique(
        _priorities(priority(s["item"], np.array(s["bins"])), np.array(s["bins"])), return_inverse=True)[1].tolist()]
    assert problem.probe({"priority": priority}, states) == expected

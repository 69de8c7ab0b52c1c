"""EVOLVE-BLOCK handling, splicing and the versioned prompt."""
import pytest

from evosearch.program import EditError, ast_size, blocks, evolvable_functions, replace_functions
from evosearch.prompt import build_prompt, rename

PROGRAM = '''import numpy as np


def trusted(x):
    return x


# EVOLVE-BLOCK-START
def priority(item, bins):
    """doc"""
    return -(bins - item)


@staticmethod
def helper(x):
    return priority(x, x)
# EVOLVE-BLOCK-END


# EVOLVE-BLOCK-START
def second(a):
    return a
# EVOLVE-BLOCK-END
'''


def test_evolvable_functions_are_those_inside_blocks():
    assert list(evolvable_functions(PROGRAM)) == ["priority", "helper", "second"]
    assert evolvable_functions(PROGRAM)["helper"].startswith("@staticmethod")
    assert len(blocks(PROGRAM)) == 2


def test_replace_keeps_everything_outside_blocks():
    new = replace_functions(PROGRAM, {"priority": "def priority(item, bins):\n    return bins", "second": "def second(a):\n    return 2 * a"})
    assert "return bins" in new and "return 2 * a" in new and "return -(bins - item)" not in new
    outside = lambda code: [l for l in code.splitlines() if l.startswith(("import", "def trusted", "    return x"))]
    assert outside(new) == outside(PROGRAM)
    assert list(evolvable_functions(new)) == ["priority", "helper", "second"]


def test_new_helpers_land_inside_the_first_block():
    new = replace_functions(PROGRAM, {"extra": "def extra():\n    return 1"})
    assert "extra" in evolvable_functions(new)


def test_editing_outside_blocks_is_refused():
    with pytest.raises(EditError, match="outside the evolve blocks"):
        replace_functions(PROGRAM, {"trusted": "def trusted(x):\n    return 0"})


@pytest.mark.parametrize("code, message", [
    ("def f(): pass\n", "no # EVOLVE-BLOCK-START"),
    ("# EVOLVE-BLOCK-START\ndef f(): pass\n", "never closed"),
    ("# EVOLVE-BLOCK-END\n", "without"),
])
def test_malformed_blocks(code, message):
    with pytest.raises(EditError, match=message):
        blocks(code)


def test_ast_size_counts_only_evolvable_code():
    small = replace_functions(PROGRAM, {"priority": "def priority(item, bins):\n    return 0"})
    assert ast_size(small) < ast_size(PROGRAM)


def test_rename_touches_names_not_strings():
    src = 'def priority(x):\n    s = "priority"\n    return priority(x)  # priority\n'
    out = rename(src, "priority", "priority_v1")
    assert out == 'def priority_v1(x):\n    s = "priority"\n    return priority_v1(x)  # priority\n'


def test_prompt_shows_parents_worst_first_and_asks_for_next_version():
    better = replace_functions(PROGRAM, {"priority": "def priority(item, bins):\n    return bins * 2"})
    prompt = build_prompt(description="d", skeleton=PROGRAM, parents=[(better, -1.0), (PROGRAM, -5.0)], seed=7)
    assert prompt.parents == [PROGRAM, better]
    assert prompt.user.index("def priority_v0") < prompt.user.index("def priority_v1")
    assert "return priority_v1(x, x)" in prompt.user  # calls between evolvable functions follow the version
    assert "`priority_v2`" in prompt.user and "def trusted(x)" in prompt.user
    assert prompt.user.index("return bins * 2") > prompt.user.index("return -(bins - item)")

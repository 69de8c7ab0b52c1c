"""Prompts in every edit format: shared head first, feedback, Evolution of Thought, retries."""
import pytest

from evosearch.edits import apply_diff, parse_diff
from evosearch.extract import extract_functions
from evosearch.program import replace_functions
from evosearch.prompt import EDIT_FORMATS, Shown, build_prompt, feedback, retry_prompt

SKELETON = '''import numpy as np


def trusted(x):
    return x


# EVOLVE-BLOCK-START
def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Score each bin; the item goes to the highest."""
    return -(bins - item)
# EVOLVE-BLOCK-END
'''
BETTER = SKELETON.replace("return -(bins - item)", "return -(bins - item) ** 2")
BROKEN = SKELETON.replace("return -(bins - item)", "return bins[item]")


def parents():
    return [Shown(BETTER, 0.9, id=3, metrics={"or1": 0.91, "or2": 0.89}, change="square the gap", delta=0.05),
            Shown(SKELETON, 0.8, id=0)]


def build(fmt, **kw):
    shown = [Shown(BROKEN, None, id=5, status="crash", error="Traceback ...\nIndexError: only integers")] \
        if fmt == "fix" else parents()
    return build_prompt(description="Online bin packing.", skeleton=SKELETON, parents=shown, seed=1,
                        edit_format=fmt, **kw)


def test_the_shared_head_comes_first_and_is_the_same_in_every_format():
    prompts = {f: build(f, insights=["squares of gaps help"]) for f in EDIT_FORMATS}
    heads = {p.user[:p.user_shared] for p in prompts.values()}
    assert len(heads) == 1
    head = heads.pop()
    assert head.startswith("Problem: Online bin packing.") and "def trusted(x)" in head
    assert "- squares of gaps help" in head and "EVOLVE-BLOCK" not in head
    assert len({p.system for p in prompts.values()}) == 1
    code_heads = {p.completion[:p.completion_shared] for p in prompts.values() if p.completion}
    assert len(code_heads) == 1 and "# Insight: squares of gaps help" in code_heads.pop()
    assert prompts["diff"].completion == ""  # chat only


def test_full_format_shows_feedback_and_the_parents_change_and_outcome():
    p = build("full")
    assert p.parents == [SKELETON, BETTER]  # worst first, best last
    body = p.user[p.user_shared:]
    assert body.index("# Version 0 (score 0.8)") < body.index("# Version 1 (score 0.9)")
    assert "# Metrics: or1 0.91, or2 0.89" in body
    assert "# Change: square the gap -> score +0.05 vs its parent" in body
    assert "`priority_v2`" in body and "# Change: <what you change and why>" in body
    assert p.completion.endswith(p.header) and p.header.startswith("def priority_v2(")
    answer = p.header + "    return -(bins - item) ** 3\n"
    code = replace_functions(p.parents[-1], extract_functions(answer, ["priority"], header=p.header))
    assert "** 3" in code


def test_crossover_and_fix_forms():
    c = build("crossover")
    assert "combining the best ideas" in c.user and '"""Combines the ideas of `priority_v0` to `priority_v1`."""' in c.header
    f = build("fix")
    assert f.parents == [BROKEN]
    assert "# Version 0 (failed: crash)" in f.user and "#   IndexError: only integers" in f.user
    assert "a repaired version" in f.user and f.completion.endswith("# Version 1 (fixed)\n" + f.header)


def test_diff_format_shows_the_whole_best_program_and_its_answer_applies():
    d = build("diff")
    assert d.parents == [BETTER] and BETTER.rstrip() in d.user and "<<<<<<< SEARCH" in d.user
    answer = "# Change: cube\n<<<<<<< SEARCH\n    return -(bins - item) ** 2\n=======\n    return -(bins - item) ** 3\n>>>>>>> REPLACE"
    assert "** 3" in apply_diff(d.parents[-1], parse_diff(answer))


def test_retry_shows_the_rejected_answer_and_reason_keeping_the_head():
    p = build("full")
    r = retry_prompt(p, "def trusted(x):\n    return 2", "function 'trusted' is outside\nthe evolve blocks", seed=9)
    assert r.user.startswith(p.user) and r.user_shared == p.user_shared and r.seed == 9
    assert "It was rejected: function 'trusted' is outside the evolve blocks" in r.user
    assert r.completion.endswith("# A previous attempt was rejected: function 'trusted' is outside the evolve "
                                 "blocks\n" + p.header)


def test_feedback_is_compact():
    many = Shown("", 1.0, metrics={f"i{k}": k / 3 for k in range(20)}, status="ok")
    (line,) = feedback(many)
    assert line.startswith("# Metrics: i0 0, i1 0.3333") and line.endswith("(and 12 more)")
    long = Shown("", None, status="timeout", error="x" * 5000)
    lines = feedback(long)
    assert lines[0] == "# Error (timeout):" and len(lines[1]) < 700
    with pytest.raises(ValueError, match="unknown edit format 'patch'"):
        build("patch")


def test_inspirations_sit_between_the_head_and_the_parents_in_chat_only():
    other = Shown(SKELETON.replace("return -(bins - item)", "return item - bins * 0.5"), 0.7, metrics={"or1": 0.7})
    for fmt in ("full", "diff"):
        p = build(fmt, inspirations=[other])
        body = p.user[p.user_shared:]
        assert body.startswith("Other programs of the population, for inspiration:\n```python\n# score 0.7\n")
        assert "def priority(item: float" in body and body.index("bins * 0.5") < body.index("Version" if fmt == "full" else "Current program")
        assert "bins * 0.5" not in p.completion


def test_a_program_shown_twice_is_shown_once_the_better_copy_kept():
    # Early in a run every parent is the seed: two identical versions teach a small model to copy.
    twice = [Shown(SKELETON, 0.8, id=0), Shown(BETTER, 0.9, id=3), Shown(SKELETON, 0.85, id=7)]
    p = build_prompt(description="Online bin packing.", skeleton=SKELETON, parents=twice, seed=1)
    assert p.parents == [SKELETON, BETTER]
    assert "# Version 0 (score 0.85)" in p.completion and "(score 0.8)" not in p.completion
    assert p.header.startswith("def priority_v2(")
    alone = build_prompt(description="Online bin packing.", skeleton=SKELETON, parents=twice[:1] * 2, seed=1)
    assert alone.parents == [SKELETON] and alone.header.startswith("def priority_v1(")

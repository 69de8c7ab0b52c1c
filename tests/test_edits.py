"""SEARCH/REPLACE edits and the EVOLVE-BLOCK rule."""
import pytest

from evosearch.edits import Replace, apply_diff, parse_diff, rationale
from evosearch.program import RejectedEdit, check_frozen, evolvable_functions

PROGRAM = """import numpy as np


def helper(x):
    return x + 1


# EVOLVE-BLOCK-START
def priority(item, bins):
    score = bins - item
    return -score
# EVOLVE-BLOCK-END


# EVOLVE-BLOCK-START
def tiebreak(bins):
    return np.zeros_like(bins)
# EVOLVE-BLOCK-END
"""


def diff(search, replace):
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_parse_several_blocks_inside_fences_and_prose():
    text = ("# Change: weigh the gap\nHere is the edit:\n```diff\n" + diff("    score = bins - item", "    score = (bins - item) ** 2")
            + "```\nand another\n" + diff("    return np.zeros_like(bins)", "    return -bins"))
    edits = parse_diff(text)
    assert edits == [Replace("    score = bins - item", "    score = (bins - item) ** 2"),
                     Replace("    return np.zeros_like(bins)", "    return -bins")]
    child = apply_diff(PROGRAM, edits)
    assert evolvable_functions(child) == {
        "priority": "def priority(item, bins):\n    score = (bins - item) ** 2\n    return -score",
        "tiebreak": "def tiebreak(bins):\n    return -bins"}
    assert rationale(text) == "weigh the gap"


def test_edit_outside_the_blocks_is_rejected_with_a_message_for_the_model():
    with pytest.raises(RejectedEdit, match=r"^SEARCH block 1 \(lines 5-5\) is outside the EVOLVE-BLOCK regions "
                                           r"\(lines 9-11, 16-17\); only code between # EVOLVE-BLOCK-START"):
        apply_diff(PROGRAM, parse_diff(diff("    return x + 1", "    return x + 2")))
    # A match that starts inside a block and runs past its end marker is outside too.
    with pytest.raises(RejectedEdit, match="outside the EVOLVE-BLOCK regions"):
        apply_diff(PROGRAM, parse_diff(diff("    return -score\n# EVOLVE-BLOCK-END", "    return score")))


def test_search_text_not_found_ambiguous_or_empty():
    with pytest.raises(RejectedEdit, match=r"^SEARCH block 1 does not match the program: .*'score = bins \+ item'"):
        apply_diff(PROGRAM, parse_diff(diff("    score = bins + item", "x")))
    twice = PROGRAM.replace("    return np.zeros_like(bins)", "    score = bins - item\n    return score")
    with pytest.raises(RejectedEdit, match="matches 2 places: include more lines"):
        apply_diff(twice, parse_diff(diff("    score = bins - item", "    score = 0")))
    with pytest.raises(RejectedEdit, match="^SEARCH block 1 is empty"):
        apply_diff(PROGRAM, [Replace("", "x = 1")])
    with pytest.raises(RejectedEdit, match="^no SEARCH/REPLACE block found"):
        parse_diff("def priority(item, bins):\n    return bins")
    with pytest.raises(RejectedEdit, match="has no >>>>>>> REPLACE line"):
        parse_diff("<<<<<<< SEARCH\na\n=======\nb\n")


def test_wrong_indentation_is_forgiven_and_shifted():
    child = apply_diff(PROGRAM, parse_diff(diff("score = bins - item\nreturn -score",
                                                "score = bins - item\nif item > 0.5:\n    score = score * 2\nreturn -score")))
    assert "    if item > 0.5:\n        score = score * 2\n    return -score" in child


def test_a_broken_result_or_deleted_marker_is_rejected():
    with pytest.raises(RejectedEdit, match="syntax error at line"):
        apply_diff(PROGRAM, parse_diff(diff("    return -score", "    return -(score")))
    with pytest.raises(RejectedEdit, match="outside the EVOLVE-BLOCK regions"):
        check_frozen(PROGRAM, PROGRAM.replace("return x + 1", "return x + 2"))
    with pytest.raises(RejectedEdit, match="EVOLVE-BLOCK markers|number of EVOLVE-BLOCK"):
        check_frozen(PROGRAM, PROGRAM.replace("# EVOLVE-BLOCK-END\n\n\n# EVOLVE-BLOCK-START\n", ""))
    check_frozen(PROGRAM, PROGRAM.replace("score = bins - item", "score = bins"))  # inside: fine


def test_rationale_forms():
    assert rationale("I made the score quadratic.\n```python\ndef f(): pass\n```") == "I made the score quadratic."
    assert rationale("def priority_v2(item, bins):\n    # Change: use the square\n    return bins") == "use the square"
    assert rationale("```python\ndef f(): pass\n```") is None

"""CoEvo insights: the digest of recent results, the prompt, parsing the model's bullets."""
from evosearch.insights import MAX_INSIGHTS, digest, insight_prompt, parse_insights


def rows():
    return [
        {"id": 1, "status": "ok", "score": 1.5, "parents": [0], "rationale": "square the gap", "edit_format": "full"},
        {"id": 2, "status": "ok", "score": 0.5, "parents": [0], "rationale": None, "edit_format": "diff"},
        {"id": 3, "status": "crash", "score": None, "parents": [1], "reason": "Traceback\nZeroDivisionError: x"},
        {"id": 4, "status": "crash", "score": None, "parents": [1], "reason": "Traceback\nZeroDivisionError: x"},
        {"id": 5, "status": "ok", "score": 1.2, "parents": [0], "rationale": "add a tie-break"},
    ]


def test_digest_names_the_best_changes_the_worst_and_common_failures():
    facts = digest(rows(), {0: 1.0, 1: 1.5})
    assert facts == ["improved by +0.5: square the gap", "improved by +0.2: add a tie-break",
                     "worst change -0.5: a diff edit",
                     "2 of 5 recent samples failed with crash: ZeroDivisionError: x"]
    assert digest([], {}) == []


def test_prompt_and_parsing():
    p = insight_prompt("Bin packing.", ["improved by +0.5: square the gap"], ["old lesson"], seed=3)
    assert p.completion == "" and "- improved by +0.5: square the gap" in p.user and "- old lesson" in p.user
    answer = ("Here are my insights:\n- Squaring the gap works.\n* Division by zero crashes: guard it.\n"
              "```python\n- not a bullet\n```\n1. Try tie-breaks.\n- Squaring the gap works.\n" + "".join(f"- more {k}\n" for k in range(9)))
    assert parse_insights(answer)[:3] == ["Squaring the gap works.", "Division by zero crashes: guard it.",
                                          "Try tie-breaks."]
    assert len(parse_insights(answer)) == MAX_INSIGHTS
    assert parse_insights("no bullets at all") == []

"""Turning raw model output into functions to splice (evosearch.extract)."""
import ast
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evosearch.extract import extract_functions
from evosearch.program import EditError, evolvable_functions, replace_functions

FENCE = "```"
SKELETON = (Path(__file__).resolve().parents[1] / "problems" / "bin_packing" / "skeleton.py").read_text()
HEADER = 'def priority_v2(item: float, bins: np.ndarray) -> np.ndarray:\n    """Improved version of `priority_v1`."""\n'
F = ["priority"]


def one(text, **kw):
    out = extract_functions(text, F, **kw)
    assert set(out) == {"priority"}, out
    return out["priority"]


def test_prose_around_a_fenced_function():
    text = (f"Sure! Here is an improved version of the heuristic:\n\n{FENCE}python\n"
            "def priority_v2(item, bins):\n    \"\"\"Prefers tight fits.\"\"\"\n    return -(bins - item) ** 2\n"
            f"{FENCE}\n\nThis version squares the gap, which penalizes loose fits more.\n")
    assert one(text) == 'def priority(item, bins):\n    """Prefers tight fits."""\n    return -(bins - item) ** 2'


def test_unclosed_fence_and_example_usage_after_the_function():
    text = (f"{FENCE}python\nimport numpy as np\n\ndef priority_v2(item, bins):\n    return np.exp(-(bins - item))\n\n"
            "# Example usage\nbins = np.array([3.0, 7.0])\nprint(priority_v2(2.0, bins))\n")
    assert one(text, program=SKELETON) == "def priority(item, bins):\n    return np.exp(-(bins - item))"


def test_no_fence_at_all():
    text = "def priority_v2(item, bins):\n    return bins - item\nI hope this helps!"
    assert one(text) == "def priority(item, bins):\n    return bins - item"


def test_several_fences_the_newest_version_wins():
    text = (f"First try:\n{FENCE}python\ndef priority_v2(item, bins):\n    return -bins\n{FENCE}\n"
            f"Better:\n{FENCE}python\ndef priority_v3(item, bins):\n    return -bins * 2\n{FENCE}\n"
            f"Usage:\n{FENCE}python\nprint(priority_v3(1, bins))\n{FENCE}")
    assert one(text) == "def priority(item, bins):\n    return -bins * 2"


def test_echoed_prompt_versions_are_ignored_for_the_highest():
    text = (f"{FENCE}python\ndef priority_v0(item, bins):\n    return -(bins - item)\n\n"
            "def priority_v1(item, bins):\n    return -(bins - item) + (bins == item)\n\n"
            "def priority_v2(item, bins):\n    return -(bins - item) + 3 * (bins == item)\n" + FENCE)
    assert one(text).endswith("return -(bins - item) + 3 * (bins == item)")


def test_plain_name_after_versions_counts_as_newest():
    text = ("def priority_v1(item, bins):\n    return 1\n\n"
            "def priority(item, bins):\n    return 2\n")
    assert one(text).endswith("return 2")


def test_a_later_broken_copy_does_not_hide_a_good_one_of_the_same_version():
    text = (f"{FENCE}python\ndef priority_v2(item, bins):\n    return -bins\n{FENCE}\n"
            f"{FENCE}python\ndef priority_v2(item, bins)\n    return -bins\n{FENCE}\n")
    assert one(text).endswith("return -bins")


def test_recursive_and_versioned_references_are_renamed_but_strings_are_not():
    text = ("def priority_v2(item, bins):\n    \"\"\"See priority_v2 docs.\"\"\"\n"
            "    if item > 50:\n        return priority_v2(item / 2, bins)  # priority_v2 again\n    return -bins\n")
    src = one(text)
    assert "return priority(item / 2, bins)  # priority_v2 again" in src
    assert '"""See priority_v2 docs."""' in src
    assert src.startswith("def priority(item, bins):")


def test_whole_program_keeps_only_the_function_and_the_helpers_it_calls():
    text = (f"Here is the full program:\n{FENCE}python\nimport numpy as np\nimport math\n\nSCALE = 0.5\n\n"
            "def unused(x):\n    return x\n\n"
            "def gap_penalty(gap):\n    return SCALE * math.sqrt(gap)\n\n"
            "def priority_v2(item: float, bins: np.ndarray) -> np.ndarray:\n"
            "    \"\"\"Doc.\"\"\"\n    return -(bins - item) - gap_penalty(bins - item)\n\n"
            "if __name__ == '__main__':\n    print(priority_v2(1, np.ones(3)))\n" + FENCE)
    out = extract_functions(text, F, program=SKELETON)
    assert list(out) == ["priority", "gap_penalty"]
    assert "unused" not in out
    # np is bound by the program; math and SCALE are not, so they move into the helper's body.
    assert out["gap_penalty"] == ("def gap_penalty(gap):\n    import math\n    SCALE = 0.5\n"
                                  "    return SCALE * math.sqrt(gap)")
    assert "import" not in out["priority"]
    program = replace_functions(SKELETON, out)
    assert "def gap_penalty" in evolvable_functions(program)["gap_penalty"]


def test_imports_go_after_the_docstring():
    text = "import math\n\ndef priority(item, bins):\n    \"\"\"Doc.\"\"\"\n    return math.e * bins\n"
    assert one(text, program=SKELETON) == ('def priority(item, bins):\n    """Doc."""\n    import math\n'
                                           "    return math.e * bins")


def test_helpers_that_exist_outside_the_evolve_blocks_are_not_echoed_back():
    program = ("import numpy as np\n\ndef trusted(x):\n    return x\n\n# EVOLVE-BLOCK-START\n"
               "def priority(item, bins):\n    return trusted(bins)\n# EVOLVE-BLOCK-END\n")
    text = "def trusted(x):\n    return 2 * x\n\ndef priority(item, bins):\n    return -trusted(bins - item)\n"
    out = extract_functions(text, F, program=program)
    assert list(out) == ["priority"]
    replace_functions(program, out)  # would raise if "trusted" came back


def test_several_evolvable_functions():
    text = ("def heuristic_v1(x):\n    return x + 1\n\ndef priority_v1(item, bins):\n    return heuristic_v1(bins)\n")
    out = extract_functions(text, ["priority", "heuristic"])
    assert list(out) == ["priority", "heuristic"]
    assert out["priority"] == "def priority(item, bins):\n    return heuristic(bins)"
    assert out["heuristic"] == "def heuristic(x):\n    return x + 1"


def test_body_only_answer_completes_the_header():
    text = "    gap = bins - item\n    return -gap * gap\n" + FENCE + "\nThis squares the gap."
    assert one(text, header=HEADER) == ('def priority(item: float, bins: np.ndarray) -> np.ndarray:\n'
                                        '    """Improved version of `priority_v1`."""\n'
                                        "    gap = bins - item\n    return -gap * gap")


def test_body_only_in_a_fence_at_column_zero():
    text = f"The body is:\n{FENCE}python\ngap = bins - item\nreturn -gap\n{FENCE}"
    src = one(text, header="def priority_v2(item, bins):")
    assert src == "def priority(item, bins):\n    gap = bins - item\n    return -gap"


def test_a_full_function_wins_over_the_header():
    text = "def priority_v2(a, b):\n    return a\n"
    assert one(text, header=HEADER) == "def priority(a, b):\n    return a"


def test_header_without_def_is_a_caller_bug():
    with pytest.raises(ValueError, match="header has no def"):
        extract_functions("    return 1\n", F, header="priority(item, bins):")


def test_crlf_tabs_and_non_breaking_spaces():
    text = ("def priority_v2(item, bins):\r\n\tx = bins - item\r\n\tif item > 5:\r\n\t\tx = x * 2\r\n"
            "\u00a0\u00a0\u00a0\u00a0return -x\r\n")
    assert one(text) == ("def priority(item, bins):\n    x = bins - item\n    if item > 5:\n        x = x * 2\n"
                         "    return -x")


def test_fence_on_the_same_line_as_code():
    text = f"{FENCE}python\ndef priority_v2(item, bins):\n    return -bins{FENCE}\nDone."
    assert one(text) == "def priority(item, bins):\n    return -bins"


def test_indented_code_inside_a_markdown_list():
    text = ("1. Define the function:\n\n   " + FENCE + "python\n   def priority_v2(item, bins):\n"
            "       return -(bins - item)\n   " + FENCE + "\n2. Run it.")
    assert one(text) == "def priority(item, bins):\n    return -(bins - item)"


def test_black_style_signature_and_comments_at_column_zero():
    text = ("def priority_v2(\n    item: float,\n    bins,\n) -> float:\n    gap = bins - item\n"
            "# a comment at column zero does not end the function\n    return -gap\nThat's it.")
    src = one(text)
    assert src.endswith("    return -gap")
    ast.parse(src)


def test_decorators_come_along():
    text = "@staticmethod\ndef priority_v2(item, bins):\n    return bins\n"
    assert one(text) == "@staticmethod\ndef priority(item, bins):\n    return bins"


def test_truncated_last_line_is_cut_like_funsearch():
    text = ("def priority_v2(item, bins):\n    gap = bins - item\n    return -gap\n"
            "    # now a half-written extra line: np.exp(-(gap")
    assert one(text).endswith("return -gap")
    text = "def priority_v2(item, bins):\n    gap = bins - item\n    return -gap\n    extra = np.exp(-(gap"
    assert one(text).endswith("return -gap")


def test_truncation_that_loses_every_return_is_a_syntax_error():
    text = "```python\ndef priority_v2(item, bins):\n    s = bins - item\n    return -np.exp(s / (item"
    with pytest.raises(EditError, match=r"^syntax error at line 4: '\(' was never closed$"):
        extract_functions(text, F)


@pytest.mark.parametrize("text, reason", [
    ("", "no code"),
    ("   \n\n", "no code"),
    ("I'm sorry, I cannot help with that request.", "no code"),
    (f"{FENCE}python\nx = 1\n{FENCE}", "no function named priority"),
    (f"{FENCE}python\ndef heuristic(item, bins):\n    return bins\n{FENCE}",
     r"no function named priority \(found: heuristic\)"),
    (f"{FENCE}python\ndef priority_v2(item, bins)\n    return bins\n{FENCE}", "syntax error at line 2: expected ':'"),
    (f"{FENCE}python\ndef priority_v2(item, bins):\n{FENCE}", "syntax error at line 2: .*"),
    (f"{FENCE}python\ndef priority_v2(item, bins):\n    \"\"\"Improved.\"\"\"\n{FENCE}",
     "function priority_v2 has an empty body"),
    ("def priority(item, bins):\n    ...\n", "function priority has an empty body"),
])
def test_one_line_reasons(text, reason):
    with pytest.raises(EditError, match=f"^{reason}$") as info:
        extract_functions(text, F)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_body_only_syntax_error_is_reported_in_answer_lines():
    with pytest.raises(EditError, match=r"^syntax error at line 2: "):
        extract_functions("    gap = bins - item\n    return -gap)\n", F, header=HEADER)


def test_methods_of_a_class_are_not_functions_of_the_program():
    text = (f"{FENCE}python\nclass BinPacking:\n    def __init__(self):\n        self.bins = []\n\n"
            "    def priority_v2(self, item, bins):\n        return -bins\n" + FENCE)
    with pytest.raises(EditError, match=r"^no function named priority \(found: class BinPacking\)$"):
        extract_functions(text, F, header=HEADER)
    many = "\n".join(f"class Item{i}:\n    pass" for i in range(9))
    found = r"\(found: class Item0, class Item1, class Item2, class Item3, class Item4 and 4 more\)$"
    with pytest.raises(EditError, match=r"^no function named priority " + found):
        extract_functions(many, F)


def test_prose_in_a_fence_is_not_taken_for_a_body():
    text = f"{FENCE}\nThis heuristic is guaranteed to work.\n{FENCE}\nMore words."
    with pytest.raises(EditError, match="^no function named priority$"):
        extract_functions(text, F, header=HEADER)


def test_needs_function_names():
    with pytest.raises(ValueError):
        extract_functions("def f(): return 1", [])


def test_never_executes():
    # Code with side effects at module level or in the function only gets parsed.
    text = ("import os\nos.system('touch /tmp/evosearch_extract_ran')\n"
            "def priority(item, bins):\n    return os.getpid()\n")
    out = extract_functions(text, F, program=SKELETON)
    assert not Path("/tmp/evosearch_extract_ran").exists()
    assert "import os" in out["priority"]


# Real answers of Gemma 3 270M (Q4_K_M, temperature 0.8, seed = prompt seed) to the FunSearch-style
# bin packing prompt, recorded with LocalSampler (threads=1, stop_after_code=True). A 270M model
# mostly echoes the prompt, invents classes or rambles; each answer is paired with the
# extracted return line or the one-line reason.
GEMMA_HEADER = HEADER  # the prompt asked for priority_v2 after showing priority_v0 and priority_v1
GEMMA_ANSWERS = {
    0: ('error', 'no code',
        ('You are a modeler of a modeler.\n'
         "You are creating a modeler's modeler using the following parameters:\n"
         '1. 100000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000'
         '000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000'
         '000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000'
         '000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000'
         '00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000')),
    4: ('error', 'no function named priority (found: class BinPacking)',
        ('```\n'
         '\n'
         "Now that you know how to solve bin packing problems, we're ready to write our own.\n"
         "We'll use Python to perform binary packing.\n"
         '\n'
         '```python\n'
         'class BinPacking:\n'
         '    def __init__(self, bin: np.ndarray, capacity_level: int):\n'
         '        self.bin = bin\n'
         '        self.capacity_level = capacity_level\n'
         '\n'
         '    def priority_v0(self, item: float, bins: np.ndarray) -> np.ndarray:\n'
         '        self.bin = bin\n'
         '        self.capacity_level = self.capacity_level\n'
         '        return -np.amax(self.bin - self.bin.max())\n'
         '    \n'
         '    def priority_v1(self, item: float, bins: np.ndarray) -> np.ndarray:\n'
         '        self.bin = bin\n'
         '        self.capacity_level = self.capacity_level\n'
         '        self.capacity_level += 1\n'
         '\n'
         '        self.max_item = max(self.bin.max(), self.bin.max())\n'
         '        self.max_item = self.max_item + 1\n'
         '\n'
         '        self.bin = bin\n'
         '        self.capacity_level = self.capacity_level\n'
         '        self.capacity_level += 1\n'
         '\n'
         '        if self.capacity_level < self.capacity_level:\n'
         "            print('No space')\n"
         '\n'
         '        print(self.bin)\n'
         '    \n'
         '    def bin_packing_value(self, bin: np.ndarray):\n'
         '        self.bin = bin\n'
         '        self.capacity_level = self.capacity_level\n'
         '        self.max_item = max(self.bin.max(), self.bin.max())\n'
         '        self.max_item = self.max_item + 1\n'
         '        self.bin = bin\n'
         '\n'
         '        self.max_item = max(self.bin.max(), self.bin.max())\n'
         '        self.max_item = self.max_item + 1\n'
         '        print(self.bin)\n'
         '\n'
         '        print(self.bin_packing_value)\n'
         '\n'
         '    def bin_packing_value(self, bin_item: np.ndarray):\n'
         '        self.bin = bin_item\n'
         '        self.capacity_level = self.capacity_level\n'
         '        self.max_item = max(self.bin.max(), self.bin.max())\n'
         '        self.max_item = self.')),
    7: ('ok', 'return -gap + 2.0 * (gap == 0) - 0.5 * (gap < 5)',
        ('You are a programmer improving a heuristic for online bin packing. Items arrive one at a time; each'
         ' goes into the feasible bin with the highest priority score. The goal is to use as few bins as poss'
         'ible.\n'
         '\n'
         'Here are two versions of the priority function. `priority_v1` is better than `priority_v0`.\n'
         '\n'
         '```python\n'
         'import numpy as np\n'
         '\n'
         '\n'
         'def priority_v0(item: float, bins: np.ndarray) -> np.ndarray:\n'
         '    """Returns the priority with which we want to add `item` to each bin.\n'
         '\n'
         '    item: size of the item to place.\n'
         '    bins: remaining capacity of each bin the item fits in.\n'
         '    """\n'
         '    return -(bins - item)\n'
         '\n'
         '\n'
         'def priority_v1(item: float, bins: np.ndarray) -> np.ndarray:\n'
         '    """Improved version of `priority_v0`."""\n'
         '    gap = bins - item\n'
         '    return -gap + 2.0 * (gap == 0) - 0.5 * (gap < 5)\n'
         '```')),
    14: ('error', 'no function named priority',
        ('```\n'
         '\n'
         'Note that the `priority_v1` function only works for the first priority. That is, you should use the'
         ' `priority_v2` function when there are only 4 priority bins, and not just 3.\n'
         '\n'
         'This is a very powerful function. If you use it, it is guaranteed to have a 100% success rate.\n'
         '```\n'
         '```\n'
         '\n'
         'Note that the `priority_v1` function will have a 100% success rate. That is, if you use it, it will'
         ' have a 100% success rate.\n'
         '```\n'
         '\n'
         'If you need to use it, you should use the `priority_v1` function in the first place. That is, if th'
         'ere are only 4 priority bins.\n'
         '```\n'
         '```\n'
         '\n'
         'This is a very powerful function. If you use it, it is guaranteed to have a 100% success rate.\n'
         '```\n'
         '```\n'
         '```\n'
         '\n'
         'This is a very powerful function. If you use it, it is guaranteed to have a 100% success rate.\n'
         '```\n'
         '```\n'
         '```\n'
         '\n'
         'This is a very powerful function. If you use it, it is guaranteed to have a 100% success rate.\n'
         '```\n'
         '```\n'
         '```\n'
         '\n'
         'If you use it, it is guaranteed to have a 100% success rate.\n'
         '```\n'
         '```\n'
         '\n'
         'If you use it, it is guaranteed to have a 100% success rate.\n'
         '```\n'
         '```\n'
         '\n'
         'If you use it, it is guaranteed to have a 100% success rate.\n'
         '```\n'
         '```\n'
         '\n'
         'This is a very powerful function. If you use it, it is guaranteed to have a 100% success rate.\n'
         '```\n'
         '```\n'
         '```\n'
         '\n'
         'If you use it, it is guaranteed to have a 100% success rate.\n'
         '```\n'
         '```\n'
         '```\n'
         '\n'
         'If you use it, it is guaranteed to have a 100% success rate.\n'
         '```\n'
         '```\n'
         '```\n'
         '\n'
         'If you use it, it is guaranteed to have a 100% success rate.\n'
         '```\n'
         '```\n'
         '```\n'
         '\n'
         'If you use it, it is guaranteed to have a 100% success rate.\n'
         '```\n'
         '```\n'
         '```\n'
         '\n'
         'If you use it, it is guaranteed to have a 100% success rate.\n'
         '```\n'
         '```\n'
         '```\n'
         '\n'
         'If you use it, it is guaranteed to have a 10')),
    17: ('ok', 'return -gap + 2.0 * (gap == 0) - 1.5 * (gap < 5)',
        ('You are a data scientist improving a heuristic for online bin packing. Items arrive one at a time; '
         'each goes into the feasible bin with the highest priority score. The goal is to use as few bins as '
         'possible.\n'
         '\n'
         'Here are two versions of the priority function.\n'
         '```python\n'
         'import numpy as np\n'
         '\n'
         '\n'
         'def priority_v0(item: float, bins: np.ndarray) -> np.ndarray:\n'
         '    """Returns the priority with which we want to add `item` to each bin.\n'
         '\n'
         '    item: size of the item to place.\n'
         '    bins: remaining capacity of each bin the item fits in.\n'
         '    """\n'
         '    return -(bins - item)\n'
         '\n'
         'def priority_v1(item: float, bins: np.ndarray) -> np.ndarray:\n'
         '    """Improved version of `priority_v0`."""\n'
         '    gap = bins - item\n'
         '    return -gap + 2.0 * (gap == 0) - 1.5 * (gap < 5)\n'
         '```')),
    19: ('ok', 'return -bins - item',
        ('You are an expert Python programmer improving a heuristic for online bin packing. Items arrive one '
         'at a time; each goes into the feasible bin with the highest priority score. The goal is to use as f'
         'ew bins as possible.\n'
         '```python\n'
         'import numpy as np\n'
         '\n'
         'def priority_v1(item: float, bins: np.ndarray) -> np.ndarray:\n'
         '    """Returns the priority with which we want to add `item` to each bin.\n'
         '\n'
         '    item: size of the item to place.\n'
         '    bins: remaining capacity of each bin the item fits in.\n'
         '    """\n'
         '    return -bins - item\n'
         '```')),
}


@pytest.mark.parametrize("seed", sorted(GEMMA_ANSWERS))
def test_recorded_gemma_answers(seed):
    kind, expected, text = GEMMA_ANSWERS[seed]
    if kind == "ok":
        out = extract_functions(text, F, header=GEMMA_HEADER, program=SKELETON)
        assert list(out) == ["priority"]
        assert out["priority"].startswith("def priority(item: float, bins: np.ndarray) -> np.ndarray:")
        assert out["priority"].rstrip().split("\n")[-1].strip() == expected
        assert "import" not in out["priority"]  # the program already imports numpy
        replace_functions(SKELETON, out)
    else:
        with pytest.raises(EditError, match=f"^{re.escape(expected)}$"):
            extract_functions(text, F, header=GEMMA_HEADER, program=SKELETON)


lines = st.sampled_from([
    "def priority_v2(item, bins):", "def priority(item, bins):", "    return -(bins - item)", "    gap = bins - item",
    "    if item > 3:", "        gap = gap * 2", FENCE + "python", FENCE, "", "Here is the code:", "import numpy as np",
    "\treturn gap", "    return priority_v2(item, bins)", "def helper(x):", "    return helper(gap)", "x = (", "    )",
    "@decorator", "    \"\"\"doc\"\"\"", "class A:", "    def priority(self, item, bins):",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(lines, max_size=14), st.booleans())
def test_any_text_gives_parsable_functions_or_a_one_line_edit_error(parts, crlf):
    text = ("\r\n" if crlf else "\n").join(parts)
    try:
        out = extract_functions(text, F, header=HEADER, program=SKELETON)
    except EditError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert "priority" in out
    for name, src in out.items():
        tree = ast.parse(src)
        assert [n.name for n in tree.body if isinstance(n, ast.FunctionDef)] == [name]
    replace_functions(SKELETON, out)

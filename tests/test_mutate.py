"""The LLM-free mutation sampler (evosearch.samplers.mutate)."""
import ast
import asyncio
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evosearch.extract import extract_functions
from evosearch.problem import load_problem
from evosearch.program import blocks, evolvable_functions, replace_functions
from evosearch.samplers.base import Prompt, SamplerError
from evosearch.samplers.mutate import MutateSampler, crossover, mutate

SKELETON = load_problem("bin_packing").skeleton

# A bigger parent: two evolve blocks, trusted code between them, loops, branches, numpy calls.
RICH = '''import numpy as np

SCALE = 3


def trusted(x):
    return x * 2 + 1


# EVOLVE-BLOCK-START
def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Doc string stays."""
    gap = bins - item
    score = -gap + 0.5 * np.exp(-gap / 10)
    if item > 50:
        score = score * 2
    for k in range(3):
        score += k * np.sqrt(np.abs(gap))
    return score + (gap < 5) * 3.0
# EVOLVE-BLOCK-END


def also_trusted(y):
    return y - 1


# EVOLVE-BLOCK-START
def helper(values, weight=2):
    return np.log1p(np.abs(values)) * weight if weight >= 1 else values[0]
# EVOLVE-BLOCK-END
'''
NAMES = ["priority", "helper"]


def draw(parent, seed):
    return asyncio.run(MutateSampler().sample(Prompt("", "", ["unused worse parent", parent], NAMES, seed)))


def outside_blocks(code):
    lines = code.splitlines()
    keep, inside = [], False
    for line in lines:
        if line.strip().startswith("# EVOLVE-BLOCK-START"):
            inside = True
        elif line.strip().startswith("# EVOLVE-BLOCK-END"):
            inside = False
        elif not inside:
            keep.append(line)
    return keep


def test_same_seed_same_text_and_seeds_differ():
    a, b = draw(RICH, 7), draw(RICH, 7)
    assert a.text == b.text and a.model == "mutate"
    assert len({draw(RICH, s).text for s in range(20)}) > 15


def test_mutates_the_best_parent_only():
    # The best parent is last; the worse one is not a program at all and must not be read.
    assert "def priority" in draw(SKELETON, 1).text


@pytest.mark.parametrize("parent", [SKELETON, RICH], ids=["bin_packing", "rich"])
def test_500_draws_parse_change_something_and_stay_inside_the_blocks(parent):
    before = evolvable_functions(parent)
    for seed in range(500):
        text = mutate(parent, seed)
        new = extract_functions(text, NAMES, program=parent)
        assert set(new) <= set(before), seed
        assert any(ast.dump(ast.parse(new[n])) != ast.dump(ast.parse(before[n])) for n in new), seed
        child = replace_functions(parent, new)
        ast.parse(child)
        compile(child, "<child>", "exec")
        assert outside_blocks(child) == outside_blocks(parent), seed
        assert len(blocks(child)) == len(blocks(parent))


def test_growth_over_generations_stays_valid():
    # A lineage of 60 children, each mutating the last: the text keeps parsing as it grows.
    program = SKELETON
    for seed in range(60):
        program = replace_functions(program, extract_functions(mutate(program, seed), ["priority"]))
    assert ast.parse(program)
    assert len(evolvable_functions(program)["priority"]) > len(evolvable_functions(SKELETON)["priority"])


def test_every_operator_shows_up():
    texts = [mutate(RICH, s) for s in range(300)]
    priority = [t for t in texts if "def priority" in t]
    calls = {m for t in priority for m in re.findall(r"score = -gap \+ 0\.5 \* np\.(\w+)\(-gap / 10\)", t)}
    assert "exp" in calls and len(calls) >= 2  # unary numpy call swapped
    ops = {m for t in priority for m in re.findall(r"gap = bins (\S+) item$", t, re.M)}
    assert "-" in ops and len(ops) > 2  # binary operator swapped
    tests = {m for t in priority for m in re.findall(r"if item (\S+) 50", t)}
    assert ">" in tests and len(tests) > 2  # comparison swapped
    consts = {m for t in priority for m in re.findall(r"if item > (\S+):", t)}
    assert any("." in c for c in consts) and len(consts) > 2  # constant perturbed, int turned float
    counts = [t.count("score = score * 2") for t in priority]
    assert 0 in counts and 2 in counts  # a statement dropped and one duplicated
    assert any(re.search(r"\+ -?[\d.]+ \* .*(gap|item|bins)", t.split("return")[-1]) for t in priority)  # a new term


def test_constants_in_indices_and_keywords_are_left_alone():
    for seed in range(200):
        text = mutate(RICH, seed)
        if "def helper" in text:
            assert "values[0]" in text or "values[" not in text


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_any_seed_gives_a_parsable_change(seed):
    text = mutate(SKELETON, seed)
    (fn,) = ast.parse(text).body
    assert fn.name == "priority"
    assert text != evolvable_functions(SKELETON)["priority"]




# Two elites of different cells: the mate holds ideas (a root of the gap, a local `slack`) the best lacks.
BEST = SKELETON.replace("return -(bins - item)", "return -(bins - item) + 0.5 * (bins < 2.0 * item)")
MATE = SKELETON.replace("    return -(bins - item)",
                        "    slack = bins - item\n    return -slack + 0.3 * np.sqrt(np.abs(bins / item))")


def crossed(best, mate, seed, edit_format="crossover"):
    prompt = Prompt("", "", [mate, best], ["priority"], seed, edit_format=edit_format)
    return asyncio.run(MutateSampler().sample(prompt)).text


def test_crossover_grafts_the_mates_subexpressions_into_the_best_parent():
    assert SKELETON.count("return -(bins - item)") == 1  # the replacements above took
    texts = [crossed(BEST, MATE, s) for s in range(100)]
    assert texts == [crossover(BEST, MATE, s) for s in range(100)]  # the sampler's answer, deterministic in the seed
    assert texts != [crossed(BEST, MATE, s, "full") for s in range(100)]  # a full prompt mutates instead
    mate_only = {ast.unparse(e) for e in ast.walk(ast.parse(evolvable_functions(MATE)["priority"]))
                 if isinstance(e, ast.expr)} - {ast.unparse(e) for e in ast.walk(ast.parse(
                     evolvable_functions(BEST)["priority"])) if isinstance(e, ast.expr)}
    grafted = 0
    for text in texts:
        new = extract_functions(text, ["priority"], program=BEST)
        child = replace_functions(BEST, new)
        compile(child, "<child>", "exec")
        assert outside_blocks(child) == outside_blocks(BEST)
        code = ast.parse(new["priority"])
        assert "slack" not in {n.id for n in ast.walk(code) if isinstance(n, ast.Name)}  # not in the best's scope
        assert ast.unparse(code) != ast.unparse(ast.parse(evolvable_functions(MATE)["priority"]))
        grafted += any(ast.unparse(e) in mate_only for e in ast.walk(code) if isinstance(e, ast.Call))
    assert grafted > 30  # np.sqrt(np.abs(...)) carried over, in place of a subexpression or as a new term


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=6))
def test_crossover_of_any_two_lineages_compiles_and_stays_inside_the_blocks(seed, generations):
    # Two programs grown apart by mutation (loops, branches, helpers in RICH), then crossed.
    a, b = RICH, RICH
    for g in range(generations):
        a = replace_functions(a, extract_functions(mutate(a, seed + g), NAMES, program=a))
        b = replace_functions(b, extract_functions(mutate(b, seed + 100 + g), NAMES, program=b))
    child = replace_functions(a, extract_functions(crossover(a, b, seed), NAMES, program=a))
    compile(child, "<child>", "exec")
    assert outside_blocks(child) == outside_blocks(RICH) and child != a


def test_crossover_with_nothing_to_graft_mutates_the_best_parent():
    # The mate holds nothing the best lacks (and one parent only): a plain mutation of the best.
    assert crossed(BEST, SKELETON, 3) == mutate(BEST, 3)
    assert asyncio.run(MutateSampler().sample(Prompt("", "", [BEST], ["priority"], 3, edit_format="crossover"))).text \
        == mutate(BEST, 3)


def read_as_values(code):
    """Names the functions' bodies read outside any indexing and not as an object (``x.attr``)."""
    names, todo = set(), [stmt for fn in ast.parse(code).body for stmt in fn.body]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Subscript):
            continue
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            names.add(node.id)
        todo.extend(ast.iter_child_nodes(node))
    return names


@pytest.mark.parametrize("problem, structural", [
    ("tsp", {"current", "start", "unvisited", "distances"}),  # city indices and the distance matrix
    ("symbolic_regression", {"params"}),  # read as params[0], params[1], ...
])
def test_lineages_never_read_an_index_or_a_container_as_a_feature(problem, structural):
    # Before, 2,012 of 3,000 mutations of the TSP seed read an index or the matrix as a value
    # (`start * ...`, `unvisited / current`, `(distances * ...)[...]`): terms in the instances'
    # numbering, which overfit the training cities. Each generation mutates or crosses
    # two members of a growing pool (so a name whose only use was dropped is caught too).
    skeleton = load_problem(problem).skeleton
    (name,) = evolvable_functions(skeleton)
    pool, fed = [skeleton], 0
    for seed in range(400):
        best, mate = pool[seed % len(pool)], pool[(seed * 7) % len(pool)]
        text = crossover(best, mate, seed) if seed % 4 == 0 else mutate(best, seed)
        child = replace_functions(best, extract_functions(text, [name], program=best))
        assert not read_as_values(evolvable_functions(child)[name]) & structural, (seed, text)
        fed += bool(read_as_values(text) - structural - {"np"})
        if read_as_values(text) - {"np"}:  # a function reading nothing offers all names (the next test)
            pool.append(child)
    assert fed > 300  # terms still grow, from the features the program computes


def test_a_constant_seed_offers_all_of_its_names():
    # cap_set's seed returns 0.0: no name is read, so every argument may start a term.
    skeleton = load_problem("cap_set").skeleton
    read = set().union(*(read_as_values(mutate(skeleton, s)) for s in range(200)))
    assert {"el", "n"} <= read


def test_needs_a_parent_with_evolvable_code():
    with pytest.raises(SamplerError, match="needs a parent"):
        asyncio.run(MutateSampler().sample(Prompt("", "", [], ["priority"], 0)))
    with pytest.raises(SamplerError, match="cannot mutate the parent: no # EVOLVE-BLOCK-START"):
        mutate("def f():\n    return 1\n", 0)
    with pytest.raises(ValueError):
        MutateSampler(max_operators=0)

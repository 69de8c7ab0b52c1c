"""The cap set problem: published baselines, the greedy construction, strict
validation (against brute force), probes, and a real sandbox run with a cheat."""
import asyncio
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluators.hashing import functional_hash
from evaluators.pool import WorkerPool
from evosearch.problem import InvalidOutput, ProblemError, load_problem
from problems.cap_set import baselines
from problems.cap_set.problem import all_vectors, check_cap_set, greedy_cap_set


def priority(body: str) -> dict:
    """A program namespace whose priority(el, n) returns ``body``."""
    ns: dict = {}
    exec(f"import numpy as np\n\ndef priority(el, n):\n    return {body}\n", ns)
    return ns


def has_line(vectors) -> bool:
    """Brute force: three distinct vectors summing to 0 mod 3."""
    return any(all((a + b + c) % 3 == 0 for a, b, c in zip(*triple))
               for triple in itertools.combinations(vectors, 3))


def test_published_and_hand_written_baselines():
    problem = load_problem("cap_set")  # n = 8
    programs = baselines.programs(problem)
    assert baselines.evaluate(problem, programs["trivial (seed)"]).score == 256  # FunSearch's 2^8
    assert baselines.evaluate(problem, programs["random"]).score == 261
    assert baselines.evaluate(problem, programs["weight near 2n/3"]).score == 297
    small = load_problem("cap_set", options={"n": 4})
    assert baselines.evaluate(small, small.skeleton).score == 16


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 4).flatmap(lambda n: st.tuples(st.just(n), st.lists(
    st.sampled_from([0.0, 1.0, 2.0, 0.5, -np.inf]), min_size=3 ** n, max_size=3 ** n))))
def test_greedy_builds_maximal_cap_sets(case):
    n, scores = case
    scores = np.array(scores)
    picked = greedy_cap_set(scores, n)
    vectors = all_vectors(n)
    chosen = [tuple(v) for v in vectors[picked]]
    assert not has_line(chosen)
    assert all(scores[i] > -np.inf for i in picked)
    # Maximal among the allowed vectors: each one left out would complete a line.
    members = set(chosen)
    for k in np.flatnonzero(scores > -np.inf):
        if tuple(vectors[k]) not in members:
            assert has_line(chosen + [tuple(vectors[k])])
    # Ties go to the lexicographically first vector.
    allowed = np.flatnonzero(scores == scores.max())
    if scores.max() > -np.inf:
        assert picked[0] == allowed[0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.integers(0, 2)] * 3), unique=True, max_size=12))
def test_validator_agrees_with_brute_force(vectors):
    output = [list(v) for v in vectors]
    if has_line(vectors):
        with pytest.raises(InvalidOutput, match="not a cap set"):
            check_cap_set(output, 3)
    else:
        assert len(check_cap_set(output, 3)) == len(vectors)


@pytest.mark.parametrize("output, reason", [
    ("nope", "a list of vectors of length 2"),
    ([[0, 1], [1]], "a list of vectors of length 2"),
    ([[0, 3]], "integers in \\{0, 1, 2\\}"),
    ([[0, -1]], "integers in \\{0, 1, 2\\}"),
    ([[0, 1.0]], "integers in \\{0, 1, 2\\}"),
    ([[0, True]], "integers in \\{0, 1, 2\\}"),
    ([[0, 1], [2, 2], [0, 1]], "vector \\[0, 1\\] appears twice"),
    ([[0, 0], [1, 1], [2, 2]], "vectors \\[0, 0\\], \\[1, 1\\] and \\[2, 2\\] sum to 0 mod 3"),
])
def test_score_rejects_bad_outputs(output, reason):
    problem = load_problem("cap_set", options={"n": 2})
    with pytest.raises(InvalidOutput, match=reason):
        problem.score({"n": 2}, output)
    assert problem.score({"n": 2}, [[0, 0], [0, 1], [1, 0], [1, 1]])["score"] == 4


def test_excluded_vectors_never_enter_the_cap_set():
    problem = load_problem("cap_set", options={"n": 4})
    out = problem.run(priority("-np.inf if el[0] == 2 else float(el.count(0))"), {"n": 4})
    assert out and all(v[0] != 2 for v in out)
    assert problem.run(priority("np.nan"), {"n": 4}) == []  # NaN counts as -inf: nothing is added


def test_probe_merges_reorderings_that_build_the_same_set_only():
    problem = load_problem("cap_set", options={"n": 4})
    (instance,) = problem.instances("probe").values()

    def hash_of(body):
        return functional_hash(problem.probe(priority(body), instance))

    weight = hash_of("-abs(sum(x != 0 for x in el) - 2 * n / 3)")
    assert hash_of("2 * -abs(sum(x != 0 for x in el) - 2 * n / 3) + 1") == weight
    assert hash_of("-abs(sum(x != 0 for x in el) - n / 3)") != weight
    # Excluding the lowest-priority vectors is not the same as ranking them last.
    assert hash_of("float(el[0] != 2)") != hash_of("-np.inf if el[0] == 2 else 1.0")


def test_bad_option_is_one_line():
    for n in (0, 11, "8"):
        with pytest.raises(ProblemError, match="n must be an integer from 1 to 10"):
            load_problem("cap_set", options={"n": n})


def test_seed_and_a_cheat_in_the_sandbox():
    seed = load_problem("cap_set").skeleton
    # Replaces the harness's greedy step inside its own sandbox: the trusted scorer still checks the answer.
    cheat = seed + "\nimport sys\nfor _m in list(sys.modules.values()):\n" \
                   "    if hasattr(_m, 'greedy_cap_set'):\n" \
                   "        _m.greedy_cap_set = lambda scores, n: np.arange(3 ** n)\n"

    async def main():
        pool = WorkerPool("cap_set", workers=1)
        await pool.start()
        try:
            return [await pool.run(code, split) for code, split in ((seed, "probe"), (seed, "train"), (cheat, "train"))]
        finally:
            await pool.close()

    probe, train, cheat = asyncio.run(main())
    assert probe["status"] == "ok" and probe["functional_hash"]
    assert train["status"] == "ok" and train["score"] == 256
    assert train["metrics"]["best_known"] == 512
    assert cheat["status"] == "invalid" and "not a cap set" in cheat["reason"]

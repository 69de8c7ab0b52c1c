"""The circle packing problem: baselines, strict validation at the stated tolerance,
probes, and the seed in a real sandbox."""
import asyncio

import numpy as np
import pytest

from evaluators.hashing import functional_hash
from evaluators.pool import WorkerPool
from evosearch.problem import InvalidOutput, ProblemError, load_problem
from problems.circle_packing import baselines
from problems.circle_packing.problem import TOLERANCE


@pytest.fixture(scope="module")
def problem():
    return load_problem("circle_packing")


def packing(centers, radii):
    return {"centers": [list(map(float, c)) for c in centers], "radii": list(map(float, radii))}


def test_baselines(problem):
    # The README's table (the seed and the rows layout are exact; SLSQP depends on the platform's floats).
    programs = baselines.programs(problem)
    assert round(baselines.evaluate(problem, programs["grid (seed)"]).score, 10) == 2.1666666667
    assert round(baselines.evaluate(problem, programs["rows 5-6-5-5-5"]).score, 10) == 2.5
    polished = baselines.evaluate(problem, programs["rows + SLSQP"])
    assert 2.6 < polished.score < baselines.ALPHAEVOLVE_26  # validated, and below the record
    assert 0.1 < polished.descriptors["radius_spread"] < 0.6


def test_the_seed_builds_valid_packings_for_any_n():
    for n in (1, 2, 7, 32):
        p = load_problem("circle_packing", options={"n": n})
        score = baselines.evaluate(p, p.skeleton)
        assert 0 < score.score <= n * 0.5


def two_circles(gap: float) -> dict:
    """Circles of radius 0.25 centred 0.5 - gap apart on the line y = 0.5 (gap > 0: overlap)."""
    return packing([[0.25, 0.5], [0.75 - gap, 0.5]], [0.25, 0.25])


@pytest.mark.parametrize("output, reason", [
    ("nope", "expected"),
    ({"centers": [[0.5, 0.5]]}, "expected"),
    ({"centers": [[0.25, 0.5], [0.75, 0.5]], "radii": [0.25]}, "radii must be 2 numbers"),
    ({"centers": [[0.25, 0.5, 0.0], [0.75, 0.5]], "radii": [0.1, 0.1]}, "centers must be 2 pairs"),
    ({"centers": [[0.25, 0.5], [0.75, "x"]], "radii": [0.1, 0.1]}, "centers must be 2 pairs"),
    ({"centers": [[0.25, 0.5], [0.75, 0.5]], "radii": [0.1, True]}, "radii must be 2 numbers"),
    ({"centers": [[0.25, 0.5], [0.75, 0.5]], "radii": [0.1, float("nan")]}, "finite"),
    ({"centers": [[0.25, 0.5], [0.75, 0.5]], "radii": [0.1, -0.01]}, "circle 1 has negative radius"),
    (packing([[0.25, 0.5], [0.9, 0.5]], [0.25, 0.2]), "circle 1 sticks out of the unit square by 0.1"),
    (packing([[0.5, 0.1], [0.5, 0.6]], [0.25, 0.25]), "circle 0 sticks out"),
    (two_circles(1e-3), "circles 0 and 1 overlap by 0.001"),
    (two_circles(2 * TOLERANCE), "overlap by 2e-09 \\(tolerance 1e-09\\)"),
])
def test_score_rejects_bad_packings(output, reason):
    p = load_problem("circle_packing", options={"n": 2})
    with pytest.raises(InvalidOutput, match=reason):
        p.score({"n": 2}, output)


def test_tolerance_is_what_the_readme_states():
    p = load_problem("circle_packing", options={"n": 2})
    assert TOLERANCE == 1e-9
    assert p.score({"n": 2}, two_circles(0.5 * TOLERANCE))["score"] == 0.5  # touching within tolerance
    assert p.score({"n": 2}, packing([[0.25, 0.25], [0.75, 0.75]], [0.25 + 0.5 * TOLERANCE, 0.25]))["score"] > 0.5
    with pytest.raises(InvalidOutput, match="sticks out"):
        p.score({"n": 2}, packing([[0.25, 0.25], [0.75, 0.75]], [0.25 + 2 * TOLERANCE, 0.25]))


def test_descriptors_measure_sizes_and_border(problem):
    p = load_problem("circle_packing", options={"n": 2})
    corners = p.score({"n": 2}, packing([[0.25, 0.25], [0.75, 0.75]], [0.25, 0.25]))
    assert corners["radius_spread"] == 0.0 and corners["border_share"] == 1.0
    mixed = p.score({"n": 2}, packing([[0.5, 0.5], [0.1, 0.1]], [0.3, 0.05]))
    assert mixed["radius_spread"] > 0.5 and mixed["border_share"] == 0.0


def test_probe_is_the_packing_itself(problem):
    (instance,) = problem.instances("probe").values()
    seed = baselines.programs(problem)["grid (seed)"]
    rows = baselines.programs(problem)["rows 5-6-5-5-5"]

    def hash_of(code):
        ns: dict = {}
        exec(code, ns)
        return functional_hash(problem.probe(ns, instance))

    rewritten = seed.replace("ticks = (np.arange(side) + 0.5) / side",
                             "ticks = np.linspace(0.5 / side, 1 - 0.5 / side, side)")
    assert rewritten != seed and hash_of(rewritten) == hash_of(seed)
    assert hash_of(rows) != hash_of(seed)


def test_bad_option_is_one_line():
    with pytest.raises(ProblemError, match="n must be a positive integer"):
        load_problem("circle_packing", options={"n": 0})


def test_seed_and_cheats_in_the_sandbox(problem):
    seed = problem.skeleton
    overlapping = seed.replace("return centers, largest_radii(centers)",  # radii for twice the spacing
                               "return 0.5 + 0.5 * (centers - 0.5), largest_radii(centers)")
    polished = baselines.programs(problem)["rows + SLSQP"]  # imports scipy inside the sandbox

    async def main():
        pool = WorkerPool("circle_packing", workers=1)
        await pool.start()
        try:
            return [await pool.run(code, split) for code, split in
                    ((seed, "probe"), (seed, "train"), (overlapping, "train"), (polished, "train"))]
        finally:
            await pool.close()

    probe, train, overlapping, polished = asyncio.run(main())
    assert probe["status"] == "ok" and probe["functional_hash"]
    assert train["status"] == "ok" and round(train["score"], 10) == 2.1666666667
    assert overlapping["status"] == "invalid" and "overlap" in overlapping["reason"]
    assert polished["status"] == "ok" and polished["score"] > 2.6

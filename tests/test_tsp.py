"""The TSP problem: TSPLIB loading and rounding, the Held-Karp reference, the
nearest-neighbour baseline, strict tour checks, probes, and a real sandbox run."""
import asyncio
import itertools

import numpy as np
import pytest

from evaluators.hashing import functional_hash
from evaluators.pool import WorkerPool
from evosearch.problem import InvalidOutput, ProblemError, load_problem
from problems.tsp import baselines
from problems.tsp.held_karp import held_karp_bound, nearest_neighbour_length
from problems.tsp.tsplib import distance_matrix, load_tsplib, read_tsp


def namespace(code: str) -> dict:
    ns: dict = {}
    exec(compile(code, "<program>", "exec"), ns)
    return ns


def rule(body: str) -> dict:
    """A program namespace whose priority returns ``body``."""
    return namespace("import numpy as np\n\ndef priority(current, start, unvisited, distances):\n"
                     f"    return {body}\n")


@pytest.fixture(scope="module")
def problem():
    return load_problem("tsp")


@pytest.fixture(scope="module")
def tsplib_problem(shared_data):
    return load_problem("tsp", data_dir=shared_data)


def test_nearest_neighbour_baselines(problem, tsplib_problem):
    # The README's table; a drift here means the harness, the loader or the reference changed.
    seed = problem.skeleton
    assert round(baselines.evaluate(problem, seed, "train").metrics["gap_pct"], 2) == 24.57
    tsplib = baselines.evaluate(tsplib_problem, seed, "test")
    assert round(tsplib.metrics["gap_pct"], 2) == 24.12
    assert tsplib.descriptors["greedy_rate"] == 1.0
    start_aware = baselines.programs(problem)["start-aware nearest neighbour"]
    assert round(baselines.evaluate(tsplib_problem, start_aware, "test").metrics["gap_pct"], 2) == 20.53


def test_tsplib_loader_reads_every_instance_with_its_optimum(shared_data):
    instances = load_tsplib(shared_data / "tsp" / "tsplib95")
    assert len(instances) == 46
    sizes = [len(inst["coords"]) for inst in instances.values()]
    assert sizes == sorted(sizes) and sizes[0] == 51 and sizes[-1] == 1002
    berlin = instances["berlin52"]
    assert berlin["reference"] == 7542 and berlin["metric"] == "EUC_2D"
    assert berlin["coords"][0] == [565.0, 575.0] and len(berlin["coords"]) == 52
    assert instances["d198"]["coords"][1] == [551.2, 996.4]  # scientific notation in the file
    # Every optimum is a true lower bound on the rounded lengths the harness computes.
    for name in ("eil51", "berlin52", "kroA100"):
        d = distance_matrix(instances[name]["coords"], "EUC_2D")
        assert held_karp_bound(d) <= instances[name]["reference"] <= nearest_neighbour_length(d)


def test_tsplib_loader_names_what_it_cannot_read(shared_data, tmp_path):
    with pytest.raises(ValueError, match="no TSPLIB instance nowhere.tsp"):
        load_tsplib(shared_data / "tsp" / "tsplib95", ["nowhere"])
    (tmp_path / "geo.tsp").write_text("NAME : geo\nTYPE : TSP\nDIMENSION : 2\nEDGE_WEIGHT_TYPE : GEO\n"
                                      "NODE_COORD_SECTION\n1 0 0\n2 1 1\nEOF\n")
    with pytest.raises(ValueError, match="GEO is not supported"):
        read_tsp(tmp_path / "geo.tsp")
    (tmp_path / "short.tsp").write_text("NAME : short\nTYPE : TSP\nDIMENSION : 3\nEDGE_WEIGHT_TYPE : EUC_2D\n"
                                        "NODE_COORD_SECTION\n1 0 0\n2 1 1\nEOF\n")
    with pytest.raises(ValueError, match="DIMENSION 3 but 2 coordinates"):
        read_tsp(tmp_path / "short.tsp")


def test_euc_2d_rounds_halves_up_like_tsplib():
    # nint(x) = int(x + 0.5): 0.5 -> 1 and 2.5 -> 3, where round-half-to-even gives 0 and 2.
    d = distance_matrix([[0, 0], [0.5, 0], [2.5, 0], [0, 1.49]], "EUC_2D")
    assert d[0].tolist() == [0, 1, 3, 1]
    assert distance_matrix([[0, 0], [1.2, 0]], "CEIL_2D")[0, 1] == 2
    assert distance_matrix([[0, 0], [3, 4]], "euclidean")[0, 1] == 5


def test_held_karp_bound_lies_below_the_optimum():
    for seed in range(3):
        d = distance_matrix(np.random.default_rng(seed).random((8, 2)), "euclidean")
        optimum = min(d[(0,) + p, p + (0,)].sum() for p in itertools.permutations(range(1, 8)))
        bound = held_karp_bound(d)
        assert 0.9 * optimum < bound <= optimum + 1e-9


def test_generators_are_seeded_and_splits_differ():
    options = {"train_instances": 2, "train_cities": 30, "test_instances": 2, "test_cities": 30}
    a = load_problem("tsp", seed=1, options=options)
    b = load_problem("tsp", seed=1, options=options)
    assert a.instances("train") == b.instances("train")
    assert a.instances("probe") == b.instances("probe")
    test_coords = [inst["coords"] for inst in a.instances("test").values()]
    assert all(inst["coords"] not in test_coords for inst in a.instances("train").values())
    other = load_problem("tsp", seed=2, options=options)
    assert [i["coords"] for i in other.instances("train").values()] != \
        [i["coords"] for i in a.instances("train").values()]
    inst = next(iter(a.instances("train").values()))
    assert len(inst["coords"]) == 30 and inst["reference_kind"] == "held_karp_bound"
    assert a.instances("test").keys().isdisjoint(a.instances("train").keys())


def test_the_validation_split_is_drawn_at_the_held_out_size_but_apart_from_both():
    a = load_problem("tsp", seed=1, options={"train_instances": 2, "train_cities": 20, "test_instances": 3,
                                             "test_cities": 25, "valid_instances": 4})
    valid, test, train = (a.instances(s) for s in ("valid", "test", "train"))
    assert a.validation and len(valid) == 4 and all(len(i["coords"]) == 25 for i in valid.values())
    assert valid == a.instances("valid")  # seeded
    # Gaps over the nearest-neighbour tour (the seed rule scores 0 there); more instances, more time.
    assert {i["reference_kind"] for i in valid.values()} == {"nearest_neighbour"}
    nearest = rule("-distances[current, unvisited]")
    assert all(abs(a.score(i, a.run(nearest, i))["gap_pct"]) < 1e-9 for i in valid.values())
    assert a.timeout_for("valid") == a.timeout_s * 4 / 3 and a.timeout_for("test") == a.timeout_s
    assert valid.keys().isdisjoint(test.keys() | train.keys())
    assert not {tuple(map(tuple, i["coords"])) for i in valid.values()} & \
        {tuple(map(tuple, i["coords"])) for i in (*test.values(), *train.values())}


@pytest.mark.parametrize("output, reason", [
    ("nope", "a tour of all 4 cities"),
    ([0, 1, 2], "a tour of all 4 cities"),
    ([0, 1, 1, 2], "exactly once"),
    ([0, 1, 2, 7], "exactly once"),
    ([0, 1.0, 2, 3], "integers"),
    ([0, True, 2, 3], "integers"),
    ([1, 0, 2, 3], "start at city 0"),
])
def test_score_rejects_bad_tours(problem, output, reason):
    instance = {"coords": [[0, 0], [1, 0], [1, 1], [0, 1]], "metric": "euclidean", "reference": 4.0}
    with pytest.raises(InvalidOutput, match=reason):
        problem.score(instance, output)
    assert problem.score(instance, [0, 1, 2, 3])["gap_pct"] == 0.0
    assert problem.score(instance, [0, 2, 1, 3])["gap_pct"] > 0


def test_probe_merges_monotone_rewrites_only(problem):
    probes = problem.instances("probe")

    def hash_of(program):
        return functional_hash({name: problem.probe(program, inst) for name, inst in probes.items()})

    nearest = hash_of(rule("-distances[current, unvisited]"))
    assert hash_of(rule("-distances[current, unvisited] ** 2")) == nearest
    assert hash_of(rule("1.0 / (1e-9 + distances[current, unvisited])")) == nearest
    assert hash_of(rule("-(distances[current, unvisited] - 0.3 * distances[start, unvisited])")) != nearest
    assert hash_of(rule("distances[current, unvisited]")) != nearest


def test_harness_runs_rules_and_names_wrong_shapes(problem):
    instance = next(iter(problem.instances("probe").values()))
    with pytest.raises(ValueError, match="priority returned 1 scores"):
        problem.run(rule("np.zeros(1)"), instance)
    # NaN never wins a city; all-NaN falls back to the lowest index, still a valid tour.
    tour = problem.run(rule("np.full(len(unvisited), np.nan)"), instance)
    assert tour == list(range(len(instance["coords"])))


def test_bad_options_are_one_line():
    with pytest.raises(ProblemError, match="train_cities must be an integer of at least 3"):
        load_problem("tsp", options={"train_cities": 2})
    with pytest.raises(ProblemError, match="valid_instances must be an integer of at least 1"):
        load_problem("tsp", options={"valid_instances": 0})
    with pytest.raises(ProblemError, match="tsplib must be a list"):
        load_problem("tsp", options={"tsplib": "berlin52"})
    with pytest.raises(ProblemError, match="tsplib needs --data-dir"):
        load_problem("tsp", options={"tsplib": ["berlin52"]})


def test_unknown_tsplib_name_is_one_line(shared_data):
    with pytest.raises(ProblemError, match="no TSPLIB instance berlin53.tsp"):
        load_problem("tsp", data_dir=shared_data, options={"tsplib": ["berlin52", "berlin53"]})


def test_seed_and_a_broken_rule_in_the_sandbox(shared_data):
    options = {"tsplib": ["eil51", "berlin52"], "train_instances": 2, "train_cities": 40}

    async def main():
        pool = WorkerPool("tsp", data_dir=shared_data, options=options, workers=1)
        await pool.start()
        try:
            seed = load_problem("tsp").skeleton
            broken = seed.replace("return -step", "return -distances[current]")
            return [await pool.run(seed, split) for split in ("probe", "train", "test")] + \
                [await pool.run(broken, "train")]
        finally:
            await pool.close()

    probe, train, test, broken = asyncio.run(main())
    assert probe["status"] == "ok" and probe["functional_hash"]
    assert train["status"] == "ok" and train["descriptors"]["greedy_rate"] == 1.0
    expected = load_problem("tsp", data_dir=shared_data, options=options)
    assert test["score"] == pytest.approx(baselines.evaluate(expected, expected.skeleton, "test").score)
    assert broken["status"] == "crash" and "priority returned" in broken["reason"]

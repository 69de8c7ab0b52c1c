"""The bin packing problem reproduces FunSearch's published baselines and judges outputs strictly."""
import numpy as np
import pytest

from evosearch.problem import InvalidOutput, ProblemError, load_problem


def best_fit(item, bins):
    return -(bins - item)


def first_fit(item, bins):
    return -np.arange(len(bins))  # feasible bins arrive in index order: the first one wins


def excess_pct(problem, heuristic, instances):
    per = {name: problem.score(inst, problem.output({"priority": heuristic}, inst)) for name, inst in instances.items()}
    return problem.aggregate(per).metrics["excess_pct"]


@pytest.mark.parametrize("dataset, heuristic, published", [
    ("or3.json", best_fit, 5.37), ("or3.json", first_fit, 5.74),
    ("weibull_5k.json", best_fit, 3.98), ("weibull_5k.json", first_fit, 4.23),
])
def test_published_baselines(shared_data, dataset, heuristic, published):
    from problems.bin_packing.problem import load_instances
    problem = load_problem("bin_packing")
    instances = load_instances(shared_data / "bin_packing" / dataset)
    assert round(excess_pct(problem, heuristic, instances), 2) == published


def test_held_out_split_reads_the_data_dir(shared_data):
    weibull = load_problem("bin_packing", data_dir=shared_data)
    assert sorted(weibull.instances("test")) == [f"test_{i}" for i in range(5)]
    orlib = load_problem("bin_packing", data_dir=shared_data, options={"distribution": "or"})
    assert len(orlib.instances("test")) == 20
    generated = load_problem("bin_packing")  # no data dir: generated held-out instances
    assert all(name.startswith("weibull_") for name in generated.instances("test"))


def test_generators_are_seeded_and_splits_disjoint():
    a, b = load_problem("bin_packing", seed=3), load_problem("bin_packing", seed=3)
    assert a.instances("train") == b.instances("train")
    train_items = [inst["items"] for inst in a.instances("train").values()]
    assert all(inst["items"] not in train_items for inst in a.instances("test").values())
    for inst in load_problem("bin_packing", options={"distribution": "or"}).instances("train").values():
        assert inst["capacity"] == 150 and min(inst["items"]) >= 20 and max(inst["items"]) <= 100


@pytest.mark.parametrize("output, reason", [
    ("nope", "a bin index for each"),
    ([0] * 3, "a bin index for each"),
    ([0.0] * 6, "integers"),
    ([0] * 6, "capacity"),
    ([-1] * 6, "integers"),
])
def test_score_rejects_bad_outputs(output, reason):
    problem = load_problem("bin_packing")
    instance = {"capacity": 10, "items": [6, 6, 6, 6, 6, 6]}
    with pytest.raises(InvalidOutput, match=reason):
        problem.score(instance, output)


def test_bad_problem_option_is_one_line():
    from evosearch.problem import ProblemError
    with pytest.raises(ProblemError, match="distribution must be one of"):
        load_problem("bin_packing", options={"distribution": "gaussian"})
    with pytest.raises(ProblemError, match="unexpected keyword"):
        load_problem("bin_packing", options={"colour": "red"})


def test_the_validation_split_is_drawn_as_the_held_out_one_but_apart_from_both(shared_data):
    a = load_problem("bin_packing", seed=2, options={"train_instances": 2, "train_items": 50, "test_instances": 3,
                                                     "test_items": 80, "valid_instances": 6})
    valid, test, train = (a.instances(s) for s in ("valid", "test", "train"))
    assert a.validation and len(valid) == 6 and all(len(i["items"]) == 80 for i in valid.values())
    assert valid == a.instances("valid")  # seeded
    sequences = [i["items"] for i in (*test.values(), *train.values())]
    assert all(i["items"] not in sequences for i in valid.values())
    assert valid.keys().isdisjoint(test.keys() | train.keys())
    assert a.timeout_for("valid") == a.timeout_s * 2 and a.timeout_for("test") == a.timeout_s
    # Against a held-out file, valid sequences are as long as the file's: OR3's 500 items, not test_items.
    orlib = load_problem("bin_packing", data_dir=shared_data, options={"distribution": "or", "valid_instances": 3})
    valid = orlib.instances("valid")
    assert len(valid) == 3 and {len(i["items"]) for i in valid.values()} == {500}
    assert all(i["capacity"] == 150 for i in valid.values())


@pytest.mark.parametrize("options, reason", [
    ({"valid_instances": 0}, "valid_instances must be a positive integer"),
    ({"train_items": 2.5}, "train_items must be a positive integer"),
])
def test_bad_sizes_are_named(options, reason):
    with pytest.raises(ProblemError, match=reason):
        load_problem("bin_packing", options=options)

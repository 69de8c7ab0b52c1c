"""The optimizer problem: AdamW seed, recorded baselines, strict trusted scoring, reproducible runs."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from evosearch.problem import InvalidOutput, ProblemError, load_problem
from evosearch.program import evolvable_functions, replace_functions
from problems.optimizer import baselines
from problems.optimizer.problem import minibatches

README = Path(baselines.__file__).with_name("README.md")


@pytest.fixture(scope="module")
def problem():
    return load_problem("optimizer")


@pytest.fixture(scope="module")
def adamw_train(problem):
    return baselines.evaluate(problem, problem.skeleton, "train")


def recorded_baselines() -> dict[str, dict[str, float]]:
    """The first README table (the one baselines.py prints): program -> its columns."""
    rows, header = {}, None
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            if cells[:3] == ["program", "train score", "test score"]:
                header = cells
            continue
        if not line.startswith("|"):
            break
        if not set(cells[0]) <= {"-"}:
            rows[cells[0]] = dict(zip(header[1:], cells[1:]))
    assert rows, f"no baseline table in {README}"
    return rows


def program(problem, source: str | None = None) -> dict:
    code = problem.skeleton if source is None else replace_functions(problem.skeleton, {"update": source})
    namespace = {}
    exec(compile(code, "<program>", "exec"), namespace)
    return namespace


def test_skeleton_evolves_update_seeded_with_adamw(problem):
    assert list(evolvable_functions(problem.skeleton)) == ["update"]
    assert problem.skeleton.index("import numpy as np") < problem.skeleton.index("# EVOLVE-BLOCK-START")
    assert baselines.programs(problem)["AdamW (seed)"] == problem.skeleton


@pytest.mark.parametrize("name, splits", [("AdamW (seed)", ("train", "test")), ("SGD-momentum", ("train",)),
                                          ("Lion", ("train",))])
def test_baselines_reproduce_the_readme(problem, adamw_train, name, splits):
    recorded = recorded_baselines()[name]
    code = baselines.programs(problem)[name]
    for split in splits:
        score, _ = adamw_train if (name, split) == ("AdamW (seed)", "train") else \
            baselines.evaluate(problem, code, split)
        assert score.score == pytest.approx(float(recorded[f"{split} score"]), abs=2e-6), split
        if split == "train":
            for d in ("param_growth", "update_uniformity"):
                assert score.descriptors[d] == pytest.approx(float(recorded[d]), abs=1e-3), d


def test_readme_shows_the_seed_is_beatable():
    scores = {name: float(row["train score"]) for name, row in recorded_baselines().items()}
    assert scores["Lion"] > scores["AdamW (seed)"] > scores["no-op"] == -1.0
    assert min(scores.values()) == scores["no-op"]


def test_ignoring_lr_buys_nothing(problem, adamw_train):
    # A rule that hard-codes an lr from the grid equals AdamW at that one lr for every run,
    # so it cannot beat AdamW tuned per run over the grid; averaged over the grid it would.
    constant = problem.skeleton.replace("    t = step + 1\n", "    t = step + 1\n    lr = 0.1\n")
    assert constant != problem.skeleton
    fixed, per_instance = baselines.evaluate(problem, constant, "train")
    adamw, adamw_per_instance = adamw_train
    assert fixed.score <= adamw.score
    averaging = load_problem("optimizer", options={"lr_reduce": "mean"})
    assert averaging.aggregate(per_instance).score > averaging.aggregate(adamw_per_instance).score


def test_a_rule_that_never_moves_scores_worst(problem):
    adamw, _ = baselines.evaluate(problem, problem.skeleton, "probe")
    frozen, per_instance = baselines.evaluate(problem, baselines.programs(problem)["no-op"], "probe")
    # Probe outputs are rounded to 20 mantissa bits, so "unchanged" is unchanged up to that.
    assert frozen.score == pytest.approx(-1.0, abs=1e-6) and adamw.score > -0.9
    assert all(m["loss_ratio"] == pytest.approx(1.0, abs=1e-6) for m in per_instance.values())


def test_runs_are_reproducible_even_for_random_rules(problem):
    noisy = '''\
def update(params, grads, state, step, lr):
    return {k: p - lr * (g + 0.1 * np.random.randn(*p.shape)) for (k, p), g in zip(params.items(), grads.values())}, state
'''
    instances = list(problem.instances("train").values())[::9]
    for source in (None, noisy):
        first = [problem.output(program(problem, source), inst) for inst in instances]
        again = [problem.output(program(problem, source), inst) for inst in instances]
        assert first == again


def test_outputs_survive_strict_json(problem):
    inst = next(iter(problem.instances("probe").values()))
    out = problem.output(program(problem), inst)
    wire = json.loads(json.dumps(out, allow_nan=False))
    assert problem.score(inst, wire) == problem.score(inst, out)


def test_probe_merges_reassociated_rules_and_separates_tuned_ones(problem):
    seed = problem.skeleton
    same = seed.replace("p - lr * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * p)",
                        "p - lr * m_hat / (np.sqrt(v_hat) + eps) - lr * weight_decay * p")
    tuned = seed.replace("1e-8, 0.01", "1e-8, 0.0")  # no weight decay
    assert same != seed and tuned != seed

    def probe(code):
        namespace = {}
        exec(code, namespace)
        return {name: problem.output(namespace, inst, "probe") for name, inst in problem.instances("probe").items()}

    reference = probe(seed)
    assert probe(same) == reference
    assert probe(tuned) != reference


def test_divergence_is_a_valid_worst_score(problem):
    explode = '''\
def update(params, grads, state, step, lr):
    return {k: p * 1e200 for k, p in params.items()}, state
'''
    ns = program(problem, explode)
    per_instance = {}
    for name, inst in problem.instances("probe").items():
        out = problem.output(ns, inst)
        assert set(out) == {"diverged_at_step"}
        per_instance[name] = problem.score(inst, out)
        assert per_instance[name]["score"] == -1.0
        assert all(math.isfinite(v) for v in per_instance[name].values())  # evaluators reject NaN metrics
    total = problem.aggregate(per_instance)
    assert total.score == -1.0 and total.metrics["diverged"] == 1.0
    assert all(math.isfinite(v) for v in [*total.descriptors.values(), *total.metrics.values()])


def test_finite_weights_that_overflow_the_loss_count_as_diverged(problem):
    inst = problem.instances("probe")["probe_softmax_lr0.01"]
    out = {"params": {"W": np.full((64, 10), 1e300).tolist(), "b": [0.0] * 10}}
    out["params"]["W"][0][0] = -1e300  # logits of opposite infinities
    assert problem.score(inst, out)["diverged"] == 1.0


@pytest.mark.parametrize("mutate, reason", [
    (lambda out: "nope", "expected a dict"),
    (lambda out: {"loss": 0.0}, "expected a dict"),
    (lambda out: {"params": [1, 2]}, "keys"),
    (lambda out: {"params": {k: v for k, v in out["params"].items() if k != "b"}}, "keys"),
    (lambda out: {"params": {**out["params"], "W": np.asarray(out["params"]["W"])}}, "nested. list"),
    (lambda out: {"params": {**out["params"], "b": 0.5}}, "nested. list"),
    (lambda out: {"params": {**out["params"], "b": out["params"]["b"][:-1]}}, "shape"),
    (lambda out: {"params": {**out["params"], "W": out["params"]["W"][:1] + [[1.0]]}}, "rectangular"),
    (lambda out: {"params": {**out["params"], "b": ["x"] * 10}}, "rectangular"),
    (lambda out: {"params": {**out["params"], "b": [math.nan] * 10}}, "NaN or infinite"),
    (lambda out: {"params": {**out["params"], "b": [math.inf] * 10}}, "NaN or infinite"),
])
def test_score_rejects_bad_outputs(problem, mutate, reason):
    inst = problem.instances("probe")["probe_softmax_lr0.01"]
    good = {"params": {"W": np.zeros((64, 10)).tolist(), "b": [0.0] * 10}}
    problem.score(inst, good)
    with pytest.raises(InvalidOutput, match=reason):
        problem.score(inst, mutate(good))


@pytest.mark.parametrize("source, reason", [
    ("def update(params, grads, state, step, lr):\n    return params\n", "a pair"),
    ("def update(params, grads, state, step, lr):\n    return {'W': params['W']}, state\n", "keys"),
    ("def update(params, grads, state, step, lr):\n    return {k: p.T for k, p in params.items()}, state\n", "shape"),
])
def test_run_names_a_broken_update_contract(problem, source, reason):
    with pytest.raises(ValueError, match=reason):
        problem.output(program(problem, source), problem.instances("probe")["probe_softmax_lr0.01"])


def test_splits_hold_out_seeds_and_a_task(problem):
    train, test, probe = (problem.instances(s) for s in ("train", "test", "probe"))
    grid = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]
    assert len(train) == 2 * 2 * 9 and len(test) == 3 * 2 * 9 and len(probe) == 9
    assert not {i["seed"] for i in train.values()} & {i["seed"] for i in test.values()}
    assert {i["task"] for i in test.values()} - {i["task"] for i in train.values()} == {"mlp_digits"}
    assert all(len(i["y"]) == 64 for i in probe.values())
    assert sorted({i["lr"] for i in train.values()}) == sorted({i["lr"] for i in probe.values()}) == grid
    assert {i["task"] for i in probe.values()} == {"probe_softmax", "probe_mlp"}


def test_minibatches_are_seeded_epochs(problem):
    inst = problem.instances("train")["mlp_cancer_s0_lr0.01"]
    draw = lambda: [rows for _, rows in zip(range(8), minibatches(inst))]  # noqa: E731
    first = draw()
    assert all(len(rows) == 128 for rows in first)
    epoch = np.concatenate(first[:4])  # 569 rows: 4 full batches per epoch
    assert len(set(epoch.tolist())) == 512
    assert all(np.array_equal(a, b) for a, b in zip(first, draw()))


@pytest.mark.parametrize("options", [{"steps": 0}, {"lr_grid": [0.1, -1]}, {"lr_grid": []}, {"lr_grid": [0.1, 0.1]},
                                     {"batch_size": 0}, {"seeds_per_task": 101}, {"lr_reduce": "median"},
                                     {"learning_rate": 0.1}])
def test_bad_options_are_one_line_errors(options):
    with pytest.raises(ProblemError, match="bad option"):
        load_problem("optimizer", options=options)

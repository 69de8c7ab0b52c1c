"""The symbolic regression problem: measured baselines, exact recovery, strict scoring, real sandbox runs."""
import asyncio
import math

import numpy as np
import pytest

from evaluators.pool import WorkerPool
from evosearch.problem import InvalidOutput, ProblemError, load_problem
from evosearch.program import replace_functions
from problems.symbolic_regression import baselines, data

# NMSE (train, ID, OOD) of the README's baseline table (python -m problems.symbolic_regression.baselines
# --data-dir ../shared/data); BFGS from ones is deterministic, so these move only if the harness does.
BASELINES = {
    ("oscillator1", "linear (seed)"): (9.592e-02, 9.592e-02, 8.626e-01),
    ("oscillator1", "polynomial (10 terms)"): (4.824e-04, 4.823e-04, 4.531e+00),
    ("oscillator2", "linear (seed)"): (1.945e-01, 1.945e-01, 1.171e-01),
    ("oscillator2", "polynomial (10 terms)"): (1.817e-01, 1.817e-01, 2.512e-01),
    ("bactgrow", "linear (seed)"): (8.620e-01, 8.648e-01, 1.203e+00),
    ("bactgrow", "polynomial (10 terms)"): (8.465e-01, 8.523e-01, 1.474e+00),
    ("stressstrain", "linear (seed)"): (3.802e-01, 3.766e-01, 1.314e+00),
    ("stressstrain", "polynomial (10 terms)"): (1.614e-01, 1.495e-01, 6.816e-01),
    ("duffing", "linear (seed)"): (1.177e-02, 1.076e-02, 2.135e-01),
    ("duffing", "polynomial (10 terms)"): (9.026e-05, 8.305e-05, 1.184e-02),
}

TRUE_DUFFING = '''def equation(x: np.ndarray, v: np.ndarray, params: np.ndarray) -> np.ndarray:
    return params[0] * x + params[1] * x ** 3 + params[2] * v + params[3] * v * np.abs(v)
'''


def program(problem, source: str) -> str:
    return replace_functions(problem.skeleton, {"equation": source})


def in_process(problem, code: str, split: str) -> dict:
    return baselines.evaluate(problem, code, split)


@pytest.fixture(scope="module")
def duffing():
    return load_problem("symbolic_regression")


def test_baselines_do_not_drift(shared_data):
    measured = baselines.measure(str(shared_data), list(data.LLM_SR) + ["duffing"])
    for (name, label), expected in BASELINES.items():
        r = measured[name][label]
        got = (r["nmse_train"], r["nmse_id"], r["nmse_ood"])
        assert got == pytest.approx(expected, rel=2e-3), (name, label)
    # The polynomial has more freedom than the seed: never a worse fit on the training data.
    for name in measured:
        assert measured[name]["polynomial (10 terms)"]["nmse_train"] <= measured[name]["linear (seed)"]["nmse_train"]


def test_true_form_is_recovered_exactly(duffing):
    r = in_process(duffing, program(duffing, TRUE_DUFFING), "test")
    # BFGS stops at its gradient tolerance (scipy's default, as in LLM-SR), not at machine precision.
    assert r["nmse_train"] < 1e-7 and r["nmse_id"] < 1e-7 and r["nmse_ood"] < 1e-6
    assert r["free_params"] == 4  # params[4:] have zero gradient and stay at 1.0
    assert r["score"] == pytest.approx(-math.log10(r["nmse_id"]))


def test_default_dataset_follows_the_data_dir(shared_data):
    assert load_problem("symbolic_regression").dataset_name == "duffing"
    with_data = load_problem("symbolic_regression", data_dir=shared_data)
    assert with_data.dataset_name == "oscillator1"
    assert with_data.skeleton == (with_data.folder / "skeleton.py").read_text()  # the file is oscillator1's seed
    bact = load_problem("symbolic_regression", data_dir=shared_data, options={"dataset": "bactgrow"})
    assert "def equation(b: np.ndarray, s: np.ndarray, temp: np.ndarray, pH: np.ndarray, params" in bact.skeleton
    assert len(bact.dataset().target["test_ood"]) == 15000


def test_user_errors_are_one_line(tmp_path):
    with pytest.raises(ProblemError, match="--data-dir"):
        load_problem("symbolic_regression", options={"dataset": "oscillator2"})
    with pytest.raises(ProblemError, match="dataset must be one of"):
        load_problem("symbolic_regression", options={"dataset": "pendulum"})
    with pytest.raises(ProblemError, match="not found"):
        load_problem("symbolic_regression", data_dir=tmp_path, options={"dataset": "oscillator1"})


def test_duffing_data_is_deterministic_and_ood_is_outside():
    a, b = data.generate_duffing(), data.generate_duffing()
    assert all(np.array_equal(a.target[p], b.target[p]) for p in data.PARTS)
    x, v = a.inputs["test_ood"]
    assert len(x) == 1000 and np.all(np.maximum(np.abs(x), np.abs(v)) > 1)
    assert all(np.abs(c).max() <= 1 for c in a.inputs["train"])
    with pytest.raises(ValueError):
        a.inputs["train"][0][0] = 5.0  # read-only: a candidate cannot corrupt what later candidates see


# ---------------------------------------------------------------- strict scoring

def good_output(instance):
    out = {"params": [1.0] * 10, "train": instance["target"].tolist()}
    for part, target in instance.get("targets", {}).items():
        out[part] = target.tolist()
    return out


@pytest.mark.parametrize("edit, reason", [
    (lambda o: "nope", "expected a dict"),
    (lambda o: {**o, "params": [1.0] * 9}, "10 finite fitted parameters"),
    (lambda o: {**o, "params": [None] + [1.0] * 9}, "10 finite fitted parameters"),
    (lambda o: {**o, "params": [True] * 10}, "10 finite fitted parameters"),
    (lambda o: {**o, "train": o["train"][:-1]}, "expected 2000 train predictions"),
    (lambda o: {**o, "train": [None] + o["train"][1:]}, "not finite on 1 of 2000 train points"),
    (lambda o: {**o, "train": ["0.5"] + o["train"][1:]}, "not finite on 1 of 2000 train points"),
    (lambda o: {k: v for k, v in o.items() if k != "train"}, "expected 2000 train predictions"),
])
def test_score_rejects_bad_outputs(duffing, edit, reason):
    (instance,) = duffing.instances("train").values()
    with pytest.raises(InvalidOutput, match=reason):
        duffing.score(instance, edit(good_output(instance)))


def test_score_recomputes_the_error_from_predictions(duffing):
    (instance,) = duffing.instances("test").values()
    out = good_output(instance)
    out["ood"] = [y + 1.0 for y in out["ood"]]  # off by one everywhere OOD
    metrics = duffing.score(instance, out)
    ood = instance["targets"]["ood"]
    assert metrics["nmse_ood"] == pytest.approx(1.0 / np.var(ood))
    assert metrics["nmse_train"] == metrics["nmse_id"] == 1e-20 and metrics["score"] == 20.0
    with pytest.raises(InvalidOutput, match="expected 1000 ood predictions"):
        duffing.score(instance, {**out, "ood": out["ood"][:10]})


def test_probe_dedups_reparametrized_equations(duffing):
    (instance,) = duffing.instances("probe").values()

    def probe(source):
        namespace = {}
        exec(program(duffing, source), namespace)
        return duffing.output(namespace, instance, "probe")

    header = "def equation(x: np.ndarray, v: np.ndarray, params: np.ndarray) -> np.ndarray:\n"
    linear = probe(header + "    return params[0] * x + params[1] * v + params[2]\n")
    assert linear == probe(header + "    return params[3] + v * params[5] + x * params[1]\n")
    assert linear == probe(header + "    return (params[0] + params[1]) * x + params[2] * v + params[3]\n")
    assert linear != probe(header + "    return params[0] * x + params[1] * v * np.abs(v) + params[2]\n")
    assert len(linear) == 200


# ---------------------------------------------------------------- through the real sandbox

@pytest.fixture(scope="module")
def pool():
    loop = asyncio.new_event_loop()
    pool = WorkerPool("symbolic_regression", workers=1)
    loop.run_until_complete(pool.start())
    yield loop, pool
    loop.run_until_complete(pool.close())


def test_sandboxed_scores_match_in_process(pool, duffing):
    loop, pool = pool
    seed = duffing.skeleton
    reply = loop.run_until_complete(pool.run(seed, "train"))
    assert reply["status"] == "ok", reply["reason"]
    expected = in_process(duffing, seed, "train")
    assert reply["score"] == pytest.approx(expected["score"], rel=1e-9)
    assert reply["descriptors"] == {"free_params": 3.0}
    test = loop.run_until_complete(pool.run(seed, "test"))
    assert test["status"] == "ok" and set(test["metrics"]) >= {"nmse_train", "nmse_id", "nmse_ood"}


@pytest.mark.parametrize("body, status, reason", [
    ("    return np.log(x) * params[0]\n", "invalid", "not finite on"),  # log of negative positions
    ("    return np.ones((3, 3))\n", "crash", "shape (3, 3)"),
    ("    x[0] = 1.0\n    return x * params[0]\n", "crash", "read-only"),
    ("    return 'a'\n", "crash", "ValueError"),
])
def test_bad_equations_fail_with_a_reason(pool, duffing, body, status, reason):
    loop, pool = pool
    code = program(duffing, "def equation(x: np.ndarray, v: np.ndarray, params: np.ndarray) -> np.ndarray:\n" + body)
    reply = loop.run_until_complete(pool.run(code, "train"))
    assert reply["status"] == status and reason in reply["reason"]

"""Symbolic regression in the LLM-SR setting (Shojaee et al., ICLR 2025).

Evolve an equation skeleton ``equation(<inputs>, params)`` with up to 10 free
parameters; the harness (interactive, trusted) fits them by BFGS on the training
data, asking the candidate's process only for the equation's values at each parameter
vector, and computes the normalized MSE of the predictions against targets that never
leave the trusted side (the held-out ones included). Score = -log10(NMSE on training), so higher
is better and 1 point is a 10-fold smaller error; the held-out split reports the
in-domain (ID) and out-of-domain (OOD) NMSE.
"""
from __future__ import annotations

import math

import numpy as np

from evosearch.problem import Descriptor, InvalidOutput, Problem, ProblemError
from problems.symbolic_regression import data, fitting

# NMSE = mean squared error / variance of the targets, clipped to this range so that
# every score and metric is finite (1e-20: exact up to rounding; 1e20: exploded).
NMSE_RANGE = (1e-20, 1e20)
PROBE_ROWS = 200


def nmse(prediction: np.ndarray, target: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        value = float(np.mean((prediction - target) ** 2) / np.var(target))
    return min(max(value, NMSE_RANGE[0]), NMSE_RANGE[1]) if not math.isnan(value) else NMSE_RANGE[1]


def render_skeleton(spec: data.Spec) -> str:
    """The seed program for a data set: LLM-SR's linear skeleton over its inputs."""
    args = ", ".join(f"{name}: np.ndarray" for name, _ in spec.inputs)
    arg_docs = "\n".join(f"        {name}: {meaning} (numpy array, one value per data point)."
                         for name, meaning in spec.inputs)
    linear = " + ".join(f"params[{i}] * {name}" for i, (name, _) in enumerate(spec.inputs))
    return f'''"""Symbolic regression: find the equation for the {spec.description}.

Write `equation` as a skeleton: its constants are free parameters params[0] ... params[9]
(MAX_NPARAMS of them). The harness fits them by BFGS (scipy.optimize.minimize, starting
from ones) to minimize the mean squared error on the training data; the score is the
normalized error of the fitted equation (higher score = smaller error). Use numpy only.
"""
import numpy as np

MAX_NPARAMS = 10


# EVOLVE-BLOCK-START
def equation({args}, params: np.ndarray) -> np.ndarray:
    """Mathematical function for the {spec.description}.

    Args:
{arg_docs}
        params: numeric constants to be fitted (array of MAX_NPARAMS floats).
    Returns:
        {spec.output[1]} ({spec.output[0]}), one value per data point.
    """
    return {linear} + params[{len(spec.inputs)}]
# EVOLVE-BLOCK-END
'''


class SymbolicRegression(Problem):
    name = "symbolic_regression"
    description = ("LLM-SR symbolic regression: evolve an equation skeleton with up to 10 parameters fitted by BFGS; "
                   "score = -log10 NMSE on training data")
    # Parameters BFGS moved from their start value 1.0: a parameter the equation ignores has a zero
    # gradient and stays exactly at 1.0. Bins of width 1: 0, 1, ..., 10.
    descriptors = (Descriptor("free_params", 0.0, 11.0, 11),)
    timeout_s = 30.0

    def __init__(self, data_dir=None, seed=0, dataset=None):
        super().__init__(data_dir, seed)
        root = self.data_dir / data.LLM_SR_FOLDER if self.data_dir else None
        if dataset is None:  # oscillator1 from the data directory, else the built-in generated data
            dataset = "oscillator1" if root is not None and (root / "oscillator1").is_dir() else "duffing"
        if dataset not in data.SPECS:
            raise ValueError(f"dataset must be one of {sorted(data.SPECS)}, not {dataset!r}")
        if dataset in data.LLM_SR:
            if root is None:
                raise ProblemError(f"dataset {dataset!r} needs the LLM-SR data: pass --data-dir "
                                   f"(the folder holding {data.LLM_SR_FOLDER}), or use dataset 'duffing'")
            if not (root / dataset / "train.csv").is_file():
                raise ProblemError(f"dataset {dataset!r} not found: no {root / dataset / 'train.csv'}")
        self.dataset_name = dataset
        self._root = root
        self._dataset: data.Dataset | None = None

    @property
    def spec(self) -> data.Spec:
        return data.SPECS[self.dataset_name]

    @property
    def skeleton(self) -> str:
        return render_skeleton(self.spec)

    def dataset(self) -> data.Dataset:
        if self._dataset is None:  # loaded once per worker, on first use
            if self.dataset_name == "duffing":
                self._dataset = data.generate_duffing()
            else:
                self._dataset = data.load_llm_sr(self._root, self.dataset_name)
        return self._dataset

    def instances(self, split):
        ds = self.dataset()
        train = {"inputs": ds.inputs["train"], "target": ds.target["train"]}
        if split == "probe":
            # An evenly spaced subset: a quick fit whose rounded predictions identify the fitted function.
            step = max(1, len(ds.target["train"]) // PROBE_ROWS)
            rows = slice(0, step * PROBE_ROWS, step)
            target = ds.target["train"][rows]
            return {f"{ds.name}_probe": {"inputs": tuple(c[rows] for c in ds.inputs["train"]), "target": target,
                                         "scale": float(np.std(target)) or 1.0}}
        if split == "train":
            return {ds.name: {**train, "predict": {}}}
        if split == "test":
            return {ds.name: {**train, "predict": {"id": ds.inputs["test_id"], "ood": ds.inputs["test_ood"]},
                              "targets": {"id": ds.target["test_id"], "ood": ds.target["test_ood"]}}}
        raise ValueError(f"unknown split {split!r}")

    @staticmethod
    def _fit(instance, candidate):
        # The inputs go to the candidate once (read-only there); the targets never do.
        equation = candidate.equation
        inputs = tuple(candidate.share(column) for column in instance["inputs"])
        return equation, inputs, fitting.fit(equation, inputs, instance["target"])

    def episode(self, instance, candidate):
        equation, inputs, params = self._fit(instance, candidate)
        n = len(instance["target"])
        out = {"params": fitting.as_json(params),
               "train": fitting.as_json(fitting.predict(equation, inputs, params, n))}
        for part, columns in instance["predict"].items():
            shared = tuple(candidate.share(column) for column in columns)
            out[part] = fitting.as_json(fitting.predict(equation, shared, params, len(columns[0])))
        return out

    def probe_episode(self, instance, candidate):
        # Predictions of the fitted equation to 3 decimals of the target's spread: skeletons that
        # fit the same function (reordered or reparametrized) hash alike.
        equation, inputs, params = self._fit(instance, candidate)
        prediction = fitting.predict(equation, inputs, params, len(instance["target"])) / instance["scale"]
        return [None if not math.isfinite(p) else round(p, 3) + 0.0 for p in prediction.tolist()]

    @staticmethod
    def _predictions(output: dict, part: str, n: int) -> np.ndarray:
        values = output.get(part)
        if not isinstance(values, list) or len(values) != n:
            raise InvalidOutput(f"expected {n} {part} predictions")
        bad = sum(1 for v in values if isinstance(v, bool) or not isinstance(v, (int, float)))
        if bad:
            raise InvalidOutput(f"the fitted equation is not finite on {bad} of {n} {part} points")
        return np.asarray(values, dtype=np.float64)

    def score(self, instance, output):
        if not isinstance(output, dict):
            raise InvalidOutput("expected a dict of parameters and predictions")
        params = output.get("params")
        if not isinstance(params, list) or len(params) != fitting.MAX_NPARAMS \
                or not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in params):
            raise InvalidOutput(f"expected {fitting.MAX_NPARAMS} finite fitted parameters")
        train = nmse(self._predictions(output, "train", len(instance["target"])), instance["target"])
        metrics = {"score": -math.log10(train), "nmse_train": train,
                   "free_params": float(sum(p != 1.0 for p in params))}
        if "targets" in instance:  # held out: the score is the in-domain error
            for part, target in instance["targets"].items():
                metrics[f"nmse_{part}"] = nmse(self._predictions(output, part, len(target)), target)
            metrics["score"] = -math.log10(metrics["nmse_id"])
        return metrics

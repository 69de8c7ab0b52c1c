"""Data sets of the symbolic regression problem: the LLM-SR benchmarks and a built-in generated one.

LLM-SR (Shojaee et al., ICLR 2025) ships four data sets, each as ``train.csv``,
``test_id.csv`` (in-domain: same input region as training) and ``test_ood.csv``
(out-of-domain: inputs outside the training region); the last column is the
target. They live in ``<data dir>/symbolic_regression/llm-sr/<name>/``.

``duffing`` is generated here (no data directory needed): the acceleration of a
Duffing oscillator with linear and quadratic drag, a = -x - 0.5 x^3 - 0.2 v - 0.4 v|v|,
sampled (noise-free) at uniform random (x, v) in [-1, 1]^2 for training and
in-domain testing, and in [-2, 2]^2 outside [-1, 1]^2 for out-of-domain testing.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LLM_SR_FOLDER = Path("symbolic_regression") / "llm-sr"


@dataclass(frozen=True)
class Spec:
    """What the equation computes, in words, and its arguments (the CSV columns, target last)."""

    description: str
    inputs: tuple[tuple[str, str], ...]  # (argument name, meaning)
    output: tuple[str, str]


SPECS = {
    "oscillator1": Spec("acceleration in a nonlinear damped oscillator",
                        (("x", "position"), ("v", "velocity")), ("a", "acceleration")),
    "oscillator2": Spec("acceleration in a nonlinear damped oscillator with a time-dependent driving force",
                        (("t", "time"), ("x", "position"), ("v", "velocity")), ("a", "acceleration")),
    "bactgrow": Spec("growth rate of an E. coli population",
                     (("b", "population density"), ("s", "substrate concentration"), ("temp", "temperature"),
                      ("pH", "pH level")), ("db", "population growth rate")),
    "stressstrain": Spec("stress in an aluminium rod under tension",
                         (("strain", "strain"), ("temp", "temperature")), ("stress", "stress")),
    "duffing": Spec("acceleration in a Duffing oscillator with drag (generated data)",
                    (("x", "position"), ("v", "velocity")), ("a", "acceleration")),
}
LLM_SR = ("oscillator1", "oscillator2", "bactgrow", "stressstrain")
PARTS = ("train", "test_id", "test_ood")


@dataclass(frozen=True)
class Dataset:
    """Inputs (one read-only float64 column per argument) and targets of each part."""

    name: str
    spec: Spec
    inputs: dict[str, tuple[np.ndarray, ...]]  # part -> columns
    target: dict[str, np.ndarray]  # part -> target


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.flags.writeable = False  # shared by every candidate of a worker: an in-place edit must fail, not leak
    return a


def _read_csv(path: Path, spec: Spec) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    with path.open(newline="") as f:
        header = next(csv.reader(f))
    expected = [name for name, _ in spec.inputs] + [spec.output[0]]
    if [h.strip().lower() for h in header] != [e.lower() for e in expected]:
        raise ValueError(f"{path}: columns {header}, expected {expected}")
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    return tuple(_frozen(table[:, i]) for i in range(table.shape[1] - 1)), _frozen(table[:, -1])


def load_llm_sr(root: Path, name: str) -> Dataset:
    folder = root / name
    inputs, target = {}, {}
    for part in PARTS:
        inputs[part], target[part] = _read_csv(folder / f"{part}.csv", SPECS[name])
    return Dataset(name, SPECS[name], inputs, target)


def duffing_acceleration(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    return -x - 0.5 * x ** 3 - 0.2 * v - 0.4 * v * np.abs(v)


def generate_duffing(seed: int = 0, train: int = 2000, test: int = 1000) -> Dataset:
    rng = np.random.default_rng(seed)
    points = {"train": rng.uniform(-1, 1, (train, 2)), "test_id": rng.uniform(-1, 1, (test, 2))}
    outside = rng.uniform(-2, 2, (8 * test, 2))
    points["test_ood"] = outside[np.abs(outside).max(axis=1) > 1][:test]  # about 3/4 are kept: 8x is plenty
    inputs = {part: (_frozen(p[:, 0]), _frozen(p[:, 1])) for part, p in points.items()}
    target = {part: _frozen(duffing_acceleration(*cols)) for part, cols in inputs.items()}
    return Dataset("duffing", SPECS["duffing"], inputs, target)

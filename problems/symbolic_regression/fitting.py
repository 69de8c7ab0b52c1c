"""Parameter fitting and prediction (trusted: runs in the evaluation worker).

As in LLM-SR: the equation's free parameters (an array of MAX_NPARAMS numbers,
starting at ones) are fitted by BFGS (scipy.optimize.minimize) to minimize the
mean squared error on the training data. The equation is the candidate's, asked
through the interactive protocol for its values at each parameter vector; the
targets, the optimizer and its iteration count stay here. Predictions become plain
lists; non-finite values become None, which the trusted scorer rejects by name.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize

MAX_NPARAMS = 10


def predict(equation, inputs: tuple, params: np.ndarray, n: int | None = None) -> np.ndarray:
    """The equation on ``inputs`` (arrays, or handles of arrays shared with the candidate: then
    ``n`` rows): a float array with one value per row (scalars broadcast)."""
    n = len(inputs[0]) if n is None else n
    with np.errstate(all="ignore"):
        out = np.asarray(equation(*inputs, np.array(params, dtype=np.float64)), dtype=np.float64)
    if out.ndim > 1 and out.size == n:
        out = out.reshape(n)
    if out.shape not in ((), (1,), (n,)):
        raise ValueError(f"equation returned shape {out.shape} for {n} data points")
    return np.broadcast_to(out, (n,))


def fit(equation, inputs: tuple, target: np.ndarray) -> np.ndarray:
    """BFGS from ones on the mean squared error; the parameters it ends at."""
    def mse(params):
        with np.errstate(all="ignore"):
            return float(np.mean((predict(equation, inputs, params, len(target)) - target) ** 2))

    with np.errstate(all="ignore"):
        return minimize(mse, np.ones(MAX_NPARAMS), method="BFGS").x


def as_json(values: np.ndarray) -> list:
    return [v if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]

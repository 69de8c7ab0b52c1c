"""Symbolic regression: find the equation for the acceleration in a nonlinear damped oscillator.

Write `equation` as a skeleton: its constants are free parameters params[0] ... params[9]
(MAX_NPARAMS of them). The harness fits them by BFGS (scipy.optimize.minimize, starting
from ones) to minimize the mean squared error on the training data; the score is the
normalized error of the fitted equation (higher score = smaller error). Use numpy only.
"""
import numpy as np

MAX_NPARAMS = 10


# EVOLVE-BLOCK-START
def equation(x: np.ndarray, v: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Mathematical function for the acceleration in a nonlinear damped oscillator.

    Args:
        x: position (numpy array, one value per data point).
        v: velocity (numpy array, one value per data point).
        params: numeric constants to be fitted (array of MAX_NPARAMS floats).
    Returns:
        acceleration (a), one value per data point.
    """
    return params[0] * x + params[1] * v + params[2]
# EVOLVE-BLOCK-END

"""A training update rule: one step of an optimizer, applied to every parameter tensor."""
import numpy as np


# EVOLVE-BLOCK-START
def update(params: dict, grads: dict, state: dict, step: int, lr: float) -> tuple[dict, dict]:
    """Returns (new_params, new_state) after one optimizer step (AdamW).

    params: parameter name -> float64 array (e.g. "W", "b" or "W1", "b1", "W2", "b2").
    grads: parameter name -> gradient of the mean training loss, same shapes as params.
    state: whatever this rule stored on the previous step; empty ({}) at step 0.
    step: 0, 1, 2, ... (the number of updates done so far).
    lr: the learning rate of this run (the harness tries a small grid of them).
    """
    beta1, beta2, eps, weight_decay = 0.9, 0.999, 1e-8, 0.01
    if not state:
        state = {"m": {k: np.zeros_like(p) for k, p in params.items()},
                 "v": {k: np.zeros_like(p) for k, p in params.items()}}
    t = step + 1
    new_params = {}
    for k, p in params.items():
        g = grads[k]
        m = beta1 * state["m"][k] + (1 - beta1) * g
        v = beta2 * state["v"][k] + (1 - beta2) * g * g
        state["m"][k], state["v"][k] = m, v
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        new_params[k] = p - lr * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * p)
    return new_params, state
# EVOLVE-BLOCK-END

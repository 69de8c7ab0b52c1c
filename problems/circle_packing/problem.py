"""AlphaEvolve's circle packing (Novikov et al. 2025, appendix B.12).

Evolve ``construct_packing(n) -> (centers, radii)``: n disjoint circles inside
the unit square, maximizing the sum of their radii. The candidate may run its
own optimisation (numpy, scipy) within the time limit. The trusted scorer
checks the packing strictly (tolerance TOLERANCE) and scores the sum of radii.
AlphaEvolve reached 2.6358627564 for n = 26 (previous best 2.634).
"""
from __future__ import annotations

import random

import numpy as np
# Loaded in the worker, so each forked sandbox starts with them: importing scipy.optimize
# would cost every evaluation of a candidate that uses it a second or more.
import numpy.random  # noqa: F401
import scipy.optimize  # noqa: F401
import scipy.spatial  # noqa: F401

from evosearch.problem import Descriptor, InvalidOutput, Problem

# Slack allowed on every constraint (inside the square, pairwise disjoint), in units of the side.
TOLERANCE = 1e-9
# A circle "touches" the border when its gap to the nearest side is below this.
TOUCH = 1e-6


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def parse_packing(output, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidate's plain data -> (centers (n, 2), radii (n,)); InvalidOutput says what is malformed."""
    if not isinstance(output, dict) or set(output) != {"centers", "radii"}:
        raise InvalidOutput("expected {'centers': n x 2 numbers, 'radii': n numbers}")
    centers, radii = output["centers"], output["radii"]
    if not isinstance(centers, list) or len(centers) != n \
            or not all(isinstance(c, list) and len(c) == 2 and all(map(_is_number, c)) for c in centers):
        raise InvalidOutput(f"centers must be {n} pairs of numbers")
    if not isinstance(radii, list) or len(radii) != n or not all(map(_is_number, radii)):
        raise InvalidOutput(f"radii must be {n} numbers")
    centers, radii = np.asarray(centers, dtype=float).reshape(n, 2), np.asarray(radii, dtype=float)
    if not (np.isfinite(centers).all() and np.isfinite(radii).all()):
        raise InvalidOutput("centers and radii must be finite")
    return centers, radii


def check_packing(centers: np.ndarray, radii: np.ndarray, tolerance: float = TOLERANCE) -> None:
    """Raise InvalidOutput naming the worst violation of the packing rules, if any."""
    if (radii < 0).any():
        k = int(np.argmin(radii))
        raise InvalidOutput(f"circle {k} has negative radius {radii[k]:.6g}")
    outside = np.max(np.stack([radii - centers[:, 0], centers[:, 0] + radii - 1.0,
                               radii - centers[:, 1], centers[:, 1] + radii - 1.0]), axis=0)
    k = int(np.argmax(outside))
    if outside[k] > tolerance:
        raise InvalidOutput(f"circle {k} sticks out of the unit square by {outside[k]:.3g} (tolerance {tolerance:g})")
    if len(radii) > 1:
        i, j = np.triu_indices(len(radii), 1)
        overlap = radii[i] + radii[j] - np.hypot(*(centers[i] - centers[j]).T)
        k = int(np.argmax(overlap))
        if overlap[k] > tolerance:
            raise InvalidOutput(f"circles {i[k]} and {j[k]} overlap by {overlap[k]:.3g} (tolerance {tolerance:g})")


class CirclePacking(Problem):
    name = "circle_packing"
    description = "AlphaEvolve circle packing: evolve construct_packing(n); score = sum of radii (n = 26: 2.6359)"
    descriptors = (
        # Standard deviation over mean of the radii: 0 for equal circles (a grid), about 0.2
        # for the best known packings, which mix large and small circles.
        Descriptor("radius_spread", 0.0, 0.6, 10),
        # Share of circles touching a side of the square.
        Descriptor("border_share", 0.0, 1.0, 10),
    )
    timeout_s = 20.0  # room for the candidate's own optimisation

    def __init__(self, data_dir=None, seed=0, n=26):
        super().__init__(data_dir, seed)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive integer, not {n!r}")
        self.n = n

    def instances(self, split):
        # One input, n; the packing is the answer, so no split holds anything back, and the
        # probe is the packing itself: candidates share a hash only if they build the same one.
        return {f"n{self.n}": {"n": self.n}}

    @staticmethod
    def run(program, instance):
        # A candidate drawing random starts gets the same ones every time (same seed, same run).
        random.seed(0)
        np.random.seed(0)
        centers, radii = program["construct_packing"](instance["n"])
        return {"centers": np.asarray(centers, dtype=float).tolist(), "radii": np.asarray(radii, dtype=float).tolist()}

    def score(self, instance, output):
        centers, radii = parse_packing(output, instance["n"])
        check_packing(centers, radii)
        total = float(radii.sum())
        walls = np.minimum(centers, 1.0 - centers).min(axis=1) - radii
        return {"score": total, "sum_radii": total,
                "radius_spread": float(radii.std() / radii.mean()) if total > 0 else 0.0,
                "border_share": float((walls < TOUCH).mean())}

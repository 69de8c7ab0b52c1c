"""Pack n disjoint circles in the unit square so that the sum of their radii is as large as possible."""
import numpy as np
from scipy.optimize import linprog


def largest_radii(centers: np.ndarray) -> np.ndarray:
    """Radii of largest sum for circles at fixed `centers` (n x 2) that stay disjoint and inside
    the unit square: a linear programme, then a uniform shrink so that every constraint holds
    exactly in floating point (the solver's own tolerance is about 1e-7)."""
    centers = np.asarray(centers, dtype=float)
    n = len(centers)
    i, j = np.triu_indices(n, 1)
    gaps = np.hypot(*(centers[i] - centers[j]).T)
    pairs = np.zeros((len(i), n))
    pairs[np.arange(len(i)), i] = 1.0
    pairs[np.arange(len(i)), j] = 1.0
    walls = np.clip(np.minimum(centers, 1.0 - centers).min(axis=1), 0.0, None)
    solved = linprog(-np.ones(n), A_ub=pairs if n > 1 else None, b_ub=gaps if n > 1 else None,
                     bounds=list(zip(np.zeros(n), walls)), method="highs")
    radii = np.clip(solved.x, 0.0, walls) if solved.success else np.zeros(n)
    sums = radii[i] + radii[j]
    crowded = sums > gaps
    if crowded.any():
        radii = radii * (gaps[crowded] / sums[crowded]).min()
    return radii


# EVOLVE-BLOCK-START
def construct_packing(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (centers, radii) of n circles: centers is an (n, 2) array of points in the unit
    square, radii an (n,) array. The circles must not overlap and must lie inside the square;
    the score is the sum of the radii.
    """
    side = int(np.ceil(np.sqrt(n)))
    ticks = (np.arange(side) + 0.5) / side
    centers = np.array([(x, y) for y in ticks for x in ticks])[:n]
    return centers, largest_radii(centers)
# EVOLVE-BLOCK-END

"""Cap sets in F_3^n: vectors are added greedily in order of decreasing priority, skipping
any that would complete a line (three distinct vectors summing to zero mod 3)."""
import numpy as np


# EVOLVE-BLOCK-START
def priority(el: tuple[int, ...], n: int) -> float:
    """Returns the priority with which we want to add `el` to the cap set.

    el: a vector of F_3^n, as a tuple of n values in {0, 1, 2}.
    n: the dimension.
    """
    return 0.0
# EVOLVE-BLOCK-END

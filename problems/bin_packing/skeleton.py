"""Online bin packing: each item goes to the feasible bin of highest priority."""
import numpy as np


# EVOLVE-BLOCK-START
def priority(item: float, bins: np.ndarray) -> np.ndarray:
    """Returns the priority with which we want to add `item` to each bin.

    item: size of the item to place.
    bins: remaining capacity of each bin the item fits in.
    """
    return -(bins - item)
# EVOLVE-BLOCK-END

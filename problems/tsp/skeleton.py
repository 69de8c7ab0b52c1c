"""Travelling salesman, built one city at a time: from the current city the tour
moves to the unvisited city of highest priority, and at the end returns to the start."""
import numpy as np


# EVOLVE-BLOCK-START
def priority(current: int, start: int, unvisited: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Returns the priority of moving from `current` to each city in `unvisited`.

    current: the city the tour is at.
    start: the city the tour began at; the tour ends by returning to it.
    unvisited: indices of the cities not visited yet (at least two, increasing).
    distances: the symmetric matrix of distances between all cities (read-only).
    """
    step = distances[current, unvisited]  # length of the move to each candidate
    back = distances[start, unvisited]  # how far each candidate lies from the end of the tour
    return -step
# EVOLVE-BLOCK-END

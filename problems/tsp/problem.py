"""Constructive heuristics for the travelling salesman (next-city rule).

Evolve ``priority(current, start, unvisited, distances)``; the harness starts at
city 0, repeatedly moves to the unvisited city of highest priority and closes
the tour. Score = minus the mean gap (percent) of the tour length over a
reference: the optimum for TSPLIB instances, a Held-Karp lower bound for the
generated random uniform ones (so there the gap overstates the gap to the
optimum by about 1%). The seed is nearest neighbour.
"""
from __future__ import annotations

import functools
import random

import numpy as np
import numpy.random  # noqa: F401  - loaded in the worker, so no sandboxed candidate pays for the import

from evosearch.problem import Descriptor, InvalidOutput, Problem
from problems.tsp.held_karp import held_karp_bound, nearest_neighbour_length
from problems.tsp.tsplib import distance_matrix, load_tsplib

START = 0  # every tour starts (and ends) at city 0
TSPLIB_DIR = ("tsp", "tsplib95")  # under --data-dir
LONG_EDGE_SHARE = 0.1  # the "long_edges" descriptor looks at the longest 10% of a tour's edges


def uniform_coords(cities: int, seed: tuple[int, ...]) -> list[list[float]]:
    """``cities`` points uniform in the unit square (DIMACS challenge's random uniform family)."""
    return np.random.default_rng(seed).random((cities, 2)).tolist()


# What a gap is measured against: the Held-Karp bound (how far from optimal), or the nearest-neighbour tour
# (how far from the seed), which ranks rules on the same instances alike at a fraction of the bound's cost.
REFERENCES = {"held_karp_bound": held_karp_bound, "nearest_neighbour": nearest_neighbour_length}


@functools.lru_cache(maxsize=None)
def _uniform_instance(cities: int, seed: tuple[int, ...],
                      reference: str) -> tuple[tuple[tuple[float, float], ...], float]:
    # Cached per process: the bound takes ~0.3 s at 100 cities (1 s at 200) and every worker builds its instances once.
    coords = uniform_coords(cities, seed)
    return tuple(map(tuple, coords)), REFERENCES[reference](distance_matrix(coords, "euclidean"))


def uniform_instances(count: int, cities: int, seed: int, reference: str = "held_karp_bound") -> dict[str, dict]:
    """Random uniform instances with their reference length (deterministic for ``seed``)."""
    found = {}
    for i in range(count):
        coords, length = _uniform_instance(cities, (seed, i), reference)
        found[f"uniform{cities}_{seed}_{i}"] = {"coords": [list(c) for c in coords], "metric": "euclidean",
                                                "reference": length, "reference_kind": reference}
    return found


def probe_instances(seed: int) -> dict[str, dict]:
    """Small instances, each with fixed states (current city, unvisited cities) on which
    priorities are compared: every state of a nearest-neighbour tour, then random ones."""
    rng = np.random.default_rng((seed, 7))
    found = {}
    for cities in (9, 16, 25):
        coords = rng.random((cities, 2)).tolist()
        d = distance_matrix(coords, "euclidean")
        visited = np.zeros(cities, dtype=bool)
        visited[START] = True
        states, current = [], START
        for _ in range(cities - 2):  # the last move is forced: no state to compare
            unvisited = np.flatnonzero(~visited)
            states.append({"current": current, "unvisited": unvisited.tolist()})
            current = int(unvisited[np.argmin(d[current, unvisited])])
            visited[current] = True
        for _ in range(8):
            size = int(rng.integers(2, cities - 1))
            unvisited = np.sort(rng.choice(np.arange(1, cities), size, replace=False))
            others = np.setdiff1d(np.arange(1, cities), unvisited)
            states.append({"current": int(rng.choice(others)) if len(others) else START,
                           "unvisited": unvisited.tolist()})
        found[f"probe{cities}"] = {"coords": coords, "metric": "euclidean", "states": states}
    return found


def _priorities(priority, current: int, unvisited: np.ndarray, distances: np.ndarray) -> np.ndarray:
    unvisited.setflags(write=False)  # the harness reads it after the call
    scores = np.asarray(priority(current, START, unvisited, distances), dtype=float).reshape(-1)
    if scores.shape != unvisited.shape:
        raise ValueError(f"priority returned {scores.shape[0]} scores for {unvisited.shape[0]} unvisited cities")
    return np.where(np.isnan(scores), -np.inf, scores)  # a NaN priority never wins


def construct(priority, instance: dict) -> list[int]:
    """The tour the next-city rule ``priority`` builds (sandbox side)."""
    distances = distance_matrix(instance["coords"], instance["metric"])
    distances.setflags(write=False)
    n = len(distances)
    visited = np.zeros(n, dtype=bool)
    visited[START] = True
    tour, current = [START], START
    for _ in range(n - 1):
        unvisited = np.flatnonzero(~visited)
        if len(unvisited) > 1:  # ties go to the lowest index
            current = int(unvisited[np.argmax(_priorities(priority, current, unvisited, distances))])
        else:
            current = int(unvisited[0])
        visited[current] = True
        tour.append(current)
    return tour


def greedy_rate(distances: np.ndarray, tour: np.ndarray) -> float:
    """Share of moves that go to a nearest unvisited city (1 for nearest neighbour)."""
    n = len(tour)
    if n < 3:
        return 1.0
    remaining = np.ones(n, dtype=bool)
    greedy = 0
    for k in range(n - 2):  # the last move is forced
        remaining[tour[k]] = False
        row = distances[tour[k]]
        greedy += row[tour[k + 1]] <= row[remaining].min()
    return greedy / (n - 2)


class TSP(Problem):
    name = "tsp"
    description = "TSP next-city rule: evolve priority(current, start, unvisited, distances); score = -mean gap %"
    descriptors = (
        # 1 = always the nearest unvisited city (nearest neighbour); lower = the rule trades
        # the nearest city for others (look-ahead, start-aware or random moves).
        Descriptor("greedy_rate", 0.0, 1.0, 10),
        # Share of the tour length in its longest 10% of edges: nearest neighbour's few long
        # jumps back across the map give about 0.33, random tours about 0.18, an even tour 0.1.
        Descriptor("long_edges", 0.1, 0.6, 10),
    )
    timeout_s = 30.0  # the TSPLIB split (46 instances, up to 1002 cities) with slow rules
    # A validation split of the held-out size picks the reported rule: the best rules fit their 32 training
    # instances, and past 1,000 samples the default's training best held out worse as it trained better. Picking
    # among all training bests on 128 instances held out 0.89 points better at 2,000 samples (README, "Which
    # settings find most").
    validation = True

    def __init__(self, data_dir=None, seed=0, train_instances=32, train_cities=100, test_instances=32,
                 test_cities=200, tsplib=None, valid_instances=128):
        super().__init__(data_dir, seed)
        for label, value, least in (("train_instances", train_instances, 1), ("test_instances", test_instances, 1),
                                    ("valid_instances", valid_instances, 1),
                                    ("train_cities", train_cities, 3), ("test_cities", test_cities, 3)):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{label} must be an integer of at least {least}, not {value!r}")
        if tsplib is not None:
            if not (isinstance(tsplib, list) and tsplib and all(isinstance(n, str) for n in tsplib)):
                raise ValueError(f"tsplib must be a list of instance names, not {tsplib!r}")
            folder = self.data_dir.joinpath(*TSPLIB_DIR) if self.data_dir else None
            if folder is None or not folder.is_dir():
                raise ValueError(f"tsplib needs --data-dir holding {'/'.join(TSPLIB_DIR)}/")
            missing = [n for n in tsplib if not (folder / f"{n}.tsp").is_file()]
            if missing:
                raise ValueError(f"no TSPLIB instance {missing[0]}.tsp in {folder}")
        # valid: of the generated held-out size; more instances than it has, since picking among near-equal rules
        # takes a finer ranking than scoring one.
        self.sizes = {"train": (train_instances, train_cities), "test": (test_instances, test_cities),
                      "valid": (valid_instances, test_cities)}
        self.tsplib = tsplib

    def timeout_for(self, split: str) -> float:
        # valid holds more instances of the held-out size than the generated held-out split: more time in step.
        scale = self.sizes["valid"][0] / self.sizes["test"][0] if split == "valid" else 1.0
        return self.timeout_s * max(1.0, scale)

    def instances(self, split):
        split_seed = 1000 * self.seed + ("probe", "train", "test", "valid").index(split)
        if split == "probe":
            return probe_instances(split_seed)
        if split == "test" and self.data_dir and self.data_dir.joinpath(*TSPLIB_DIR).is_dir():
            return load_tsplib(self.data_dir.joinpath(*TSPLIB_DIR), self.tsplib)
        count, cities = self.sizes[split]
        # valid only ranks rules against each other: 128 Held-Karp bounds would cost each worker 2 minutes.
        reference = "nearest_neighbour" if split == "valid" else "held_karp_bound"
        return uniform_instances(count, cities, split_seed, reference)

    @staticmethod
    def run(program, instance):
        random.seed(0)  # a randomized rule repeats itself (same seed, same run)
        np.random.seed(0)
        return construct(program["priority"], instance)

    def probe(self, program, instance):
        # Dense ranks of the priorities at fixed states: equal exactly when two rules order (and
        # tie) the cities alike, whatever their scale; the rule's own tour covers the states it reaches.
        random.seed(0)
        np.random.seed(0)
        distances = distance_matrix(instance["coords"], instance["metric"])
        distances.setflags(write=False)
        ranks = [np.unique(_priorities(program["priority"], state["current"], np.array(state["unvisited"]),
                                       distances), return_inverse=True)[1].tolist()
                 for state in instance["states"]]
        return {"ranks": ranks, "tour": self.run(program, instance)}

    def score(self, instance, output):
        n = len(instance["coords"])
        if not isinstance(output, list) or len(output) != n:
            raise InvalidOutput(f"expected a tour of all {n} cities")
        if not all(type(c) is int for c in output):
            raise InvalidOutput("cities must be integers")
        if sorted(output) != list(range(n)):
            raise InvalidOutput(f"a tour must visit each city 0..{n - 1} exactly once")
        if output[0] != START:
            raise InvalidOutput(f"the tour must start at city {START}")
        tour = np.asarray(output)
        distances = distance_matrix(instance["coords"], instance["metric"])
        edges = distances[tour, np.roll(tour, -1)]
        length = float(edges.sum())
        gap = 100.0 * (length / instance["reference"] - 1.0)
        longest = np.sort(edges)[::-1][:max(1, round(LONG_EDGE_SHARE * n))]
        return {"score": -gap, "gap_pct": gap,
                "greedy_rate": greedy_rate(distances, tour), "long_edges": float(longest.sum() / max(length, 1e-300))}

"""FunSearch's cap set problem (Romera-Paredes et al., Nature 2024).

A cap set in F_3^n holds no three distinct vectors a, b, c with a + b + c = 0
(mod 3), i.e. no line. Evolve ``priority(el, n)``; the harness scores all 3^n
vectors, then adds them greedily in order of decreasing priority (ties: the
lexicographically first), skipping any that would complete a line; a priority
of -inf (or NaN) keeps a vector out. The trusted scorer checks every answer is
a cap set and scores its size. n = 8: the trivial priority gives 256 = 2^8,
the best known before FunSearch was 496, FunSearch found 512.
"""
from __future__ import annotations

import itertools
import random

import numpy as np
import numpy.random  # noqa: F401  - loaded in the worker, so no sandboxed candidate pays for the import

from evosearch.problem import Descriptor, InvalidOutput, Problem, Score

# The largest cap sets known in F_3^n for n = 1..8 (n = 7 and 8 are lower bounds; 8 is FunSearch's).
BEST_KNOWN = {1: 2, 2: 4, 3: 9, 4: 20, 5: 45, 6: 112, 7: 236, 8: 512}
MAX_N = 10  # 3^10 = 59049 priority calls already take a few seconds


def all_vectors(n: int) -> np.ndarray:
    """Every vector of F_3^n, (3^n, n), in lexicographic order (row k is k written in base 3)."""
    return np.array(list(itertools.product(range(3), repeat=n)), dtype=np.int64).reshape(3 ** n, n)


def _powers(n: int) -> np.ndarray:
    return 3 ** np.arange(n - 1, -1, -1, dtype=np.int64)


def priorities(priority, n: int) -> np.ndarray:
    """The candidate's priority of every vector, in lexicographic order; NaN -> -inf."""
    scores = np.array([float(priority(el, n)) for el in itertools.product(range(3), repeat=n)])
    return np.where(np.isnan(scores), -np.inf, scores)


def greedy_cap_set(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices (into :func:`all_vectors`) the greedy construction adds, in order."""
    vectors, powers = all_vectors(n), _powers(n)
    blocked = np.zeros(3 ** n, dtype=bool)
    chosen = np.empty((3 ** n, n), dtype=np.int64)
    picked = []
    for index in np.argsort(-scores, kind="stable"):  # stable: ties keep lexicographic order
        if scores[index] == -np.inf:
            break
        if blocked[index]:
            continue
        vector = vectors[index]
        # Every line through the new vector and a chosen one has a determined third point.
        blocked[((-(chosen[:len(picked)] + vector)) % 3) @ powers] = True
        blocked[index] = True
        chosen[len(picked)] = vector
        picked.append(int(index))
    return np.array(picked, dtype=np.int64)


def check_cap_set(output, n: int) -> np.ndarray:
    """The candidate's plain data -> vectors (N, n); InvalidOutput names the first broken rule."""
    if not isinstance(output, list) or not all(isinstance(v, list) and len(v) == n for v in output):
        raise InvalidOutput(f"expected a list of vectors of length {n}")
    if not all(type(x) is int and 0 <= x <= 2 for v in output for x in v):
        raise InvalidOutput("vector entries must be integers in {0, 1, 2}")
    vectors = np.array(output, dtype=np.int64).reshape(len(output), n)
    codes = vectors @ _powers(n)
    unique, counts = np.unique(codes, return_counts=True)
    if (counts > 1).any():
        raise InvalidOutput(f"vector {output[int(np.flatnonzero(codes == unique[counts > 1][0])[0])]} appears twice")
    member = np.zeros(3 ** n, dtype=bool)
    member[codes] = True
    powers = _powers(n)
    for i in range(len(vectors) - 1):  # each pair once: O(N^2) lookups, one row of pairs at a time
        third = ((-(vectors[i] + vectors[i + 1:])) % 3) @ powers
        hit = np.flatnonzero(member[third])
        if len(hit):
            j = i + 1 + int(hit[0])
            c = int(np.flatnonzero(codes == third[hit[0]])[0])
            raise InvalidOutput(f"not a cap set: vectors {output[i]}, {output[j]} and {output[c]} sum to 0 mod 3")
    return vectors


class CapSet(Problem):
    name = "cap_set"
    description = "FunSearch cap set in F_3^n: evolve priority(el, n) for a greedy construction; score = size"
    descriptors = (
        # Mean Hamming weight (non-zero coordinates) over n: {0,1}^n has 0.5.
        Descriptor("weight", 0.0, 1.0, 10),
        # Standard deviation of the Hamming weight over n: one weight layer gives 0.
        Descriptor("weight_spread", 0.0, 0.5, 10),
    )
    timeout_s = 20.0

    def __init__(self, data_dir=None, seed=0, n=8):
        super().__init__(data_dir, seed)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N:
            raise ValueError(f"n must be an integer from 1 to {MAX_N}, not {n!r}")
        self.n = n

    def instances(self, split):
        # The construction's only input is n: every split is dimension n, and the probe compares
        # the priorities of all 3^n vectors, which fix the greedy answer completely.
        return {f"n{self.n}": {"n": self.n}}

    @staticmethod
    def run(program, instance):
        random.seed(0)  # a randomized priority repeats itself (same seed, same run)
        np.random.seed(0)
        n = instance["n"]
        return all_vectors(n)[greedy_cap_set(priorities(program["priority"], n), n)].tolist()

    def probe(self, program, instance):
        # Dense ranks of the priorities, excluded vectors (-inf) marked -1: equal exactly when two
        # priorities order, tie and exclude the vectors alike, so when they build the same cap set.
        random.seed(0)
        np.random.seed(0)
        scores = priorities(program["priority"], instance["n"])
        ranks = np.unique(scores, return_inverse=True)[1].reshape(-1)
        return np.where(scores == -np.inf, -1, ranks).tolist()

    def score(self, instance, output):
        n = instance["n"]
        vectors = check_cap_set(output, n)
        weights = (vectors != 0).sum(axis=1) / n if len(vectors) else np.zeros(1)
        return {"score": float(len(vectors)), "size": float(len(vectors)),
                "weight": float(weights.mean()), "weight_spread": float(weights.std())}

    def aggregate(self, per_instance):
        (metrics,) = per_instance.values()  # one instance per split
        return Score(score=metrics["score"], descriptors={d.name: metrics[d.name] for d in self.descriptors},
                     metrics={"size": metrics["size"], "best_known": float(BEST_KNOWN.get(self.n, 0))})

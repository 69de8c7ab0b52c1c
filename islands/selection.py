"""Parent selection rules, as pure functions of elite arrays and an ``rng``.

Each returns positions into the arrays it is given; islands map them back to elites.
All costs are O(elites) per call (``novelty``'s O(elites²)), and an island holds at most one elite per cell
(or a capped number of clusters), so a call is O(1) in the number of insertions.

- ``uniform``: MAP-Elites (Mouret & Clune 2015), uniform over occupied cells.
- ``boltzmann``: FunSearch (Romera-Paredes et al. 2024): clusters of elites that share
  a score (FunSearch's "signature"), a cluster drawn with probability
  softmax(score_norm / T), T = T0 * (1 - (n mod N) / N) where n counts the programs
  offered to the island; within the cluster, shorter programs are preferred with
  softmax(-length_norm / 1). Scores are min-max normalised over the island's elites
  into [0, 1] (problem scores can be negative and of any scale).
- ``dgm``: Darwin Gödel Machine (Zhang et al. 2025): p ∝ sigmoid(λ (s_norm - 0.5)) /
  (1 + children), s_norm min-max normalised as above, children = results already
  produced from that parent on this island (failed ones included).
- ``best``: the top-k by score ((1+1)-EPS hill climbing with k = 1).
- ``curiosity``: curiosity scores (Cully & Demiris 2018, "Quality and Diversity
  Optimization: A Unifying Modular Framework"): an elite's score rises by 1 for each
  child that entered the archive (a new cell or a better elite) and falls by 0.5 for
  each that did not (failed children included); p ∝ sigmoid(curiosity), so a new elite
  weighs 1/2, one whose children keep entering tends to 1 and a barren one to 0. Only
  the island that holds the parent counts its children.
- ``novelty``: novelty search's sparseness (Lehman & Stanley 2011) on the map: an
  elite's novelty is the mean distance of its descriptors (each axis scaled to [0, 1])
  to those of its ``NOVELTY_NEIGHBOURS`` nearest fellow elites; p ∝ novelty, so elites
  on the edges of the filled region, whose children are likelier to land in empty
  cells, are drawn more.
- ``exploit``: an exploitation share over MAP-Elites: with probability ``share`` a
  prompt gets the top-k (as ``best``), otherwise k cells drawn by the ``explore``
  rule (``uniform``, ``curiosity`` or ``novelty``). Drawn per prompt, not per parent, so an
  exploiting prompt shows the island's best lineage whole and an exploring one a
  sample of the cells.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

STRATEGIES = ("uniform", "boltzmann", "dgm", "best", "curiosity", "novelty", "exploit")
EXPLORE = ("uniform", "curiosity", "novelty")  # what the exploring prompts of ``exploit`` draw by

# FunSearch's defaults (Romera-Paredes et al. 2024, Methods, "Prompt building"):
# T0 = 0.1, N = 30,000.
TEMPERATURE0 = 0.1
TEMPERATURE_PERIOD = 30_000
# DGM's λ (sharpness of the sigmoid) and midpoint (Zhang et al. 2025, Appendix "parent selection").
DGM_LAMBDA = 10.0
DGM_MIDPOINT = 0.5
# Cully & Demiris 2018: a child that enters the archive adds 1 to each parent's curiosity, any other costs 0.5.
CURIOSITY_GAIN = 1.0
CURIOSITY_LOSS = 0.5
# Neighbours in the sparseness of ``novelty``: Lehman & Stanley use 15 in an unbounded archive;
# an island holds one elite per cell, so its nearest few are the cells around it.
NOVELTY_NEIGHBOURS = 3
# Share of prompts that exploit the island's best cells (``exploit``); chosen by
# benchmarks/search_ablation.py (see the README's "Parent selection").
EXPLOIT_SHARE = 0.5


def normalise(scores: np.ndarray) -> np.ndarray:
    """Min-max into [0, 1]; all equal -> all 1 (every elite is the best)."""
    lo, hi = float(scores.min()), float(scores.max())
    if hi - lo <= 0:
        return np.ones_like(scores)
    return (scores - lo) / (hi - lo)


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / max(temperature, 1e-12)
    z = np.exp(z - z.max())
    return z / z.sum()


def _draw(rng: np.random.Generator, n: int, k: int, p: np.ndarray | None = None) -> list[int]:
    """k positions of n: distinct while possible, then repeats (the same contract as uniform)."""
    if n == 0 or k == 0:
        return []
    if p is not None:
        # A distinct draw needs enough positions of non-zero probability.
        m = min(k, n, int(np.count_nonzero(p)))
    else:
        m = min(k, n)
    picks = rng.choice(n, size=m, replace=False, p=p).tolist()
    if k > m:
        picks += rng.choice(n, size=k - m, replace=True, p=p).tolist()
    return picks


def uniform(rng: np.random.Generator, n: int, k: int) -> list[int]:
    return _draw(rng, n, k)


def temperature(n_programs: int, t0: float = TEMPERATURE0, period: int = TEMPERATURE_PERIOD) -> float:
    return t0 * (1 - (n_programs % period) / period)


def boltzmann(rng: np.random.Generator, scores: list[float], sizes: list[float] | None, k: int,
              temp: float) -> list[int]:
    """k elites from k distinct score clusters (repeats only when there are fewer clusters)."""
    n = len(scores)
    if n == 0 or k == 0:
        return []
    s = np.asarray(scores, dtype=np.float64)
    signatures, cluster_of = np.unique(s, return_inverse=True)  # sorted: deterministic cluster order
    p = softmax(normalise(signatures), temp)
    picks = []
    for c in _draw(rng, len(signatures), k, p):
        members = np.flatnonzero(cluster_of == c)
        if len(members) == 1 or sizes is None:
            picks.append(int(members[int(rng.integers(len(members)))]))
            continue
        lengths = np.asarray(sizes, dtype=np.float64)[members]
        norm = (lengths - lengths.min()) / (lengths.max() + 1e-6)  # FunSearch's length normalisation
        picks.append(int(members[int(rng.choice(len(members), p=softmax(-norm, 1.0)))]))
    return picks


def dgm(rng: np.random.Generator, scores: list[float], children: list[int], k: int,
        lam: float = DGM_LAMBDA) -> list[int]:
    n = len(scores)
    if n == 0 or k == 0:
        return []
    s = normalise(np.asarray(scores, dtype=np.float64))
    w = 1.0 / (1.0 + np.exp(-lam * (s - DGM_MIDPOINT))) / (1.0 + np.asarray(children, dtype=np.float64))
    return _draw(rng, n, k, w / w.sum())


def best(scores: list[float], k: int, ids: list[int] | None = None) -> list[int]:
    """Top-k positions by score, repeating the best past n. Ties: the earlier position first, or with
    ``ids`` (program ids, neutral drift) the newer program."""
    n = len(scores)
    if n == 0 or k == 0:
        return []
    order = sorted(range(n), key=(lambda i: -scores[i]) if ids is None else (lambda i: (-scores[i], -ids[i])))
    return order[:k] + [order[0]] * max(0, k - n)


def credit(curiosities: dict[int, float], held: set[int], parent_ids, entered: bool) -> None:
    """Move the curiosity scores (program id -> score, updated in place) of the parents in ``held``
    after one of their children entered the archive (``entered``) or did not."""
    change = CURIOSITY_GAIN if entered else -CURIOSITY_LOSS
    for pid in parent_ids:
        if int(pid) in held:
            curiosities[int(pid)] = curiosities.get(int(pid), 0.0) + change


def curiosity(rng: np.random.Generator, curiosities: list[float], k: int) -> list[int]:
    """k positions drawn with p ∝ sigmoid(curiosity score)."""
    n = len(curiosities)
    if n == 0 or k == 0:
        return []
    w = 1.0 / (1.0 + np.exp(-np.asarray(curiosities, dtype=np.float64)))
    return _draw(rng, n, k, w / w.sum())


def unit_box(values, descriptors) -> np.ndarray:
    """Descriptor values (one row per elite) with each axis scaled from [low, high] to [0, 1]."""
    x = np.asarray(values, dtype=np.float64).reshape(len(values), len(descriptors))
    low = np.array([float(d.low) for d in descriptors])
    span = np.array([float(d.high) - float(d.low) for d in descriptors])
    return (x - low) / np.where(span > 0, span, 1.0)


def novelty(rng: np.random.Generator, points, k: int, neighbours: int = NOVELTY_NEIGHBOURS) -> list[int]:
    """k positions drawn with p ∝ sparseness: the mean distance of each point (one row per elite,
    its descriptors scaled to [0, 1]) to its ``neighbours`` nearest others. Uniform while every
    sparseness is 0 (one elite, or no descriptors)."""
    x = np.asarray(points, dtype=np.float64)
    n = len(x)
    if n == 0 or k == 0:
        return []
    x = x.reshape(n, -1)
    m = min(neighbours, n - 1)
    if m == 0:
        return _draw(rng, n, k)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1))
    np.fill_diagonal(dist, np.inf)
    sparseness = np.partition(dist, m - 1, axis=1)[:, :m].mean(axis=1)
    total = float(sparseness.sum())
    return _draw(rng, n, k, None if total <= 0 else sparseness / total)


def exploit(rng: np.random.Generator, scores: list[float], k: int, share: float = EXPLOIT_SHARE,
            explore: Callable[[], list[int]] | None = None, ids: list[int] | None = None) -> list[int]:
    """The top-k (``best``, ties broken by ``ids`` when given) with probability ``share``, else the k
    positions ``explore()`` draws (uniform when none is given; one draw decides the prompt)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"exploit share must be in [0, 1], got {share}")
    if len(scores) == 0 or k == 0:
        return []
    if rng.random() < share:
        return best(scores, k, ids)
    return explore() if explore is not None else uniform(rng, len(scores), k)

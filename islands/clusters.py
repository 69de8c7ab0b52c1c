"""FunSearch-style island without a behaviour grid: programs grouped into clusters
by score signature (FunSearch clusters by the vector of per-instance scores; the
engine hands islands one aggregate score, so the signature here is that score).

Used for the "FunSearch-style islands, no grid" arm of the search ablation, with
Boltzmann selection over clusters. Bounded: at most ``max_clusters`` clusters (the
lowest-scoring one is dropped to admit a better one) and ``cluster_cap`` programs per
cluster (the shortest are kept, as FunSearch prefers short programs within a cluster).
Same public methods as ``Island``, all plain-data in and out.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from islands import selection
from islands.island import ArchiveResult, Elite


class ClusterIsland:
    kind = "clusters"

    def __init__(self, descriptors: Sequence, qd_score_offset: float | None = None, *, max_clusters: int = 256,
                 cluster_cap: int = 4, temperature0: float = selection.TEMPERATURE0,
                 temperature_period: int = selection.TEMPERATURE_PERIOD, dgm_lambda: float = selection.DGM_LAMBDA,
                 exploit_share: float = selection.EXPLOIT_SHARE, explore: str = "uniform", **_grid_options):
        self.descriptors = tuple(descriptors)
        self.max_clusters, self.cluster_cap = int(max_clusters), int(cluster_cap)
        self.temperature0, self.temperature_period, self.dgm_lambda = temperature0, int(temperature_period), dgm_lambda
        self.exploit_share = float(exploit_share)
        if explore not in selection.EXPLORE:
            raise ValueError(f"explore must be one of {', '.join(selection.EXPLORE)}, got {explore!r}")
        self.explore = explore
        self._size_axis = next((i for i, d in enumerate(self.descriptors) if d.name == "size"), None)
        self._offset = qd_score_offset
        self._clusters: dict[float, list[Elite]] = {}  # signature -> members, shortest first
        self._children: dict[int, int] = {}
        self._curiosity: dict[int, float] = {}
        self.offered = 0

    def _size(self, e: Elite) -> float:
        return 0.0 if self._size_axis is None else e.descriptors[self._size_axis]

    def add(self, program_id: int, score: float, descriptors: Sequence[float], parents: Sequence[int] = ()) -> str:
        status = self._insert(program_id, score, descriptors)
        if parents:
            self._credit(parents, status in (ArchiveResult.NEW, ArchiveResult.IMPROVE))
        return status

    def _insert(self, program_id: int, score: float, descriptors: Sequence[float]) -> str:
        score = float(score)
        if not math.isfinite(score):
            raise ValueError(f"program {program_id}: score must be finite, got {score}")
        if len(descriptors) != len(self.descriptors):
            raise ValueError(f"expected {len(self.descriptors)} descriptor values, got {len(descriptors)}")
        e = Elite(int(program_id), score, tuple(float(v) for v in descriptors))
        members = self._clusters.get(score)
        if members is not None and any(m.program_id == e.program_id for m in members):
            return ArchiveResult.NOT_ADDED  # a duplicate: nothing changes
        self.offered += 1
        if self._offset is None:
            self._offset = score
        if members is None:
            if len(self._clusters) >= self.max_clusters:
                worst = min(self._clusters)
                if score <= worst:
                    return ArchiveResult.NOT_ADDED
                for m in self._clusters.pop(worst):
                    self._children.pop(m.program_id, None)
                    self._curiosity.pop(m.program_id, None)
            self._clusters[score] = [e]
            return ArchiveResult.NEW
        status = ArchiveResult.NEW
        if len(members) >= self.cluster_cap:
            if self._size(e) >= self._size(members[-1]):
                return ArchiveResult.NOT_ADDED
            gone = members.pop().program_id  # the longest leaves
            self._children.pop(gone, None)
            self._curiosity.pop(gone, None)
            status = ArchiveResult.IMPROVE
        members.append(e)
        members.sort(key=self._size)  # stable: equal sizes keep arrival order
        return status

    def clear(self) -> None:
        self._clusters.clear()
        self._children.clear()
        self._curiosity.clear()
        self.offered = 0

    def record_child(self, parent_ids: Sequence[int]) -> None:
        held = {e.program_id for e in self.elites()}
        for pid in parent_ids:
            if int(pid) in held:
                self._children[int(pid)] = self._children.get(int(pid), 0) + 1

    def children(self, program_id: int) -> int:
        return self._children.get(int(program_id), 0)

    def record_failure(self, parent_ids: Sequence[int]) -> None:
        self._credit(parent_ids, False)

    def _credit(self, parent_ids: Sequence[int], entered: bool) -> None:
        selection.credit(self._curiosity, {e.program_id for e in self.elites()}, parent_ids, entered)

    def curiosity(self, program_id: int) -> float:
        return self._curiosity.get(int(program_id), 0.0)

    def elites(self) -> list[Elite]:
        """Every program held, by signature ascending, shortest first within one."""
        return [e for s in sorted(self._clusters) for e in self._clusters[s]]

    def select_parents(self, rng: np.random.Generator, k: int, strategy: str = "boltzmann") -> list[Elite]:
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        pool = self.elites()
        return sorted((pool[p] for p in self._picks(rng, k, strategy, pool)), key=lambda e: e.score)

    def _picks(self, rng: np.random.Generator, k: int, strategy: str, pool: list[Elite]) -> list[int]:
        scores = [e.score for e in pool]
        if strategy == "uniform":
            picks = selection.uniform(rng, len(pool), k)
        elif strategy == "boltzmann":
            temp = selection.temperature(self.offered, self.temperature0, self.temperature_period)
            picks = selection.boltzmann(rng, scores, [self._size(e) for e in pool], k, temp)
        elif strategy == "dgm":
            picks = selection.dgm(rng, scores, [self.children(e.program_id) for e in pool], k, self.dgm_lambda)
        elif strategy == "best":
            picks = selection.best(scores, k)
        elif strategy == "curiosity":
            picks = selection.curiosity(rng, [self.curiosity(e.program_id) for e in pool], k)
        elif strategy == "novelty":
            picks = selection.novelty(rng, selection.unit_box([e.descriptors for e in pool], self.descriptors), k)
        elif strategy == "exploit":
            picks = selection.exploit(rng, scores, k, self.exploit_share,
                                      lambda: self._picks(rng, k, self.explore, pool))
        else:
            raise ValueError(f"strategy must be one of {', '.join(selection.STRATEGIES)}, got {strategy!r}")
        return picks

    def sample_elites(self, rng: np.random.Generator, m: int, exclude_cells: Sequence[int] = ()) -> list[Elite]:
        skip = set(exclude_cells)
        pool = [e for e, cell in self.elite_cells() if cell not in skip]
        if m <= 0 or not pool:
            return []
        return [pool[int(i)] for i in rng.choice(len(pool), size=min(m, len(pool)), replace=False)]

    def best(self) -> Elite | None:
        return self._clusters[max(self._clusters)][0] if self._clusters else None

    def cell_of_elite(self, e: Elite) -> int:
        """A cluster's "cell": its rank among the signatures held."""
        return sorted(self._clusters).index(e.score) if e.score in self._clusters else -1

    def elite_cells(self) -> list[tuple[Elite, int]]:
        """Every program with its cluster's "cell", in ``elites()`` order."""
        rank = {signature: r for r, signature in enumerate(sorted(self._clusters))}
        return [(e, rank[e.score]) for e in self.elites()]

    def cell_of(self, descriptors: Sequence[float]) -> int:
        return 0  # no grid: behaviour does not place a program

    def occupied_cell(self, program_id: int) -> int | None:
        for e in self.elites():
            if e.program_id == int(program_id):
                return self.cell_of_elite(e)
        return None

    @property
    def cells(self) -> int:
        return self.max_clusters

    @property
    def archive(self):
        return None  # no pyribs grid to draw

    def stats(self) -> dict:
        """QD score here sums (signature - offset) over clusters: not comparable with a grid's."""
        off = self._offset or 0.0
        return {"elites": len(self), "coverage": len(self._clusters) / self.max_clusters,
                "qd_score": float(sum(s - off for s in self._clusters)),
                "best": max(self._clusters) if self._clusters else None,
                "cells": self.max_clusters, "qd_score_offset": self._offset}

    def __len__(self) -> int:
        return sum(len(m) for m in self._clusters.values())

"""One island: a MAP-Elites archive of scored programs on a pyribs ``GridArchive``.

An elite is stored as pyribs' ``solution``: a scalar int64 holding the program id
(``solution_dim=()``, ``solution_dtype=np.int64``). The program text lives in the
store; the archive only needs the id, its score (pyribs' ``objective``) and its
descriptors (pyribs' ``measures``).

Everything here is a pure function of the calls made and the ``rng`` passed in:
pyribs' own generator (used by ``sample_elites``) is never touched, so an island
rebuilt by replaying the same calls is identical.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from ribs.archives import AddStatus, GridArchive

if TYPE_CHECKING:  # only the attributes name/low/high/bins are used
    from evosearch.problem import Descriptor

_STATUS = {AddStatus.NOT_ADDED: "not_added", AddStatus.IMPROVE_EXISTING: "improve", AddStatus.NEW: "new"}


@dataclass(frozen=True)
class Elite:
    """A program holding a cell: its id, score (higher is better) and descriptors
    (as stored, i.e. clipped into the descriptor ranges)."""

    program_id: int
    score: float
    descriptors: tuple[float, ...]


class Island:
    """A MAP-Elites grid over fixed descriptor ranges; one elite per cell.

    Insertion follows MAP-Elites (Mouret & Clune 2015): a program enters an empty
    cell, or replaces the cell's elite only with a strictly higher score (ties keep
    the incumbent). Descriptor values outside a range are clipped into the edge cell.
    A problem with no descriptors gets a single cell, i.e. the island keeps its best.

    QD score: scores may be negative, so the QD score is Σ (score − offset) over the
    elites. ``qd_score_offset`` fixes the offset; when it is None (the default) the
    offset is the first score the island ever receives, which in the engine is the
    seed program's. The QD score then counts each cell's improvement over the seed:
    comparable across islands and over time (a reset does not move it); a cell held
    by a program worse than the seed subtracts.
    """

    def __init__(self, descriptors: Sequence[Descriptor], qd_score_offset: float | None = None):
        self.descriptors = tuple(descriptors)
        for d in self.descriptors:
            if not (math.isfinite(d.low) and math.isfinite(d.high) and d.low < d.high):
                raise ValueError(f"descriptor '{d.name}': need finite low < high, got [{d.low}, {d.high}]")
            if int(d.bins) != d.bins or d.bins < 1:
                raise ValueError(f"descriptor '{d.name}': bins must be a positive integer, got {d.bins}")
        if qd_score_offset is not None and not math.isfinite(qd_score_offset):
            raise ValueError(f"qd_score_offset must be finite, got {qd_score_offset}")
        self._low = np.array([d.low for d in self.descriptors], dtype=np.float64)
        self._high = np.array([d.high for d in self.descriptors], dtype=np.float64)
        self._offset = qd_score_offset
        self._archive = self._new_archive(0.0 if qd_score_offset is None else qd_score_offset)

    def _new_archive(self, qd_score_offset: float) -> GridArchive:
        # No descriptors: one dummy axis with one bin (measures are always [0.0]).
        dims = [int(d.bins) for d in self.descriptors] or [1]
        ranges = [(d.low, d.high) for d in self.descriptors] or [(0.0, 1.0)]
        return GridArchive(solution_dim=(), solution_dtype=np.int64, dims=dims, ranges=ranges,
                           qd_score_offset=qd_score_offset, seed=0)

    # -- writing --------------------------------------------------------------------

    def clip(self, descriptors: Sequence[float]) -> np.ndarray:
        """Descriptor values as stored: checked, then clipped into their ranges."""
        if len(descriptors) != len(self.descriptors):
            raise ValueError(f"expected {len(self.descriptors)} descriptor values "
                             f"({', '.join(d.name for d in self.descriptors) or 'none'}), got {len(descriptors)}")
        values = np.asarray(descriptors, dtype=np.float64)
        if np.isnan(values).any():
            name = self.descriptors[int(np.flatnonzero(np.isnan(values))[0])].name
            raise ValueError(f"descriptor '{name}' is NaN")
        return np.clip(values, self._low, self._high)  # also maps ±inf onto the edges

    def add(self, program_id: int, score: float, descriptors: Sequence[float]) -> str:
        """Offer a program; returns "new", "improve" or "not_added"."""
        if not math.isfinite(score):
            raise ValueError(f"program {program_id}: score must be finite, got {score}")
        measures = self.clip(descriptors) if self.descriptors else np.zeros(1)
        if self._offset is None:
            # The archive is empty here, so fixing its offset by rebuilding loses nothing.
            self._offset = float(score)
            self._archive = self._new_archive(self._offset)
        info = self._archive.add_single(solution=int(program_id), objective=float(score), measures=measures)
        return _STATUS[AddStatus(int(info["status"]))]

    def clear(self) -> None:
        """Empty every cell (a FunSearch reset); the QD score offset stays."""
        self._archive.clear()

    # -- reading --------------------------------------------------------------------

    def _elite(self, solution, objective, measures) -> Elite:
        desc = tuple(float(m) for m in measures) if self.descriptors else ()
        return Elite(program_id=int(solution), score=float(objective), descriptors=desc)

    def _occupied(self) -> dict[str, np.ndarray]:
        """Elite data sorted by cell index (pyribs keeps insertion order)."""
        data = self._archive.data(["index", "solution", "objective", "measures"])
        order = np.argsort(data["index"], kind="stable")
        return {k: v[order] for k, v in data.items()}

    def select_parents(self, rng: np.random.Generator, k: int) -> list[Elite]:
        """k elites drawn uniformly over occupied cells, distinct while the island has
        enough (repeats only when k exceeds the number of elites), sorted by score
        ascending so the best comes last (FunSearch's prompt order)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        n = len(self._archive)
        if n == 0 or k == 0:
            return []
        picks = rng.choice(n, size=min(k, n), replace=False)
        if k > n:
            picks = np.concatenate([picks, rng.choice(n, size=k - n, replace=True)])
        data = self._occupied()
        chosen = [self._elite(data["solution"][i], data["objective"][i], data["measures"][i]) for i in picks]
        return sorted(chosen, key=lambda e: e.score)  # stable: equal scores keep draw order

    def best(self) -> Elite | None:
        """The highest-scoring elite (the first to reach that score on ties)."""
        e = self._archive.best_elite  # elitist archive (learning_rate 1): always still present
        return None if e is None else self._elite(e["solution"], e["objective"], e["measures"])

    def elites(self) -> list[Elite]:
        """All elites, ordered by cell index."""
        data = self._occupied()
        return [self._elite(s, o, m) for s, o, m in zip(data["solution"], data["objective"], data["measures"])]

    def cell_of(self, descriptors: Sequence[float]) -> int:
        """The cell index (pyribs' ``index_of``) a program with these descriptors lands in."""
        measures = self.clip(descriptors) if self.descriptors else np.zeros(1)
        return int(self._archive.index_of_single(measures))

    @property
    def cells(self) -> int:
        return int(self._archive.cells)

    @property
    def archive(self) -> GridArchive:
        """The pyribs archive, e.g. for ``ribs.visualize.grid_archive_heatmap``; read it, do not add to it."""
        return self._archive

    def stats(self) -> dict:
        """{"elites", "coverage", "qd_score", "best"} from ``archive.stats``, plus
        "cells" and "qd_score_offset" (None until the first insertion)."""
        s = self._archive.stats
        return {
            "elites": int(s.num_elites),
            "coverage": float(s.coverage),
            "qd_score": float(s.qd_score),
            "best": None if s.obj_max is None else float(s.obj_max),
            "cells": self.cells,
            "qd_score_offset": self._offset,
        }

    def __len__(self) -> int:
        return len(self._archive)

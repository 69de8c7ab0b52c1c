"""One island: a MAP-Elites archive of scored programs on a pyribs archive
(``GridArchive`` by default; ``CVTArchive``; ``CategoricalArchive`` when every axis
is categorical).

An elite is stored as pyribs' ``solution``: a scalar int64 holding the program id
(``solution_dim=()``, ``solution_dtype=np.int64``). The program text lives in the
store; the archive only needs the id, its score (pyribs' ``objective``) and its
descriptors (pyribs' ``measures``).

pyribs decides every insertion that changes the archive and computes the QD
statistics. Beside it the island keeps a small mirror of the occupied cells (id,
score, descriptors per cell, in first-occupation order) so that parent selection
and the common "not better than the incumbent" insertion are O(1) Python work
instead of a pyribs batch call (~100 µs each): a rejected offer never reaches
pyribs, which would reject it by the same rule.

Everything here is a pure function of the calls made and the ``rng`` passed in:
pyribs' own generator is never used, so an island rebuilt by replaying the same
calls is identical.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np
from ribs.archives import AddStatus, CategoricalArchive, CVTArchive, GridArchive

from islands import selection

if TYPE_CHECKING:  # only the attributes name/low/high/bins are used
    from evosearch.problem import Descriptor



class ArchiveResult(StrEnum):
    """What offering a program to an island did (recorded per program as ``archive``)."""

    NEW = "new"  # it took an empty cell
    IMPROVE = "improve"  # it beat the cell's elite
    REPLACE = "replace"  # it tied the cell's elite and took its place (neutral drift)
    NOT_ADDED = "not_added"
    STALE = "stale"  # drawn before its island was reset, and not better than what the island holds now


_STATUS = {AddStatus.NOT_ADDED: ArchiveResult.NOT_ADDED, AddStatus.IMPROVE_EXISTING: ArchiveResult.IMPROVE,
           AddStatus.NEW: ArchiveResult.NEW}
_EPS = 1e-6  # GridArchive's epsilon, passed explicitly because the fast cell index repeats its formula
ARCHIVES = ("grid", "cvt")  # the kinds of islands.archives.ARCHIVES an Island hosts


@dataclass(frozen=True)
class Elite:
    """A program holding a cell: its id, score (higher is better) and descriptors
    (as stored, i.e. clipped into the descriptor ranges)."""

    program_id: int
    score: float
    descriptors: tuple[float, ...]


@dataclass(frozen=True)
class Categorical:
    """A discrete behaviour axis: one cell per category. Values are given as the
    category itself or its index; elites store the index (a float, like every axis)."""

    name: str
    categories: tuple

    @property
    def low(self) -> float:
        return 0.0

    @property
    def high(self) -> float:
        return float(len(self.categories))

    @property
    def bins(self) -> int:
        return len(self.categories)


class Island:
    """A MAP-Elites archive over fixed descriptor ranges; one elite per cell.

    Insertion follows MAP-Elites (Mouret & Clune 2015): a program enters an empty
    cell, or replaces the cell's elite only with a strictly higher score (ties keep
    the incumbent). Descriptor values outside a range are clipped into the edge cell.
    A problem with no descriptors gets a single cell, i.e. the island keeps its best.
    With ``neutral`` (neutral drift, as Cartesian GP's (1+λ) accepts offspring that tie their parent),
    a tie replaces the incumbent instead, and the newer program comes first among equal scores
    wherever elites are ranked: on a coarse score (bin packing counts whole bins) most children tie
    their parent, and drifting along them reaches changes that a strict climb never accepts.

    QD score: scores may be negative, so the QD score is Σ (score − offset) over the
    elites. ``qd_score_offset`` fixes the offset; when it is None (the default) the
    offset is the first score the island ever receives, which in the engine is the
    seed program's. The QD score then counts each cell's improvement over the seed:
    comparable across islands and over time (a reset does not move it); a cell held
    by a program worse than the seed subtracts.

    ``archive``: "grid" (``GridArchive``; ``CategoricalArchive`` when every axis is
    ``Categorical``) or "cvt" (``CVTArchive`` with ``cvt_cells`` centroids from
    k-means over the descriptor box, fixed by seed 0).
    """

    def __init__(self, descriptors: Sequence[Descriptor], qd_score_offset: float | None = None, *,
                 archive: str = "grid", cvt_cells: int = 64, temperature0: float = selection.TEMPERATURE0,
                 temperature_period: int = selection.TEMPERATURE_PERIOD, dgm_lambda: float = selection.DGM_LAMBDA,
                 exploit_share: float = selection.EXPLOIT_SHARE, explore: str = "uniform", neutral: bool = False):
        self.descriptors = tuple(descriptors)
        self.neutral = bool(neutral)
        if archive not in ARCHIVES:
            raise ValueError(f"archive must be one of {', '.join(ARCHIVES)}, got {archive!r}")
        for d in self.descriptors:
            if isinstance(d, Categorical):
                if len(d.categories) < 1 or len(set(d.categories)) != len(d.categories):
                    raise ValueError(f"descriptor '{d.name}': need distinct categories, got {d.categories}")
                continue
            if not (math.isfinite(d.low) and math.isfinite(d.high) and d.low < d.high):
                raise ValueError(f"descriptor '{d.name}': need finite low < high, got [{d.low}, {d.high}]")
            if int(d.bins) != d.bins or d.bins < 1:
                raise ValueError(f"descriptor '{d.name}': bins must be a positive integer, got {d.bins}")
        if qd_score_offset is not None and not math.isfinite(qd_score_offset):
            raise ValueError(f"qd_score_offset must be finite, got {qd_score_offset}")
        if int(cvt_cells) != cvt_cells or cvt_cells < 1:
            raise ValueError(f"cvt_cells must be a positive integer, got {cvt_cells}")
        self.kind = ("categorical" if self.descriptors and all(isinstance(d, Categorical) for d in self.descriptors)
                     else archive)
        if not 0.0 <= exploit_share <= 1.0:
            raise ValueError(f"exploit_share must be in [0, 1], got {exploit_share}")
        self.temperature0, self.temperature_period, self.dgm_lambda = temperature0, int(temperature_period), dgm_lambda
        self.exploit_share = float(exploit_share)
        if explore not in selection.EXPLORE:
            raise ValueError(f"explore must be one of {', '.join(selection.EXPLORE)}, got {explore!r}")
        self.explore = explore
        self._cvt_cells = int(cvt_cells)
        self._centroids = None  # computed once, reused when the archive is rebuilt
        self._low = [float(d.low) for d in self.descriptors] or [0.0]
        self._high = [float(d.high) for d in self.descriptors] or [1.0]
        self._dims = [int(d.bins) for d in self.descriptors] or [1]
        self._span = [h - lo for lo, h in zip(self._low, self._high)]
        self._strides = [int(np.prod(self._dims[i + 1:])) for i in range(len(self._dims))]
        self._size_axis = next((i for i, d in enumerate(self.descriptors) if d.name == "size"), None)
        self._offset = qd_score_offset
        self._archive = self._new_archive(0.0 if qd_score_offset is None else qd_score_offset)
        self._reset_mirror()
        self.offered = 0  # programs offered since the last clear: FunSearch's n in the temperature schedule

    def _new_archive(self, qd_score_offset: float):
        common = dict(solution_dim=(), solution_dtype=np.int64, qd_score_offset=qd_score_offset, seed=0)
        if self.kind == "categorical":
            return CategoricalArchive(categories=[list(d.categories) for d in self.descriptors],
                                      measures_dtype=object, **common)
        ranges = list(zip(self._low, self._high))
        if self.kind == "cvt":
            archive = CVTArchive(centroids=self._cvt_cells if self._centroids is None else self._centroids,
                                 ranges=ranges, samples=20 * self._cvt_cells, **common)
            self._centroids = archive.centroids
            return archive
        # No descriptors: one dummy axis with one bin (measures are always [0.0]).
        return GridArchive(dims=self._dims, ranges=ranges, epsilon=_EPS, **common)

    def _reset_mirror(self) -> None:
        self._pos: dict[int, int] = {}  # cell -> position in the lists below
        self._cell: list[int] = []
        self._ids: list[int] = []
        self._scores: list[float] = []
        self._desc: list[tuple[float, ...]] = []
        self._children: dict[int, int] = {}  # program id -> children drawn from it here (DGM)
        self._curiosity: dict[int, float] = {}  # program id -> curiosity score (selection.curiosity)

    # -- writing --------------------------------------------------------------------

    def clip(self, descriptors: Sequence) -> tuple[float, ...]:
        """Descriptor values as stored: checked, then clipped into their ranges
        (categories become their index)."""
        if len(descriptors) != len(self.descriptors):
            raise ValueError(f"expected {len(self.descriptors)} descriptor values "
                             f"({', '.join(d.name for d in self.descriptors) or 'none'}), got {len(descriptors)}")
        out = []
        for d, v, lo, hi in zip(self.descriptors, descriptors, self._low, self._high):
            if isinstance(d, Categorical):
                out.append(_category_index(d, v))
                continue
            v = float(v)
            if v != v:
                raise ValueError(f"descriptor '{d.name}' is NaN")
            out.append(lo if v < lo else hi if v > hi else v)  # also maps ±inf onto the edges
        return tuple(out)

    def _index(self, values: tuple[float, ...]) -> int:
        """pyribs' cell index of clipped values; for the grid, its formula in plain Python."""
        if not self.descriptors:
            return 0
        if self.kind == "grid":
            index = 0
            for v, lo, span, dim, stride in zip(values, self._low, self._span, self._dims, self._strides):
                g = int((dim * (v - lo) + _EPS) / span)  # GridArchive.index_of, element by element
                index += (0 if g < 0 else dim - 1 if g >= dim else g) * stride
            return index
        return int(self._archive.index_of_single(self._measures(values)))

    def _measures(self, values: tuple[float, ...]):
        if not self.descriptors:
            return np.zeros(1)
        if self.kind == "categorical":
            m = np.empty(len(values), dtype=object)
            m[:] = [d.categories[int(v)] for d, v in zip(self.descriptors, values)]
            return m
        return np.asarray(values, dtype=np.float64)

    def add(self, program_id: int, score: float, descriptors: Sequence, parents: Sequence[int] = ()) -> str:
        """Offer a program; returns "new", "improve" or "not_added". ``parents``: the ids its prompt
        showed, whose curiosity scores the outcome changes (those held here)."""
        status = self._insert(program_id, score, descriptors)
        if parents:
            self._credit(parents, status in (ArchiveResult.NEW, ArchiveResult.IMPROVE))
        return status

    def _insert(self, program_id: int, score: float, descriptors: Sequence) -> str:
        score = float(score)
        if not math.isfinite(score):
            raise ValueError(f"program {program_id}: score must be finite, got {score}")
        values = self.clip(descriptors)
        cell = self._index(values)
        pos = self._pos.get(cell)
        if pos is not None and self._ids[pos] == int(program_id):
            return ArchiveResult.NOT_ADDED  # a duplicate of the elite itself: nothing changes, not even the count
        self.offered += 1
        if pos is not None and score <= self._scores[pos]:
            if not (self.neutral and score == self._scores[pos]):
                return ArchiveResult.NOT_ADDED  # pyribs' rule (threshold = incumbent's objective), without the call
            # A tie: pyribs keeps its incumbent (same objective, so its statistics stay right); the mirror,
            # which every reader of programs goes through, holds the newcomer.
            self._children.pop(self._ids[pos], None)
            self._curiosity.pop(self._ids[pos], None)
            self._ids[pos], self._desc[pos] = int(program_id), values
            return ArchiveResult.REPLACE
        if self._offset is None:
            # The archive is empty here, so fixing its offset by rebuilding loses nothing.
            self._offset = score
            self._archive = self._new_archive(self._offset)
        info = self._archive.add_single(solution=int(program_id), objective=score, measures=self._measures(values))
        status = _STATUS[AddStatus(int(info["status"]))]
        if status == "new":
            self._pos[cell] = len(self._ids)
            self._cell.append(cell)
            self._ids.append(int(program_id))
            self._scores.append(score)
            self._desc.append(values)
        elif status == "improve":
            self._children.pop(self._ids[pos], None)  # an evicted elite is never drawn again here
            self._curiosity.pop(self._ids[pos], None)
            self._ids[pos], self._scores[pos], self._desc[pos] = int(program_id), score, values
        return status

    def clear(self) -> None:
        """Empty every cell (a FunSearch reset); the QD score offset stays."""
        self._archive.clear()
        self._reset_mirror()
        self.offered = 0

    def record_child(self, parent_ids: Sequence[int]) -> None:
        """Count one more child (whatever its outcome) of each parent still held here (DGM)."""
        held = set(self._ids)
        for pid in parent_ids:
            if int(pid) in held:
                self._children[int(pid)] = self._children.get(int(pid), 0) + 1

    def children(self, program_id: int) -> int:
        return self._children.get(int(program_id), 0)

    def record_failure(self, parent_ids: Sequence[int]) -> None:
        """A child of these parents failed (never offered): lower the curiosity of those held here."""
        self._credit(parent_ids, False)

    def _credit(self, parent_ids: Sequence[int], entered: bool) -> None:
        selection.credit(self._curiosity, set(self._ids), parent_ids, entered)

    def curiosity(self, program_id: int) -> float:
        return self._curiosity.get(int(program_id), 0.0)

    # -- reading --------------------------------------------------------------------

    def _elite_at(self, pos: int) -> Elite:
        return Elite(program_id=self._ids[pos], score=self._scores[pos], descriptors=self._desc[pos])

    def select_parents(self, rng: np.random.Generator, k: int, strategy: str = "uniform") -> list[Elite]:
        """k elites chosen by ``strategy`` (see ``islands.selection``), distinct while
        the island has enough (repeats only when k exceeds the candidates), sorted by
        score ascending so the best comes last (FunSearch's prompt order; with ``neutral`` the
        newer of equal scores comes later)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        return sorted((self._elite_at(p) for p in self._picks(rng, k, strategy)),  # stable on equal scores
                      key=(lambda e: (e.score, e.program_id)) if self.neutral else (lambda e: e.score))

    def _picks(self, rng: np.random.Generator, k: int, strategy: str) -> list[int]:
        if strategy == "uniform":
            picks = selection.uniform(rng, len(self._ids), k)
        elif strategy == "boltzmann":
            sizes = None if self._size_axis is None else [d[self._size_axis] for d in self._desc]
            temp = selection.temperature(self.offered, self.temperature0, self.temperature_period)
            picks = selection.boltzmann(rng, self._scores, sizes, k, temp)
        elif strategy == "dgm":
            picks = selection.dgm(rng, self._scores, [self._children.get(i, 0) for i in self._ids], k,
                                  self.dgm_lambda)
        elif strategy == "best":
            picks = selection.best(self._scores, k, self._ids if self.neutral else None)
        elif strategy == "curiosity":
            picks = selection.curiosity(rng, [self.curiosity(i) for i in self._ids], k)
        elif strategy == "novelty":
            picks = selection.novelty(rng, selection.unit_box(self._desc, self.descriptors), k)
        elif strategy == "exploit":
            picks = selection.exploit(rng, self._scores, k, self.exploit_share,
                                      lambda: self._picks(rng, k, self.explore), self._ids if self.neutral else None)
        else:
            raise ValueError(f"strategy must be one of {', '.join(selection.STRATEGIES)}, got {strategy!r}")
        return picks

    def sample_elites(self, rng: np.random.Generator, m: int, exclude_cells: Sequence[int] = ()) -> list[Elite]:
        """Up to m distinct elites drawn uniformly from cells not in ``exclude_cells``."""
        skip = set(exclude_cells)
        candidates = [p for p, c in enumerate(self._cell) if c not in skip]
        if m <= 0 or not candidates:
            return []
        picks = rng.choice(len(candidates), size=min(m, len(candidates)), replace=False)
        return [self._elite_at(candidates[int(i)]) for i in picks]

    def best(self) -> Elite | None:
        """The highest-scoring elite (the first to reach that score on ties; the newest with ``neutral``)."""
        if not self._ids:
            return None
        if self.neutral:
            return self._elite_at(max(range(len(self._ids)), key=lambda p: (self._scores[p], self._ids[p])))
        e = self._archive.best_elite  # elitist archive (learning_rate 1): always still present
        return self._elite_at(self._pos[int(e["index"])])

    def elites(self) -> list[Elite]:
        """All elites, ordered by cell index."""
        return [self._elite_at(p) for p in sorted(range(len(self._ids)), key=self._cell.__getitem__)]

    def elite_cells(self) -> list[tuple[Elite, int]]:
        """Every elite with the cell it holds, in ``elites()`` order (one call where a proxy is remote)."""
        return [(self._elite_at(p), self._cell[p]) for p in sorted(range(len(self._ids)), key=self._cell.__getitem__)]

    def cell_of(self, descriptors: Sequence) -> int:
        """The cell index (pyribs' ``index_of``) a program with these descriptors lands in."""
        return self._index(self.clip(descriptors))

    def occupied_cell(self, program_id: int) -> int | None:
        """The cell an elite holds, or None when the program is not an elite here."""
        try:
            return self._cell[self._ids.index(int(program_id))]
        except ValueError:
            return None

    @property
    def cells(self) -> int:
        return int(self._archive.cells)

    @property
    def archive(self):
        """The pyribs archive, e.g. for ``ribs.visualize``; read it, do not add to it."""
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
        return len(self._ids)


def _category_index(d: Categorical, value) -> float:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if value != value:
            raise ValueError(f"descriptor '{d.name}' is NaN")
        if float(value).is_integer() and 0 <= value < len(d.categories) and value not in d.categories:
            return float(value)
    try:
        return float(d.categories.index(value))
    except ValueError:
        raise ValueError(f"descriptor '{d.name}': {value!r} is not one of {d.categories}") from None

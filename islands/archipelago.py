"""The island model: several MAP-Elites islands evolving apart, joined by migration
(each island's best elites offered to the next island on a ring, or to a random
other island) and FunSearch's periodic reset (the weaker half of islands restart
from a survivor's best).

Deterministic: the only randomness is the ``rng`` passed in, so replaying the
recorded results in order with generators in the same states rebuilds the same
archipelago. Islands get spawned children of it (``_child``), never the caller's
generator itself, so local islands and islands in Ray actors draw alike.

Resets and asynchronous samples: a prompt drawn from island i before i was reset
produces a child of the discarded lineage. Each island has an epoch, bumped by
every reset; the engine records the epoch a prompt was drawn at and hands it to
``add``. A child from an older epoch ("stale") enters the reset island only if it
beats that island's best (so nothing better than what the island holds is ever
lost, and the global best never is); otherwise it stays out of the archive (it is
still in the store) and ``add`` returns "stale".
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from islands.archives import island_class
from islands.island import ArchiveResult, Elite, Island
from islands.selection import EXPLOIT_SHARE

if TYPE_CHECKING:
    from evosearch.problem import Descriptor

TOPOLOGIES = ("ring", "random")
MATE_TOURNAMENT = 4  # mates drawn per crossover; the most dissimilar one wins


def new_island(descriptors: Sequence[Descriptor], qd_score_offset: float | None = None, **options):
    """The default island factory: the class ``islands.archives.ARCHIVES`` names for ``archive``
    (default grid), built with the other options."""
    return island_class(options.get("archive", "grid"))(descriptors, qd_score_offset, **options)


class Archipelago:
    """``n_islands`` islands over the same descriptor axes.

    ``on_commit(i, rng)`` is called after the i-th result (1-based) is inserted;
    migration happens when i is a positive multiple of ``migration_interval``, a
    reset when i is a positive multiple of ``reset_interval`` (0 turns either off;
    on the same commit, migration runs first).

    ``make_island(descriptors, qd_score_offset, **island_kwargs)`` builds each
    island (the Ray backend passes one that puts it in an actor); ``island_kwargs``
    are e.g. ``archive``, ``cvt_cells``, ``temperature0``, ``temperature_period``.
    ``selection`` is the default parent-selection strategy: "uniform", "boltzmann",
    "dgm", "best", "curiosity", "novelty", "exploit", or "seed" (always the founder given to ``add_everywhere``).
    "exploit" works across islands: on a share of prompts (``island_kwargs["exploit_share"]``)
    the parents are the best elites of the whole archipelago, on the others cells of the
    prompt's own island drawn by ``island_kwargs["explore"]`` (uniform, curiosity or novelty). So the
    best lineage is climbed with the whole budget, as by (1+1)-EPS, while every island keeps
    filling its cells as in MAP-Elites. ``island_kwargs["neutral"]``: neutral drift (``Island``), here
    too the newer of equal-scoring elites ranks first.
    """

    def __init__(self, n_islands: int, descriptors: Sequence[Descriptor], migration_interval: int = 0,
                 migration_size: int = 1, reset_interval: int = 0, qd_score_offset: float | None = None,
                 make_island: Callable[..., Island] = new_island, *, topology: str = "ring",
                 selection: str = "uniform", island_kwargs: dict | None = None):
        for name, value, low in (("n_islands", n_islands, 1), ("migration_interval", migration_interval, 0),
                                 ("migration_size", migration_size, 1), ("reset_interval", reset_interval, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {', '.join(TOPOLOGIES)}, got {topology!r}")
        self.descriptors = tuple(descriptors)
        self.migration_interval = int(migration_interval)
        self.migration_size = int(migration_size)
        self.reset_interval = int(reset_interval)
        self.topology = topology
        self.selection = selection
        self.exploit_share = float((island_kwargs or {}).get("exploit_share", EXPLOIT_SHARE))
        self.explore = (island_kwargs or {}).get("explore", "uniform")
        self.neutral = bool((island_kwargs or {}).get("neutral", False))  # ties go to the newer program
        self.founder: Elite | None = None
        # ``make_island`` lets the Ray backend put each island in an actor (islands/actor.py).
        self.islands: list[Island] = [make_island(self.descriptors, qd_score_offset, **(island_kwargs or {}))
                                      for _ in range(int(n_islands))]
        self.epochs = [0] * int(n_islands)  # resets per island

    def _island(self, island: int) -> Island:
        if not 0 <= island < len(self.islands):
            raise IndexError(f"island {island} out of range (0..{len(self.islands) - 1})")
        return self.islands[island]

    def add(self, island: int, program_id: int, score: float, descriptors: Sequence[float],
            epoch: int | None = None, parents: Sequence[int] = ()) -> str:
        """Offer a child to its island. ``epoch``: the island's epoch when the child's
        prompt was drawn (None: current); see the module note on stale children.
        ``parents``: its prompt's programs, whose curiosity scores the outcome moves."""
        isl = self._island(island)
        if epoch is not None and epoch != self.epochs[island]:
            best = isl.best()
            if best is not None and not score > best.score:
                return ArchiveResult.STALE
        if parents:  # passed only when a selection reads curiosity: other island classes need not take them
            return isl.add(program_id, score, descriptors, [int(p) for p in parents])
        return isl.add(program_id, score, descriptors)

    @staticmethod
    def settle(pending: list, wait: bool = False) -> list:
        """Archive results of inserts still under way (islands in actors answer later; see
        islands.actor.RayArchipelago): (pending, result) for those answered. Local ``add`` answers at once."""
        return []

    def add_everywhere(self, program_id: int, score: float, descriptors: Sequence[float]) -> None:
        """Give every island the same program (the seed, which becomes the founder)."""
        for isl in self.islands:
            isl.add(program_id, score, descriptors)
        self.founder = Elite(int(program_id), float(score), tuple(float(v) for v in descriptors))

    def epoch(self, island: int) -> int:
        self._island(island)
        return self.epochs[island]

    # -- parents and prompt material -------------------------------------------------

    def select_parents(self, island: int, rng: np.random.Generator, k: int,
                       strategy: str | None = None, exploit: bool | None = None) -> list[Elite]:
        """k parents from the island, sorted by score ascending (best last). ``exploit``: the "exploit"
        strategy's choice for this prompt made by the caller (the planner, which records it), else drawn here."""
        strategy = strategy or self.selection
        if strategy == "seed":  # the "random mutation of the seed" baseline
            if k < 0:
                raise ValueError(f"k must be >= 0, got {k}")
            return [] if self.founder is None else [self.founder] * k
        if strategy == "exploit":
            draw = _child(rng)
            chance = draw.random()  # drawn either way: a choice given leaves the island's draws as a drawn one
            if exploit is None:
                exploit = chance < self.exploit_share
            if exploit:
                return self.top(k)
            return self._island(island).select_parents(draw, k, self.explore)
        return self._island(island).select_parents(_child(rng), k, strategy)

    def top(self, k: int) -> list[Elite]:
        """The k best distinct elites of all islands (repeating the best past their number), sorted by
        score ascending. Ties: lower island, then cell order (the newer program with neutral drift)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        found: dict[int, Elite] = {}
        for isl in self.islands:
            for e in _top(isl, k, self.neutral):
                found.setdefault(e.program_id, e)
        best = sorted(found.values(), key=self._rank)[:k]  # stable: first found wins ties
        if best:
            best += [best[0]] * (k - len(best))
        return sorted(best, key=self._rank, reverse=True)  # ascending, best last; reverse keeps ties stable

    def record_child(self, island: int, parent_ids: Sequence[int]) -> None:
        """One more child (any outcome) of each parent, counted on the island it was drawn from (DGM)."""
        self._island(island).record_child([int(p) for p in parent_ids])

    def record_failure(self, island: int, parent_ids: Sequence[int]) -> None:
        """A child drawn from ``island`` failed: its parents' curiosity falls there."""
        self._island(island).record_failure([int(p) for p in parent_ids])

    def select_mates(self, island: int, rng: np.random.Generator) -> list[Elite]:
        """Two parents for crossover, sorted by score ascending: the first drawn from
        ``island`` by the default strategy; its mate from a different cell of the same
        island or from another island, the most dissimilar (descriptor distance,
        ranges normalised; higher score on ties) of ``MATE_TOURNAMENT`` uniform draws.
        One parent only when no other elite exists anywhere."""
        first = self.select_parents(island, rng, 1)
        if not first:
            return []
        first = first[0]
        pools = [isl.elite_cells() for isl in self.islands]  # one call per island
        own_cell = next((c for e, c in pools[island] if e.program_id == first.program_id), None)
        candidates = [e for j, pool in enumerate(pools) for e, c in pool
                      if e.program_id != first.program_id and not (j == island and c == own_cell)]
        if not candidates:
            return [first]
        draws = rng.choice(len(candidates), size=min(MATE_TOURNAMENT, len(candidates)), replace=False)
        mate = max((candidates[int(d)] for d in draws), key=lambda e: (self.distance(first, e), e.score))
        return sorted([first, mate], key=lambda e: e.score)

    def distance(self, a: Elite, b: Elite) -> float:
        """Euclidean distance of two elites' descriptors, each axis scaled to [0, 1]."""
        total = 0.0
        for d, x, y in zip(self.descriptors, a.descriptors, b.descriptors):
            total += ((x - y) / (d.high - d.low)) ** 2
        return math.sqrt(total)

    def inspirations(self, island: int, rng: np.random.Generator, m: int,
                     exclude: Sequence[Elite] = ()) -> list[Elite]:
        """Up to m elites of ``island`` from cells other than those of ``exclude`` (the
        prompt's parents), drawn uniformly, sorted by score ascending."""
        isl = self._island(island)
        cells = [c for c in (isl.occupied_cell(e.program_id) for e in exclude) if c is not None]
        ids = {e.program_id for e in exclude}
        found = [e for e in isl.sample_elites(_child(rng), m + len(ids), cells) if e.program_id not in ids][:m]
        return sorted(found, key=lambda e: e.score)

    # -- the island model --------------------------------------------------------------

    def on_commit(self, commit_index: int, rng: np.random.Generator) -> list[dict]:
        """Run whatever migration or reset is due after the commit_index-th result;
        returns one event dict per elite moved or island reset."""
        events: list[dict] = []
        if commit_index <= 0 or len(self.islands) < 2:
            return events
        if self.migration_interval and commit_index % self.migration_interval == 0:
            # The ring needs no rng (and a subclass may override migrate() without one).
            events += self.migrate(rng) if self.topology == "random" else self.migrate()
        if self.reset_interval and commit_index % self.reset_interval == 0:
            events += self.reset(rng)
        return events

    def migrate(self, rng: np.random.Generator | None = None) -> list[dict]:
        """Island i offers its best ``migration_size`` elites to island i+1 (mod n) on
        the ring, or to an island drawn uniformly among the others (``rng``) with the
        random topology. Emigrants are chosen on every island before any arrive, so an
        elite moves one step per migration. Only accepted arrivals make events."""
        n = len(self.islands)
        emigrants = [_top(isl, self.migration_size) for isl in self.islands]
        if self.topology == "ring":
            targets = [(src + 1) % n for src in range(n)]
        else:
            if rng is None:
                raise ValueError("random migration needs an rng")
            targets = [(src + 1 + int(rng.integers(n - 1))) % n for src in range(n)]
        events = []
        for src, elites in enumerate(emigrants):
            dst = targets[src]
            for e in elites:
                status = self.islands[dst].add(e.program_id, e.score, e.descriptors)
                if status != "not_added":
                    events.append({"event": "migrate", "from": src, "to": dst,
                                   "program_id": e.program_id, "status": status})
        return events

    def reset(self, rng: np.random.Generator) -> list[dict]:
        """FunSearch reset: the floor(n/2) islands with the lowest best score (ties
        broken by ``rng``; empty islands count as worst) are cleared, and each is
        reseeded with the best elite of a survivor chosen uniformly by ``rng``.
        Each reset island's epoch goes up by one."""
        n = len(self.islands)
        best = [isl.best() for isl in self.islands]
        shuffled = rng.permutation(n)  # stable sort of a random order = random tie-break
        order = sorted(shuffled.tolist(), key=lambda i: -np.inf if best[i] is None else best[i].score)
        weak, survivors = sorted(order[: n // 2]), order[n // 2:]
        events = []
        for i in weak:
            donor = survivors[int(rng.integers(len(survivors)))]
            founder = best[donor]
            self.islands[i].clear()
            self.epochs[i] += 1
            event = {"event": "reset", "island": i, "from": donor, "program_id": None, "epoch": self.epochs[i]}
            if founder is not None:
                self.islands[i].add(founder.program_id, founder.score, founder.descriptors)
                event["program_id"] = founder.program_id
            events.append(event)
        return events

    def _rank(self, e: Elite) -> tuple:
        return _rank(e, self.neutral)

    def best(self) -> Elite | None:
        """The global best elite (lowest island index on ties; the newest with neutral drift)."""
        found = [e for e in (isl.best() for isl in self.islands) if e is not None]
        return min(found, key=self._rank) if found else None

    def stats(self) -> list[dict]:
        """Per-island ``Island.stats()`` with its "island" index and "epoch"."""
        return [{"island": i, "epoch": self.epochs[i], **isl.stats()} for i, isl in enumerate(self.islands)]

    def __len__(self) -> int:
        return len(self.islands)


def _child(rng: np.random.Generator) -> np.random.Generator:
    """A generator for one island call. The island may live in an actor, where the draws it
    makes never advance the caller's generator; a spawned child makes what the caller draws
    next the same whether the island is local or remote."""
    return rng.spawn(1)[0]


def _rank(e: Elite, neutral: bool) -> tuple:
    """Sort key, best first: score, then (neutral drift) the newer program; a stable sort keeps the rest."""
    return (-e.score, -e.program_id if neutral else 0)


def _top(island: Island, m: int, neutral: bool = False) -> list[Elite]:
    """The island's m best elites, best first (cell order breaks score ties; the newer program with
    neutral drift)."""
    return sorted(island.elites(), key=lambda e: _rank(e, neutral))[:m]

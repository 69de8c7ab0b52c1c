"""The island model: several MAP-Elites islands evolving apart, joined by ring
migration (each island's best elites offered to the next island) and FunSearch's
periodic reset (the weaker half of islands restart from a survivor's best).

Deterministic: the only randomness is the ``rng`` passed to ``select_parents`` and
``on_commit`` (consumed only when a reset happens), so replaying the recorded
results in order with a generator in the same state rebuilds the same archipelago.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from islands.island import Elite, Island

if TYPE_CHECKING:
    from evosearch.problem import Descriptor


class Archipelago:
    """``n_islands`` islands over the same descriptor grid.

    ``on_commit(i, rng)`` is called after the i-th result (1-based) is inserted;
    migration happens when i is a positive multiple of ``migration_interval``, a
    reset when i is a positive multiple of ``reset_interval`` (0 turns either off;
    on the same commit, migration runs first).
    """

    def __init__(self, n_islands: int, descriptors: Sequence[Descriptor], migration_interval: int = 0,
                 migration_size: int = 1, reset_interval: int = 0, qd_score_offset: float | None = None,
                 make_island: Callable[..., Island] = Island):
        for name, value, low in (("n_islands", n_islands, 1), ("migration_interval", migration_interval, 0),
                                 ("migration_size", migration_size, 1), ("reset_interval", reset_interval, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        self.descriptors = tuple(descriptors)
        self.migration_interval = int(migration_interval)
        self.migration_size = int(migration_size)
        self.reset_interval = int(reset_interval)
        # ``make_island`` lets the Ray backend put each island in an actor (islands/actor.py).
        self.islands: list[Island] = [make_island(self.descriptors, qd_score_offset) for _ in range(int(n_islands))]

    def _island(self, island: int) -> Island:
        if not 0 <= island < len(self.islands):
            raise IndexError(f"island {island} out of range (0..{len(self.islands) - 1})")
        return self.islands[island]

    def add(self, island: int, program_id: int, score: float, descriptors: Sequence[float]) -> str:
        return self._island(island).add(program_id, score, descriptors)

    def add_everywhere(self, program_id: int, score: float, descriptors: Sequence[float]) -> None:
        """Give every island the same program (the seed)."""
        for isl in self.islands:
            isl.add(program_id, score, descriptors)

    def select_parents(self, island: int, rng: np.random.Generator, k: int) -> list[Elite]:
        return self._island(island).select_parents(rng, k)

    def on_commit(self, commit_index: int, rng: np.random.Generator) -> list[dict]:
        """Run whatever migration or reset is due after the commit_index-th result;
        returns one event dict per elite moved or island reset."""
        events: list[dict] = []
        if commit_index <= 0 or len(self.islands) < 2:
            return events
        if self.migration_interval and commit_index % self.migration_interval == 0:
            events += self.migrate()
        if self.reset_interval and commit_index % self.reset_interval == 0:
            events += self.reset(rng)
        return events

    def migrate(self) -> list[dict]:
        """Ring migration: island i offers its best ``migration_size`` elites to
        island i+1 (mod n). Emigrants are chosen on every island before any arrive,
        so an elite moves one step per migration. Only accepted arrivals make events."""
        emigrants = [_top(isl, self.migration_size) for isl in self.islands]
        events = []
        for src, elites in enumerate(emigrants):
            dst = (src + 1) % len(self.islands)
            for e in elites:
                status = self.islands[dst].add(e.program_id, e.score, e.descriptors)
                if status != "not_added":
                    events.append({"event": "migrate", "from": src, "to": dst,
                                   "program_id": e.program_id, "status": status})
        return events

    def reset(self, rng: np.random.Generator) -> list[dict]:
        """FunSearch reset: the floor(n/2) islands with the lowest best score (ties
        broken by ``rng``; empty islands count as worst) are cleared, and each is
        reseeded with the best elite of a survivor chosen uniformly by ``rng``."""
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
            event = {"event": "reset", "island": i, "from": donor, "program_id": None}
            if founder is not None:
                self.islands[i].add(founder.program_id, founder.score, founder.descriptors)
                event["program_id"] = founder.program_id
            events.append(event)
        return events

    def best(self) -> Elite | None:
        """The global best elite (lowest island index on ties)."""
        found = None
        for isl in self.islands:
            e = isl.best()
            if e is not None and (found is None or e.score > found.score):
                found = e
        return found

    def stats(self) -> list[dict]:
        """Per-island ``Island.stats()`` with its "island" index."""
        return [{"island": i, **isl.stats()} for i, isl in enumerate(self.islands)]

    def __len__(self) -> int:
        return len(self.islands)


def _top(island: Island, m: int) -> list[Elite]:
    """The island's m best elites, best first (cell order breaks score ties)."""
    return sorted(island.elites(), key=lambda e: -e.score)[:m]

"""The tell side: results enter the islands and the store, one commit at a time.

A commit inserts an evaluated program into its island (the seed into every island),
counts a child for DGM selection, moves its parents' curiosity scores (curiosity
selection), runs whatever migration or reset is due, and records it all in the store as commit number ``seq`` in one transaction. The commit
order is the only thing replay needs: resume feeds the recorded commits back through
the same ``commit`` in the same order and gets the same islands, whichever commit mode
made them. What later plans read (best, bandit rewards, recent failures per island,
QD history) is kept here, rebuilt by that same replay.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .problem import Descriptor
from .samplers.bandit import reward
from .store import REPAIRABLE, Outcome
from .tuning import NAME as TUNE

if TYPE_CHECKING:
    from .config import RunConfig
    from .planner import Operator
    from .store import Store

SETTLE_EVERY = 64  # commits between collecting the archive results of inserts still under way (Ray)
FAILURES_KEPT = 64  # recent repairable failures kept per island (fix mode picks among the last 5)


@dataclass
class Best:
    program_id: int = -1
    score: float = -math.inf


class Committer:
    def __init__(self, config: "RunConfig", store: "Store", archipelago, axes: tuple[Descriptor, ...],
                 progress=None, operators: list["Operator"] | None = None, qd_every: int = 1, bandit: bool = True):
        self.config, self.store, self.archipelago, self.axes = config, store, archipelago, axes
        self.progress = progress
        self.operators = list(operators or [])
        self.seq = 0  # commits so far: the next commit's number
        self.best = Best()
        self.bandit = bandit  # keep the bandit's history (it reads every parent's score)
        self.rewards: list[tuple[str, float]] = []  # the bandit's history: (arm, reward) per commit
        self.failures = [deque(maxlen=FAILURES_KEPT) for _ in range(config.islands)]
        self.qd_every = qd_every
        self.qd_history: list[dict] = []
        self.pending: list[tuple[int, object]] = []  # (program id, insert under way): archive results to record
        # Curiosity scores move only where a selection reads them: no extra island calls otherwise.
        self.curious = config.selection == "curiosity" or (config.selection == "exploit"
                                                            and config.explore == "curiosity")

    def settle(self, wait: bool = False) -> None:
        """Record the archive results that islands in actors have answered since (all, with ``wait``)."""
        ids = {id(p): i for i, p in self.pending}
        done = self.archipelago.settle([p for _, p in self.pending], wait)
        if done:
            self.store.set_archive([(ids[id(p)], result) for p, result in done])
            answered = {id(p) for p, _ in done}
            self.pending = [(i, p) for i, p in self.pending if id(p) not in answered]

    def _credits(self, row: dict) -> bool:
        """Whether the row moves its parents' curiosity: a sampled child (a tuning trial is the engine's, not the
        parents' doing) when a selection reads curiosity."""
        return self.curious and row["id"] > 0 and row["island"] is not None and row["sampler"] != TUNE

    def score(self, program_id: int) -> float | None:
        row = self.store.get(program_id)
        return row["score"] if row and row["status"] == Outcome.OK else None

    def commit(self, row: dict, record: bool = True) -> tuple[str | None, list[dict]]:
        """Put a finished program into the islands; ``record``: write the commit to the store (False: replay,
        where ``row`` holds the columns of store.REPLAYED).
        Returns what the islands did: the archive result (None: not offered) and the island events."""
        seq, i = self.seq, row["id"]
        ok = row["status"] == Outcome.OK
        result = None
        if ok:
            vector = [_finite(row["descriptors"].get(d.name), d.low) for d in self.axes]
            if i == 0:  # the seed founds every island (its archive result stays NULL, as in earlier stores)
                self.archipelago.add_everywhere(i, row["score"], vector)
            else:
                result = self.archipelago.add(row["island"], i, row["score"], vector, epoch=row.get("epoch"),
                                              parents=row["parents"] if self._credits(row) else ())
            if row["score"] > self.best.score:
                self.best = Best(i, row["score"])
        elif self._credits(row):
            self.archipelago.record_failure(row["island"], row["parents"])
        if self.config.selection == "dgm" and i > 0 and row["island"] is not None:
            self.archipelago.record_child(row["island"], row["parents"])  # every child counts, failed or not
        c = self.config
        due = seq > 0 and any(n and seq % n == 0 for n in (c.migration_interval, c.reset_interval))
        events = self.archipelago.on_commit(seq, np.random.default_rng([c.seed, seq, 1])) if due else []
        # A result not recorded yet (an island actor's answer is collected later; a kill can come first) is
        # recorded when it arrives, replay included.
        unrecorded = record or (i > 0 and row["status"] == Outcome.OK and row.get("archive") is None)
        if result is not None and not isinstance(result, str):  # an island actor answers later
            if unrecorded:
                self.pending.append((i, result))
            result = None
        elif not record and unrecorded and result is not None:
            self.store.set_archive([(i, result)])
        if record:
            # The evaluator's verdict, when not recorded yet, goes in the same transaction.
            self.store.commit(row, seq, result, events, verdict=row.pop("verdict", None))
            if self.pending and seq % SETTLE_EVERY == 0:
                self.settle()
        self.seq = seq + 1
        if self.bandit and row["sampler"] != TUNE:  # a tuning trial is no arm's pull
            parents = [self.score(p) for p in row["parents"]]
            self.rewards.append((row["sampler"], reward(row["score"] if ok else None, parents)))
        if row["status"] in REPAIRABLE and row["island"] is not None and row["reason"] is not None:
            self.failures[row["island"]].append(i)
        if seq % self.qd_every == 0 or seq == self.config.samples:
            self.qd_history.append({"commit": seq, "islands": self.archipelago.stats()})
        for op in self.operators:
            op.tell(row)
        if self.progress:
            self.progress.update(row, self.best.score, self.archipelago)
        return result, events


def _finite(value, fallback: float) -> float:
    return float(value) if value is not None and math.isfinite(value) else fallback

"""What an evaluation returns: the contract between evaluators and the engine."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Outcomes of one candidate. "ok" means scored; everything else is a failure
# whose ``reason`` says what happened in one line ("rejected": stopped by a cheap
# cascade stage below its threshold, never evaluated in full).
STATUSES = ("ok", "syntax", "timeout", "memory", "crash", "invalid", "rejected")


@dataclass
class Evaluation:
    status: str
    reason: str | None = None
    score: float | None = None
    descriptors: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    syntactic_hash: str | None = None
    functional_hash: str | None = None
    cache_hit: str | None = None  # None | "syntactic" | "functional"
    duplicate_of: int | None = None  # key (program id) of the candidate whose result was reused
    eval_s: float = 0.0  # wall seconds spent in sandboxes for this candidate
    stages: dict[str, float] = field(default_factory=dict)  # score of each cascade stage it ran, by split
    repeats: int = 1  # full evaluations averaged into this score (noisy problems)
    output: str = ""  # what the candidate printed in its last run (capped); shown, never believed

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return asdict(self)

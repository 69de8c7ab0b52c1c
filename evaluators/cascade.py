"""Evaluation cascades: what a problem may declare beyond the Problem API, read with getattr.

A problem class may set (all optional):

* ``cascade``: the stages of its evaluation funnel, in order, each a dict (or any
  object with these attributes): ``{"split": "quick", "min_score": -520.0}``. The
  stage whose split is ``"train"`` is the full evaluation: its score is the
  program's score. Stages before it are cheap filters: a program scoring below
  ``min_score`` stops there ("rejected", never scored in full). Stages after it
  run only for a program whose full score is at least the best full score seen so
  far (the Lion paper's funnel: larger tasks for the best); their scores are
  reported in ``Evaluation.stages`` beside the train score, which stays the
  program's score so that every score in an archive was measured alike.
  Default: ``({"split": "train"},)``.
* ``noise_repeats``: for a noisy problem, how many full evaluations a functional
  class gets before its cached mean is final; repeats of a duplicate are averaged
  (default 1: deterministic, a duplicate is never re-run).
* ``mantissa_bits``: precision of the functional hash (default
  :data:`evaluators.hashing.DEFAULT_MANTISSA_BITS`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

FULL_SPLIT = "train"


class CascadeError(ValueError):
    """A problem's ``cascade`` declaration is malformed (one line)."""


@dataclass(frozen=True)
class Stage:
    split: str
    min_score: float | None = None  # filters before the full stage: below it, the program is rejected
    for_best: bool = False  # stages after the full stage: only for a new best full score

    def to_dict(self) -> dict:
        return asdict(self)


def _field(entry: Any, name: str, default: Any = None) -> Any:
    if isinstance(entry, dict):
        return entry.get(name, default)
    return getattr(entry, name, default)


def stages_of(problem: Any) -> list[Stage]:
    """The problem's cascade as Stages, checked; raises CascadeError naming the mistake."""
    declared = getattr(problem, "cascade", None) or ({"split": FULL_SPLIT},)
    if isinstance(declared, (str, bytes, dict)):
        raise CascadeError("cascade must be a sequence of stages, e.g. ({'split': 'quick', 'min_score': -1.0}, "
                           "{'split': 'train'})")
    splits = [_field(entry, "split") for entry in declared]
    if splits.count(FULL_SPLIT) != 1:
        raise CascadeError(f"cascade must hold the full stage {FULL_SPLIT!r} exactly once, got {splits}")
    if len(set(splits)) != len(splits) or not all(isinstance(s, str) and s for s in splits):
        raise CascadeError(f"cascade splits must be distinct names, got {splits}")
    if set(splits) & {"probe", "test"}:
        raise CascadeError("cascade stages cannot use the 'probe' or 'test' splits")
    full = splits.index(FULL_SPLIT)
    stages = []
    for i, entry in enumerate(declared):
        split, min_score = splits[i], _field(entry, "min_score")
        if i < full:
            if not isinstance(min_score, (int, float)) or isinstance(min_score, bool) or not math.isfinite(min_score):
                raise CascadeError(f"cascade stage {split!r} comes before the full stage and needs a finite min_score")
            stages.append(Stage(split, min_score=float(min_score)))
        elif i == full:
            stages.append(Stage(split))
        else:
            if min_score is not None:
                raise CascadeError(f"cascade stage {split!r} comes after the full stage: it runs for the best, "
                                   "min_score does not apply")
            stages.append(Stage(split, for_best=True))
    return stages


def noise_repeats_of(problem: Any) -> int:
    repeats = getattr(problem, "noise_repeats", 1)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise CascadeError(f"noise_repeats must be a positive integer, not {repeats!r}")
    return repeats

"""The evaluation cascade with its caches (FunSearch's evaluator, plus functional hashing).

``evaluate(code)``: syntactic hash (bad syntax ends here, no sandbox) ->
syntactic cache -> probe run in a sandbox -> functional hash -> functional
cache -> the problem's cascade (cheap stages with thresholds, the full "train"
stage, larger stages for a new best). Results, failures included, are cached by
both hashes, and the caches hold tasks rather than results, so identical
candidates that arrive while the first is still running share its evaluation.

Functional hashing after Gillard et al. ("Unified Functional Hashing in
Automatic Machine Learning", 2023): every cache entry counts its hits; a noisy
problem (``noise_repeats`` > 1) has a duplicate re-evaluated in full and
averaged into its entry until the entry holds that many evaluations; with
``forget_probability`` a hit drops its entry now and then, so the program is
evaluated afresh. The evaluator knows nothing about islands or LLMs.
"""
from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from typing import Any, Iterable

from evaluators.cascade import FULL_SPLIT, Stage
from evaluators.evaluation import Evaluation
from evaluators.hashing import syntactic_hash
from evaluators.pool import WorkerPool


def _from_reply(reply: dict[str, Any], **extra) -> Evaluation:
    return Evaluation(status=reply["status"], reason=reply.get("reason"), score=reply.get("score"),
                      descriptors=dict(reply.get("descriptors") or {}), metrics=dict(reply.get("metrics") or {}),
                      eval_s=float(reply.get("eval_s") or 0.0), output=str(reply.get("output") or ""), **extra)


def _syntax_failure(error: Exception) -> Evaluation:
    return Evaluation(status="syntax", reason=" ".join(f"{type(error).__name__}: {error}".split()))


@dataclasses.dataclass
class _Entry:
    """One functional class: the task that evaluated it first, and what it learned since."""

    task: asyncio.Future
    key: int | None  # program id of the first candidate of the class
    functional_hash: str
    hits: int = 0
    repeats: int = 0  # full evaluations averaged so far
    pending: int = 0  # repeats under way
    sums: dict[str, float] = dataclasses.field(default_factory=dict)

    @staticmethod
    def values(result: Evaluation) -> dict[str, float]:
        return {"score": result.score, **{f"d {k}": v for k, v in result.descriptors.items()},
                **{f"m {k}": v for k, v in result.metrics.items()},
                **{f"s {k}": v for k, v in result.stages.items()}}

    def add(self, result: Evaluation) -> Evaluation:
        """Fold one more full evaluation into the running mean; return the mean."""
        self.repeats += 1
        for k, v in self.values(result).items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        mean = {k: v / self.repeats for k, v in self.sums.items()}
        return dataclasses.replace(
            result, score=mean["score"], repeats=self.repeats,
            descriptors={k[2:]: v for k, v in mean.items() if k.startswith("d ")},
            metrics={k[2:]: v for k, v in mean.items() if k.startswith("m ")},
            stages={k[2:]: v for k, v in mean.items() if k.startswith("s ")})


def _retrieved(task: asyncio.Future) -> None:
    """Mark a shared task's failure as seen: when every waiter was cancelled (Ctrl-C) and the pool then
    closes under it, asyncio would otherwise print "Task exception was never retrieved" at exit."""
    if not task.cancelled():
        task.exception()


def _done(result: Evaluation) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_result(result)
    return future


class Evaluator:
    """Cached, deduplicating evaluation of candidate programs on a WorkerPool.

    ``timeout_s`` / ``memory_mb`` default to the problem's class attributes;
    ``use_probe=False`` skips the probe run and the functional cache;
    ``noise_repeats`` defaults to the problem's (1: deterministic);
    ``forget_probability`` is the chance that a hit drops its cache entries and
    the program is evaluated again (seeded by ``seed``).
    """

    def __init__(self, pool: WorkerPool, timeout_s: float | None = None, memory_mb: int | None = None,
                 use_probe: bool = True, noise_repeats: int | None = None, forget_probability: float = 0.0,
                 seed: int = 0):
        if noise_repeats is not None and noise_repeats < 1:
            raise ValueError(f"noise_repeats must be at least 1, not {noise_repeats}")
        if not 0.0 <= forget_probability <= 1.0:
            raise ValueError(f"forget_probability must be in [0, 1], not {forget_probability}")
        self.pool = pool
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.use_probe = use_probe
        self._noise_repeats = noise_repeats
        self.forget_probability = forget_probability
        self._rng = random.Random(seed)
        self._best_full: float | None = None  # best full-stage score so far: gate of the stages after it
        # syntactic hash -> (task computing the Evaluation, key of the first candidate with that hash)
        self._syntactic: dict[str, tuple[asyncio.Future, int | None]] = {}
        self._functional: dict[str, _Entry] = {}
        self._counts = Counter(evaluations=0, probe_runs=0, full_runs=0, stage_runs=0, syntactic_hits=0,
                               functional_hits=0, syntax_errors=0, rejected=0, repeats=0, forgotten=0)

    # ------------------------------------------------------------------ what the problem declared

    @property
    def stages(self) -> list[Stage]:
        return [Stage(**s) for s in self.pool.info.get("cascade") or [{"split": FULL_SPLIT}]]

    @property
    def noise_repeats(self) -> int:
        return self._noise_repeats or int(self.pool.info.get("noise_repeats") or 1)

    # ------------------------------------------------------------------ reports

    def stats(self) -> dict[str, int]:
        """Counters: evaluations, probe_runs, full_runs, stage_runs (other cascade stages),
        syntactic_hits, functional_hits, syntax_errors, rejected, repeats, forgotten."""
        return dict(self._counts)

    def entries(self) -> list[dict[str, Any]]:
        """One row per functional class: its hash, first program, hits and evaluations averaged."""
        return [{"functional_hash": h, "key": e.key, "hits": e.hits, "repeats": e.repeats}
                for h, e in self._functional.items()]

    # ------------------------------------------------------------------ resume

    async def restore(self, recorded: Iterable[tuple[int, Evaluation]]) -> None:
        """Refill the caches from the verdicts a run recorded before a restart (``(program id,
        Evaluation)`` in the order they were recorded), so that a resumed run reuses what it evaluated
        before, as a run never stopped would: a duplicate of an earlier program is a hit pointing to it
        (not a fresh evaluation that takes its place as first of its class), and the stages for a new
        best stay gated by the best full score so far. A noisy class's mean goes on from its newest row,
        over as many evaluations as it has rows that scored (at most ``noise_repeats``)."""
        await self.pool.start()  # noise_repeats comes from the worker's ready message
        # A hit's own cache_hit, duplicate_of and eval_s replace the recorded ones: no copy needed here.
        newest: dict[str, tuple[int, Evaluation]] = {}  # functional hash -> (rows that scored, the newest)
        for key, result in recorded:
            first = key if result.duplicate_of is None else result.duplicate_of
            if result.syntactic_hash not in self._syntactic:
                self._syntactic[result.syntactic_hash] = (_done(result), first)
            f_hash = result.functional_hash
            if f_hash is not None:
                if f_hash not in self._functional:
                    self._functional[f_hash] = _Entry(task=_done(result), key=first, functional_hash=f_hash)
                if result.ok:
                    newest[f_hash] = (newest.get(f_hash, (0, None))[0] + 1, result)
            if result.ok and first == key:
                self._best_full = result.score if self._best_full is None else max(self._best_full, result.score)
        for f_hash, (count, result) in newest.items():
            entry = self._functional[f_hash]
            entry.repeats = min(count, self.noise_repeats)
            entry.sums = {k: v * entry.repeats for k, v in entry.values(result).items()}
            entry.task = _done(dataclasses.replace(result, repeats=entry.repeats))

    # ------------------------------------------------------------------ evaluation

    async def _run(self, code: str, split: str) -> dict:
        return await self.pool.run(code, split, timeout_s=self.timeout_s, memory_mb=self.memory_mb)

    def _forget(self) -> bool:
        if self.forget_probability and self._rng.random() < self.forget_probability:
            self._counts["forgotten"] += 1
            return True
        return False

    async def evaluate(self, code: str, key: int | None = None) -> Evaluation:
        """Evaluate one candidate; ``key`` (its program id) is what later duplicates point to."""
        self._counts["evaluations"] += 1
        try:
            s_hash = syntactic_hash(code)
        except (SyntaxError, ValueError) as e:
            self._counts["syntax_errors"] += 1
            return _syntax_failure(e)
        if s_hash in self._syntactic:
            task, first = self._syntactic[s_hash]
            result = await asyncio.shield(task)
            entry = self._functional.get(result.functional_hash) if result.functional_hash else None
            if not self._forget():
                self._counts["syntactic_hits"] += 1
                if entry is not None:
                    entry.hits += 1
                    # The functional class's first program: the first with this syntax may itself be a duplicate,
                    # or an answer the engine set aside and asked again (its key then holds other code).
                    first = entry.key
                if entry is not None and result.ok and entry.repeats + entry.pending < self.noise_repeats:
                    return await self._repeat(entry, code, s_hash, 0.0, "syntactic", first)
                if entry is not None and entry.task.done():  # the entry may hold a newer mean
                    result = entry.task.result()
                return dataclasses.replace(result, syntactic_hash=s_hash, cache_hit="syntactic",
                                           duplicate_of=first, eval_s=0.0)
            if self._syntactic.get(s_hash, (None,))[0] is task:
                del self._syntactic[s_hash]
            if entry is not None and self._functional.get(result.functional_hash) is entry:
                del self._functional[result.functional_hash]
        task = asyncio.ensure_future(self._evaluate_new(code, s_hash, key))
        task.add_done_callback(_retrieved)
        self._syntactic[s_hash] = (task, key)
        try:
            return await asyncio.shield(task)
        except Exception:
            # A pool failure (not a candidate failure): forget it so a retry can succeed.
            if self._syntactic.get(s_hash, (None,))[0] is task:
                del self._syntactic[s_hash]
            raise

    async def _evaluate_new(self, code: str, s_hash: str, key: int | None) -> Evaluation:
        if not self.use_probe:
            return await self._cascade(code, s_hash, None)
        self._counts["probe_runs"] += 1
        probe = await self._run(code, "probe")
        probe_s = float(probe["eval_s"])
        if probe["status"] != "ok":  # the same code fails the same way: cached by syntax only
            return _from_reply(probe, syntactic_hash=s_hash)
        f_hash = probe["functional_hash"]
        entry = self._functional.get(f_hash)
        if entry is not None and self._forget():
            del self._functional[f_hash]
            entry = None
        if entry is not None:
            entry.hits += 1
            self._counts["functional_hits"] += 1
            result = await asyncio.shield(entry.task)
            if result.ok and entry.repeats + entry.pending < self.noise_repeats:
                return await self._repeat(entry, code, s_hash, probe_s, "functional", entry.key)
            if entry.task.done():
                result = entry.task.result()
            return dataclasses.replace(result, syntactic_hash=s_hash, cache_hit="functional",
                                       duplicate_of=entry.key, eval_s=probe_s, output=str(probe.get("output") or ""))
        task = asyncio.ensure_future(self._first(code, s_hash, f_hash, probe_s))
        task.add_done_callback(_retrieved)
        self._functional[f_hash] = _Entry(task=task, key=key, functional_hash=f_hash)
        try:
            return await asyncio.shield(task)
        except Exception:
            if f_hash in self._functional and self._functional[f_hash].task is task:
                del self._functional[f_hash]
            raise

    async def _first(self, code: str, s_hash: str, f_hash: str, probe_s: float) -> Evaluation:
        result = await self._cascade(code, s_hash, f_hash, probe_s)
        entry = self._functional.get(f_hash)
        if result.ok and entry is not None:
            return entry.add(result)
        return result

    async def _repeat(self, entry: _Entry, code: str, s_hash: str, probe_s: float, kind: str,
                      first: int | None) -> Evaluation:
        """A duplicate of a noisy problem: one more full evaluation, averaged into the entry."""
        entry.pending += 1
        try:
            again = await self._cascade(code, s_hash, entry.functional_hash, probe_s, gate_best=False)
        finally:
            entry.pending -= 1
        self._counts["repeats"] += 1
        if not again.ok:  # a noisy program may fail now and then: report this run, keep the mean
            return dataclasses.replace(again, cache_hit=kind, duplicate_of=first)
        mean = entry.add(again)
        entry.task = _done(mean)
        return dataclasses.replace(mean, cache_hit=kind, duplicate_of=first)

    async def _cascade(self, code: str, s_hash: str, f_hash: str | None, probe_s: float = 0.0,
                       gate_best: bool = True) -> Evaluation:
        """The problem's stages in order: filters, the full stage, then larger stages for a new best."""
        await self.pool.start()  # the stages come from the worker's ready message
        scores: dict[str, float] = {}
        eval_s = probe_s
        result, is_best = None, False
        for stage in self.stages:
            if stage.for_best and not (gate_best and is_best):
                break
            reply = await self._run(code, stage.split)
            eval_s += float(reply.get("eval_s") or 0.0)
            self._counts["full_runs" if stage.split == FULL_SPLIT else "stage_runs"] += 1
            if reply["status"] != "ok":
                if stage.for_best:  # the program stays scored by its full stage
                    continue
                failed = _from_reply(reply, syntactic_hash=s_hash, functional_hash=f_hash, stages=scores)
                failed.eval_s = eval_s
                return failed
            scores[stage.split] = float(reply["score"])
            if stage.min_score is not None and reply["score"] < stage.min_score:
                self._counts["rejected"] += 1
                return Evaluation(status="rejected", syntactic_hash=s_hash, functional_hash=f_hash, eval_s=eval_s,
                                  reason=f"cascade stage {stage.split!r}: score {reply['score']:.6g} below "
                                         f"min_score {stage.min_score:.6g}", stages=scores,
                                  output=str(reply.get("output") or ""))
            if stage.split == FULL_SPLIT:
                result = _from_reply(reply, syntactic_hash=s_hash, functional_hash=f_hash)
                is_best = self._best_full is None or result.score >= self._best_full
                if gate_best and is_best:
                    self._best_full = result.score
        result.stages = scores
        result.eval_s = eval_s
        return result

    async def evaluate_split(self, code: str, split: str, timeout_s: float | None = None) -> Evaluation:
        """Uncached evaluation on one split (e.g. "test" for held-out reporting); ``timeout_s``
        overrides the evaluator's deadline (the held-out split may need a longer one)."""
        try:
            s_hash = syntactic_hash(code)
        except (SyntaxError, ValueError) as e:
            return _syntax_failure(e)
        reply = await self.pool.run(code, split, timeout_s=timeout_s or self.timeout_s, memory_mb=self.memory_mb)
        return _from_reply(reply, syntactic_hash=s_hash, functional_hash=reply.get("functional_hash"))

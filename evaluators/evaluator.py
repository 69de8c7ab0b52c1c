"""The evaluation cascade with its caches (FunSearch's evaluator, plus dedup).

``evaluate(code)``: syntactic hash (bad syntax ends here, no sandbox) ->
syntactic cache -> probe run in a sandbox -> functional hash -> functional
cache -> full "train" evaluation. Results, failures included, are cached by
both hashes, and the cache holds tasks rather than results, so identical
candidates that arrive while the first is still running share its evaluation.
The evaluator knows nothing about islands or LLMs.
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from typing import Any

from evaluators.evaluation import Evaluation
from evaluators.hashing import syntactic_hash
from evaluators.pool import WorkerPool


def _from_reply(reply: dict[str, Any], **extra) -> Evaluation:
    return Evaluation(status=reply["status"], reason=reply.get("reason"), score=reply.get("score"),
                      descriptors=dict(reply.get("descriptors") or {}), metrics=dict(reply.get("metrics") or {}),
                      eval_s=float(reply.get("eval_s") or 0.0), **extra)


class Evaluator:
    """Cached, deduplicating evaluation of candidate programs on a WorkerPool.

    ``timeout_s`` / ``memory_mb`` default to the problem's class attributes;
    ``use_probe=False`` skips the probe run and the functional cache.
    """

    def __init__(self, pool: WorkerPool, timeout_s: float | None = None, memory_mb: int | None = None,
                 use_probe: bool = True):
        self.pool = pool
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.use_probe = use_probe
        # hash -> (task computing the Evaluation, key of the first candidate with that hash)
        self._syntactic: dict[str, tuple[asyncio.Task, int | None]] = {}
        self._functional: dict[str, tuple[asyncio.Task, int | None]] = {}
        self._counts = Counter(evaluations=0, probe_runs=0, full_runs=0, syntactic_hits=0, functional_hits=0,
                               syntax_errors=0)

    def stats(self) -> dict[str, int]:
        """Counters: evaluations, probe_runs, full_runs, syntactic_hits, functional_hits, syntax_errors."""
        return dict(self._counts)

    async def _run(self, code: str, split: str) -> dict:
        return await self.pool.run(code, split, timeout_s=self.timeout_s, memory_mb=self.memory_mb)

    async def evaluate(self, code: str, key: int | None = None) -> Evaluation:
        """Evaluate one candidate; ``key`` (its program id) is what later duplicates point to."""
        self._counts["evaluations"] += 1
        try:
            s_hash = syntactic_hash(code)
        except (SyntaxError, ValueError) as e:
            self._counts["syntax_errors"] += 1
            return Evaluation(status="syntax", reason=" ".join(f"{type(e).__name__}: {e}".split()))
        if s_hash in self._syntactic:
            self._counts["syntactic_hits"] += 1
            task, first = self._syntactic[s_hash]
            result = await asyncio.shield(task)
            return dataclasses.replace(result, cache_hit="syntactic", duplicate_of=first, eval_s=0.0)
        task = asyncio.ensure_future(self._evaluate_new(code, s_hash, key))
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
            return await self._full(code, s_hash, None)
        self._counts["probe_runs"] += 1
        probe = await self._run(code, "probe")
        if probe["status"] != "ok":  # the same code fails the same way: cached by syntax only
            return _from_reply(probe, syntactic_hash=s_hash)
        f_hash = probe["functional_hash"]
        if f_hash in self._functional:
            self._counts["functional_hits"] += 1
            task, first = self._functional[f_hash]
            result = await asyncio.shield(task)
            return dataclasses.replace(result, syntactic_hash=s_hash, cache_hit="functional", duplicate_of=first,
                                       eval_s=float(probe["eval_s"]))
        task = asyncio.ensure_future(self._full(code, s_hash, f_hash, probe_s=float(probe["eval_s"])))
        self._functional[f_hash] = (task, key)
        try:
            return await asyncio.shield(task)
        except Exception:
            if self._functional.get(f_hash, (None,))[0] is task:
                del self._functional[f_hash]
            raise

    async def _full(self, code: str, s_hash: str, f_hash: str | None, probe_s: float = 0.0) -> Evaluation:
        self._counts["full_runs"] += 1
        result = _from_reply(await self._run(code, "train"), syntactic_hash=s_hash, functional_hash=f_hash)
        result.eval_s += probe_s
        return result

    async def evaluate_split(self, code: str, split: str) -> Evaluation:
        """Uncached evaluation on one split (e.g. "test" for held-out reporting)."""
        try:
            s_hash = syntactic_hash(code)
        except (SyntaxError, ValueError) as e:
            return Evaluation(status="syntax", reason=" ".join(f"{type(e).__name__}: {e}".split()))
        reply = await self._run(code, split)
        return _from_reply(reply, syntactic_hash=s_hash, functional_hash=reply.get("functional_hash"))

"""The evolutionary loop (FunSearch's figure): the planner asks, the pipeline samples and
evaluates, the committer puts results into the islands and the store.

Two commit modes:

* ``ordered``: results commit in sample order, and sample ``i`` is planned only once
  result ``i - concurrency`` is in. What a prompt sees then depends on the seed and the
  results, never on timing: the same seed with an LLM-free sampler gives the same run.
* ``async``: results commit as they land and a new sample is planned at once, so
  ``concurrency`` samples are always in flight and a slow answer or evaluation never
  idles the other slots. Each row records how many results its prompt could not see
  (``staleness``).

Either way every commit gets a sequence number in the store, and resume replays the
commits in that order, so a resumed run rebuilds exactly the islands it had.
"""
from __future__ import annotations

import asyncio
import itertools
import math
import sys
from collections.abc import Callable

from .committer import Best, Committer
from .config import RunConfig
from .pipeline import MAX_SAMPLER_FAILURES, RUNTIME, SIZE, Pipeline, SearchError
from .planner import Ask, Operator, Planner, retry_seed, sample_seed
from .problem import Problem
from .program import evolvable_functions
from .samplers.base import Sampler
from .samplers.budget import BudgetExhausted
from .store import Outcome, Store
from .tuning import NAME as TUNE, TuningOperator

COMMIT_MODES = ("ordered", "async")

__all__ = ["Engine", "SearchError", "Best", "axes", "island_kwargs", "commit_mode", "SIZE", "RUNTIME",
           "MAX_SAMPLER_FAILURES", "sample_seed", "retry_seed"]


def axes(problem: Problem, config: RunConfig | None = None) -> tuple:
    extra = (RUNTIME,) if config is not None and config.runtime_descriptor else ()
    return (*problem.descriptors, SIZE, *extra)


def island_kwargs(config: RunConfig) -> dict:
    """What every island is built with (islands.archipelago.new_island's options)."""
    return {"archive": config.archive, "cvt_cells": config.cvt_cells,
            "temperature0": config.cluster_temperature, "temperature_period": config.cluster_temperature_period,
            "exploit_share": config.exploit_share, "explore": config.explore, "neutral": config.neutral}


def commit_mode(config: RunConfig, sampler: Sampler | None) -> str:
    """The configured mode, else async for LLM samplers (latency varies) and ordered for LLM-free ones."""
    if config.commit_mode:
        return config.commit_mode
    return "async" if sampler is not None and sampler.llm else "ordered"


class Engine:
    def __init__(self, config: RunConfig, problem: Problem, store: Store, sampler: Sampler | None, evaluator,
                 progress=None, make_archipelago: Callable | None = None,
                 operators: list[Operator] | None = None):
        c = self.config = config
        self.problem, self.store, self.sampler, self.evaluator = problem, store, sampler, evaluator
        self.mode = commit_mode(config, sampler)
        if make_archipelago is None:
            from islands.archipelago import Archipelago as make_archipelago  # pyribs: imported when a run starts
        # The Ray backend passes islands.actor.RayArchipelago's factory to put each island in an actor.
        self.archipelago = make_archipelago(c.islands, axes(problem, c), migration_interval=c.migration_interval,
                                            migration_size=c.migration_size, reset_interval=c.reset_interval,
                                            topology=c.migration_topology, selection=c.selection,
                                            island_kwargs=island_kwargs(c))
        functions = list(evolvable_functions(problem.skeleton))
        if c.tune_evals:  # constant tuning (evosearch/tuning.py): an operator asked before the sampler
            # The rows' sampler names of the LLMs (a bandit's model arms), whose new programs are all tuned.
            llm = tuple(n for n, s in (sampler.arms or {sampler.name: sampler}).items() if s.llm) \
                if c.tune_llm and sampler is not None else ()
            tuning = TuningOperator(store, c.seed, c.tune_evals, patience=c.tune_patience, llm=llm)
            operators = [*(operators or []), tuning]
        self.committer = Committer(c, store, self.archipelago, axes(problem, c), progress, operators,
                                   qd_every=max(1, c.samples // 50),
                                   bandit=sampler is not None and sampler.arms is not None)
        self.planner = Planner(c, problem, store, sampler, self.committer, functions, operators)
        self.pipeline = Pipeline(c, problem, store, evaluator, functions)
        self.stop_reason: str | None = None  # why the run ended before --samples (the budget)
        self._pending: list[int] = []  # asked before a restart, not finished
        self._sampled = 0  # samples started (tuning trials not counted), counted from the store at start

    # what launch and reports read
    best = property(lambda self: self.committer.best)
    qd_every = property(lambda self: self.committer.qd_every)
    qd_history = property(lambda self: self.committer.qd_history)

    # --- the loop -----------------------------------------------------------
    async def run(self) -> Best:
        if self.store.get(0) is None:
            await self._evaluate_seed()
        else:  # a resume: the evaluator's caches as they stood, so nothing evaluated before is evaluated again
            await self.evaluator.restore(self.pipeline.recorded())
        self.replay()
        try:
            if self.mode == "ordered":
                await self._ordered()
            else:
                await self._async()
            self.committer.settle(wait=True)
        finally:
            self.store.set_meta("commit_mode", self.mode)
        return self.best

    async def _evaluate_seed(self) -> None:
        code = self.problem.skeleton
        self.store.ask(0, island=None, parents=[], sampler="seed", seen=0)
        self.store.set_code(0, code)
        result = await self.evaluator.evaluate(code, key=0)
        self.pipeline.record(0, code, result, {})
        if not result.ok:
            raise SearchError(f"the seed program of '{self.problem.name}' fails ({result.status}): {result.reason}")

    def replay(self) -> None:
        """Rebuild the islands from the recorded commits, in their order; then commit what finished
        but was not committed before a kill (ordered mode: only what is next in sample order)."""
        for row in self.store.committed():
            self.committer.commit(row, record=False)
        done, self._pending = self.store.uncommitted()
        for row in done:
            if self.mode == "ordered" and row["id"] != self.committer.seq:
                break
            self.committer.commit(row)

    async def _sample(self, i: int, ask: Ask | None, row: dict | None) -> dict:
        """One sample from its plan to its evaluated row (a row finished before a restart comes back as it is)."""
        if row is not None and row["status"] != Outcome.PENDING:
            return row
        if ask is None:
            ask = self.planner.recall(row)
        if self.pipeline.insights_due(i):
            # Before this sample's result, so the prompts that read these insights (from i + concurrency
            # on, planned after result i is committed in ordered mode) always find them.
            await self.pipeline.make_insights(i, self.sampler, self.committer.score)
        return await self.pipeline.produce(ask, row)

    def _start(self, i: int) -> asyncio.Task:
        row = self.store.get(i)
        ask = self.planner.ask(i) if row is None else None
        # --samples counts sampler calls; an operator's trials (constant tuning) come on top of it.
        self._sampled += (ask.sampler if ask is not None else row["sampler"]) != TUNE
        return asyncio.create_task(self._sample(i, ask, row))

    def _samples_before(self, i: int) -> int:
        """Sampler calls among the rows before id ``i`` (tuning trials take row ids too)."""
        return self.store.count("id > 0 AND id < ? AND sampler != ?", (i, TUNE))

    def _samples_left(self) -> bool:
        return self._sampled < self.config.samples

    def _budget_out(self, i: int, e: BudgetExhausted) -> None:
        # No request fits the run budget (--max-cost, --max-tokens): plan nothing more. The sample stays
        # pending for --resume with a larger budget.
        if self.stop_reason is None:
            self.stop_reason = str(e)
            print(f"\nstopping after sample {self._samples_before(i)}: {e}", file=sys.stderr)

    async def _ordered(self) -> None:
        end = math.inf  # the first id not to start: set when the run budget runs out
        in_flight: dict[int, asyncio.Task] = {}
        finished: dict[int, dict] = {}
        launch = self.committer.seq
        self._sampled = self._samples_before(launch)

        def launch_allowed() -> None:
            # Called after every single commit, and the prompt is planned here rather than when the task
            # first runs: so sample i's prompt sees exactly the results up to i - concurrency, however
            # results bunch up (the same state under any timing, backend or resume).
            nonlocal launch
            while launch < end and self._samples_left() and launch < self.committer.seq + self.config.concurrency:
                in_flight[launch] = self._start(launch)
                launch += 1

        try:
            while True:
                launch_allowed()
                if not in_flight or self.committer.seq >= end:
                    break
                done, _ = await asyncio.wait(in_flight.values(), return_when=asyncio.FIRST_COMPLETED)
                for i in [i for i, task in in_flight.items() if task in done]:
                    try:
                        row = in_flight.pop(i).result()
                    except BudgetExhausted as e:
                        end = min(end, i)  # end once the samples before this one are in
                        self._budget_out(i, e)
                        continue
                    if row["id"] != self.committer.seq and "verdict" in row:  # it waits for its turn: record it now
                        self.store.evaluated(row["id"], **row.pop("verdict"))
                    finished[row["id"]] = row
                while self.committer.seq in finished and self.committer.seq < end:
                    self.committer.commit(finished.pop(self.committer.seq))
                    launch_allowed()
            if self.stop_reason is not None:  # requests in flight past the end are paid for: let them land
                for row in await asyncio.gather(*in_flight.values(), return_exceptions=True):
                    if isinstance(row, dict) and "verdict" in row:
                        self.store.evaluated(row["id"], **row.pop("verdict"))
        finally:
            await _cancel(in_flight.values())

    async def _async(self) -> None:
        first_new = self.store.next_id()
        # Pending rows come first: they count against --samples (tuning trials excepted) like the rows before.
        self._sampled = self._samples_before(first_new) - \
            sum(self.store.get(i)["sampler"] != TUNE for i in self._pending)
        todo = itertools.chain(self._pending, itertools.count(first_new))
        in_flight: dict[asyncio.Task, int] = {}
        stopped = False

        def fill() -> None:
            while not stopped and len(in_flight) < self.config.concurrency and self._samples_left():
                i = next(todo)
                in_flight[self._start(i)] = i

        try:
            fill()
            while in_flight:
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=in_flight.get):
                    i = in_flight.pop(task)
                    try:
                        row = task.result()
                    except BudgetExhausted as e:
                        stopped = True  # what is in flight still lands and commits
                        self._budget_out(i, e)
                        continue
                    self.committer.commit(row)
                    fill()
        finally:
            await _cancel(in_flight)


async def _cancel(tasks) -> None:
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

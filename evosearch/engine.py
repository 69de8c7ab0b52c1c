"""The evolutionary loop: islands -> prompt -> sampler -> extract -> evaluator -> islands.

Several samples are in flight at once, but results are committed to the
islands strictly in sample order, and sample ``i`` is only started once result
``i - concurrency`` is committed. So what a prompt sees depends on the seed and
the results, never on timing: the same seed and an LLM-free sampler give the
same run, and a resumed run replays its committed results to rebuild the
islands exactly.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import numpy as np

from evaluators.evaluation import Evaluation
from islands.archipelago import Archipelago

from .config import RunConfig
from .extract import extract_functions
from .problem import Descriptor, Problem
from .program import EditError, ast_size, evolvable_functions, replace_functions
from .progress import Progress
from .prompt import build_prompt
from .samplers.base import Prompt, Sampler, SamplerError
from .store import Store

# Program size in AST nodes: a behaviour axis every problem gets.
SIZE = Descriptor("size", 0, 400, 10)
# This many sampler failures in a row means the sampler is down, not unlucky.
MAX_SAMPLER_FAILURES = 20


class SearchError(Exception):
    """The search cannot go on (seed program fails, sampler down): one line for the user."""


def axes(problem: Problem) -> tuple[Descriptor, ...]:
    return (*problem.descriptors, SIZE)


def sample_seed(run_seed: int, index: int) -> int:
    return int(np.random.SeedSequence([run_seed, index]).generate_state(1)[0])


@dataclass
class Best:
    program_id: int = -1
    score: float = -math.inf


@dataclass
class Engine:
    config: RunConfig
    problem: Problem
    store: Store
    sampler: Sampler
    evaluator: object  # evaluators.evaluator.Evaluator, or a remote proxy with the same async methods
    progress: Progress | None = None
    archipelago: Archipelago = field(init=False)
    committed: int = field(init=False, default=0)  # ids below this are committed to the islands
    best: Best = field(init=False, default_factory=Best)
    _failures_in_a_row: int = field(init=False, default=0)

    def __post_init__(self):
        c = self.config
        self.archipelago = Archipelago(c.islands, axes(self.problem), migration_interval=c.migration_interval,
                                       migration_size=c.migration_size, reset_interval=c.reset_interval)
        self.functions = list(evolvable_functions(self.problem.skeleton))

    # --- the loop -----------------------------------------------------------
    async def run(self) -> Best:
        if self.store.get(0) is None:
            await self._evaluate_seed()
        self._replay()
        end = 1 + self.config.samples  # id 0 is the seed program
        in_flight: dict[int, asyncio.Task] = {}
        finished: dict[int, dict] = {}
        launch = self.committed
        try:
            while self.committed < end:
                while launch < end and launch < self.committed + self.config.concurrency:
                    in_flight[launch] = asyncio.create_task(self._produce(launch))
                    launch += 1
                done, _ = await asyncio.wait(in_flight.values(), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    row = task.result()
                    finished[row["id"]] = row
                    del in_flight[row["id"]]
                while self.committed in finished:
                    self._commit(finished.pop(self.committed), record=True)
        finally:
            for task in in_flight.values():
                task.cancel()
            await asyncio.gather(*in_flight.values(), return_exceptions=True)
        return self.best

    async def _evaluate_seed(self) -> None:
        code = self.problem.skeleton
        self.store.begin(0, island=None, parents=[], sampler="seed")
        self.store.update(0, code=code)
        result = await self.evaluator.evaluate(code, key=0)
        self._record(0, code, result)
        if not result.ok:
            raise SearchError(f"the seed program of '{self.problem.name}' fails ({result.status}): {result.reason}")

    def _replay(self) -> None:
        """Rebuild the islands from the committed prefix of results in the store."""
        for row in self.store.programs("status != 'pending'"):
            if row["id"] != self.committed:
                break
            self._commit(row, record=False)

    # --- one sample -----------------------------------------------------------
    async def _produce(self, i: int) -> dict:
        row = self.store.get(i)
        if row is not None and row["status"] != "pending":
            return row  # finished before a restart, waiting for its turn to commit
        prompt = self._prompt(i, row)
        row = self.store.get(i)
        code = row["code"]
        if code is None:
            try:
                sample = await self.sampler.sample(prompt)
            except SamplerError as e:
                return self._fail(i, "sampler_error", str(e))
            self.store.update(i, response=sample.text, model=sample.model, tokens_in=sample.tokens_in,
                              tokens_out=sample.tokens_out, sample_s=sample.seconds)
            try:
                # ``program`` lets extraction drop trusted helpers the model echoed back.
                functions = extract_functions(sample.text, self.functions, header=prompt.header or None,
                                              program=prompt.parents[-1])
                code = replace_functions(prompt.parents[-1], functions)
            except (EditError, SyntaxError) as e:
                return self._fail(i, "no_code", str(e))
            self.store.update(i, code=code)
        self._failures_in_a_row = 0
        result = await self.evaluator.evaluate(code, key=i)
        self._record(i, code, result)
        return self.store.get(i)

    def _prompt(self, i: int, row: dict | None) -> Prompt:
        """Build and record the prompt of sample i, or rebuild the one recorded before a restart."""
        if row is None:
            island = (i - 1) % self.config.islands
            rng = np.random.default_rng(sample_seed(self.config.seed, i))
            elites = self.archipelago.select_parents(island, rng, self.config.parents)
            parents = [(self._code(e.program_id), e.score) for e in elites]
            prompt = build_prompt(description=self.problem.description, skeleton=self.problem.skeleton,
                                  parents=parents, seed=sample_seed(self.config.seed, i))
            prompt_id = self.store.add_prompt(prompt.system, prompt.user)
            self.store.begin(i, island=island, parents=[e.program_id for e in sorted(elites, key=lambda e: e.score)],
                             sampler=self.sampler.name, prompt_id=prompt_id)
            return prompt
        system, user = self.store.prompt(row["prompt_id"])
        parents = [self.store.get(p) for p in row["parents"]]
        return Prompt(system=system, user=user, parents=[p["code"] for p in parents], functions=self.functions,
                      seed=sample_seed(self.config.seed, i))

    def _fail(self, i: int, status: str, reason: str) -> dict:
        self.store.update(i, status=status, reason=reason, finished=time.time())
        if status == "sampler_error":
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= MAX_SAMPLER_FAILURES:
                raise SearchError(f"the sampler failed {MAX_SAMPLER_FAILURES} times in a row; last: {reason}")
        return self.store.get(i)

    def _record(self, i: int, code: str, result: Evaluation) -> None:
        descriptors = dict(result.descriptors)
        if result.ok:
            descriptors[SIZE.name] = float(ast_size(code))
        self.store.update(i, status=result.status, reason=result.reason, score=result.score,
                          descriptors=descriptors or None, metrics=result.metrics or None,
                          syntactic_hash=result.syntactic_hash, functional_hash=result.functional_hash,
                          cache_hit=result.cache_hit, duplicate_of=result.duplicate_of, eval_s=result.eval_s,
                          finished=time.time())

    # --- committing results to the islands, in sample order -------------------------
    def _commit(self, row: dict, record: bool) -> None:
        i = row["id"]
        if row["status"] == "ok":
            vector = [_finite(row["descriptors"].get(d.name), d.low) for d in axes(self.problem)]
            if i == 0:
                self.archipelago.add_everywhere(i, row["score"], vector)
                outcome = "new"
            else:
                outcome = self.archipelago.add(row["island"], i, row["score"], vector)
            if record:
                self.store.update(i, archive=outcome)
            if row["score"] > self.best.score:
                self.best = Best(i, row["score"])
        events = self.archipelago.on_commit(i, np.random.default_rng([self.config.seed, i, 1]))
        if record and events:
            self.store.add_events(i, events)
        self.committed = i + 1
        if self.progress:
            self.progress.update(row, self.best.score, self.archipelago)

    def _code(self, program_id: int) -> str:
        return self.store.get(program_id)["code"]


def _finite(value, fallback: float) -> float:
    return float(value) if value is not None and math.isfinite(value) else fallback

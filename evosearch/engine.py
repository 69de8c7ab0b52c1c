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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from evaluators.evaluation import Evaluation
from islands.archipelago import Archipelago

from .config import RunConfig
from .extract import extract_functions
from .problem import Descriptor, Problem
from .program import EditError, RejectedEdit, ast_size, check_frozen, evolvable_functions, replace_functions
from .progress import Progress
from .edits import apply_diff, parse_diff, rationale
from .insights import digest, insight_prompt, parse_insights
from .prompt import EDIT_FORMATS, Shown, build_prompt, retry_prompt
from .samplers.bandit import BanditSampler, reward
from .samplers.base import Prompt, Sampler, SamplerError
from .samplers.budget import BudgetExhausted
from .store import Store
from .tuning import NAME as TUNE, TuningOperator

# Program size in AST nodes: a behaviour axis every problem gets.
SIZE = Descriptor("size", 0, 400, 10)
# This many sampler failures in a row means the sampler is down, not unlucky.
MAX_SAMPLER_FAILURES = 20


class SearchError(Exception):
    """The search cannot go on (seed program fails, sampler down): one line for the user."""


# Measured evaluation time in log10 seconds (1 ms .. ~30 s): opt-in, since wall-clock
# time is noisy and would make a same-seed run land elites in other cells.
RUNTIME = Descriptor("log10_eval_s", -3.0, 1.5, 9)


def axes(problem: Problem, config: RunConfig | None = None) -> tuple[Descriptor, ...]:
    extra = (RUNTIME,) if config is not None and config.runtime_descriptor else ()
    return (*problem.descriptors, SIZE, *extra)


def island_kwargs(config: RunConfig) -> dict:
    """What every island is built with (islands.archipelago.new_island's options)."""
    return {"archive": config.archive, "cvt_cells": config.cvt_cells,
            "temperature0": config.cluster_temperature, "temperature_period": config.cluster_temperature_period,
            "exploit_share": config.exploit_share}


def sample_seed(run_seed: int, index: int) -> int:
    return int(np.random.SeedSequence([run_seed, index]).generate_state(1)[0])


def retry_seed(run_seed: int, index: int, attempt: int) -> int:
    """Seed of the attempt-th retry of sample ``index`` (0: its insights request)."""
    return int(np.random.SeedSequence([run_seed, index, 4, attempt]).generate_state(1)[0])


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
    # The Ray backend passes islands.actor.RayArchipelago's factory to put each island in an actor.
    make_archipelago: Callable[..., Archipelago] = Archipelago
    archipelago: Archipelago = field(init=False)
    committed: int = field(init=False, default=0)  # ids below this are committed to the islands
    best: Best = field(init=False, default_factory=Best)
    _failures_in_a_row: int = field(init=False, default=0)
    _rewards: dict = field(init=False, default_factory=dict)  # the bandit's history, read from the store
    _rewards_upto: int = field(init=False, default=0)
    stop_reason: str | None = field(init=False, default=None)  # why the run ended before --samples (the budget)

    def __post_init__(self):
        c = self.config
        self.archipelago = self.make_archipelago(c.islands, axes(self.problem, c), migration_interval=c.migration_interval,
                                       migration_size=c.migration_size, reset_interval=c.reset_interval,
                                       topology=c.migration_topology, selection=c.selection,
                                       island_kwargs=island_kwargs(c))
        # Per-island QD metrics over time (rebuilt by replay on resume); launch writes them out.
        self.qd_every = max(1, c.samples // 50)
        self.qd_history: list[dict] = []
        self.functions = list(evolvable_functions(self.problem.skeleton))
        # Constant tuning (evosearch/tuning.py): told every commit, asked for each new sample id first.
        self.tuner = TuningOperator(self.store, c.seed, c.tune_evals) if c.tune_evals else None

    # --- the loop -----------------------------------------------------------
    async def run(self) -> Best:
        if self.store.get(0) is None:
            await self._evaluate_seed()
        self._replay()
        end = math.inf  # the first id not to launch: set when the run budget runs out
        in_flight: dict[int, asyncio.Task] = {}
        finished: dict[int, dict] = {}
        launch = self.committed
        # --samples counts sampler calls; tuning trials (evaluations without a sample) come on top.
        sampled = self.store.count("id > 0 AND id < ? AND COALESCE(sampler, '') != ?", (launch, TUNE))

        def launch_allowed() -> None:
            # Called after every single commit, and the prompt is built here rather than when the task
            # first runs: so sample i's prompt sees exactly the results up to i - concurrency, however
            # results bunch up (the same state under any timing, backend or resume).
            nonlocal launch, sampled
            while launch < end and sampled < self.config.samples and launch < self.committed + self.config.concurrency:
                if self.store.get(launch) is None:
                    self._prompt(launch, None)  # recorded; _produce reads it back
                sampled += self.store.get(launch)["sampler"] != TUNE
                in_flight[launch] = asyncio.create_task(self._produce(launch))
                launch += 1

        try:
            while True:
                launch_allowed()
                if not in_flight:
                    break
                done, _ = await asyncio.wait(in_flight.values(), return_when=asyncio.FIRST_COMPLETED)
                for i in [i for i, task in in_flight.items() if task in done]:
                    try:
                        row = in_flight.pop(i).result()
                    except BudgetExhausted as e:
                        # No request fits the run budget (--max-cost, --max-tokens): launch nothing more and
                        # end once the samples before this one are in. It stays pending for --resume.
                        end = min(end, i)
                        if self.stop_reason is None:
                            self.stop_reason = str(e)
                            print(f"\nstopping after sample {i - 1}: {e}", file=sys.stderr)
                        continue
                    finished[row["id"]] = row
                while self.committed in finished and self.committed < end:
                    self._commit(finished.pop(self.committed), record=True)
                    launch_allowed()
            if self.stop_reason is not None:  # requests in flight past the end are paid for: let them land in the store
                await asyncio.gather(*in_flight.values(), return_exceptions=True)
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
        self.store.set_meta("committed", 1)  # commits recorded so far (the seed's is replayed, never recorded)
        if not result.ok:
            raise SearchError(f"the seed program of '{self.problem.name}' fails ({result.status}): {result.reason}")

    def _replay(self) -> None:
        """Rebuild the islands from the committed prefix of results in the store. A result that finished
        but whose commit was not recorded before a kill (archive outcome, island events) is committed
        and recorded now."""
        recorded = self.store.get_meta("committed")  # None: a run from before this marker
        for row in self.store.programs("status != 'pending'"):
            if row["id"] != self.committed:
                break
            self._commit(row, record=recorded is not None and row["id"] >= recorded)

    # --- one sample -----------------------------------------------------------
    async def _produce(self, i: int) -> dict:
        row = self.store.get(i)
        if row is not None and row["status"] != "pending":
            return row  # finished before a restart, waiting for its turn to commit
        prompt, edit_format = self._prompt(i, row)
        if self._insights_due(i):
            # Before this sample's result, so the prompts that read these insights (from i + concurrency
            # on, launched after result i is committed) always find them.
            await self._make_insights(i)
        row = self.store.get(i)
        code = row["code"]
        if code is None:
            # Earlier rejected answers (resume mid-retry) come back into the prompt as they were shown.
            attempts = list(row["attempts"] or [])
            asked = prompt
            for n, a in enumerate(attempts, 1):
                asked = retry_prompt(asked, a["response"], a["reason"], seed=retry_seed(self.config.seed, i, n))
            # Usage adds up over the attempts of a retried edit.
            usage = {k: (row[k] or 0) if attempts else 0 for k in ("tokens_in", "tokens_out", "retries")}
            cost = row["cost"] if attempts else None
            while True:
                try:
                    sample = await (self.tuner if row["sampler"] == TUNE else self.sampler).sample(asked)
                except SamplerError as e:
                    return self._fail(i, "sampler_error", str(e))
                usage["tokens_in"] += sample.tokens_in
                usage["tokens_out"] += sample.tokens_out
                usage["retries"] += int(sample.extra.get("retries") or 0)
                if sample.extra.get("cost") is not None:  # None: no price known for this model
                    cost = (cost or 0.0) + sample.extra["cost"]
                self.store.update(i, response=sample.text, model=sample.model, sample_s=sample.seconds, cost=cost,
                                  rationale=rationale(sample.text), **usage)
                try:
                    code = self._edit(edit_format, sample.text, prompt)
                    break
                except RejectedEdit as e:
                    if len(attempts) >= self.config.edit_retries:
                        return self._fail(i, "edit_rejected", str(e))
                    # Shown to the model on the next attempt; both attempts stay recorded.
                    attempts.append({"response": sample.text, "reason": str(e)})
                    self.store.update(i, attempts=attempts)
                    asked = retry_prompt(asked, sample.text, str(e), seed=retry_seed(self.config.seed, i, len(attempts)))
                except (EditError, SyntaxError) as e:
                    return self._fail(i, "no_code", str(e))
            self.store.update(i, code=code)
        self._failures_in_a_row = 0
        result = await self.evaluator.evaluate(code, key=i)
        self._record(i, code, result)
        return self.store.get(i)

    def _edit(self, edit_format: str, text: str, prompt: Prompt) -> str:
        """The child program from an answer in ``edit_format``; RejectedEdit when it breaks the rules."""
        base = prompt.parents[-1]
        if edit_format == "diff":
            return apply_diff(base, parse_diff(text))
        # ``program`` lets extraction drop trusted helpers the model echoed back.
        functions = extract_functions(text, self.functions, header=prompt.header or None, program=base)
        code = replace_functions(base, functions)
        check_frozen(base, code)
        return code

    def _prompt(self, i: int, row: dict | None) -> tuple[Prompt, str]:
        """Build and record the prompt of sample i and its edit format, or rebuild the ones recorded before a restart.

        Every choice here is drawn from generators seeded by (run seed, i) and reads only results that are
        surely committed when sample i starts (ids <= i - concurrency), so it is the same on every run and resume."""
        group = self.config.samples_per_prompt
        if row is None and group > 1 and (i - 1) % group and self.store.get(i - (i - 1) % group)["sampler"] != TUNE:
            return self._share_prompt(i, i - (i - 1) % group)
        trial = self.tuner.propose(i) if row is None and self.tuner else None
        if trial is not None:
            return self._trial_prompt(i, trial)
        if row is None:
            island = (i - 1) % self.config.islands
            rng = np.random.default_rng(sample_seed(self.config.seed, i))
            arm = self._choose_arm(i)
            edit_format = self._choose_format(i, arm)
            failed = self._recent_failure(island, i) if edit_format == "fix" else None
            inspirations = []
            if edit_format == "fix" and failed is None:
                edit_format = "full"  # nothing of this island to repair yet
            if failed is not None:
                shown, parent_ids = [self._shown(failed)], [failed]
            else:
                if edit_format == "crossover":
                    elites = self._mates(island, rng)
                else:
                    elites = self.archipelago.select_parents(island, rng, self.config.parents)
                shown = [self._shown(e.program_id) for e in elites]
                parent_ids = [e.program_id for e in sorted(elites, key=lambda e: e.score)]
                if self.config.inspirations:  # own generator: parent selection stays as without them
                    others = self.archipelago.inspirations(island, np.random.default_rng([self.config.seed, i, 6]),
                                                           self.config.inspirations, exclude=elites)
                    inspirations = [self._shown(e.program_id) for e in others]
            insights = self.store.insights(i - self.config.concurrency)
            prompt = build_prompt(description=self.problem.description, skeleton=self.problem.skeleton,
                                  parents=shown, seed=sample_seed(self.config.seed, i), edit_format=edit_format,
                                  insights=insights[1].splitlines() if insights else None,
                                  inspirations=inspirations)
            prompt.arm = arm
            prompt_id = self.store.add_prompt(prompt.system, prompt.user)
            self.store.set_prompt_forms(prompt_id, prompt.completion, prompt.header, prompt.completion_shared,
                                        prompt.user_shared)
            if edit_format == "diff":
                parent_ids = parent_ids[-1:]  # the diff prompt shows the best parent only
            self.store.begin(i, island=island, parents=parent_ids, sampler=arm or self.sampler.name,
                             prompt_id=prompt_id)
            # The island's epoch now: a child of a prompt drawn before a reset is handled as stale.
            self.store.update(i, edit_format=edit_format, epoch=self.archipelago.epoch(island))
            return prompt, edit_format
        saved = self.store.prompt_row(row["prompt_id"])
        parents = [self.store.get(p) for p in row["parents"]]
        prompt = Prompt(system=saved["system"], user=saved["user"], parents=[p["code"] for p in parents],
                        functions=self.functions, seed=sample_seed(self.config.seed, i),
                        completion=saved["completion"] or "", header=saved["header"] or "",
                        completion_shared=saved["completion_shared"] or 0, user_shared=saved["user_shared"] or 0,
                        arm=row["sampler"] if isinstance(self.sampler, BanditSampler) else "")
        return prompt, row["edit_format"] or "full"

    def _trial_prompt(self, i: int, trial) -> tuple[Prompt, str]:
        """Record a tuning trial as sample i: its prompt holds the trial's note and text (what the tuner
        answers), its one parent is the tuned elite."""
        prompt_id = self.store.add_prompt(trial.note, trial.text)
        self.store.begin(i, island=trial.island, parents=[trial.elite], sampler=TUNE, prompt_id=prompt_id)
        epoch = self.archipelago.epoch(trial.island) if trial.island is not None else None
        self.store.update(i, edit_format="full", epoch=epoch)
        return self._prompt(i, self.store.get(i))

    def _share_prompt(self, i: int, lead: int) -> tuple[Prompt, str]:
        """Sample i draws again from the prompt of sample ``lead`` (FunSearch's several samples per
        prompt), with its own seed: a prompt cache then holds the whole prompt, not just the head."""
        first = self.store.get(lead)
        self.store.begin(i, island=first["island"], parents=first["parents"], sampler=first["sampler"],
                         prompt_id=first["prompt_id"])
        self.store.update(i, edit_format=first["edit_format"], epoch=first.get("epoch"))
        return self._prompt(i, self.store.get(i))

    # --- choices of a sample: model (bandit arm), edit format, parents ---------------------
    def _choose_arm(self, i: int) -> str:
        if not isinstance(self.sampler, BanditSampler):
            return ""
        return self.sampler.choose(self._bandit_history(i - self.config.concurrency),
                                   np.random.default_rng([self.config.seed, i, 3]))

    def _bandit_history(self, up_to: int) -> list[tuple[str, float]]:
        """(arm, reward) of every finished sample with id <= up_to, read from the store (rebuilt on resume)."""
        # Rows never change once finished, so the rewards read so far are kept (id -> (arm, reward)).
        if up_to > self._rewards_upto:
            for row in self.store.programs("id > ? AND id <= ? AND status != 'pending' AND sampler != ?",
                                           (self._rewards_upto, up_to, TUNE)):
                parents = [self._score(p) for p in row["parents"]]
                self._rewards[row["id"]] = (row["sampler"],
                                            reward(row["score"] if row["status"] == "ok" else None, parents))
            self._rewards_upto = up_to
        return [self._rewards[k] for k in sorted(self._rewards) if k <= up_to]

    def _score(self, program_id: int) -> float | None:
        row = self.store.get(program_id)
        return row["score"] if row and row["status"] == "ok" else None

    def _choose_format(self, i: int, arm: str) -> str:
        sampler = self.sampler.arm_sampler(arm) if arm else self.sampler
        supported = getattr(sampler, "edit_formats", EDIT_FORMATS)
        mix = {f: w for f, w in self.config.edit_formats.items() if f in supported and w > 0}
        if not mix:
            return "full"
        if len(mix) == 1:
            return next(iter(mix))
        names = sorted(mix)
        weights = np.array([mix[f] for f in names], dtype=float)
        return names[int(np.random.default_rng([self.config.seed, i, 2]).choice(len(names), p=weights / weights.sum()))]

    def _mates(self, island: int, rng: np.random.Generator) -> list:
        # Crossover: two parents, the second from another cell or island (islands.Archipelago.select_mates).
        return list(self.archipelago.select_mates(island, rng))

    def _recent_failure(self, island: int, i: int) -> int | None:
        """A recent failed program of the island to repair (fix mode), drawn by the sample's seed."""
        ids = [r["id"] for r in self.store.programs(
            "island = ? AND id > ? AND id <= ? AND status IN ('crash', 'timeout', 'invalid', 'memory', 'syntax') "
            "AND code IS NOT NULL AND reason IS NOT NULL", (island, i - 200, i - self.config.concurrency))][-5:]
        if not ids:
            return None
        return ids[int(np.random.default_rng([self.config.seed, i, 5]).integers(len(ids)))]

    def _shown(self, program_id: int) -> Shown:
        """A program for the prompt, with its feedback and the outcome of the change that made it."""
        row = self.store.get(program_id)
        parents = [s for s in (self._score(p) for p in row["parents"]) if s is not None]
        ok = row["status"] == "ok"
        delta = row["score"] - max(parents) if ok and parents and row["score"] is not None else None
        return Shown(code=row["code"], score=row["score"] if ok else None, id=program_id, metrics=row["metrics"],
                     status=row["status"], error=None if ok else row["reason"], change=row.get("rationale"),
                     delta=delta)

    # --- insights (CoEvo) ----------------------------------------------------------------
    def _insights_due(self, i: int) -> bool:
        n = self.config.insights_interval
        return n > 0 and i > self.config.concurrency and i % n == 0

    async def _make_insights(self, i: int) -> None:
        """Summarise the committed samples (ids <= i - concurrency) into a few lines for later prompts."""
        if (self.store.insights(i) or (None,))[0] == i:
            return  # made before a restart
        rows = list(self.store.programs("id > ? AND id <= ? AND status != 'pending'",
                                        (max(0, i - 4 * self.config.insights_interval), i - self.config.concurrency)))
        scores = {p: self._score(p) for row in rows for p in row["parents"]}
        facts = digest(rows, scores)
        previous = self.store.insights(i - 1)
        lines, model = [], "digest"
        sampler = self.sampler.arm_sampler(next(iter(self.sampler.arms))) if isinstance(self.sampler, BanditSampler) \
            else self.sampler
        if facts and getattr(sampler, "name", "") != "mutate":  # mutate has no model: the digest is the insight
            try:
                sample = await sampler.sample(insight_prompt(self.problem.description, facts,
                                                             previous[1].splitlines() if previous else [],
                                                             seed=retry_seed(self.config.seed, i, 0)))
                lines, model = parse_insights(sample.text), sample.model
            except SamplerError:
                pass  # the digest stands in
        if not lines:
            lines, model = facts, "digest"
        if lines:
            self.store.add_insights(i, "\n".join(lines), model)

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
            if self.config.runtime_descriptor and result.eval_s is not None:
                descriptors[RUNTIME.name] = math.log10(max(result.eval_s, 1e-3))
        self.store.update(i, status=result.status, reason=result.reason, score=result.score,
                          descriptors=descriptors or None, metrics=result.metrics or None,
                          syntactic_hash=result.syntactic_hash, functional_hash=result.functional_hash,
                          cache_hit=result.cache_hit, duplicate_of=result.duplicate_of, eval_s=result.eval_s,
                          finished=time.time())

    # --- committing results to the islands, in sample order -------------------------
    def _commit(self, row: dict, record: bool) -> None:
        i = row["id"]
        if row["status"] == "ok":
            vector = [_finite(row["descriptors"].get(d.name), d.low) for d in axes(self.problem, self.config)]
            if i == 0:
                self.archipelago.add_everywhere(i, row["score"], vector)
                outcome = "new"
            else:
                outcome = self.archipelago.add(row["island"], i, row["score"], vector, epoch=row.get("epoch"))
            if row["score"] > self.best.score:
                self.best = Best(i, row["score"])
        if self.tuner is not None:
            self.tuner.tell(row)
        if self.config.selection == "dgm" and i > 0 and row["island"] is not None:
            self.archipelago.record_child(row["island"], row["parents"])  # every child counts, failed or not
        events = self.archipelago.on_commit(i, np.random.default_rng([self.config.seed, i, 1]))
        if record:
            # One transaction: a kill leaves this commit recorded in full or not at all (resume records it).
            self.store.db.execute("BEGIN")
            try:
                if row["status"] == "ok":
                    self.store.update(i, archive=outcome)
                if events:
                    self.store.add_events(i, events)
                self.store.set_meta("committed", i + 1)
                self.store.db.execute("COMMIT")
            except BaseException:
                self.store.db.execute("ROLLBACK")
                raise
        if i % self.qd_every == 0 or i == self.config.samples:
            self.qd_history.append({"commit": i, "islands": self.archipelago.stats()})
        self.committed = i + 1
        if self.progress:
            self.progress.update(row, self.best.score, self.archipelago)

    def _code(self, program_id: int) -> str:
        return self.store.get(program_id)["code"]


def _finite(value, fallback: float) -> float:
    return float(value) if value is not None and math.isfinite(value) else fallback

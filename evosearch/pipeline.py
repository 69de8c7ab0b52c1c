"""The middle of the loop: an asked sample in, an evaluated program (a store row) out.

The answer comes from the ask's ``source`` (the run's sampler, a bandit arm, or an
operator); the edit is applied (a rewrite of the evolvable functions, or a SEARCH/REPLACE
diff), and a rejected edit is asked again with the reason shown; the child is evaluated
in the sandbox pool. Each hand-off is recorded in the store as it happens, so a kill at
any point leaves a pending row that resume finishes from where it stood.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Iterator

from .edits import apply_diff, parse_diff, rationale
from .extract import extract_functions
from .insights import digest, insight_prompt, parse_insights
from .planner import Ask, retry_seed
from .problem import Descriptor
from .program import EditError, RejectedEdit, ast_size, check_frozen, replace_functions
from .prompt import retry_prompt
from .samplers.base import Prompt, SamplerError
from .store import Outcome

if TYPE_CHECKING:
    from evaluators.evaluation import Evaluation

    from .config import RunConfig
    from .problem import Problem
    from .store import Store

# Program size in AST nodes: a behaviour axis every problem gets.
SIZE = Descriptor("size", 0, 400, 10)
# Measured evaluation time in log10 seconds (1 ms .. ~30 s): opt-in, since wall-clock
# time is noisy and would make a same-seed run land elites in other cells.
RUNTIME = Descriptor("log10_eval_s", -3.0, 1.5, 9)
# This many sampler failures in a row means the sampler is down, not unlucky.
MAX_SAMPLER_FAILURES = 20
# An answer asked again because it duplicated a known program is sampled this much hotter
# (0.8 -> 1.2 by default): the same prompt at the same temperature mostly writes the same program.
DUPLICATE_HEAT = 1.5


class SearchError(Exception):
    """The search cannot go on (seed program fails, sampler down): one line for the user."""


class Pipeline:
    def __init__(self, config: "RunConfig", problem: "Problem", store: "Store", evaluator, functions: list[str]):
        self.config, self.problem, self.store, self.evaluator = config, problem, store, evaluator
        self.functions = functions
        self.failures_in_a_row = 0

    async def produce(self, ask: Ask, row: dict | None = None) -> dict:
        """The evaluated row of an asked sample. ``row``: what the store held of it before a restart."""
        i = ask.id
        code = row["code"] if row else None
        # Earlier set-aside answers (resume mid-retry) come back into the prompt as they were shown.
        attempts = list((row or {}).get("attempts") or [])
        # Usage adds up over every answer of this sample (a resumed row holds the earlier ones), failed requests too.
        usage = {k: (row[k] or 0) if row else 0 for k in ("tokens_in", "tokens_out", "retries")}
        usage["cost"] = row["cost"] if row else None
        while True:
            if code is None:
                code = await self._answer(ask, attempts, usage)
                if isinstance(code, dict):  # no program: the failed row
                    return code
            self.failures_in_a_row = 0
            result = await self.evaluator.evaluate(code, key=i)
            known = self._repeats(ask, result, attempts)
            if known is None:
                return self.record(i, code, result, row or {"id": i, **_asked(ask)}, write=False)
            # A duplicate of a known program (a small model's most common answer): asked again, told so.
            which = ("the program it was asked to improve" if ask.parents and known == ask.parents[-1]
                     else "a program found earlier in this search")
            attempts.append({"response": self.store.get(i)["response"], "duplicate_of": known,
                             "reason": f"it behaves exactly like {which} (program {known}: the same outputs on "
                                       f"every probe input). Change what the function computes, not only how "
                                       f"it is written"})
            self.store.set_aside(i, attempts)
            code = None

    def _repeats(self, ask: Ask, result: "Evaluation", attempts: list) -> int | None:
        """The known program ``result`` duplicates when it may be asked again, else None. Known: the edited
        parent (same functional hash) or any program evaluated before (the evaluator's cache hit)."""
        if not result.ok or not result.functional_hash:
            return None
        if _duplicate_asks(attempts) >= self.config.duplicate_retries:
            return None
        if ask.parents:
            parent = self.store.get(ask.parents[-1])
            if parent is not None and parent["functional_hash"] == result.functional_hash:
                return ask.parents[-1]
        return result.duplicate_of

    async def _answer(self, ask: Ask, attempts: list, usage: dict) -> str | dict:
        """The child's code from the ask's source, asking again (reason shown) while an edit is rejected;
        or the failed row when no program came of it. ``attempts`` and ``usage`` are updated in place."""
        i, c = ask.id, self.config
        asked = ask.prompt
        for n, a in enumerate(attempts, 1):
            asked = retry_prompt(asked, a["response"], a["reason"], seed=retry_seed(c.seed, i, n))
        if duplicates := _duplicate_asks(attempts):
            asked = dataclasses.replace(asked, temperature_scale=DUPLICATE_HEAT ** duplicates)
        while True:
            try:
                sample = await ask.source.sample(asked)
            except SamplerError as e:
                _add_usage(usage, e.tokens_in, e.tokens_out, e.retries, e.cost)
                return self._fail(i, Outcome.SAMPLER_ERROR, str(e), usage)
            _add_usage(usage, sample.tokens_in, sample.tokens_out, int(sample.extra.get("retries") or 0),
                       sample.extra.get("cost"))
            answer = dict(response=sample.text, model=sample.model, sample_s=sample.seconds,
                          rationale=rationale(sample.text), **usage)
            try:
                code = self.edit(ask.edit_format, sample.text, ask.prompt)
            except RejectedEdit as e:
                if len(attempts) - _duplicate_asks(attempts) >= c.edit_retries:
                    self.store.answered(i, attempts=attempts or None, **answer)
                    return self._fail(i, Outcome.EDIT_REJECTED, str(e))
                # Shown to the model on the next attempt; both attempts stay recorded.
                attempts.append({"response": sample.text, "reason": str(e)})
                self.store.answered(i, attempts=attempts, **answer)
                asked = retry_prompt(asked, sample.text, str(e), seed=retry_seed(c.seed, i, len(attempts)))
                continue
            except (EditError, SyntaxError) as e:
                self.store.answered(i, attempts=attempts or None, **answer)
                return self._fail(i, Outcome.NO_CODE, str(e))
            self.store.answered(i, attempts=attempts or None, code=code, **answer)
            return code

    def edit(self, edit_format: str, text: str, prompt: Prompt) -> str:
        """The child program from an answer in ``edit_format``; RejectedEdit when it breaks the rules."""
        base = prompt.parents[-1]
        if edit_format == "diff":
            return apply_diff(base, parse_diff(text))
        # ``program`` lets extraction drop trusted helpers the model echoed back.
        functions = extract_functions(text, self.functions, header=prompt.header or None, program=base)
        code = replace_functions(base, functions)
        check_frozen(base, code)
        return code

    def record(self, i: int, code: str, result: "Evaluation", row: dict, write: bool = True) -> dict:
        """The finished row with the evaluator's verdict, stored now (``write``) or left in ``row["verdict"]``
        for the committer to store with the commit in one transaction."""
        descriptors = dict(result.descriptors)
        if result.ok:
            descriptors[SIZE.name] = float(ast_size(code))
            if self.config.runtime_descriptor and result.eval_s is not None:
                descriptors[RUNTIME.name] = math.log10(max(result.eval_s, 1e-3))
        verdict = dict(status=result.status, reason=result.reason, score=result.score,
                       descriptors=descriptors or None, metrics=result.metrics or None,
                       syntactic_hash=result.syntactic_hash, functional_hash=result.functional_hash,
                       cache_hit=result.cache_hit, duplicate_of=result.duplicate_of, eval_s=result.eval_s)
        if write:
            self.store.evaluated(i, **verdict)
            return {**row, **verdict, "code": code}
        return {**row, **verdict, "code": code, "verdict": verdict}

    def recorded(self) -> Iterator[tuple[int, "Evaluation"]]:
        """The evaluator's verdicts as ``record`` stored them (the descriptors it adds taken off again), for
        an evaluator to restore its caches from on resume."""
        from evaluators.evaluation import Evaluation
        added = (SIZE.name, RUNTIME.name)
        for row in self.store.verdicts():
            descriptors = {k: v for k, v in (row["descriptors"] or {}).items() if k not in added}
            yield row["id"], Evaluation(status=row["status"], reason=row["reason"], score=row["score"],
                                        descriptors=descriptors, metrics=row["metrics"] or {},
                                        syntactic_hash=row["syntactic_hash"], functional_hash=row["functional_hash"],
                                        duplicate_of=row["duplicate_of"])

    def _fail(self, i: int, outcome: Outcome, reason: str, usage: dict | None = None) -> dict:
        self.store.failed(i, outcome, reason, **(usage or {}))
        if outcome == Outcome.SAMPLER_ERROR:
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= MAX_SAMPLER_FAILURES:
                raise SearchError(f"the sampler failed {MAX_SAMPLER_FAILURES} times in a row; last: {reason}")
        return self.store.get(i)

    # --- insights (CoEvo) ----------------------------------------------------------------
    def insights_due(self, i: int) -> bool:
        n = self.config.insights_interval
        return n > 0 and i > self.config.concurrency and i % n == 0

    async def make_insights(self, i: int, sampler, score) -> None:
        """Summarise the samples finished up to i - concurrency into a few lines for later prompts."""
        c = self.config
        if (self.store.insights(i) or (None,))[0] == i:
            return  # made before a restart
        rows = list(self.store.programs("id > ? AND id <= ? AND status != 'pending'",
                                        (max(0, i - 4 * c.insights_interval), i - c.concurrency)))
        facts = digest(rows, {p: score(p) for row in rows for p in row["parents"]})
        previous = self.store.insights(i - 1)
        lines, model = [], "digest"
        if sampler.arms is not None:
            sampler = sampler.arm_sampler(next(iter(sampler.arms)))
        if facts and sampler.llm:  # a sampler with no model: the digest is the insight
            try:
                sample = await sampler.sample(insight_prompt(self.problem.description, facts,
                                                             previous[1].splitlines() if previous else [],
                                                             seed=retry_seed(c.seed, i, 0)))
                lines, model = parse_insights(sample.text), sample.model
            except SamplerError:
                pass  # the digest stands in
        if not lines:
            lines, model = facts, "digest"
        if lines:
            self.store.add_insights(i, "\n".join(lines), model)


def _duplicate_asks(attempts: list) -> int:
    """Attempts set aside as a duplicate of a known program (the others were rejected edits)."""
    return sum("duplicate_of" in a for a in attempts)


def _asked(ask: Ask) -> dict:
    return {"island": ask.island, "parents": ask.parents, "sampler": ask.sampler, "edit_format": ask.edit_format,
            "epoch": ask.epoch, "seen": ask.seen, "prompt_id": ask.extra.get("prompt_id"), "exploit": ask.exploit}


def _add_usage(usage: dict, tokens_in: int, tokens_out: int, retries: int, cost: float | None) -> None:
    usage["tokens_in"] += tokens_in
    usage["tokens_out"] += tokens_out
    usage["retries"] += retries
    if cost is not None:  # None: no price known for this model
        usage["cost"] = (usage["cost"] or 0.0) + cost

"""The ask side: what the next sample asks for.

For sample ``i`` the planner picks the island, the model (bandit arm), the edit format,
the parents (or a failed program to fix), inspirations and insights, builds the prompt
and records it in the store. Every draw comes from generators seeded by (run seed, i),
and what it reads is the committed state (the islands and what the committer keeps),
so in ordered commit mode a sample's plan is the same on every run and resume.

Operators: a planner holds a list of ``Operator``s asked first for every sample; one
that wants sample ``i`` returns its own ``Ask`` (e.g. a constant tuner proposing the
next trial of an elite's literals, with itself as the ``source`` that answers it), and
the committer ``tell``s every operator each committed result, so an operator that
needs the results of its own earlier children (ask/tell) keeps its state there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .prompt import EDIT_FORMATS, Shown, build_prompt
from .samplers.base import Prompt, Sampler

if TYPE_CHECKING:
    from .committer import Committer
    from .config import RunConfig
    from .problem import Problem
    from .store import Store


def sample_seed(run_seed: int, index: int) -> int:
    return int(np.random.SeedSequence([run_seed, index]).generate_state(1)[0])


def retry_seed(run_seed: int, index: int, attempt: int) -> int:
    """Seed of the attempt-th retry of sample ``index`` (0: its insights request)."""
    return int(np.random.SeedSequence([run_seed, index, 4, attempt]).generate_state(1)[0])


@dataclass
class Ask:
    """One planned sample: who answers (``source``), what they are shown, where the child goes."""

    id: int
    island: int | None
    parents: list[int]  # as stored: sorted by score, worst first (a diff: the best only; fix: the failed one)
    sampler: str  # name recorded in the store: the sampler's, the bandit arm's or the operator's
    edit_format: str
    epoch: int | None  # the island's epoch when drawn (a child of an older epoch is stale)
    seen: int  # results committed when it was drawn
    prompt: Prompt
    source: Sampler  # what answers the prompt
    extra: dict = field(default_factory=dict)  # an operator's own notes about this ask
    exploit: bool | None = None  # --selection exploit: whether it shows the archipelago's best (None: not drawn so)


class Operator:
    """A non-LLM way to propose samples (e.g. tuning an elite's constants), consulted before the LLM plan."""

    name = "operator"

    def ask(self, planner: "Planner", i: int) -> Ask | None:
        """This operator's plan for sample ``i``, or None to leave it to the LLM plan."""
        return None

    def tell(self, row: dict) -> None:
        """A committed result (any sample's, in commit order, replay included: there the row holds the
        columns of ``store.REPLAYED``; ``store.get(row["id"])`` has the rest)."""


class Planner:
    def __init__(self, config: "RunConfig", problem: "Problem", store: "Store", sampler: Sampler,
                 committer: "Committer", functions: list[str], operators: list[Operator] | None = None):
        self.config, self.problem, self.store, self.sampler = config, problem, store, sampler
        self.committer = committer
        self.functions = functions
        self.skeleton = problem.skeleton  # read once (the problem reads its file on every access)
        self.operators = list(operators or [])

    @property
    def archipelago(self):
        return self.committer.archipelago

    # --- planning a sample ---------------------------------------------------------
    def ask(self, i: int) -> Ask:
        """Plan sample i and record it (its row pending)."""
        group = self.config.samples_per_prompt
        if group > 1 and (i - 1) % group:
            return self._share(i, i - (i - 1) % group)
        for op in self.operators:
            planned = op.ask(self, i)
            if planned is not None:
                self.record(planned)
                return planned
        c = self.config
        island = (i - 1) % c.islands
        seed = sample_seed(c.seed, i)
        rng = np.random.default_rng(seed)
        arm = self._choose_arm(i)
        edit_format = self._choose_format(i, arm)
        failed = self._recent_failure(island, i) if edit_format == "fix" else None
        inspirations = []
        if edit_format == "fix" and failed is None:
            edit_format = "full"  # nothing of this island to repair yet
        exploit = None
        if failed is not None:
            shown, parent_ids = [self.shown(failed)], [failed]
        else:
            if edit_format == "crossover":
                elites = list(self.archipelago.select_mates(island, rng))
            else:
                exploit = self._choose_exploit(i)
                elites = self.archipelago.select_parents(island, rng, c.parents, exploit=exploit)
            shown = [self.shown(e.program_id) for e in elites]
            parent_ids = [e.program_id for e in sorted(elites, key=lambda e: e.score)]
            if c.inspirations:  # own generator: parent selection stays as without them
                others = self.archipelago.inspirations(island, np.random.default_rng([c.seed, i, 6]),
                                                       c.inspirations, exclude=elites)
                inspirations = [self.shown(e.program_id) for e in others]
        insights = self.store.insights(i - c.concurrency) if c.insights_interval else None
        prompt = build_prompt(description=self.problem.description, skeleton=self.skeleton,
                              parents=shown, seed=seed, edit_format=edit_format,
                              insights=insights[1].splitlines() if insights else None, inspirations=inspirations)
        prompt.arm = arm
        if edit_format == "diff":
            parent_ids = parent_ids[-1:]  # the diff prompt shows the best parent only
        planned = Ask(id=i, island=island, parents=parent_ids, sampler=arm or self.sampler.name,
                      edit_format=edit_format, epoch=self.archipelago.epoch(island), seen=self.committer.seq,
                      prompt=prompt, source=self.sampler, exploit=exploit)
        self.record(planned)
        return planned

    def record(self, planned: Ask) -> None:
        p = planned.prompt
        planned.extra["prompt_id"] = self.store.ask(
            planned.id, island=planned.island, parents=planned.parents, sampler=planned.sampler,
            edit_format=planned.edit_format, epoch=planned.epoch, seen=planned.seen, exploit=planned.exploit,
            prompt=dict(system=p.system, user=p.user, completion=p.completion, header=p.header,
                        completion_shared=p.completion_shared, user_shared=p.user_shared))

    def _share(self, i: int, lead: int) -> Ask:
        """Sample i draws again from the prompt of sample ``lead`` (FunSearch's several samples per
        prompt), with its own seed: a prompt cache then holds the whole prompt, not just the head."""
        first = self.store.get(lead)
        self.store.ask(i, island=first["island"], parents=first["parents"], sampler=first["sampler"],
                       edit_format=first["edit_format"], epoch=first.get("epoch"), seen=self.committer.seq,
                       prompt_id=first["prompt_id"], exploit=first.get("exploit"))
        return self.recall(self.store.get(i))

    def recall(self, row: dict) -> Ask:
        """The plan of a sample recorded earlier (before a restart, or sharing a prompt)."""
        saved = self.store.prompt_row(row["prompt_id"])
        source = next((op for op in self.operators if op.name == row["sampler"]), None) or self.sampler
        bandit = self.sampler.arms is not None
        prompt = Prompt(system=saved["system"], user=saved["user"],
                        parents=[self.store.get(p)["code"] for p in row["parents"]], functions=self.functions,
                        seed=sample_seed(self.config.seed, row["id"]), completion=saved["completion"] or "",
                        header=saved["header"] or "", completion_shared=saved["completion_shared"] or 0,
                        user_shared=saved["user_shared"] or 0, arm=row["sampler"] if bandit else "",
                        edit_format=row["edit_format"] or "full")
        return Ask(id=row["id"], island=row["island"], parents=row["parents"], sampler=row["sampler"],
                   edit_format=row["edit_format"] or "full", epoch=row.get("epoch"), seen=row.get("seen") or 0,
                   prompt=prompt, source=source, extra={"prompt_id": row["prompt_id"]}, exploit=row.get("exploit"))

    # --- the choices of a sample ----------------------------------------------------------
    def _choose_arm(self, i: int) -> str:
        if self.sampler.arms is None:
            return ""
        return self.sampler.choose(self.committer.rewards, np.random.default_rng([self.config.seed, i, 3]))

    def _choose_exploit(self, i: int) -> bool | None:
        """--selection exploit: whether sample i shows the archipelago's best parents (drawn here, at
        --exploit-share, so that the store records it; None: another selection)."""
        c = self.config
        if c.selection != "exploit":
            return None
        return bool(np.random.default_rng([c.seed, i, 7]).random() < c.exploit_share)

    def _choose_format(self, i: int, arm: str) -> str:
        sampler = self.sampler.arm_sampler(arm) if arm else self.sampler
        supported = sampler.edit_formats
        mix = {f: w for f, w in (self.config.edit_formats or sampler.edit_mix).items() if f in supported and w > 0}
        if not mix:
            return "full"
        if len(mix) == 1:
            return next(iter(mix))
        names = sorted(mix)
        weights = np.array([mix[f] for f in names], dtype=float)
        return names[int(np.random.default_rng([self.config.seed, i, 2]).choice(len(names), p=weights / weights.sum()))]

    def _recent_failure(self, island: int, i: int) -> int | None:
        """A recent failed program of the island to repair (fix mode), drawn by the sample's seed."""
        ids = [k for k in sorted(self.committer.failures[island]) if k > i - 200][-5:]
        if not ids:
            return None
        return ids[int(np.random.default_rng([self.config.seed, i, 5]).integers(len(ids)))]

    def shown(self, program_id: int) -> Shown:
        """A program for the prompt, with its feedback and the outcome of the change that made it."""
        row = self.store.get(program_id)
        parents = [s for s in (self.committer.score(p) for p in row["parents"]) if s is not None]
        ok = row["status"] == "ok"
        delta = row["score"] - max(parents) if ok and parents and row["score"] is not None else None
        return Shown(code=row["code"], score=row["score"] if ok else None, id=program_id, metrics=row["metrics"],
                     status=row["status"], error=None if ok else row["reason"], change=row.get("rationale"),
                     delta=delta)


__all__ = ["Ask", "Operator", "Planner", "EDIT_FORMATS", "sample_seed", "retry_seed"]

"""Several models in one run: a cost-aware UCB1 bandit picks the model of each sample.

An arm is a sampler (local, openai, mutate) with a relative cost per sample. The
reward of a sample is 1 if its program beat its best parent and 0 otherwise
(a failure is 0): scale-free, so it means the same on every problem. Arm ``a``'s
index is its UCB1 bound per unit cost, ``(mean_a + c * sqrt(ln N / n_a)) / cost_a``,
with costs divided by the cheapest arm's: an arm ten times dearer must promise ten
times the improvement rate to be picked, and its exploration is ten times dearer too
(improvement rates are small, so a bonus left undivided would keep a dear arm in play
long after its mean says no). Arms not yet tried go first, in an order drawn from the sample's
seed.

The bandit keeps no state of its own: the engine hands it the (arm, reward) pairs
of the samples that are surely committed when sample i starts (ids <= i - concurrency),
read from the store, so the choice is a function of the seed and the results, and a
resumed run makes the same choices without any saved bandit state.
"""
from __future__ import annotations

import math

import numpy as np

from evosearch.samplers.base import Prompt, Sample, Sampler, SamplerError


class BanditSampler(Sampler):
    name = "bandit"

    def __init__(self, arms: dict[str, Sampler], costs: dict[str, float] | None = None,
                 exploration: float = math.sqrt(2)):
        if not arms:
            raise ValueError("a bandit needs at least one arm")
        costs = costs or {}
        for name, cost in costs.items():
            if name not in arms:
                raise ValueError(f"cost given for unknown arm {name!r}")
            if not cost > 0:
                raise ValueError(f"cost of arm {name!r} must be > 0, got {cost}")
        self.arms = dict(arms)
        self.llm = any(s.llm for s in self.arms.values())  # insights and the commit mode follow the model arms
        cheapest = min(costs.get(a, 1.0) for a in self.arms)
        self.costs = {a: costs.get(a, 1.0) / cheapest for a in self.arms}
        self.exploration = exploration

    def index(self, history: list[tuple[str, float]]) -> dict[str, float]:
        """UCB index of each arm given (arm, reward) pairs; an untried arm's is +inf."""
        n = {a: 0 for a in self.arms}
        total = {a: 0.0 for a in self.arms}
        for arm, reward in history:
            if arm in n:
                n[arm] += 1
                total[arm] += reward
        plays = sum(n.values())
        return {a: math.inf if n[a] == 0 else
                (total[a] / n[a] + self.exploration * math.sqrt(math.log(plays) / n[a])) / self.costs[a]
                for a in self.arms}

    def choose(self, history: list[tuple[str, float]], rng: np.random.Generator) -> str:
        """The arm with the highest index; ties broken by ``rng`` (the sample's own seed)."""
        index = self.index(history)
        top = max(index.values())
        best = [a for a in self.arms if index[a] == top or (math.isinf(top) and math.isinf(index[a]))]
        return best[int(rng.integers(len(best)))] if len(best) > 1 else best[0]

    def arm_sampler(self, arm: str) -> Sampler:
        try:
            return self.arms[arm]
        except KeyError:
            raise SamplerError(f"unknown bandit arm {arm!r} (arms: {', '.join(self.arms)})") from None

    async def sample(self, prompt: Prompt) -> Sample:
        return await self.arm_sampler(prompt.arm).sample(prompt)

    def usage(self) -> dict | None:
        """The arms' accounts added up (what the summary's LLM line shows), each arm's under ``arms``;
        the cost is unknown (None) when one arm's is."""
        parts = {arm: u for arm, sampler in self.arms.items() if (u := sampler.usage())}
        if not parts:
            return None
        total = {key: sum(u.get(key) or 0 for u in parts.values())
                 for key in ("tokens_in", "tokens_out", "requests", "retries", "failures")}
        costs = [u.get("cost") for u in parts.values()]
        total["cost"] = None if None in costs else round(sum(costs), 8)
        return {**total, "arms": parts}

    async def check(self) -> None:
        for sampler in self.arms.values():
            await sampler.check()

    async def close(self) -> None:
        for sampler in self.arms.values():
            await sampler.close()


def reward(score: float | None, parent_scores: list[float | None]) -> float:
    """1 if the child beat its best parent, else 0 (failed children and parentless ones score 0)."""
    known = [s for s in parent_scores if s is not None]
    return float(score is not None and bool(known) and score > max(known))

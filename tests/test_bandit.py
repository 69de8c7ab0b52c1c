"""The cost-aware UCB bandit over samplers."""
import asyncio
import math

import numpy as np
import pytest

from evosearch.samplers.bandit import BanditSampler, reward
from evosearch.samplers.base import Prompt, SamplerError
from evosearch.samplers.mutate import MutateSampler


def bandit(**costs):
    return BanditSampler({"a": MutateSampler(), "b": MutateSampler(max_operators=1)}, costs or None)


def test_untried_arms_first_then_the_better_one():
    b, rng = bandit(), np.random.default_rng(0)
    first = b.choose([], rng)
    assert b.choose([(first, 0.0)], rng) != first  # the other arm is still untried
    history = [("a", 1.0)] * 6 + [("a", 0.0)] * 4 + [("b", 0.0)] * 10
    assert b.choose(history, rng) == "a"
    # Exploration: an arm tried once long ago gets its turn back.
    assert b.choose([("a", 1.0)] * 200 + [("a", 0.0)] * 300 + [("b", 0.0)], rng) == "b"


def test_ties_are_broken_by_the_sample_seed():
    b = bandit()
    picks = {b.choose([], np.random.default_rng(s)) for s in range(20)}
    assert picks == {"a", "b"}
    assert b.choose([], np.random.default_rng(7)) == b.choose([], np.random.default_rng(7))


def test_cost_divides_the_upper_bound():
    history = [("a", 1.0)] * 30 + [("a", 0.0)] * 70 + [("b", 1.0)] * 20 + [("b", 0.0)] * 80
    assert bandit().choose(history, np.random.default_rng(0)) == "a"  # 0.3 vs 0.2 per sample
    assert bandit(a=2.0).choose(history, np.random.default_rng(0)) == "b"  # 0.15 vs 0.2 per unit cost
    index = bandit(a=2.0, b=1.0).index(history)
    assert index["a"] == pytest.approx((0.3 + math.sqrt(2) * math.sqrt(math.log(200) / 100)) / 2)


def test_reward_is_beating_the_best_parent():
    assert reward(2.0, [1.0, 1.5]) == 1.0
    assert reward(1.5, [1.0, 1.5]) == 0.0
    assert reward(None, [1.0]) == 0.0
    assert reward(3.0, [None]) == 0.0


def test_sample_goes_to_the_prompts_arm():
    b = bandit()
    parent = "import numpy as np\n# EVOLVE-BLOCK-START\ndef f(x):\n    return x * 2.0 + 1.0\n# EVOLVE-BLOCK-END\n"
    p = Prompt("", "", [parent], ["f"], 3, arm="a")
    assert asyncio.run(b.sample(p)).text == asyncio.run(MutateSampler().sample(p)).text
    p.arm = "c"
    with pytest.raises(SamplerError, match=r"^unknown bandit arm 'c' \(arms: a, b\)$"):
        asyncio.run(b.sample(p))
    with pytest.raises(ValueError, match="cost of arm 'a' must be > 0"):
        bandit(a=0.0)

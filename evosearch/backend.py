"""Where the engine's parts run. A backend hands the engine three things: ``sampler``,
``pool`` (evaluators.pool.WorkerPool's interface: ``start``, ``run``, ``info``, ``close``)
and ``make_archipelago`` (the islands' factory). Switching backend changes where the
parts run, never what they compute.

* ``LocalBackend``: this process (asyncio) and a pool of warm sandbox worker processes.
* ``RayBackend`` (evosearch/ray_backend.py, the one place that drives Ray): islands,
  samplers and evaluators in Ray actors.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError, RunConfig
from .samplers import make_sampler
from .samplers.base import Sampler

if TYPE_CHECKING:
    from .problem import Problem


def build_sampler(config: RunConfig) -> Sampler:
    """The run's sampler: ``config.sampler``, or a bandit over its arms (``--sampler A+B``, ``models``)."""
    if config.arms():
        return build_bandit(config)
    try:
        return make_sampler(config.sampler, config)
    except ValueError as e:  # an option the sampler rejects, e.g. --max-cost for a model without a price
        raise ConfigError(str(e)) from None


def arm_spec(config: RunConfig, spec: dict) -> tuple[str, RunConfig, dict, float]:
    """One entry of ``models``: (sampler name, the run's knobs with the entry's model and base_url,
    the entry's other keys as sampler options, its relative cost)."""
    spec = dict(spec)
    name, cost = spec.pop("sampler"), float(spec.pop("cost", 1.0))
    base = dataclasses.replace(config, sampler=name, model=spec.pop("model", None), base_url=spec.pop("base_url", None))
    return name, base, spec, cost


def build_bandit(config: RunConfig) -> Sampler:
    """One sampler per arm (the run's knobs as defaults, the entry's keys on top), under a UCB bandit."""
    from .samplers.bandit import BanditSampler

    arms, costs = {}, {}
    for arm, spec in config.arms().items():
        name, base, options, costs[arm] = arm_spec(config, spec)
        try:
            arms[arm] = make_sampler(name, base, **options)
        except ValueError as e:
            raise ConfigError(f"config 'models': '{arm}': {e}") from None
    return BanditSampler(arms, costs)


class Backend:
    sampler: Sampler
    pool: object

    async def start(self) -> "Backend":
        return self

    def make_archipelago(self, *args, **kwargs):
        from islands.archipelago import Archipelago

        return Archipelago(*args, **kwargs)

    def stats(self) -> dict | None:
        """Backend facts for the summary (None: nothing to say)."""
        return None

    async def close(self) -> None:
        pass


class LocalBackend(Backend):
    def __init__(self, config: RunConfig, problem: "Problem", run_dir: Path | None = None):
        from evaluators.pool import WorkerPool

        self.sampler = build_sampler(config)
        self.pool = WorkerPool(problem.folder, config.data_dir, config.seed, config.problem_options,
                               workers=config.workers, hide=[str(run_dir)] if run_dir else [],
                               unsafe_no_sandbox=config.unsafe_no_sandbox)

    async def close(self) -> None:
        try:
            await self.sampler.close()
        finally:
            await self.pool.close()


def make_backend(config: RunConfig, problem: "Problem", run_dir: Path | None = None) -> Backend:
    if config.backend == "ray":
        from .ray_backend import RayBackend  # Ray is imported only when chosen

        return RayBackend(config, problem, run_dir)
    return LocalBackend(config, problem, run_dir)

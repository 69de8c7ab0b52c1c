"""Samplers on Ray: ``SamplerActor`` builds a sampler from a spec (name, run config and
options, as ``make_sampler`` takes) on the node Ray picks, e.g. a GPU node for an in-process
vLLM (``num_gpus``); ``RaySampler`` is the driver-side ``Sampler`` over the actors.

Secrets: an API key reaches a sampler actor only through that actor's own
``runtime_env`` (``env_vars``), never the job's, so evaluator actors never see it.

Fault tolerance: actors restart (``max_restarts``); a sample whose actor dies is
asked once more; a second loss is a ``SamplerError`` (recorded as "sampler_error").
Samplers are deterministic in ``prompt.seed`` where they can be, so a retried
sample is the same sample.
"""
from __future__ import annotations

import asyncio
import os

import ray
from ray.exceptions import RayActorError

from evaluators.actor import wait_alive
from evosearch.samplers import make_sampler, sampler_class
from evosearch.samplers.base import Prompt, Sample, Sampler, SamplerError


@ray.remote(num_cpus=0)
class SamplerActor:
    def __init__(self, name: str, config, kwargs: dict):
        self.sampler = make_sampler(name, config, **kwargs)

    async def sample(self, prompt: Prompt) -> Sample:
        return await self.sampler.sample(prompt)

    async def check(self) -> dict:
        """Fail fast as the sampler does; returns what the engine reads of a sampler besides sample()."""
        await self.sampler.check()
        return {"edit_formats": tuple(self.sampler.edit_formats), "edit_mix": dict(self.sampler.edit_mix),
                "llm": self.sampler.llm}

    def usage(self) -> dict | None:
        return self.sampler.usage()

    async def close(self) -> None:
        await self.sampler.close()

    def ping(self) -> bool:
        return True

    def facts(self) -> dict:
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(), "env": sorted(os.environ),
                "gpu_ids": ray.get_gpu_ids()}


class RaySampler(Sampler):
    """A Sampler whose samples come from ``n`` SamplerActors (least-loaded dispatch)."""

    def __init__(self, name: str, config=None, kwargs: dict | None = None, *, n: int = 1, num_gpus: float = 0,
                 resources: dict[str, float] | None = None, env_vars: dict[str, str] | None = None,
                 max_restarts: int = -1, actor_name: str | None = None):
        if n < 1:
            raise ValueError(f"need at least one sampler actor, not {n}")
        self.name = name
        options = dict(num_gpus=num_gpus, resources=resources or {}, max_restarts=max_restarts, max_task_retries=0)
        if env_vars:
            options["runtime_env"] = {"env_vars": dict(env_vars)}
        # The sampler's class decides what the engine reads of it (its module loads here only for that).
        cls = sampler_class(name)
        self.llm, self.edit_formats, self.edit_mix = cls.llm, cls.edit_formats, cls.edit_mix
        self.actors = [SamplerActor.options(**options, **({"name": f"{actor_name}-{k}"} if actor_name else {}))
                       .remote(name, config, dict(kwargs or {})) for k in range(n)]
        self._load = [0] * n
        self._next = 0
        self.actor_failures = 0

    def _pick(self) -> int:
        n = len(self.actors)
        i = min(range(n), key=lambda k: (self._load[k], (k - self._next) % n))
        self._next = (i + 1) % n
        return i

    async def sample(self, prompt: Prompt) -> Sample:
        failed = None
        for attempt in (1, 2):
            i = self._pick()
            if failed is not None and len(self.actors) > 1 and i == failed:
                i = (i + 1) % len(self.actors)
            if i == failed:  # the only actor: the retry waits for its restart rather than hitting it mid-restart
                await wait_alive(self.actors[i])
            self._load[i] += 1
            try:
                return await self.actors[i].sample.remote(prompt)
            except RayActorError as e:
                self.actor_failures += 1
                failed = i
                if attempt == 2:
                    raise SamplerError(f"sampler actor lost twice: {type(e).__name__}") from None
            except ray.exceptions.RayTaskError as e:
                # The sampler's own failure: its one-line message, not the remote traceback.
                raise (e.cause if isinstance(e.cause, Exception) else SamplerError(str(e))) from None
            finally:
                self._load[i] -= 1
        raise AssertionError("unreachable")

    async def check(self) -> None:
        try:
            facts = await asyncio.gather(*(a.check.remote() for a in self.actors))
        except RayActorError as e:
            raise SamplerError(f"sampler actor cannot start: {e}") from None
        except ray.exceptions.RayTaskError as e:
            raise (e.cause if isinstance(e.cause, Exception) else SamplerError(str(e))) from None
        # as the sampler itself says
        self.edit_formats, self.edit_mix, self.llm = facts[0]["edit_formats"], facts[0]["edit_mix"], facts[0]["llm"]

    def usage(self) -> dict:
        """The sampler's usage (tokens, cost, retries, failures), summed over the actors."""
        try:
            usages = ray.get([a.usage.remote() for a in self.actors], timeout=30)
        except Exception:  # an actor lost at the end: usage is a report, not a result
            return {}
        usages = [u for u in usages if u]
        if len(usages) <= 1:
            return usages[0] if usages else {}
        # Several actors: one account, the counts summed (the cost unknown if any actor's is).
        total = {k: sum(u.get(k) or 0 for u in usages) for k in ("tokens_in", "tokens_out", "requests", "retries",
                                                                  "failures")}
        costs = [u.get("cost") for u in usages]
        return {**total, "cost": None if None in costs else sum(costs), "actors": usages}

    async def facts(self) -> list[dict]:
        await asyncio.gather(*(wait_alive(a) for a in self.actors))  # one killed a moment ago is restarting
        return [await a.facts.remote() for a in self.actors]

    async def close(self) -> None:
        for a in self.actors:
            try:
                await a.close.remote()
            except Exception:  # already gone: nothing to release
                pass
            ray.kill(a, no_restart=True)

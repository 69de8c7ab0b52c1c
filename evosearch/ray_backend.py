"""The Ray backend: the engine's parts placed as Ray actors.

* islands: one ``IslandActor`` each, ``num_cpus=0`` (they hold an archive and do
  little work, so they never take a CPU an evaluation could use);
* samplers: ``SamplerActor``s (``num_gpus`` for an in-process vLLM); an API key goes
  only into their own ``runtime_env``;
* evaluators: ``EvaluatorActor``s, each owning a pool of warm sandbox workers, placed
  on nodes offering the custom resource ``sandbox`` (1 per actor);
* the store: written by one owner, the driver running the engine.

The engine is unchanged: it awaits the same sampler / evaluator calls and drives an
``Archipelago`` whose islands are proxies. In ordered commit mode results are committed
in sample order, so with the same seed and the mutate sampler both backends reach the
same archive. Every actor is named (``ray list actors`` shows ``evosearch-<run>-...``).

A private instance is private: without ``--address`` this starts a new local Ray
instance (``address="local"``), never joining a cluster already running on the machine
(a bare ``ray.init()`` joins the latest one recorded in Ray's temp folder).

Authentication (Ray >= 2.59): ``ray.init()`` starting a new local cluster turns
token authentication on by default, while ``ray start --head`` turns it on only if a
token already exists (~/.ray/auth_token). Both are decided by ``RAY_AUTH_MODE``; this
module never leaves it to chance: Ray reads the variable when it is imported, so it is
set by the caller (scripts, tests and cluster/README.md set it explicitly); a private
instance with it unset says on stderr that tokens are on, and joining a cluster that
wants a token without one fails with a one-line error saying what to set.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import ray

from evaluators.actor import RayWorkerPool
from islands.actor import RayArchipelago

from .backend import Backend
from .config import RunConfig
from .pipeline import SearchError
from .problem import Problem
from .samplers.actor import RaySampler

AUTH_MODE = "RAY_AUTH_MODE"
PLACEMENT_TIMEOUT_S = 300.0


class RayBackendError(SearchError):
    """The Ray cluster cannot be joined or cannot host the run (one line for the user)."""


@contextlib.contextmanager
def _sigterm_kept():
    """ray.init() makes SIGTERM exit the driver at once (sys.exit, mid-await); the CLI's own handler, which
    stops the run as Ctrl-C does and writes its summary, is put back."""
    saved = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if saved is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, saved)


def connect(address: str | None, *, resources: dict[str, float] | None = None, hidden_env: tuple[str, ...] = (),
            quiet: bool = False) -> bool:
    """Join the cluster at ``address`` ("auto", "HOST:PORT", "ray://...") or, when None, start
    a private Ray instance on this machine offering ``resources``. Returns whether
    this call connected (False: this process was connected already)."""
    if ray.is_initialized():
        return False
    if address is None:
        if os.environ.get(AUTH_MODE) is None and not quiet:
            # Ray reads RAY_AUTH_MODE when it is imported, so it cannot be set from here; unset, Ray 2.59+
            # turns tokens on for a new local instance (and writes ~/.ray/auth_token): say so.
            print(f"ray: private instance, token authentication on ({AUTH_MODE} unset; "
                  f"{AUTH_MODE}=disabled opts out)", file=sys.stderr)
        # Ray's processes inherit this environment: keep API keys out of every actor but the samplers.
        saved = {k: os.environ.pop(k) for k in hidden_env if k in os.environ}
        try:
            # "local": a new instance, even where another cluster runs on this machine.
            with _sigterm_kept():
                ray.init(address="local", resources=resources or {}, include_dashboard=False,
                         logging_level=logging.WARNING, log_to_driver=not quiet)
        finally:
            os.environ.update(saved)
        return True
    try:
        with _sigterm_kept():
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=not quiet)
    except ray.exceptions.AuthenticationError as e:
        mode = os.environ.get(AUTH_MODE, "unset")
        raise RayBackendError(f"the Ray cluster at {address} wants token authentication ({AUTH_MODE} is {mode}): "
                              f"set {AUTH_MODE}=token and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the cluster's "
                              f"token ({str(e).splitlines()[0][:120]})") from None
    except ConnectionError as e:
        hint = "" if os.environ.get(AUTH_MODE) == "token" else (
            f" (a cluster with token authentication refuses clients without it: set {AUTH_MODE}=token "
            f"and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)")
        raise RayBackendError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0]}{hint}") from None
    return True


class RayBackend(Backend):
    """``async with RayBackend(config, problem, run_dir) as backend``: ``backend.sampler``,
    ``backend.pool`` (WorkerPool's interface) and ``backend.make_archipelago`` for the Engine.
    ``sampler_spec``: (name, options) over the config's sampler."""

    def __init__(self, config: RunConfig, problem: Problem, run_dir: Path | None = None,
                 sampler_spec: tuple[str, dict] | None = None, sleep_s: float | None = None):
        self.config, self.problem, self.run_dir = config, problem, run_dir
        self.sampler_spec = sampler_spec
        self.sleep_s = sleep_s  # benchmarks: evaluator actors answer after a fixed sleep, no sandbox
        self.sampler: RaySampler | None = None
        self.pool: RayWorkerPool | None = None
        self.archipelagos: list[RayArchipelago] = []
        self._connected = False
        # Actor names: the run folder's name and this driver's pid keep two runs on one cluster apart.
        self.prefix = f"evosearch-{run_dir.name if run_dir else 'run'}-{os.getpid()}"
        RayBackend.current = self  # the live backend, for tests that inject faults

    current: "RayBackend | None" = None

    def _secrets(self) -> dict[str, str]:
        """Environment only sampler actors get: the API key of an API sampler."""
        key = self.config.api_key_env
        return {key: os.environ[key]} if key and key in os.environ else {}

    async def __aenter__(self) -> "RayBackend":
        return await self.start()

    async def start(self) -> "RayBackend":
        """Connect and create the sampler and evaluator actors (islands come with the engine)."""
        c = self.config
        if c.arms():
            raise RayBackendError("--backend ray does not take several samplers under a bandit ('models', "
                                  "--sampler A+B) yet: give one --sampler")
        private = {}
        if c.sandbox_resource:
            private[c.sandbox_resource] = float(c.evaluator_actors)
        if c.sampler_resource:
            private[c.sampler_resource] = float(c.sampler_actors)
        self._connected = connect(c.address, resources=private, hidden_env=tuple(self._secrets()), quiet=c.quiet)
        try:
            self._check_resources()
            name, kwargs = self.sampler_spec or (c.sampler, {})
            self.sampler = RaySampler(name, c, kwargs, n=c.sampler_actors, num_gpus=c.sampler_gpus,
                                      resources={c.sampler_resource: 1} if c.sampler_resource else None,
                                      env_vars=self._secrets(), actor_name=f"{self.prefix}-sampler")
            # A problem's name, resolved on each node (its install path may differ there), or a folder.
            pool_kwargs = dict(problem_folder=c.problem, data_dir=c.data_dir, seed=c.seed,
                               options=c.problem_options, workers=c.workers,
                               hide=[str(self.run_dir)] if self.run_dir else [],
                               unsafe_no_sandbox=c.unsafe_no_sandbox)
            self.pool = RayWorkerPool(c.evaluator_actors, pool_kwargs, sleep_s=self.sleep_s,
                                      resources={c.sandbox_resource: 1} if c.sandbox_resource else None,
                                      actor_name=f"{self.prefix}-evaluator")
            try:
                await asyncio.wait_for(self.pool.start(), PLACEMENT_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise RayBackendError(
                    f"the {c.evaluator_actors} evaluator actors were not all placed within {PLACEMENT_TIMEOUT_S:.0f}s: "
                    f"need nodes offering {c.evaluator_actors} of the custom resource '{c.sandbox_resource}' "
                    f"(see `ray status`; start nodes with --resources='{{\"{c.sandbox_resource}\": N}}')") from None
        except BaseException:
            await self.close()
            raise
        return self

    def _check_resources(self) -> None:
        c = self.config
        have = ray.cluster_resources()
        for name, need in ((c.sandbox_resource, c.evaluator_actors), (c.sampler_resource, c.sampler_actors),
                           ("GPU", c.sampler_gpus * c.sampler_actors)):
            if name and need and have.get(name, 0) < need and not c.quiet:
                # Not fatal: an autoscaling cluster adds such nodes on demand.
                print(f"ray: the cluster offers {have.get(name, 0):g} of resource '{name}' now, the run needs "
                      f"{need:g}; waiting for the autoscaler", file=sys.stderr)

    def make_archipelago(self, *args, **kwargs) -> RayArchipelago:
        archipelago = RayArchipelago(*args, actor_name=f"{self.prefix}-island{len(self.archipelagos) or ''}", **kwargs)
        self.archipelagos.append(archipelago)
        return archipelago

    async def facts(self) -> dict:
        """Where every actor runs (pids, nodes): for tests, reports and fault injection."""
        return {"evaluators": await self.pool.facts(), "samplers": await self.sampler.facts(),
                "islands": [[isl.pid() for isl in a.islands] for a in self.archipelagos]}

    def stats(self) -> dict:
        """Faults survived, and each island's final elites (program ids, as held by its actor)."""
        return {"evaluator_actor_failures": self.pool.actor_failures if self.pool else 0,
                "sampler_actor_failures": self.sampler.actor_failures if self.sampler else 0,
                "island_restores": sum(isl.restores for a in self.archipelagos for isl in a.islands),
                "migrations": sum(a.migrations for a in self.archipelagos),
                "island_elites": [[e.program_id for e in isl.elites()] for a in self.archipelagos[-1:]
                                  for isl in a.islands]}

    async def close(self) -> None:
        for a in self.archipelagos:
            a.close()
        if self.pool is not None:
            await self.pool.close()
        if self.sampler is not None:
            await self.sampler.close()
        if self._connected:
            ray.shutdown()
            self._connected = False

    async def __aexit__(self, *exc) -> None:
        await self.close()


"""Islands in Ray actors: ``IslandActor`` hosts one island (whatever
``archipelago.new_island`` builds: a pyribs-backed ``Island`` or a ``ClusterIsland``);
``IslandProxy`` is the driver-side stand-in that forwards any island method or
property by name, so ``Archipelago`` drives it like a local island.

Same results as local: calls are synchronous from the driver's point of view (the
engine commits in sample order), and a ``numpy.random.Generator`` argument comes back
in the state the call left it in, as it would locally.

Fault tolerance: an island is a pure function of the calls made on it, so the
proxy keeps a snapshot of the island (every ``snapshot_every`` journaled calls)
plus the calls made since (every call but the known pure readers). When the actor
dies (kill -9, node loss), Ray restarts it (``max_restarts``); the restarted actor
refuses work until the proxy has pushed the snapshot and replayed the journal;
then the failed call is made again. The restored island equals the one that died.
A dead driver takes the proxies with it: ``--resume`` rebuilds every island by
replaying the store's committed results (the engine's own replay).

Migration: each actor picks its own emigrants (``top``): only ``migration_size``
elites per island travel, never an island's population.

Pipelining: inserting a result (``add``, DGM's ``record_child``) does not wait for the
actor. Ray runs one caller's calls on an actor in the order they were sent, so a later
parent selection still sees the insert; the insert's answer (the archive result) is
collected later, in batches (``RayArchipelago.settle``). Journaled calls carry their
position in the journal, so a call that reaches an actor already restored past it is
not applied twice; an insert whose actor died before answering gets the answer its
replay gave (a restore returns what each replayed call returned), so the store records
the same archive result as a run where nothing died.
"""
from __future__ import annotations

import os
import pickle
import time
import warnings
from collections.abc import Sequence

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError

from islands.archipelago import Archipelago, _top, new_island
from islands.island import Elite

# Pure readers: not journaled. Anything else (add, clear, record_child, selection with its
# own counters, methods added later) is journaled, so restore stays exact as islands grow.
READ_ONLY = frozenset({"best", "elites", "cell_of", "clip", "stats", "children", "curiosity", "occupied_cell", "top",
                       "select_parents", "sample_elites", "elite_cells", "__len__"})
RESTART_WAIT_S = 120.0


class IslandLost(Exception):
    """The actor was restarted and has not been restored yet."""


def _rng_states(args: tuple, kwargs: dict) -> list:
    return [a.bit_generator.state for a in (*args, *kwargs.values()) if isinstance(a, np.random.Generator)]


@ray.remote(num_cpus=0)
class IslandActor:
    def __init__(self, descriptors, qd_score_offset=None, options=None):
        self.args = (descriptors, qd_score_offset, dict(options or {}))
        self.island = new_island(descriptors, qd_score_offset, **self.args[2])
        self.applied = 0  # journaled calls applied so far
        self.replayed: dict[int, object] = {}  # position -> what the last restore's replay of that call returned
        with warnings.catch_warnings():  # Ray's own use of a deprecated API inside this call
            warnings.simplefilter("ignore")
            # A restarted actor starts empty: it must be restored before serving calls.
            self.lost = ray.get_runtime_context().was_current_actor_reconstructed

    def island_class(self) -> type:
        return type(self.island)

    def call(self, method: str, args: tuple, kwargs: dict, position: int | None = None):
        """The island's method (or property) ``method``; returns (result, rng states after the call).
        ``position``: a journaled call's place in the journal (None: a pure reader)."""
        if self.lost:
            raise IslandLost("island actor restarted; restore it first")
        if position is not None:
            if position < self.applied:
                return self.replayed.get(position), []  # applied by a restore already: its answer then
            self.applied = position + 1
        attr = getattr(self.island, method)
        result = attr(*args, **kwargs) if callable(attr) else attr
        return result, _rng_states(args, kwargs)

    def top(self, m: int) -> list[Elite]:
        """The emigrants: this island's m best elites (the rule of local migration)."""
        if self.lost:
            raise IslandLost("island actor restarted; restore it first")
        return _top(self.island, m)

    def snapshot(self) -> bytes:
        return pickle.dumps(self.island)

    def restore(self, snapshot: bytes | None, journal: list, base: int = 0) -> dict[int, object]:
        """The island as of ``snapshot`` (taken after ``base`` journaled calls) plus the calls since;
        returns what each replayed call returned, by journal position."""
        d, offset, options = self.args
        self.island = pickle.loads(snapshot) if snapshot is not None else new_island(d, offset, **options)
        self.replayed = {base + n: getattr(self.island, method)(*pickle.loads(args), **pickle.loads(kwargs))
                         for n, (method, args, kwargs) in enumerate(journal)}
        self.applied = base + len(journal)
        self.lost = False
        return self.replayed

    def pid(self) -> int:
        return os.getpid()


class IslandProxy:
    """An island's interface, served by an ``IslandActor``."""

    def __init__(self, descriptors: Sequence, qd_score_offset: float | None = None, *, options: dict | None = None,
                 actor_options: dict | None = None, snapshot_every: int = 1000):
        self.descriptors = tuple(descriptors)
        self.snapshot_every = snapshot_every
        self.actor = IslandActor.options(max_restarts=-1, max_task_retries=0, **(actor_options or {})).remote(
            self.descriptors, qd_score_offset, options)
        self._snapshot: bytes | None = None
        self._base = 0  # journaled calls the snapshot holds
        self._journal: list[tuple[str, bytes, bytes]] = []
        self._emigrants: list[Elite] | None = None  # set by RayArchipelago.migrate, read once by elites()
        self.restores = 0
        # What restores replayed, by position: read (popped) for calls the actor died before answering; the
        # rest stays, at most snapshot_every answers a restore, and restores are rare.
        self._replayed: dict[int, object] = {}
        self._cls: type | None = None  # the hosted island's class, asked for on first use

    # -- fault tolerance -------------------------------------------------------------
    def _get(self, make_ref):
        """One actor call; on a lost actor, wait for its restart, restore it, and call again."""
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            try:
                return ray.get(make_ref())
            except (RayActorError, IslandLost) as e:  # a remote IslandLost arrives as a subclass of it
                if time.monotonic() > deadline:
                    raise RuntimeError(f"island actor did not come back within {RESTART_WAIT_S:.0f}s: {e}") from e
                self._restore(deadline)
            except ray.exceptions.RayTaskError as e:  # the island's own error, as it would be raised locally
                raise e.cause from None

    def _restore(self, deadline: float) -> None:
        while True:
            try:
                self._replayed.update(ray.get(self.actor.restore.remote(self._snapshot, self._journal, self._base),
                                              timeout=max(1.0, deadline - time.monotonic())))
                self.restores += 1
                return
            except (RayActorError, GetTimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # still restarting

    def _call(self, method: str, *args, **kwargs):
        # Pickled before the call: the journal keeps every argument (an rng's state included) as the call saw it.
        entry = None if method in READ_ONLY else (method, pickle.dumps(args), pickle.dumps(kwargs))
        position = None if entry is None else self._base + len(self._journal)
        result, states = self._get(lambda: self.actor.call.remote(method, args, kwargs, position))
        for rng, state in zip((a for a in (*args, *kwargs.values()) if isinstance(a, np.random.Generator)), states):
            rng.bit_generator.state = state  # advanced as a local call would have advanced it
        if entry is not None:
            self._journaled(entry)
        return result

    def _journaled(self, entry: tuple) -> None:
        self._journal.append(entry)
        if len(self._journal) >= self.snapshot_every:
            self._snapshot = self._get(lambda: self.actor.snapshot.remote())
            self._base += len(self._journal)
            self._journal = []

    def submit(self, method: str, *args, **kwargs) -> "Pending":
        """Send a changing call without waiting for it (no generator arguments); ``Pending.result()``
        reads its answer. Journaled at once: a restore includes it."""
        entry = (method, pickle.dumps(args), pickle.dumps(kwargs))
        position = self._base + len(self._journal)
        pending = Pending(self, position, self.actor.call.remote(method, args, kwargs, position))
        self._journaled(entry)
        return pending

    def replayed(self, position: int):
        """The answer of the journaled call at ``position`` whose actor died before answering: once the
        actor is restored (waited for here), the one its replay gave. Read once."""
        len(self)  # any call restores a lost actor
        return self._replayed.pop(position)

    # -- the island's interface --------------------------------------------------------
    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._cls is None:
            self._cls = self._get(lambda: self.actor.island_class.remote())
        attr = getattr(self._cls, name, None)
        if attr is None:
            raise AttributeError(f"{self._cls.__name__} has no attribute {name!r}")
        if isinstance(attr, property):  # read by nature: fetched, never journaled
            return self._get(lambda: self.actor.call.remote(name, (), {}))[0]
        return lambda *args, **kwargs: self._call(name, *args, **kwargs)

    def __len__(self) -> int:
        return self._call("__len__")

    def elites(self) -> list[Elite]:
        if self._emigrants is not None:  # inside RayArchipelago.migrate: the m best, all migration reads
            emigrants, self._emigrants = self._emigrants, None
            return emigrants
        return self._call("elites")

    def top(self, m: int) -> list[Elite]:
        return self._get(lambda: self.actor.top.remote(m))

    def pid(self) -> int:
        return self._get(lambda: self.actor.pid.remote())

    def kill(self) -> None:
        ray.kill(self.actor, no_restart=True)


class Pending:
    """A call sent to an island actor (an insert: its archive result), its answer not read yet."""

    __slots__ = ("island", "position", "ref")

    def __init__(self, island: IslandProxy, position: int, ref: "ray.ObjectRef"):
        self.island, self.position, self.ref = island, position, ref

    def result(self):
        try:
            return ray.get(self.ref)[0]
        except (RayActorError, IslandLost):  # died before answering: the restore replayed it from the journal
            return self.island.replayed(self.position)
        except ray.exceptions.RayTaskError as e:  # the island's own error, as it would be raised locally
            raise e.cause from None


class RayArchipelago(Archipelago):
    """An ``Archipelago`` whose islands live in actors (``num_cpus=0`` each)."""

    def __init__(self, *args, actor_options: dict | None = None, actor_name: str | None = None, **kwargs):
        made = []

        def make_island(descriptors, qd_score_offset=None, **options):
            named = {"name": f"{actor_name}-{len(made)}"} if actor_name else {}
            made.append(IslandProxy(descriptors, qd_score_offset, options=options,
                                    actor_options={**(actor_options or {}), **named}))
            return made[-1]

        kwargs["make_island"] = make_island
        super().__init__(*args, **kwargs)
        self.migrations = 0

    def add(self, island: int, program_id: int, score: float, descriptors, epoch: int | None = None,
            parents=()):
        """Pipelined: the insert is sent, not awaited; returns a ``Pending`` archive result (see ``settle``).
        A child that may be stale (its island was reset since its prompt) is decided at once."""
        if epoch is not None and epoch != self.epochs[island]:
            return super().add(island, program_id, score, descriptors, epoch, parents)
        extra = ([int(p) for p in parents],) if parents else ()
        return self._island(island).submit("add", program_id, score, descriptors, *extra)

    def record_child(self, island: int, parent_ids) -> None:
        self._island(island).submit("record_child", [int(p) for p in parent_ids])

    def record_failure(self, island: int, parent_ids) -> None:
        self._island(island).submit("record_failure", [int(p) for p in parent_ids])

    @staticmethod
    def settle(pending: list["Pending"], wait: bool = False) -> list:
        """The archive results of those ``pending`` inserts that are answered (all of them with ``wait``),
        as (pending, result); a lost actor's answer is the one its restore's replay gave."""
        if not pending:
            return []
        refs = [p.ref for p in pending]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=None if wait else 0)
        ready = set(ready)
        return [(p, p.result()) for p in pending if p.ref in ready]

    def migrate(self, *args, **kwargs) -> list[dict]:
        # Every actor picks its emigrants at once (one round trip in all); Archipelago.migrate
        # then reads them through elites() in place of each island's whole population.
        m = self.migration_size
        self.migrations += 1
        refs = [isl.actor.top.remote(m) for isl in self.islands]
        for isl, ref in zip(self.islands, refs):
            try:
                isl._emigrants = ray.get(ref)
            except Exception:  # lost: the proxy restores the actor and asks again
                isl._emigrants = isl.top(m)
        try:
            return super().migrate(*args, **kwargs)
        finally:
            for isl in self.islands:
                isl._emigrants = None

    def close(self) -> None:
        for isl in self.islands:
            try:
                isl.kill()
            except Exception:  # already gone
                pass

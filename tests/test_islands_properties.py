"""Property tests (hypothesis) of islands: archives never lose their best, duplicates
change nothing, migration and resets never lose the global best, counts are conserved,
and the island's fast cell index is pyribs' own."""
from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from evosearch.problem import Descriptor
from islands import Archipelago, Categorical, ClusterIsland, Island

GRID = (Descriptor("length", 0.0, 10.0, 5), Descriptor("size", -1.0, 1.0, 4))  # 20 cells
PROPS = settings(max_examples=50, deadline=None)

scores = st.floats(-1e3, 1e3, allow_nan=False)
# Small score set too, so equal scores (ties, shared clusters) are common.
tied_scores = st.sampled_from([-2.0, -1.0, 0.0, 0.5, 3.0])
desc_values = st.tuples(st.one_of(st.floats(-5, 15), st.sampled_from([-math.inf, math.inf, 0.0, 10.0, 2.0, 4.0])),
                        st.floats(-2, 2))
adds = st.lists(st.tuples(st.one_of(scores, tied_scores), desc_values), min_size=1, max_size=40)
STRATEGIES = ("uniform", "boltzmann", "dgm", "best", "curiosity", "exploit")


def make(kind: str):
    if kind == "clusters":
        return ClusterIsland(GRID, max_clusters=8, cluster_cap=2)
    if kind == "cvt":
        return Island(GRID, archive="cvt", cvt_cells=12)
    return Island(GRID, neutral=kind == "neutral")


KINDS = st.sampled_from(["grid", "cvt", "clusters", "neutral"])


def snapshot(isl) -> tuple:
    return isl.elites(), isl.stats(), isl.offered, len(isl)


@PROPS
@given(KINDS, adds)
def test_an_archive_never_loses_its_best(kind, items):
    isl = make(kind)
    best = -math.inf
    for pid, (score, desc) in enumerate(items):
        isl.add(pid, score, desc)
        best = max(best, score)
        assert isl.best().score == best
        assert isl.stats()["best"] == best
        assert max(e.score for e in isl.elites()) == best


@PROPS
@given(KINDS, adds, st.integers(0, 2**32 - 1))
def test_inserting_a_duplicate_changes_nothing(kind, items, seed):
    isl = make(kind)
    for pid, (score, desc) in enumerate(items):
        isl.add(pid, score, desc)
    before = snapshot(isl)
    draws = [isl.select_parents(np.random.default_rng(seed), 3, s) for s in STRATEGIES]
    for e in isl.elites():
        assert isl.add(e.program_id, e.score, e.descriptors) == "not_added"
    assert snapshot(isl) == before
    # Parent selection (including Boltzmann's temperature, which depends on the count) is unchanged too.
    assert [isl.select_parents(np.random.default_rng(seed), 3, s) for s in STRATEGIES] == draws


@PROPS
@given(adds)
def test_counts_are_conserved_in_one_island(items):
    """Elites = "new" answers since the last clear; "improve" swaps one for one; pyribs agrees."""
    isl = Island(GRID)
    new = 0
    for pid, (score, desc) in enumerate(items):
        status = isl.add(pid, score, desc)
        new += status == "new"
        assert len(isl) == new == len(isl.elites()) == isl.stats()["elites"] == len(isl.archive)
        assert isl.stats()["coverage"] == new / isl.cells
    held = {e.program_id for e in isl.elites()}
    assert held <= set(range(len(items)))  # nothing invented
    assert len({isl.cell_of(e.descriptors) for e in isl.elites()}) == len(held)  # one elite per cell


@PROPS
@given(st.lists(st.tuples(st.floats(-20, 30), st.floats(-3, 3)), min_size=1, max_size=30))
def test_fast_cell_index_is_pyribs_index_of(points):
    isl = Island(GRID)
    for p in points:
        clipped = isl.clip(p)
        assert isl.cell_of(p) == int(isl.archive.index_of_single(np.array(clipped)))


ops = st.lists(st.tuples(st.integers(0, 4), st.one_of(scores, tied_scores), desc_values, st.booleans()),
               min_size=1, max_size=60)


@PROPS
@given(ops, st.integers(1, 5), st.integers(0, 4), st.integers(1, 3), st.integers(0, 4),
       st.sampled_from(["ring", "random"]), KINDS, st.integers(0, 1000))
def test_migration_and_resets_never_lose_the_global_best(seq, n, mig, mig_size, reset, topology, kind, seed):
    kwargs = {"grid": {}, "neutral": {"neutral": True}, "cvt": {"archive": "cvt", "cvt_cells": 12},
              "clusters": {"archive": "clusters", "max_clusters": 8, "cluster_cap": 2}}[kind]
    arch = Archipelago(n, GRID, migration_interval=mig, migration_size=mig_size, reset_interval=reset,
                       topology=topology, island_kwargs=kwargs)
    rng = np.random.default_rng(seed)
    arch.add_everywhere(0, 0.0, (5.0, 0.0))
    best = 0.0
    drawn_at: dict[int, int] = {}  # a prompt's epoch, sometimes from before a reset (in-flight children)
    for i, (island, score, desc, stale) in enumerate(seq, start=1):
        island %= n
        epoch = drawn_at.get(island, 0) if stale else arch.epoch(island)
        drawn_at[island] = arch.epoch(island)
        status = arch.add(island, i, score, desc, epoch=epoch)
        assert status in ("new", "improve", "not_added", "stale", *(("replace",) if kind == "neutral" else ()))
        best = max(best, score)
        events = arch.on_commit(i, rng)
        assert arch.best().score == best
        for ev in events:
            if ev["event"] == "reset":
                assert ev["epoch"] == arch.epoch(ev["island"])
        assert all(isl.best() is not None for isl in arch.islands)  # resets reseed, never leave empty


@PROPS
@given(ops, st.integers(2, 5), st.integers(1, 3), st.sampled_from(["ring", "random"]), st.integers(0, 1000))
def test_migration_conserves_elites_and_moves_only_held_programs(seq, n, mig_size, topology, seed):
    """A migration copies: the sources keep their elites, each arrival is one event, and every
    elite anywhere is a program that was inserted somewhere."""
    arch = Archipelago(n, GRID, migration_interval=1, migration_size=mig_size, topology=topology)
    rng = np.random.default_rng(seed)
    inserted = set()
    for i, (island, score, desc, _) in enumerate(seq, start=1):
        arch.add(island % n, i, score, desc)
        inserted.add(i)
        before = [{e.program_id for e in isl.elites()} for isl in arch.islands]
        sizes = [len(isl) for isl in arch.islands]
        events = arch.on_commit(i, rng)
        after = [{e.program_id for e in isl.elites()} for isl in arch.islands]
        new_arrivals = sum(ev["status"] == "new" for ev in events)
        assert sum(len(isl) for isl in arch.islands) == sum(sizes) + new_arrivals
        for j, ev in enumerate(events):
            assert ev["from"] != ev["to"] and ev["program_id"] in before[ev["from"]]
            # Still there, unless a later arrival on the same island improved on it (random topology:
            # two islands may send to one).
            displaced = any(later["to"] == ev["to"] and later["status"] == "improve" for later in events[j + 1:])
            assert ev["program_id"] in after[ev["to"]] or displaced
        for dst in range(n):
            arrived = {ev["program_id"] for ev in events if ev["to"] == dst}
            assert after[dst] <= before[dst] | arrived
        assert set().union(*after) <= inserted


@PROPS
@given(adds, st.sampled_from(STRATEGIES), st.integers(0, 6), st.integers(0, 2**32 - 1))
def test_every_strategy_draws_held_elites_deterministically(items, strategy, k, seed):
    isl = Island(GRID)
    for pid, (score, desc) in enumerate(items):
        isl.add(pid, score, desc)
    isl.record_child([e.program_id for e in isl.elites()][:2])
    isl.record_failure([e.program_id for e in isl.elites()][1:3])
    parents = isl.select_parents(np.random.default_rng(seed), k, strategy)
    assert len(parents) == k
    assert all(p in isl.elites() for p in parents)
    assert [p.score for p in parents] == sorted(p.score for p in parents)
    if k <= len(isl):
        assert len({p.program_id for p in parents}) == k or strategy == "boltzmann"  # boltzmann: distinct clusters
    assert isl.select_parents(np.random.default_rng(seed), k, strategy) == parents


@PROPS
@given(st.lists(st.tuples(tied_scores, st.sampled_from(["a", "b", "c"]), st.sampled_from([0, 1])),
                min_size=1, max_size=30))
def test_categorical_archive_keeps_one_elite_per_category_pair(items):
    isl = Island((Categorical("style", ("a", "b", "c")), Categorical("loop", ("for", "while"))))
    assert isl.kind == "categorical" and isl.cells == 6
    best: dict[tuple, float] = {}
    for pid, (score, style, loop) in enumerate(items):
        isl.add(pid, score, (style, ("for", "while")[loop]))
        key = (style, loop)
        best[key] = max(best.get(key, -math.inf), score)
    assert sorted(e.score for e in isl.elites()) == sorted(best.values())
    assert isl.best().score == max(best.values())

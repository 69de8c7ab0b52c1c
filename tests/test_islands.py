"""Islands: MAP-Elites insertion rules on the pyribs archive, parent selection,
ring migration, FunSearch resets, and determinism under replay."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evosearch.problem import Descriptor
from islands import Archipelago, Elite, Island

GRID = (Descriptor("length", 0.0, 10.0, 5), Descriptor("depth", -1.0, 1.0, 4))  # 20 cells
PROPS = settings(max_examples=60, deadline=None)

scores = st.floats(-1e3, 1e3, allow_nan=False)
# Reach past both ends of each range (and to ±inf) so clipping is exercised.
desc_values = st.tuples(st.one_of(st.floats(-5, 15), st.sampled_from([-math.inf, math.inf])),
                        st.floats(-2, 2))
adds = st.lists(st.tuples(scores, desc_values), min_size=1, max_size=40)


def state(island: Island):
    return island.elites(), island.stats()


# -- Island: insertion rules -------------------------------------------------------

def test_new_improve_not_added_and_ties_keep_the_incumbent():
    isl = Island(GRID)
    assert isl.add(1, 0.5, (1.0, 0.0)) == "new"
    assert isl.add(2, 0.4, (1.1, 0.1)) == "not_added"  # same cell, worse
    assert isl.add(3, 0.5, (1.2, 0.2)) == "not_added"  # same cell, tie: first wins
    assert [e.program_id for e in isl.elites()] == [1]
    assert isl.add(4, 0.9, (1.3, 0.3)) == "improve"
    assert isl.elites() == [Elite(4, 0.9, (1.3, 0.3))]
    assert isl.add(5, -3.0, (9.0, -0.9)) == "new"  # another cell
    assert len(isl) == 2
    assert isl.best() == Elite(4, 0.9, (1.3, 0.3))


def test_out_of_range_descriptors_are_clipped_into_edge_cells():
    isl = Island(GRID)
    assert isl.add(1, 1.0, (50.0, -7.0)) == "new"
    assert isl.add(2, 1.0, (-math.inf, math.inf)) == "new"
    by_id = {e.program_id: e for e in isl.elites()}
    assert by_id[1].descriptors == (10.0, -1.0)
    assert by_id[2].descriptors == (0.0, 1.0)
    assert isl.cell_of((50.0, -7.0)) == isl.cell_of((9.99, -0.99))  # the corner cell
    assert isl.cell_of((-math.inf, math.inf)) == isl.cell_of((0.0, 0.99))


def test_bad_values_are_rejected_with_a_named_cause():
    isl = Island(GRID)
    with pytest.raises(ValueError, match="descriptor 'depth' is NaN"):
        isl.add(1, 1.0, (1.0, math.nan))
    with pytest.raises(ValueError, match="score must be finite"):
        isl.add(1, math.nan, (1.0, 0.0))
    with pytest.raises(ValueError, match="expected 2 descriptor values"):
        isl.add(1, 1.0, (1.0,))
    with pytest.raises(ValueError, match="descriptor 'x'"):
        Island([Descriptor("x", 1.0, 1.0)])
    with pytest.raises(ValueError, match="bins"):
        Island([Descriptor("x", 0.0, 1.0, 0)])
    assert len(isl) == 0


def test_no_descriptors_means_one_cell_holding_the_best():
    isl = Island(())
    assert isl.cells == 1
    assert isl.add(1, 1.0, ()) == "new"
    assert isl.add(2, 0.5, ()) == "not_added"
    assert isl.add(3, 2.0, ()) == "improve"
    assert isl.elites() == [Elite(3, 2.0, ())]


def test_stats_qd_score_is_offset_by_the_first_score_and_survives_clear():
    isl = Island(GRID)
    assert isl.stats() == {"elites": 0, "coverage": 0.0, "qd_score": 0.0, "best": None,
                           "cells": 20, "qd_score_offset": None}
    isl.add(1, -10.0, (1.0, 0.0))  # the seed: scores below zero are common
    isl.add(2, -4.0, (9.0, 0.0))
    isl.add(3, -12.0, (5.0, 0.9))
    s = isl.stats()
    assert s["qd_score_offset"] == -10.0
    assert s["qd_score"] == pytest.approx((-10 + 10) + (-4 + 10) + (-12 + 10))
    assert s["elites"] == 3 and s["coverage"] == pytest.approx(3 / 20) and s["best"] == -4.0
    isl.clear()
    assert len(isl) == 0 and isl.best() is None and isl.select_parents(np.random.default_rng(0), 2) == []
    isl.add(4, -8.0, (1.0, 0.0))
    assert isl.stats()["qd_score"] == pytest.approx(2.0)
    fixed = Island(GRID, qd_score_offset=-100.0)
    fixed.add(1, -10.0, (1.0, 0.0))
    assert fixed.stats()["qd_score"] == pytest.approx(90.0)


@PROPS
@given(adds)
def test_island_matches_a_reference_map_elites_grid(items):
    isl = Island(GRID)
    reference: dict[int, tuple[float, int]] = {}  # cell -> (score, program_id), first max wins
    best_score = -math.inf
    for pid, (score, desc) in enumerate(items):
        status = isl.add(pid, score, desc)
        cell = isl.cell_of(desc)
        expected = "new" if cell not in reference else ("improve" if score > reference[cell][0] else "not_added")
        assert status == expected
        if expected != "not_added":
            reference[cell] = (score, pid)
        best_score = max(best_score, score)
        assert isl.best().score == best_score  # never loses its best
        assert len(isl) <= isl.cells
    elites = isl.elites()
    assert [isl.cell_of(e.descriptors) for e in elites] == sorted(reference)  # cell order
    assert {isl.cell_of(e.descriptors): (e.score, e.program_id) for e in elites} == reference
    for e in elites:  # stored descriptors are clipped into the ranges
        assert all(d.low <= v <= d.high for d, v in zip(GRID, e.descriptors))


@PROPS
@given(adds)
def test_reinserting_an_elite_changes_nothing(items):
    isl = Island(GRID)
    for pid, (score, desc) in enumerate(items):
        isl.add(pid, score, desc)
    before = state(isl)
    for e in isl.elites():
        assert isl.add(e.program_id, e.score, e.descriptors) == "not_added"
        assert isl.add(10_000 + e.program_id, e.score, e.descriptors) == "not_added"  # a tie, another id
    assert state(isl) == before


# -- Island: parent selection ------------------------------------------------------

@PROPS
@given(adds, st.integers(0, 30), st.integers(0, 2**32 - 1))
def test_select_parents_draws_archive_elites_sorted_ascending(items, k, seed):
    isl = Island(GRID)
    for pid, (score, desc) in enumerate(items):
        isl.add(pid, score, desc)
    elites = isl.elites()
    parents = isl.select_parents(np.random.default_rng(seed), k)
    assert len(parents) == k
    assert all(p in elites for p in parents)
    assert [p.score for p in parents] == sorted(p.score for p in parents)
    ids = [p.program_id for p in parents]
    if k <= len(elites):
        assert len(set(ids)) == k  # distinct while possible
    else:
        assert set(ids) == {e.program_id for e in elites}  # every elite, then repeats
    again = isl.select_parents(np.random.default_rng(seed), k)
    assert again == parents


def test_select_parents_is_uniform_over_cells_not_scores():
    isl = Island(GRID)
    for pid, x in enumerate(np.linspace(0.5, 9.5, 5)):
        isl.add(pid, float(pid) ** 3, (float(x), 0.0))  # very unequal scores
    rng = np.random.default_rng(1)
    counts = np.zeros(5)
    for _ in range(2000):
        (p,) = isl.select_parents(rng, 1)
        counts[p.program_id] += 1
    assert counts.min() > 300 and counts.max() < 500  # each ~400 of 2000


def test_select_parents_edge_cases():
    isl = Island(GRID)
    rng = np.random.default_rng(0)
    assert isl.select_parents(rng, 3) == []
    isl.add(7, 1.0, (1.0, 0.0))
    assert isl.select_parents(rng, 0) == []
    assert isl.select_parents(rng, 2) == [Elite(7, 1.0, (1.0, 0.0))] * 2
    with pytest.raises(ValueError, match="k must be"):
        isl.select_parents(rng, -1)


# -- Archipelago ------------------------------------------------------------------

def test_ring_migration_moves_each_islands_best_one_step():
    arch = Archipelago(3, GRID, migration_interval=2, migration_size=1)
    arch.add(0, 10, 5.0, (1.0, 0.0))
    arch.add(0, 11, 1.0, (9.0, 0.0))
    arch.add(2, 20, 7.0, (5.0, 0.5))
    assert arch.on_commit(1, np.random.default_rng(0)) == []  # not due
    events = arch.on_commit(2, np.random.default_rng(0))
    assert events == [{"event": "migrate", "from": 0, "to": 1, "program_id": 10, "status": "new"},
                      {"event": "migrate", "from": 2, "to": 0, "program_id": 20, "status": "new"}]
    assert [e.program_id for e in arch.islands[1].elites()] == [10]  # one step only, not on to island 2
    assert {e.program_id for e in arch.islands[0].elites()} == {10, 11, 20}
    assert arch.best() == Elite(20, 7.0, (5.0, 0.5))
    # Second migration: island 1 passes 10 on; 0's best (20) reaches 1; 2 offers 20 back to 0 (already there).
    events = arch.on_commit(4, np.random.default_rng(0))
    assert {(ev["from"], ev["to"], ev["program_id"]) for ev in events} == {(0, 1, 20), (1, 2, 10)}


def test_reset_clears_the_weaker_half_and_reseeds_from_survivors():
    arch = Archipelago(4, GRID, reset_interval=5)
    for i, score in enumerate([3.0, 1.0, 4.0, 2.0]):
        arch.add(i, 100 + i, score, (float(i), 0.0))
        arch.add(i, 200 + i, score - 10, (9.0, 0.9))
    events = arch.on_commit(5, np.random.default_rng(3))
    assert [ev["island"] for ev in events] == [1, 3]
    for ev in events:
        assert ev["event"] == "reset" and ev["from"] in (0, 2) and ev["program_id"] == 100 + ev["from"]
        assert [e.program_id for e in arch.islands[ev["island"]].elites()] == [ev["program_id"]]
    assert len(arch.islands[0]) == 2 and len(arch.islands[2]) == 2  # survivors untouched
    assert arch.best().program_id == 102


def test_archipelago_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_islands"):
        Archipelago(0, GRID)
    with pytest.raises(ValueError, match="migration_size"):
        Archipelago(2, GRID, migration_size=0)
    with pytest.raises(IndexError, match="island 2 out of range"):
        Archipelago(2, GRID).add(2, 1, 1.0, (0.0, 0.0))


def test_single_island_and_seed_everywhere():
    arch = Archipelago(1, GRID, migration_interval=1, reset_interval=1)
    arch.add_everywhere(0, -1.0, (0.0, 0.0))
    assert arch.on_commit(1, np.random.default_rng(0)) == []
    arch = Archipelago(3, GRID)
    arch.add_everywhere(0, -1.0, (0.0, 0.0))
    assert all(isl.elites() == [Elite(0, -1.0, (0.0, 0.0))] for isl in arch.islands)
    assert [s["island"] for s in arch.stats()] == [0, 1, 2] and all(s["qd_score"] == 0 for s in arch.stats())


ops = st.lists(st.tuples(st.integers(0, 4), scores, desc_values), min_size=1, max_size=60)


def run_ops(arch: Archipelago, seq, seed: int):
    """What the engine does: seed everywhere, then per result: select, insert, commit."""
    rng = np.random.default_rng(seed)
    arch.add_everywhere(0, 0.0, (5.0, 0.0))
    log = []
    for n, (island, score, desc) in enumerate(seq, start=1):
        island %= len(arch)
        log.append(arch.select_parents(island, rng, 2))
        log.append(arch.add(island, n, score, desc))
        log.append(arch.on_commit(n, rng))
    return log


@PROPS
@given(ops, st.integers(1, 5), st.integers(0, 4), st.integers(1, 3), st.integers(0, 4), st.integers(0, 1000))
def test_migration_and_resets_keep_the_global_best(seq, n_islands, mig, mig_size, reset, seed):
    arch = Archipelago(n_islands, GRID, migration_interval=mig, migration_size=mig_size, reset_interval=reset)
    rng = np.random.default_rng(seed)
    arch.add_everywhere(0, 0.0, (5.0, 0.0))
    best = 0.0
    for n, (island, score, desc) in enumerate(seq, start=1):
        arch.add(island % n_islands, n, score, desc)
        best = max(best, score)
        for ev in arch.on_commit(n, rng):
            assert ev["event"] in ("migrate", "reset")
        assert arch.best().score == best
        assert all(len(isl) <= isl.cells for isl in arch.islands)
        assert all(isl.best() is not None for isl in arch.islands)  # resets reseed, never leave empty


@PROPS
@given(ops, st.integers(0, 1000))
def test_same_calls_and_rng_give_the_same_archipelago(seq, seed):
    def build():
        return Archipelago(4, GRID, migration_interval=3, migration_size=2, reset_interval=7)
    a, b = build(), build()
    assert run_ops(a, seq, seed) == run_ops(b, seq, seed)
    assert [isl.elites() for isl in a.islands] == [isl.elites() for isl in b.islands]
    assert a.stats() == b.stats()

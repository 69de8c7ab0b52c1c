"""Islands: MAP-Elites insertion rules on the pyribs archive, parent selection,
ring migration, FunSearch resets, and determinism under replay."""
from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evosearch.problem import Descriptor
from islands import Archipelago, ClusterIsland, Elite, Island

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


def test_neutral_drift_lets_a_tie_take_the_cell_and_ranks_the_newer_best_first():
    isl = Island(GRID, neutral=True)
    assert isl.add(1, 0.5, (1.0, 0.0)) == "new"
    qd = isl.stats()
    assert isl.add(2, 0.4, (1.1, 0.1)) == "not_added"  # worse still loses
    assert isl.add(3, 0.5, (1.2, 0.2)) == "replace"  # a tie takes the cell
    assert isl.elites() == [Elite(3, 0.5, (1.2, 0.2))] and isl.stats() == qd  # same scores, same statistics
    assert isl.add(1, 0.5, (1.0, 0.0)) == "replace"  # the evicted one may drift back: it is not the elite now
    assert isl.add(1, 0.5, (1.0, 0.0)) == "not_added"  # the elite itself: nothing changes
    assert isl.add(4, 0.5, (9.0, -0.9)) == "new"  # an equal score in another cell
    assert isl.best() == Elite(4, 0.5, (9.0, -0.9))  # the newer of the equal bests
    rng = np.random.default_rng(0)
    assert [e.program_id for e in isl.select_parents(rng, 1, "best")] == [4]
    strict = Island(GRID)  # the default keeps the first
    for pid, desc in ((1, (1.0, 0.0)), (4, (9.0, -0.9))):
        strict.add(pid, 0.5, desc)
    assert strict.best().program_id == 1 and [e.program_id for e in strict.select_parents(rng, 1, "best")] == [1]
    # Across islands too: the archipelago's best and its exploiting prompts' parents.
    arch = Archipelago(2, GRID, selection="exploit", island_kwargs={"exploit_share": 1.0, "neutral": True})
    arch.add_everywhere(0, 0.0, (5.0, 0.0))
    arch.add(1, 5, 2.0, (3.0, 0.5))
    arch.add(0, 6, 2.0, (1.0, 0.5))
    assert arch.best().program_id == 6 and arch.islands[1].best().program_id == 5
    assert [e.program_id for e in arch.select_parents(1, rng, 2)] == [5, 6]  # ascending: the newer tie last
    assert [e.program_id for e in arch.top(1)] == [6]


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
@given(adds, st.booleans())
def test_island_matches_a_reference_map_elites_grid(items, neutral):
    isl = Island(GRID, neutral=neutral)
    reference: dict[int, tuple[float, int]] = {}  # cell -> (score, program_id), first max wins (last with neutral)
    best_score = -math.inf
    for pid, (score, desc) in enumerate(items):
        status = isl.add(pid, score, desc)
        cell = isl.cell_of(desc)
        expected = ("new" if cell not in reference else "improve" if score > reference[cell][0]
                    else "replace" if neutral and score == reference[cell][0] else "not_added")
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


# -- resets and in-flight children -------------------------------------------------

def test_a_child_drawn_before_its_islands_reset_is_stale_unless_it_beats_the_new_best():
    arch = Archipelago(2, GRID, reset_interval=3)
    arch.add_everywhere(0, 0.0, (5.0, 0.0))
    arch.add(0, 1, 9.0, (1.0, 0.0))  # island 0 strong, island 1 weak
    drawn_at = arch.epoch(1)  # a prompt is drawn from island 1 ...
    assert drawn_at == 0
    events = arch.on_commit(3, np.random.default_rng(0))  # ... then island 1 is reset
    assert [(ev["island"], ev["program_id"], ev["epoch"]) for ev in events] == [(1, 1, 1)]
    assert arch.epoch(1) == 1 and arch.epoch(0) == 0
    # Its child arrives late: not better than the reset island's founder (9.0), so it stays out.
    assert arch.add(1, 7, 8.0, (9.0, 0.9), epoch=drawn_at) == "stale"
    assert [e.program_id for e in arch.islands[1].elites()] == [1]
    # The same child drawn after the reset is an ordinary offer (a new cell).
    assert arch.add(1, 8, 8.0, (9.0, 0.9), epoch=arch.epoch(1)) == "new"
    # A stale child that beats the island's best is kept: nothing better than the island holds is lost.
    assert arch.add(1, 9, 10.0, (5.0, 0.5), epoch=drawn_at) == "new"
    assert arch.best() == Elite(9, 10.0, (5.0, 0.5))
    assert arch.stats()[1]["epoch"] == 1


def test_random_topology_sends_each_islands_best_to_another_island():
    arch = Archipelago(4, GRID, migration_interval=1, topology="random")
    for i in range(4):
        arch.add(i, 10 + i, float(i), (2.0 * i, 0.0))
    events = arch.on_commit(1, np.random.default_rng(5))
    assert sorted(ev["from"] for ev in events) == [0, 1, 2, 3]
    assert all(ev["to"] != ev["from"] and ev["program_id"] == 10 + ev["from"] for ev in events)
    again = Archipelago(4, GRID, migration_interval=1, topology="random")
    for i in range(4):
        again.add(i, 10 + i, float(i), (2.0 * i, 0.0))
    assert again.on_commit(1, np.random.default_rng(5)) == events  # the rng decides, nothing else
    with pytest.raises(ValueError, match="topology"):
        Archipelago(2, GRID, topology="star")


# -- parent selection strategies ---------------------------------------------------

SIZED = (Descriptor("length", 0.0, 10.0, 10), Descriptor("size", 0.0, 400.0, 10))


def test_boltzmann_favours_high_score_clusters_and_short_programs_within_one():
    from islands import selection

    assert selection.temperature(0) == pytest.approx(0.1)
    assert selection.temperature(15_000) == pytest.approx(0.05)
    assert selection.temperature(30_000) == pytest.approx(0.1)  # the schedule restarts every N programs
    isl = Island(SIZED)
    isl.add(1, -10.0, (0.5, 50.0))
    isl.add(2, 0.0, (2.5, 50.0))  # the top cluster: ids 2 (short) and 3 (long)
    isl.add(3, 0.0, (4.5, 390.0))
    isl.add(4, -5.0, (6.5, 50.0))
    rng = np.random.default_rng(0)
    counts = {i: 0 for i in (1, 2, 3, 4)}
    for _ in range(3000):
        (p,) = isl.select_parents(rng, 1, "boltzmann")
        counts[p.program_id] += 1
    # T = 0.1 on scores normalised to [0, 1]: the -5 cluster has weight e^5 less than the top one.
    assert counts[2] + counts[3] > 0.95 * 3000
    assert counts[2] > 1.5 * counts[3]  # softmax(-normalised length) prefers the shorter
    assert counts[1] < counts[4] < 100


def test_curiosity_rises_with_children_that_enter_and_falls_with_the_rest():
    isl = Island(GRID)
    isl.add(1, 1.0, (1.0, 0.0))
    isl.add(2, 1.0, (9.0, 0.0))
    assert isl.add(3, 0.5, (5.0, 0.0), parents=[1, 2, 42]) == "new"  # 42 is not held here: ignored
    assert (isl.curiosity(1), isl.curiosity(2), isl.curiosity(42)) == (1.0, 1.0, 0.0)
    assert isl.add(4, 0.0, (5.0, 0.0), parents=[1]) == "not_added"  # worse than 3 in its cell
    isl.record_failure([1])  # a child that failed to run
    assert isl.curiosity(1) == 0.0 and isl.curiosity(3) == 0.0
    for _ in range(6):
        isl.record_failure([1])
    rng = np.random.default_rng(0)
    counts = {1: 0, 2: 0, 3: 0}
    for _ in range(3000):
        (p,) = isl.select_parents(rng, 1, "curiosity")
        counts[p.program_id] += 1
    # sigmoid(1) = 0.73 for 2, sigmoid(0) = 0.5 for 3, sigmoid(-3) = 0.047 for 1.
    assert counts[2] > counts[3] > 8 * counts[1] > 0
    assert isl.add(5, 2.0, (9.0, 0.0), parents=[2]) == "improve"  # replaces its own parent: no credit, no score left
    assert isl.curiosity(2) == 0.0 and isl.curiosity(5) == 0.0
    # exploit's exploring prompts draw by curiosity when the island is built so.
    curious = Island(GRID, exploit_share=0.0, explore="curiosity")
    for pid, x in ((1, 1.0), (2, 9.0)):
        curious.add(pid, 1.0, (x, 0.0))
    for _ in range(5):
        curious.record_failure([1])
    picks = [curious.select_parents(rng, 1, "exploit")[0].program_id for _ in range(500)]
    assert picks.count(2) > 4 * picks.count(1)  # 0.5 against sigmoid(-2.5) = 0.076: 6.6 times
    with pytest.raises(ValueError, match="explore must be one of uniform, curiosity, novelty"):
        Island(GRID, explore="sparse")
    # FunSearch-style cluster islands keep the same scores.
    clusters = ClusterIsland(GRID, max_clusters=3)
    for pid in (1, 2):
        clusters.add(pid, float(pid), (1.0, 0.0))
    assert clusters.add(3, 3.0, (1.0, 0.0), parents=[1, 2]) == "new"
    clusters.record_failure([1])
    assert (clusters.curiosity(1), clusters.curiosity(2)) == (0.5, 1.0)
    clusters.add(4, 4.0, (1.0, 0.0))  # a fourth cluster: the lowest (1) leaves, and its score with it
    assert clusters.curiosity(1) == 0.0


def test_dgm_selection_discounts_parents_with_many_children():
    isl = Island(GRID)
    isl.add(1, 1.0, (1.0, 0.0))
    isl.add(2, 1.0, (9.0, 0.0))  # equal scores: only the children counts differ
    isl.add(3, 0.0, (5.0, 0.0))  # low score: sigmoid(10 (0 - 0.5)) ~ 0.007
    isl.record_child([1] * 1)
    for _ in range(9):
        isl.record_child([1])
    isl.record_child([42])  # not held here: ignored
    assert isl.children(1) == 10 and isl.children(2) == 0 and isl.children(42) == 0
    rng = np.random.default_rng(0)
    counts = {1: 0, 2: 0, 3: 0}
    for _ in range(2000):
        (p,) = isl.select_parents(rng, 1, "dgm")
        counts[p.program_id] += 1
    assert counts[2] > 6 * counts[1]  # 1 / (1 + 10) against 1 / (1 + 0)
    assert counts[3] < counts[1]
    isl.add(4, 2.0, (1.0, 0.0))  # replaces 1 in its cell: its count goes with it
    assert isl.children(1) == 0


def test_best_and_seed_selection_give_the_hill_climber_and_the_random_baseline():
    arch = Archipelago(1, GRID, selection="best")
    arch.add_everywhere(0, -1.0, (5.0, 0.0))
    arch.add(0, 1, 3.0, (1.0, 0.0))
    arch.add(0, 2, 2.0, (9.0, 0.0))
    rng = np.random.default_rng(0)
    assert [e.program_id for e in arch.select_parents(0, rng, 1)] == [1]
    assert [e.program_id for e in arch.select_parents(0, rng, 2)] == [2, 1]
    assert arch.select_parents(0, rng, 2, "seed") == [Elite(0, -1.0, (5.0, 0.0))] * 2
    with pytest.raises(ValueError, match="strategy"):
        arch.select_parents(0, rng, 1, "tournament")


def test_exploit_selection_climbs_the_archipelagos_best_on_its_share_and_explores_cells_otherwise():
    arch = Archipelago(2, GRID, selection="exploit", island_kwargs={"exploit_share": 0.3})
    arch.add_everywhere(0, -1.0, (5.0, 0.0))
    arch.add(0, 1, 1.0, (1.0, 0.0))
    arch.add(0, 2, 2.0, (9.0, 0.0))
    arch.add(1, 3, 5.0, (3.0, 0.5))  # the best of all, on the other island
    rng = np.random.default_rng(0)
    draws = [tuple(e.program_id for e in arch.select_parents(0, rng, 2)) for _ in range(2000)]
    top = draws.count((2, 3))  # the two best of the archipelago, ascending
    assert abs(top / len(draws) - 0.3) < 0.04
    # The rest are uniform over island 0's own cells (0, 1, 2): never program 3, every cell alike.
    rest = [p for d in draws if d != (2, 3) for p in d]
    assert 3 not in rest
    assert all(abs(rest.count(p) / len(rest) - 1 / 3) < 0.04 for p in (0, 1, 2))
    # Share 1 is (1+1)-EPS over all islands; share 0 is MAP-Elites' uniform selection.
    greedy = Archipelago(2, GRID, selection="exploit", island_kwargs={"exploit_share": 1.0})
    greedy.add_everywhere(0, -1.0, (5.0, 0.0))
    greedy.add(1, 3, 5.0, (3.0, 0.5))
    assert [e.program_id for e in greedy.select_parents(0, rng, 1)] == [3]
    assert [e.program_id for e in greedy.select_parents(0, rng, 3)] == [0, 3, 3]  # repeats past the elites
    # Island-local when asked of an island alone (one island = the archipelago).
    isl = Island(GRID, exploit_share=1.0)
    isl.add(1, 1.0, (1.0, 0.0))
    isl.add(2, 2.0, (9.0, 0.0))
    assert [e.program_id for e in isl.select_parents(rng, 1, "exploit")] == [2]
    with pytest.raises(ValueError, match="exploit_share"):
        Island(GRID, exploit_share=1.5)


def test_a_given_exploit_choice_overrides_the_share_and_leaves_the_islands_draws_alone():
    arch = Archipelago(2, GRID, selection="exploit", island_kwargs={"exploit_share": 0.5})
    arch.add_everywhere(0, -1.0, (5.0, 0.0))
    arch.add(0, 1, 1.0, (1.0, 0.0))
    arch.add(1, 3, 5.0, (3.0, 0.5))
    rng = np.random.default_rng(0)
    assert all([e.program_id for e in arch.select_parents(0, rng, 1, exploit=True)] == [3] for _ in range(50))
    assert all(3 not in [e.program_id for e in arch.select_parents(0, rng, 2, exploit=False)] for _ in range(50))
    # Where the free draw explored, the forced "explore" shows the very same cells.
    free, forced = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(50):
        drawn = arch.select_parents(0, free, 2)
        given = arch.select_parents(0, forced, 2, exploit=False)
        if 3 not in [e.program_id for e in drawn]:
            assert given == drawn


# -- crossover mates and inspirations ------------------------------------------------

def test_select_mates_picks_two_parents_from_different_cells_or_islands_favouring_distance():
    arch = Archipelago(2, SIZED)
    for pid, x in enumerate(np.linspace(0.5, 9.5, 10)):
        arch.add(0, pid, float(pid % 3), (float(x), 100.0))
    arch.add(1, 100, 1.0, (0.5, 100.0))  # same cell as program 0, but on another island
    rng = np.random.default_rng(0)
    far, near = 0, 0
    for _ in range(300):
        mates = arch.select_mates(0, rng)
        assert len(mates) == 2 and mates[0].score <= mates[1].score
        a, b = mates
        cells_differ = arch.islands[0].occupied_cell(a.program_id) != arch.islands[0].occupied_cell(b.program_id)
        assert a.program_id != b.program_id and (cells_differ or 100 in (a.program_id, b.program_id))
        d = arch.distance(a, b)
        far += d > 0.45
        near += d < 0.15
    # A uniform mate would be near (< 0.15) ~ 1 time in 5; the 4-way tournament makes it rare.
    assert far > 3 * near
    lone = Archipelago(1, SIZED)
    lone.add(0, 5, 1.0, (1.0, 1.0))
    assert lone.select_mates(0, rng) == [Elite(5, 1.0, (1.0, 1.0))]
    assert Archipelago(1, SIZED).select_mates(0, rng) == []


def test_inspirations_come_from_cells_other_than_the_parents():
    arch = Archipelago(1, GRID)
    for pid, x in enumerate([0.5, 2.5, 4.5, 6.5, 8.5]):
        arch.add(0, pid, float(pid), (x, 0.0))
    rng = np.random.default_rng(0)
    parents = arch.select_parents(0, rng, 2)
    for _ in range(20):
        found = arch.inspirations(0, rng, 2, exclude=parents)
        assert len(found) == 2 and [e.score for e in found] == sorted(e.score for e in found)
        assert not {e.program_id for e in found} & {p.program_id for p in parents}
    assert len(arch.inspirations(0, rng, 10, exclude=parents)) == 3  # all there is
    assert arch.inspirations(0, rng, 0) == []


# -- other archives ----------------------------------------------------------------

def test_cvt_archive_and_score_cluster_island():
    cvt = Island(GRID, archive="cvt", cvt_cells=16)
    assert cvt.kind == "cvt" and cvt.cells == 16
    assert cvt.add(1, 1.0, (1.0, 0.0)) == "new"
    assert cvt.add(2, 0.5, (1.0, 0.0)) == "not_added"
    assert cvt.add(3, 2.0, (1.0, 0.0)) == "improve"
    assert cvt.cell_of((1.0, 0.0)) == int(cvt.archive.index_of_single(np.array([1.0, 0.0])))
    with pytest.raises(ValueError, match="archive must be"):
        Island(GRID, archive="hex")
    clusters = ClusterIsland(SIZED, max_clusters=2, cluster_cap=2)
    assert clusters.add(1, 1.0, (0.0, 300.0)) == "new"
    assert clusters.add(2, 1.0, (5.0, 100.0)) == "new"  # same signature: joins the cluster
    assert clusters.add(3, 1.0, (5.0, 50.0)) == "improve"  # full: the shortest two stay
    assert [e.program_id for e in clusters.elites()] == [3, 2]
    assert clusters.add(4, 0.0, (0.0, 0.0)) == "new"
    assert clusters.add(5, -1.0, (0.0, 0.0)) == "not_added"  # cap of 2 clusters: worse than the worst
    assert clusters.add(6, 2.0, (0.0, 0.0)) == "new"  # drops the 0.0 cluster
    assert sorted(e.score for e in clusters.elites()) == [1.0, 1.0, 2.0]
    assert clusters.best() == Elite(6, 2.0, (0.0, 0.0))


# -- through the engine: real CLI runs -----------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def _cli_args(out, *flags) -> list[str]:
    return [sys.executable, "-m", "evosearch", "run", "bin_packing", "--sampler", "mutate",
            "--samples", "30", "--seed", "3", "--islands", "2", "--concurrency", "4",
            "--reset-interval", "6", "--migration-interval", "5", "--out", str(out), "--quiet",
            "--problem-options", "{train_items: 200, test_items: 300}", "--workers", "2", *flags]


def _cli_run(out, *flags):
    proc = subprocess.run(_cli_args(out, *flags), capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _read_run(out)


def _read_run(out):
    import json
    import sqlite3

    db = sqlite3.connect(out / "evosearch.db")
    try:
        rows = db.execute("SELECT id, island, epoch, status, score, parents, archive FROM programs ORDER BY id").fetchall()
        events = [(c, json.loads(e)) for c, e in db.execute("SELECT at_commit, event FROM events ORDER BY id")]
    finally:
        db.close()
    return rows, events


def test_engine_handles_children_of_reset_islands_and_writes_heatmap_and_qd_metrics(tmp_path):
    import json

    rows, events = _cli_run(tmp_path / "a", "--selection", "dgm")
    resets = [(c, e["island"]) for c, e in events if e["event"] == "reset"]
    assert resets
    stale = []
    for pid, island, epoch, status, score, parents, archive in rows[1:]:
        # The island's epoch when this child was committed: resets at commits before it.
        epoch_at_commit = sum(1 for c, i in resets if i == island and c < pid)
        assert epoch is not None and epoch <= epoch_at_commit
        if epoch < epoch_at_commit:
            stale.append((pid, status, archive))
        elif status == "ok":
            assert archive in ("new", "improve", "not_added")
    # With 4 samples in flight and a reset every 6 results, some children outlive their lineage;
    # each is kept in the store, and in the archive only if it beat the reset island's best.
    assert stale
    assert all(archive in ("stale", "new", "improve") for _, status, archive in stale if status == "ok")
    png = (tmp_path / "a" / "heatmap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    qd = json.loads((tmp_path / "a" / "qd_metrics.json").read_text())
    assert [h["commit"] for h in qd["history"]] == list(range(0, 31))  # every commit at 30 samples
    assert all(len(h["islands"]) == 2 and {"coverage", "qd_score", "best", "epoch"} <= h["islands"][0].keys()
               for h in qd["history"])
    assert qd["history"][-1]["islands"] == qd["final"]
    # Same seed, same run: DGM's children counts and the stale rule replay exactly.
    again, again_events = _cli_run(tmp_path / "b", "--selection", "dgm")
    assert again == rows and again_events == events


def test_novelty_draws_the_elite_far_from_the_others_most():
    """Sparseness (mean distance to the 3 nearest other elites, axes scaled to [0, 1]): four elites
    in one corner of the map, 0.26 from their neighbours; one alone in the far corner, 1.0 away."""
    rng = np.random.default_rng(0)
    corner = [(1, (1.0, -0.9)), (2, (3.0, -0.9)), (3, (1.0, -0.4)), (4, (3.0, -0.4))]
    for isl in (Island(GRID), ClusterIsland(GRID, max_clusters=8)):
        for pid, desc in corner + [(5, (9.0, 0.9))]:
            isl.add(pid, float(pid), desc)  # distinct scores: one cluster each on cluster islands
        counts = Counter(isl.select_parents(rng, 1, "novelty")[0].program_id for _ in range(2000))
        # p = 1.0 / (1.0 + 4 x 0.257) = 0.49 for the lone elite, 0.13 for each in the corner.
        assert counts[5] > 3 * max(counts[i] for i in (1, 2, 3, 4)) and min(counts.values()) > 100
        assert sorted(p.program_id for p in isl.select_parents(rng, 5, "novelty")) == [1, 2, 3, 4, 5]
    # exploit's exploring prompts draw by novelty when the island is built so (here every prompt explores).
    novel = Island(GRID, exploit_share=0.0, explore="novelty")
    for pid, desc in corner + [(5, (9.0, 0.9))]:
        novel.add(pid, 1.0, desc)
    counts = Counter(novel.select_parents(rng, 1, "exploit")[0].program_id for _ in range(2000))
    assert counts[5] > 3 * max(counts[i] for i in (1, 2, 3, 4))
    lone = Island(GRID)
    lone.add(7, 1.0, (5.0, 0.0))
    assert [p.program_id for p in lone.select_parents(rng, 2, "novelty")] == [7, 7]  # no neighbours: uniform


def test_curiosity_exploration_replays_exactly_and_differs_from_uniform(tmp_path):
    rows, events = _cli_run(tmp_path / "a", "--explore", "curiosity", "--reset-interval", "0")
    again, again_events = _cli_run(tmp_path / "b", "--explore", "curiosity", "--reset-interval", "0")
    assert again == rows and again_events == events
    uniform, _ = _cli_run(tmp_path / "c", "--explore", "uniform", "--reset-interval", "0")
    # The same seed draws other parents once curiosity scores differ.
    assert [r[5] for r in uniform] != [r[5] for r in rows]
    novel, _ = _cli_run(tmp_path / "d", "--explore", "novelty", "--reset-interval", "0")
    assert [r[5] for r in novel] != [r[5] for r in uniform]  # and by novelty, others again


def test_neutral_drift_records_its_replacements_replays_exactly_and_resumes_a_killed_run_exactly(tmp_path):
    import os
    import signal
    import sqlite3
    import time

    rows, events = _cli_run(tmp_path / "a", "--neutral")
    assert "replace" in {r[6] for r in rows}  # bin packing counts whole bins: ties are common
    assert _cli_run(tmp_path / "b", "--neutral") == (rows, events)
    strict, _ = _cli_run(tmp_path / "c")
    assert "replace" not in {r[6] for r in strict} and [r[5] for r in strict] != [r[5] for r in rows]
    # Killed mid-run and resumed: the islands are rebuilt from the store, ties included, so the prompts
    # drawn after the resume show the parents an uninterrupted run showed.
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli_args(out, "--neutral"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=REPO)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(_read_run(out)[0]) >= 12:
                break
        except sqlite3.OperationalError:
            pass  # the database or its schema is not there yet
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(_read_run(out)[0]) < len(rows)
    resumed = subprocess.run([sys.executable, "-m", "evosearch", "run", "--resume", str(out), "--quiet"],
                             capture_output=True, text=True, timeout=600, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _read_run(out) == (rows, events)


def test_runtime_descriptor_is_opt_in_and_island_options_reach_the_islands():
    from evosearch.config import ConfigError, make_config
    from evosearch.engine import RUNTIME, SIZE, axes, island_kwargs
    from problems.bin_packing.problem import BinPacking

    problem = BinPacking()
    default = make_config({"problem": "bin_packing"})
    assert axes(problem, default) == (*BinPacking.descriptors, SIZE)  # deterministic by default
    timed = make_config({"problem": "bin_packing", "runtime_descriptor": True})
    assert axes(problem, timed) == (*BinPacking.descriptors, SIZE, RUNTIME)
    assert Archipelago(1, axes(problem, default), island_kwargs=island_kwargs(default)).islands[0].kind == "grid"
    cvt = make_config({"problem": "bin_packing", "archive": "cvt", "cvt_cells": 8, "selection": "dgm",
                       "migration_topology": "random"})
    arch = Archipelago(2, axes(problem, cvt), topology=cvt.migration_topology, selection=cvt.selection,
                       island_kwargs=island_kwargs(cvt))
    assert [isl.kind for isl in arch.islands] == ["cvt", "cvt"] and arch.islands[0].cells == 8
    with pytest.raises(ConfigError, match="selection"):
        make_config({"problem": "bin_packing", "selection": "roulette"})

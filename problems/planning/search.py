"""Greedy best-first search with an evaluation budget (trusted: runs in the evaluation worker).

The search is pyperplan's own GBFS (eager, ordered by h then insertion, states
of infinite h dropped); the budget counts heuristic evaluations (calls), not
seconds, so a run gives the same plan on every machine. The search, the budget
and the count live on the trusted side; the candidate's process only answers
``h(state)`` for the states it is sent (see ``Planning.episode``).
"""
from __future__ import annotations

import math
import numbers


class BudgetExhausted(Exception):
    """The search used its evaluation budget without reaching the goal."""


class CountedHeuristic:
    """Wraps the candidate's ``h(state)`` for pyperplan: counts calls, stops at the budget,
    and turns what it returns into a float (a number or inf; NaN and non-numbers are errors)."""

    def __init__(self, h, budget: int):
        self.h, self.budget, self.evaluations = h, budget, 0

    def __call__(self, node) -> float:
        if self.evaluations >= self.budget:
            raise BudgetExhausted
        self.evaluations += 1
        return heuristic_value(self.h(node.state))


def heuristic_value(value) -> float:
    """What h returned, as a float: a real number (numpy's too) or +-inf; NaN and the rest are errors."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"the heuristic must return a number, not {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError("the heuristic returned NaN")
    return value


def gbfs(make_heuristic, task, budget: int) -> dict:
    """Build the heuristic once (``make_heuristic(task)`` -> ``h(state)``, the candidate's, called
    through the interactive protocol or, for trusted baselines, in process) and search.

    Returns ``{"plan": [operator names] or None, "evaluations": int}``; the plan is
    None when the budget ran out or the open list emptied."""
    from pyperplan.search import greedy_best_first_search

    h = make_heuristic(task)
    if not callable(h):
        raise TypeError(f"heuristic(task) must return a callable h(state), not {type(h).__name__}")
    counted = CountedHeuristic(h, budget)
    try:
        solution = greedy_best_first_search(task, counted)
    except BudgetExhausted:
        solution = None
    plan = None if solution is None else [op.name for op in solution]
    return {"plan": plan, "evaluations": counted.evaluations}

"""Greedy best-first search with an evaluation budget (trusted: runs in the evaluation worker).

The search is pyperplan's GBFS (eager, ordered by h then insertion, states of
infinite h dropped), with each expansion's evaluations batched; the budget counts heuristic evaluations (calls), not
seconds, so a run gives the same plan on every machine. The search, the budget
and the count live on the trusted side; the candidate's process only answers
``h(state)`` for the states it is sent (see ``Planning.episode``).
"""
from __future__ import annotations

import heapq
import math
import numbers


class BudgetExhausted(Exception):
    """The search used its evaluation budget without reaching the goal."""


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

    pyperplan's ``greedy_best_first_search`` step for step (same open list order, same
    tie-breaking, h evaluated on every successor of an expanded state), except that the
    successors of one expansion are evaluated in one batch (``h.map``): pyperplan evaluates
    them all before it looks at the next state, so the searches and the counts are the same,
    with one round trip per expansion instead of one per state.

    Returns ``{"plan": [operator names] or None, "evaluations": int}``; the plan is
    None when the budget ran out or the open list emptied."""
    from pyperplan.search.searchspace import make_child_node, make_root_node

    h = make_heuristic(task)
    if not callable(h):
        raise TypeError(f"heuristic(task) must return a callable h(state), not {type(h).__name__}")
    evaluate = h.map if hasattr(h, "map") else (lambda calls: [h(*c) for c in calls])
    used = 0

    def values(states: list) -> list[float]:
        nonlocal used
        if used + len(states) > budget:  # pyperplan would stop at the call past the budget
            used = budget
            raise BudgetExhausted
        used += len(states)
        return [heuristic_value(v) for v in evaluate([(state,) for state in states])] if states else []

    try:
        root = make_root_node(task.initial_state)
        first = values([task.initial_state])[0]
        open_list, state_cost, tiebreaker = [(first, first, 0, root)], {task.initial_state: 0}, 0
        while open_list:
            _, _, _, node = heapq.heappop(open_list)
            if state_cost[node.state] != node.g:
                continue  # a cheaper path to this state was found after this node was queued
            if task.goal_reached(node.state):
                return {"plan": [op.name for op in node.extract_solution()], "evaluations": used}
            successors = task.get_successor_states(node.state)
            for (op, state), value in zip(successors, values([state for _, state in successors])):
                child = make_child_node(node, op, state)
                if value == math.inf:
                    continue  # a dead end: never expanded
                if child.g < state_cost.get(state, math.inf):
                    tiebreaker += 1
                    heapq.heappush(open_list, (value, value, tiebreaker, child))
                    state_cost[state] = child.g
    except BudgetExhausted:
        pass
    return {"plan": None, "evaluations": used}

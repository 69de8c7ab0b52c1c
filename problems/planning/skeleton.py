"""Classical planning: a heuristic for greedy best-first search (GBFS).

The harness grounds each PDDL task and calls `heuristic(task)` once; the function it
returns, h(state), is then called on every state the search generates. GBFS always
expands a state of lowest h next, so h should estimate how many actions are still
needed to reach the goal (smaller = closer; float("inf") marks a dead end, which the
search drops). The search stops after a fixed number of calls to h: a task counts as
solved only if its goal is reached within that budget, and the fewer calls the better.

task (a grounded STRIPS task; atoms are strings such as "(on b8 b4)"):
    task.initial_state  frozenset of the atoms true at the start
    task.goals          frozenset of the atoms that must be true at the end
    task.facts          set of every atom a state may hold
    task.operators      list of actions, each with .name ("(unstack b1 b2)"),
                        .preconditions, .add_effects and .del_effects (frozensets of atoms)
    task.static_facts   frozenset of atoms that are always true (e.g. map edges); grounding
                        removes them from states, so look them up here
state: frozenset of the atoms true in that state.
"""
import math
from collections import defaultdict, deque

import numpy as np


# EVOLVE-BLOCK-START
def heuristic(task):
    """Build what h needs from the task once, and return h(state) -> number."""
    goals = task.goals

    def h(state):
        # Goal count: the number of goal atoms not yet true.
        return len(goals - state)

    return h
# EVOLVE-BLOCK-END

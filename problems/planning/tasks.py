"""PDDL tasks for the planning problem: parse, compile away negative preconditions, ground (pyperplan).

pyperplan (GPL-3.0, the optional extra ``evosearch[planning]``) parses and grounds
STRIPS tasks with types, but rejects negative preconditions, which the IPC 2023
learning-track versions of Ferry, Satellite and Childsnack use (in place of the
inequality tests of the original domains). They are compiled away with
complementary atoms: each predicate ``P`` that a precondition negates gets a twin
``not-P`` that is true exactly when ``P`` is false; ``(not (P x))`` in a
precondition becomes ``(not-P x)``, every effect on ``P`` gets the opposite
effect on ``not-P``, and the initial state holds ``not-P x`` for every
ground ``P x`` that it does not hold. The grounded task has the same plans.
"""
from __future__ import annotations

import functools
import random
from collections import deque
from dataclasses import dataclass
from pathlib import Path

# Sokoban is left out: pyperplan grounds its larger easy test tasks in 20+ s each.
DOMAINS = ("blocksworld", "childsnack", "ferry", "floortile", "miconic", "rovers", "satellite", "spanner",
           "transport")
IPC_FOLDER = Path("planning") / "ipc2023-learning"


def require_pyperplan() -> None:
    """Raise a one-line ProblemError when the optional pyperplan package is missing."""
    _pyperplan()


def _pyperplan():
    try:
        import pyperplan  # noqa: F401
    except ImportError:
        from evosearch.problem import ProblemError
        raise ProblemError("the planning problem needs pyperplan: pip install 'evosearch[planning]'") from None
    from pyperplan import grounding, search  # noqa: F401  - search: loaded before the sandboxes fork
    from pyperplan.pddl import lisp_parser, parser
    from pyperplan.task import Operator, Task
    return grounding, lisp_parser, parser, Operator, Task


# ------------------------------------------------------------------ negative preconditions

def _to_text(tree) -> str:
    return "(" + " ".join(_to_text(t) if isinstance(t, list) else t for t in tree) + ")"


def _literals(formula) -> list:
    """The literals of a conjunction (pyperplan accepts nothing richer)."""
    if not formula:
        return []
    if formula[0] == "and":
        return [lit for part in formula[1:] for lit in _literals(part)]
    return [formula]


def _negated(literal) -> bool:
    return literal[0] == "not" and len(literal) == 2 and isinstance(literal[1], list)


def compile_negative_preconditions(domain_text: str) -> tuple[str, dict[str, str]]:
    """Domain text without negative preconditions, and predicate -> its complement's name.

    The lifted effects on the complements are added here so that grounding sees
    them as fluents; :func:`ground` then recomputes them on the ground operators
    (an operator that adds and deletes the same atom keeps it, as in STRIPS)."""
    _, lisp_parser, *_ = _pyperplan()
    tree = lisp_parser.parse_nested_list(domain_text.splitlines())
    actions = [part for part in tree if isinstance(part, list) and part and part[0] == ":action"]
    negated = []
    for action in actions:
        fields = dict(zip(action[2::2], action[3::2]))
        for lit in _literals(fields.get(":precondition", [])):
            if _negated(lit) and lit[1][0] not in negated:
                negated.append(lit[1][0])
    if not negated:
        return domain_text, {}
    predicates = next(part for part in tree if isinstance(part, list) and part and part[0] == ":predicates")
    names = {p[0] for p in predicates[1:]}
    complement = {}
    for name in negated:
        twin = "not-" + name
        while twin in names:
            twin = "not-" + twin
        names.add(twin)
        complement[name] = twin
    predicates.extend([[complement[p[0]], *p[1:]] for p in predicates[1:] if p[0] in complement])
    for part in tree:
        if isinstance(part, list) and part and part[0] == ":requirements":
            part[:] = [r for r in part if r != ":negative-preconditions"]
    for action in actions:
        for i in range(2, len(action) - 1, 2):
            key, formula = action[i], action[i + 1]
            if key == ":precondition":
                lits = [[complement[lit[1][0]], *lit[1][1:]] if _negated(lit) and lit[1][0] in complement else lit
                        for lit in _literals(formula)]
            elif key == ":effect":
                lits = _literals(formula)
                for lit in list(lits):
                    if _negated(lit) and lit[1][0] in complement:
                        lits.append([complement[lit[1][0]], *lit[1][1:]])
                    elif lit[0] in complement:
                        lits.append(["not", [complement[lit[0]], *lit[1:]]])
            else:
                continue
            action[i + 1] = ["and", *lits]
    return _to_text(tree), complement


def _predicate(atom: str) -> str:
    return atom[1:-1].split(" ", 1)[0]


def _rename(atom: str, name: str) -> str:
    inner = atom[1:-1].split(" ", 1)
    return "(" + " ".join([name, *inner[1:]]) + ")"


# ------------------------------------------------------------------ grounding

@dataclass
class GroundedTask:
    """A grounded task and what the trusted side needs to check plans against it."""

    name: str  # e.g. "blocksworld/training/easy/p01"
    task: object  # pyperplan.task.Task, operators sorted by name
    static_facts: frozenset  # initial-state atoms no operator changes (removed from states by grounding)
    operators: dict  # operator name -> pyperplan Operator
    ground_s: float  # seconds spent parsing and grounding


def _fix_complements(operators, complement: dict[str, str], Operator) -> list:
    """Recompute the complement effects of ground operators from their effects on the originals."""
    original = {twin: name for name, twin in complement.items()}
    fixed = []
    for op in operators:
        touched = set()
        for atom in op.add_effects | op.del_effects:
            pred = _predicate(atom)
            if pred in complement:
                touched.add(atom)
            elif pred in original:
                touched.add(_rename(atom, original[pred]))
        add = {a for a in op.add_effects if _predicate(a) not in original}
        delete = {a for a in op.del_effects if _predicate(a) not in original}
        for atom in touched:
            twin = _rename(atom, complement[_predicate(atom)])
            if atom in add:
                delete.add(twin)
            elif atom in delete:
                add.add(twin)
        fixed.append(Operator(op.name, op.preconditions, add, delete - add))
    return fixed


def ground(domain_file: str | Path, problem_file: str | Path, name: str | None = None) -> GroundedTask:
    """Parse and ground one task (pyperplan), with negative preconditions compiled away."""
    import time

    grounding, _, parser, Operator, Task = _pyperplan()
    start = time.process_time()
    domain_text, complement = compile_negative_preconditions(Path(domain_file).read_text())
    pddl = parser.Parser(None, str(problem_file))
    pddl.domInput = domain_text
    domain = pddl.parse_domain(read_from_file=False)
    problem = pddl.parse_problem(domain)
    # Same steps as pyperplan's grounding.ground, with the complements fixed in between.
    raw = grounding.ground(problem, remove_statics_from_initial_state=False, remove_irrelevant_operators=False)
    operators = _fix_complements(raw.operators, complement, Operator) if complement else list(raw.operators)
    init = set(raw.initial_state)
    if complement:
        original = {twin: p for p, twin in complement.items()}
        facts = set(raw.goals).union(*(op.preconditions | op.add_effects | op.del_effects for op in operators))
        init |= {a for a in facts if _predicate(a) in original and _rename(a, original[_predicate(a)]) not in init}
    facts = set(raw.goals).union(*(op.preconditions | op.add_effects | op.del_effects for op in operators))
    statics = frozenset(init - facts)
    operators = sorted(grounding._relevance_analysis(operators, raw.goals), key=lambda op: op.name)
    task = Task(raw.name, facts, frozenset(init & facts), frozenset(raw.goals), operators)
    task.static_facts = statics  # what the heuristic may need that states no longer hold (e.g. map edges)
    return GroundedTask(name=name or str(problem_file), task=task, static_facts=statics,
                        operators={op.name: op for op in operators}, ground_s=time.process_time() - start)


LEVELS = ("easy", "medium", "hard")  # the IPC 2023 learning track's difficulty levels of testing tasks


def task_files(root: str | Path, domain: str, split: str, level: str = "easy") -> list[str]:
    """Names (``p01``, ...) of the ``level`` tasks of ``domain`` in ``split`` ("training" or "testing")."""
    return sorted(p.stem for p in (Path(root) / domain / split / level).glob("p*.pddl"))


@functools.lru_cache(maxsize=None)
def load(root: str, domain: str, split: str, stem: str, level: str = "easy") -> GroundedTask:
    """Task ``<root>/<domain>/<split>/<level>/<stem>.pddl``, grounded once per process."""
    folder = Path(root) / domain
    name = f"{domain}/{split}/{stem}" if level == "easy" else f"{domain}/{split}/{level}/{stem}"
    return ground(folder / "domain.pddl", folder / split / level / f"{stem}.pddl", name=name)


# ------------------------------------------------------------------ plans and states

def check_plan(grounded: GroundedTask, plan) -> int:
    """Length of ``plan`` (a list of operator names) if it reaches the goal from the
    initial state; raises ValueError naming the first problem otherwise."""
    if not isinstance(plan, list) or not all(isinstance(step, str) for step in plan):
        raise ValueError("a plan must be a list of operator names")
    state = grounded.task.initial_state
    for i, step in enumerate(plan):
        op = grounded.operators.get(step)
        if op is None:
            raise ValueError(f"step {i}: unknown operator {step[:80]!r}")
        if not op.preconditions <= state:
            raise ValueError(f"step {i}: {step} is not applicable")
        state = (state - op.del_effects) | op.add_effects
    if not grounded.task.goals <= state:
        raise ValueError(f"the plan ends in a state that misses {len(grounded.task.goals - state)} goal atoms")
    return len(plan)


def sample_states(grounded: GroundedTask, breadth: int, walks: int, walk_length: int, seed: int) -> list:
    """Fixed states of a task: the first ``breadth`` states in breadth-first order, then
    the states along ``walks`` random walks (seeded) from the initial state."""
    task = grounded.task
    seen, states = {task.initial_state}, [task.initial_state]
    queue = deque([task.initial_state])
    while queue and len(states) < breadth:
        for _, succ in task.get_successor_states(queue.popleft()):
            if succ not in seen and len(states) < breadth:
                seen.add(succ)
                states.append(succ)
                queue.append(succ)
    rng = random.Random(seed)
    for _ in range(walks):
        state = task.initial_state
        for _ in range(walk_length):
            successors = task.get_successor_states(state)
            if not successors:
                break
            state = rng.choice(successors)[1]
            if state not in seen:
                seen.add(state)
                states.append(state)
    return states

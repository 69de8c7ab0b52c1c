"""Constant tuning: an elite's numeric literals as parameters, tuned by CMA-ES.

LLM-written and mutated heuristics are full of constants whose values matter more
than their shape. A *tuning* takes one elite, exposes the numeric literals of its
EVOLVE-BLOCK functions as a vector, and searches that vector with CMA-ES (Hansen &
Ostermeier 2001); every trial is an ordinary child program (the elite with its
literals replaced) that the engine evaluates, records and commits like any sample.

The optimizer is pycma (``cma``, Hansen's reference CMA-ES): pure numpy, imported in
about a second, with an ask/tell surface. pyribs' own ``CMAEvolutionStrategy`` was
the first choice (no new dependency) but its numba kernels compile on first use, about
10 s of CPU that would stall the engine's event loop in every run. pycma's sampling
is given its own seeded ``numpy`` Generator (option ``randn``) and never seeds or
reads numpy's global one (``seed=nan``), so a tuning is a pure function of (elite
code, seed, the scores told so far): after a restart the engine rebuilds it by asking
and telling the recorded trials' scores in order, and the next trial it asks is the
one the killed run would have asked. Nothing is evaluated twice and nothing is lost.

Parameters are searched in a normalised space: literal i with value v_i becomes
v_i + s_i x_i with s_i = |v_i| (1 for a zero), x starting at 0 with step size
``sigma0``, so every constant moves by about the same relative amount whatever its
scale. Which literals count: every float, and the integers that are operands of
arithmetic (``x ** 2``, ``n / 3``); integers elsewhere (indices, ``range(3)``,
call arguments, comparisons with 0) stay, since making them floats mostly breaks
the program rather than tunes it. Booleans never count.

Implicit coefficients: a sum of terms is a linear mix whose weights matter, but a
program written without a literal (``back - step``, as a small model writes it) has
nothing to tune. Before tuning such a program, each term of a sum without a numeric
factor gets the coefficient ``1.0`` (``1.0 * back - 1.0 * step``), so CMA-ES tunes
the mix. A program with literals of its own is tuned on them alone: with coefficients
beside its literals, the mutate default held out worse on TSP on 7 of 9 seeds (the
budget of a tuning is a few dozen evaluations, and CMA-ES does best in few dimensions).
Terms inside an index or ``range(...)`` stay (an integer context), and a lone
expression gets no coefficient (scaling a priority changes no argmax).
"""
from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .program import EditError, evolvable_functions, replace_functions

if TYPE_CHECKING:
    from .samplers.base import Sample

MAX_PARAMS = 16  # more literals than this: the first ones in source order (CMA-ES needs ~10 n evaluations)
SIGMA0 = 0.3  # initial step in the normalised space: constants move by about 30%
DIGITS = 6  # significant digits written into the program (readable code, stable syntactic hashes)


@dataclass(frozen=True)
class Literal:
    function: str
    index: int  # position among the function's tunable literals, in ast.walk order
    value: float
    integer: bool = False  # written as an int while its value stays whole


INTEGER_CALLS = frozenset({"range", "int", "len", "round", "bool", "chr", "slice"})


def _parents(tree: ast.AST) -> dict[int, ast.AST]:
    parents: dict[int, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
    return parents


def _integer_context(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    """Whether ``node`` lies in an index, a slice or an argument of range()/int()/...: integers there
    are counts and positions, not constants to tune."""
    while (node := parents.get(id(node))) is not None:
        if isinstance(node, (ast.Subscript, ast.Slice)) or (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in INTEGER_CALLS):
            return True
    return False


def _tunable(tree: ast.AST) -> list[tuple[ast.AST, float | int]]:
    """(node, value) of each tunable literal of a function tree, in a fixed order. A negative
    literal is the ``UnaryOp(USub, Constant)`` node, so its sign is tuned with it."""
    parents = _parents(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or isinstance(node.value, bool):
            continue
        if not isinstance(node.value, (int, float)) or not math.isfinite(node.value):
            continue
        target, sign = node, 1.0
        parent = parents.get(id(node))
        if isinstance(parent, ast.UnaryOp) and isinstance(parent.op, ast.USub):
            target, sign, parent = parent, -1.0, parents.get(id(parent))
        if isinstance(node.value, int) and (not isinstance(parent, ast.BinOp) or _integer_context(node, parents)):
            continue  # an index, a count, a call argument: not a constant to tune
        if isinstance(parent, ast.Subscript) or isinstance(parent, ast.Slice):
            continue
        found.append((target, -node.value if sign < 0 else node.value))
    return found


def _factors(node: ast.AST) -> list[ast.AST]:
    """The factors of a product or quotient (through unary minus)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _factors(node.operand)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
        return _factors(node.left) + _factors(node.right)
    return [node]


def _weighted(term: ast.AST) -> bool:
    """Whether a term already has a numeric factor (a coefficient), or is a number itself."""
    return any(isinstance(f, ast.Constant) and isinstance(f.value, (int, float)) and not isinstance(f.value, bool)
               for f in _factors(term))


def _sum_terms(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        return _sum_terms(node.left) + _sum_terms(node.right)
    return [node]


def _times_one(term: ast.expr) -> ast.expr:
    """``1.0 * term``, the factor put first in a product (``1.0 * a * x``, not ``1.0 * (a * x)``)."""
    if isinstance(term, ast.BinOp) and isinstance(term.op, (ast.Mult, ast.Div)):
        return ast.BinOp(_times_one(term.left), term.op, term.right)
    return ast.BinOp(ast.Constant(1.0), ast.Mult(), term)


def implicit_coefficients(code: str, budget: int) -> str:
    """``code`` with the coefficient ``1.0`` written on each term of a sum in its evolvable functions
    that has no numeric factor (at most ``budget`` of them, in source order); a term of ``x += t``
    counts. The program computes the same values (up to ints becoming floats)."""
    if budget <= 0:
        return code
    new = {}
    for name, src in evolvable_functions(code).items():
        tree = ast.parse(src)
        parents = _parents(tree)
        terms = []  # in ast.walk order, like the literals
        for node in ast.walk(tree):
            if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
                parent = parents.get(id(node))
                if isinstance(parent, ast.BinOp) and isinstance(parent.op, (ast.Add, ast.Sub)):
                    continue  # not the root of its chain: the root collects every term
                chain = _sum_terms(node)
            elif isinstance(node, ast.AugAssign) and isinstance(node.op, (ast.Add, ast.Sub)) and not (
                    isinstance(node.value, ast.BinOp) and isinstance(node.value.op, (ast.Add, ast.Sub))):
                chain = [node.value]  # x += t: t is a term (a sum as t is the root of its own chain)
            else:
                continue
            if not _integer_context(node, parents):
                terms += [t for t in chain if not _weighted(t)]
        wrap = {id(t) for t in terms[:budget]}
        budget -= len(wrap)
        if not wrap:
            continue

        class Weigh(ast.NodeTransformer):
            def visit(self, node):
                weigh = id(node) in wrap
                node = self.generic_visit(node)  # children first: a wrapped term's own sums are rewritten too
                return _times_one(node) if weigh else node

        new[name] = ast.unparse(ast.fix_missing_locations(Weigh().visit(tree)).body[0])
        if budget <= 0:
            break
    return replace_functions(code, new) if new else code


def exposed(code: str, max_params: int = MAX_PARAMS) -> str:
    """``code`` as a tuning tunes it: a program with literals of its own is tuned on them; one without
    gets its implicit coefficients written out (at most ``max_params``)."""
    return code if literals(code, max_params) else implicit_coefficients(code, max_params)


def literals(code: str, max_params: int = MAX_PARAMS) -> list[Literal]:
    """The tunable literals of ``code``'s evolvable functions (at most ``max_params``)."""
    out = []
    for name, src in evolvable_functions(code).items():
        for k, (_, value) in enumerate(_tunable(ast.parse(src))):
            out.append(Literal(name, k, float(value), isinstance(value, int)))
    return out[:max_params]


def _number(value: float, integer: bool) -> ast.expr:
    value = float(f"{value:.{DIGITS}g}")
    if value == 0:
        value = 0.0  # no "-0.0" in programs
    if integer and value.is_integer():
        value = int(value)
    const = ast.Constant(abs(value))
    # A negative constant as -(c): ast.unparse then parenthesises it where precedence needs it ((-c) ** x).
    return ast.UnaryOp(ast.USub(), const) if value < 0 else const


def substitute(code: str, params: list[Literal], values) -> str:
    """``code`` with each literal of ``params`` set to the matching entry of ``values``."""
    by_function: dict[str, dict[int, tuple[float, bool]]] = {}
    for lit, v in zip(params, values, strict=True):
        by_function.setdefault(lit.function, {})[lit.index] = (float(v), lit.integer)
    sources = evolvable_functions(code)
    new = {}
    for name, changes in by_function.items():
        tree = ast.parse(sources[name])
        nodes = _tunable(tree)
        replace = {id(nodes[k][0]): _number(*change) for k, change in changes.items()}

        class Swap(ast.NodeTransformer):
            def visit(self, node):
                if id(node) in replace:
                    return replace[id(node)]
                return self.generic_visit(node)

        tree = ast.fix_missing_locations(Swap().visit(tree))
        new[name] = ast.unparse(tree.body[0])
    return replace_functions(code, new)


@dataclass
class Tuning:
    """One CMA-ES tuning of one elite: ask trial vectors a generation at a time, tell their scores.

    ``trial(k)`` is the program of the k-th trial; generation g = k // batch can be asked only
    once generations < g are told (``ready(k)``). ``tell(k, score)`` records trial k's score
    (None: it failed, ranked last); a generation is told to CMA-ES when its last score is in.
    """

    code: str
    seed: int
    evaluations: int
    sigma0: float = SIGMA0
    batch: int | None = None  # CMA-ES population (None: CMA-ES's default, 4 + 3 ln n)
    max_params: int = MAX_PARAMS
    params: list[Literal] = field(init=False)
    _scores: dict[int, float | None] = field(init=False, default_factory=dict)
    _asked: list[list[np.ndarray]] = field(init=False, default_factory=list)  # per generation, normalised

    def __post_init__(self):
        import cma

        self.code = exposed(self.code, self.max_params)  # every trial is a substitution into this
        self.params = literals(self.code, self.max_params)
        if not self.params:
            raise EditError("no tunable literal (nor sum of terms) in the evolvable functions")
        n = len(self.params)
        self._values = np.array([p.value for p in self.params])
        self._scale = np.where(self._values == 0, 1.0, np.abs(self._values))
        rng = np.random.default_rng(self.seed)
        options = {"seed": np.nan, "randn": lambda *shape: rng.standard_normal(shape),
                   "verbose": -9, "verb_log": 0, "verb_disp": 0, "CMA_diagonal": False}
        if self.batch is not None:
            options["popsize"] = int(self.batch)
        # n = 1 is below pycma's minimum dimension: a second, dummy coordinate that no literal reads.
        self._es = cma.CMAEvolutionStrategy(np.zeros(max(n, 2)), self.sigma0, options)
        self.batch = int(self._es.popsize)

    def generation(self, k: int) -> int:
        return k // self.batch

    def ready(self, k: int) -> bool:
        """Whether trial k can be asked now (every earlier generation is told)."""
        return k < self.evaluations and self.generation(k) <= len(self._asked) and (
            self.generation(k) < len(self._asked) or self._told_all(self.generation(k) - 1))

    def _told_all(self, g: int) -> bool:
        return g < 0 or all(j in self._scores for j in range(g * self.batch, (g + 1) * self.batch))

    def vector(self, k: int) -> np.ndarray:
        """The literal values of trial k (asks its generation of CMA-ES when first needed)."""
        if not self.ready(k):
            raise ValueError(f"trial {k} cannot be asked yet (generation {self.generation(k)} "
                             f"needs generation {self.generation(k) - 1} told)")
        g = self.generation(k)
        if g == len(self._asked):
            self._asked.append(self._es.ask())
        return self._values + self._scale * self._asked[g][k % self.batch][:len(self.params)]

    def trial(self, k: int) -> str:
        return substitute(self.code, self.params, self.vector(k))

    def tell(self, k: int, score: float | None) -> None:
        """Trial k's score. Its generation is asked here if it was not yet (a replay tells without asking)."""
        if k in self._scores:
            raise ValueError(f"trial {k} was told already")
        g = self.generation(k)
        if g >= len(self._asked):
            self.vector(k)  # raises unless k could have been asked
        self._scores[k] = None if score is None or not math.isfinite(score) else float(score)
        if self._told_all(g):
            scores = [self._scores[j] for j in range(g * self.batch, (g + 1) * self.batch)]
            # pycma minimises; CMA-ES uses ranks only, so a failure just needs the worst rank.
            finite = [-v for v in scores if v is not None]
            worst = max(finite) + 1.0 if finite else 0.0
            self._es.tell(self._asked[g], [worst if v is None else -v for v in scores])

    @property
    def told(self) -> int:
        return len(self._scores)

    def done(self) -> bool:
        return self.told >= self.evaluations


# --- the operator: when to tune, and the trials as program rows ------------------------------

NAME = "tune"  # the sampler name of trial rows


def tuning_seed(run_seed: int, elite_id: int) -> int:
    return int(np.random.SeedSequence([run_seed, elite_id, 7]).generate_state(1)[0])


@dataclass
class Trial:
    """One planned trial: a child of ``elite`` (a normal program row, sampler ``tune``)."""

    elite: int
    island: int | None
    index: int  # k: the trial's place in its tuning
    text: str  # the changed functions' source (what an LLM answer holds)
    note: str  # one line for the row's prompt: which tuning, which trial, which values


class TuningOperator:
    """The planner's operator (``evosearch.planner.Operator``) for constant tuning: it decides when to
    tune, proposes the trials (``ask``) and answers them (``sample``); its whole state is rebuilt from
    the rows told.

    When: a committed program that beats every result before it becomes the tuning target, a trial
    included: a trial that sets a new best is tuned again once its tuning ends, so CMA-ES restarts
    (with a fresh step size) from the point it found, and a chain of tunings goes on while each one
    improves the best. When the search stalls (``patience`` sampler rows committed since the best
    last improved or a tuning last ended), the highest-scoring program a sampler wrote whose
    functional class was not tuned yet is tuned: a restart from another point of the plateau, where
    CMA-ES on the best alone has found nothing. Whenever no tuning runs or waits, the best-scoring
    program an LLM sampler (one named in ``llm``) wrote whose class was not tuned yet, nor the
    seed's, is tuned: an LLM's new shape is judged with its constants fitted, not only as written (a
    small model writes the right mix with the wrong weights: ``back - step`` on TSP); mutate's
    children are not (they are many and cheap, and mutate already moves constants). One tuning runs
    at a time and a newer best replaces a waiting target (the newest best is the one worth tuning).
    A functional class is tuned at most once, with ``evaluations`` trials. Which trial: the k-th
    trial row of a tuning is the k-th row with sampler ``tune`` and that elite as its only parent,
    in id order, read from the store; so a restart finds the trials asked before it (pending or
    done) and asks the next one, never one twice.

    ``tell`` must see every committed row in commit order (replay included); ``propose`` is
    asked for each new sample id and returns None when no trial can be asked now (the tuning's
    next generation waits for the current one), leaving the slot to the sampler.
    """

    name = NAME

    def __init__(self, store, run_seed: int, evaluations: int, sigma0: float = SIGMA0, patience: int = 0,
                 llm: tuple[str, ...] = ()):
        if evaluations < 1:
            raise ValueError(f"a tuning needs at least 1 evaluation, got {evaluations}")
        self.store, self.run_seed, self.evaluations, self.sigma0 = store, run_seed, int(evaluations), sigma0
        self.patience = int(patience)  # 0: no stall restarts
        self.llm = tuple(llm)  # the LLM samplers' row names: their new programs are tuned when the slot is free
        self.untuned_llm = False  # an LLM program told since the last search for one found none
        self.stale = 0  # sampler rows committed since the best last improved or a tuning last ended
        self.commits = 0  # rows told: the commit_seq of the next one
        self.best = -math.inf
        self.active: Tuning | None = None
        self.elite: int | None = None  # the active tuning's elite
        self.island: int | None = None
        self.waiting: tuple[int, int | None] | None = None  # (elite, island) of the next tuning
        self.tuned: set[int] = set()  # elites tuned or being tuned
        self.tuned_classes: set[str] = set()  # their functional classes (or syntax, where no probe ran)
        self.tunings = 0

    def _trials(self, elite: int, below: int | None = None) -> int:
        """Trial rows of ``elite`` so far (with ids below ``below``)."""
        where, params = "sampler = ? AND parents = ?", (NAME, f"[{int(elite)}]")
        if below is not None:
            where, params = where + " AND id < ?", (*params, below)
        return self.store.count(where, params)

    def _start(self, seq: int) -> None:
        while self.active is None:
            if self.waiting is None and self.untuned_llm:
                self.waiting = self._target(seq, include=self.llm)
                self.untuned_llm = self.waiting is not None
            if self.waiting is None:
                return
            elite, island = self.waiting
            self.waiting = None
            self.tuned.add(elite)
            row = self.store.get(elite)
            self.tuned_classes.add(row["functional_hash"] or row["syntactic_hash"])
            try:
                self.active = Tuning(row["code"], tuning_seed(self.run_seed, elite), self.evaluations, self.sigma0)
            except (EditError, SyntaxError):
                continue  # nothing to tune in this one
            self.elite, self.island = elite, island
            self.tunings += 1

    def tell(self, row: dict) -> None:
        seq, self.commits = self.commits, self.commits + 1
        ok = row["status"] == "ok" and row["score"] is not None
        if row["sampler"] == NAME:
            if self.active is not None and row["parents"] == [self.elite]:
                self.active.tell(self._trials(self.elite, below=row["id"]), row["score"] if ok else None)
                if self.active.done():
                    self.active = self.elite = self.island = None
                    self.stale = 0
        else:
            self.stale += 1
        if ok and row["sampler"] in self.llm:
            self.untuned_llm = True  # maybe of a class not tuned yet: the next free slot searches
        if ok and row["score"] > self.best and row["id"] > 0 and row["id"] not in self.tuned:
            self.waiting = (row["id"], row["island"])
        if ok and row["score"] > self.best:
            self.best, self.stale = row["score"], 0
        if self.patience and self.stale >= self.patience and self.active is None and self.waiting is None:
            self.waiting, self.stale = self._target(seq, exclude=(NAME,)), 0
        self._start(seq)

    def _target(self, seq: int, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()
                ) -> tuple[int, int | None] | None:
        """(id, island) of the best program of a sampler in ``include`` (or not in ``exclude``) whose
        functional class was not tuned yet (its first row of that class, by id), committed at ``seq`` or
        before: so a replay, which reads a store holding later rows too, picks the same one. Classes,
        not the ``duplicate_of`` column: which of two equals evaluated at once counts as the first
        depends on timing."""
        names = include or exclude
        which = f"sampler {'IN' if include else 'NOT IN'} ({', '.join('?' * len(names))})"
        excluded = set(self.tuned_classes)
        if include and (seed := self.store.get(0)) is not None:
            # An LLM's rewrite of the seed is no new program (its trials would tune the seed's behaviour).
            excluded.add(seed["functional_hash"] or seed["syntactic_hash"])
        classes = sorted(excluded)
        rows = self.store.top(f"status = 'ok' AND {which} AND commit_seq <= ? AND COALESCE(functional_hash, "
                              f"syntactic_hash) NOT IN ({', '.join('?' * len(classes))})", (*names, seq, *classes))
        # The seed belongs to every island; its trials go to the first one.
        return (rows[0]["id"], rows[0]["island"] or 0) if rows else None

    def propose(self, i: int) -> Trial | None:
        """The trial to ask as sample ``i``, or None."""
        if self.active is None:
            return None
        k = self._trials(self.elite)
        if not self.active.ready(k):
            return None
        values = self.active.vector(k)
        functions = evolvable_functions(self.active.trial(k))
        changed = {p.function for p in self.active.params}
        text = "\n\n".join(src for name, src in functions.items() if name in changed)
        note = (f"constant tuning of program {self.elite}: trial {k + 1} of {self.evaluations} "
                f"(CMA-ES generation {self.active.generation(k) + 1}); literals "
                + ", ".join(f"{p.value:.6g}->{v:.6g}" for p, v in zip(self.active.params, values)))
        return Trial(self.elite, self.island, k, text, note)

    def ask(self, planner, i: int):
        """The planner's Operator hook: sample ``i`` as a trial (recorded by the planner), or None."""
        from .planner import Ask, sample_seed
        from .samplers.base import Prompt

        trial = self.propose(i)
        if trial is None:
            return None
        prompt = Prompt(system=trial.note, user=trial.text, parents=[self.store.get(trial.elite)["code"]],
                        functions=planner.functions, seed=sample_seed(self.run_seed, i))
        epoch = planner.archipelago.epoch(trial.island) if trial.island is not None else None
        return Ask(id=i, island=trial.island, parents=[trial.elite], sampler=NAME, edit_format="full", epoch=epoch,
                   seen=planner.committer.seq, prompt=prompt, source=self)

    async def sample(self, prompt) -> Sample:
        """The trial's text, recorded as its prompt when it was proposed: so a trial asked before a
        restart is answered again from the store alone."""
        from .samplers.base import Sample

        return Sample(text=prompt.user, model=NAME)

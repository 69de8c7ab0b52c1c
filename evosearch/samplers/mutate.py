"""An LLM-free sampler: random AST mutations of the best parent's evolvable functions.

It is the baseline every LLM run should beat, the sampler of tests and of
reproducible runs (same ``prompt.seed`` -> same text), and, by hill climbing,
a search in its own right. Operators, as in genetic programming:

* ``constant``: perturb a numeric constant (scale or shift it; integers may become floats);
* ``operator``: swap a binary operator (+ - * / **) or a comparison (< <= > >= == !=);
* ``call``: swap a unary numpy call (np.exp -> np.log, np.sqrt, np.abs, ...);
* ``drop``: delete a statement;
* ``duplicate``: repeat a statement;
* ``term``: grow an expression ``e`` into ``e + c * f(v)`` or ``e * (1 + c * f(v))``, where ``v``
  is a feature in scope (a variable the function reads as a value, never one it reads only as an
  index, container or object) or a difference/ratio of two, and ``f`` a small set of shapes
  (identity, square, root, log, decaying exponential, threshold ``v < t``, ...).

Each sample applies one to three operators and returns the changed functions'
source, the shape an LLM answer has, so it goes through ``evosearch.extract``
like any other. The sampler only rewrites text; it never runs the code.

On a ``crossover`` prompt (two parents, the mate drawn from a distant cell) it answers with
Koza's subtree crossover instead: a subexpression of the other parent is grafted into the best
one, in place of one of its subexpressions or joined to it as a new term. A mutation moves a
child a short way from its parent; a graft carries over what made another cell's elite
differ, which is a longer step in behaviour.
"""
from __future__ import annotations

import ast
import collections
import copy
import math
import random
from typing import Callable

from evosearch.program import EditError, evolvable_functions
from evosearch.samplers.base import Prompt, Sample, Sampler, SamplerError

UNARY_NP = ("exp", "log", "sqrt", "abs", "square", "log1p", "expm1", "tanh", "sign", "cbrt", "reciprocal",
            "sin", "cos", "arctan", "floor", "ceil")
BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)
COMPARES = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)
# Shapes of a new term f(v) with their weights: {v} is a feature, {w} another one, {t} a
# threshold or scale. Within one call a priority is a function of its inputs, so the shapes
# that can reorder candidates (thresholds, bumps) are drawn most; thresholds relative to
# another feature ({t} * {w}) follow the data's scale, whatever the problem's units.
TERMS = {
    "({v} < {t})": 6, "({v} > {t})": 6, "({v} < {t} * {w})": 10, "({v} > {t} * {w})": 6, "({v} == 0)": 2,
    "np.exp(-(({v} - {t}) / {w}) ** 2)": 4, "np.exp(-np.abs({v}) / {t})": 3,
    "{v}": 3, "{v} * {v}": 3, "{v} * {w}": 3, "np.sqrt(np.abs({v}))": 3, "np.log1p(np.abs({v}))": 3,
    "1.0 / (np.abs({v}) + {t})": 2, "np.maximum({v}, {t})": 2, "np.minimum({v}, {t})": 2,
}
# How a term joins the expression e: added with a constant weight, added with a weight
# carried by a feature (so its scale follows the data's), or as a relative change of e.
JOINS = {"__e__ + {c} * {f}": 3, "__e__ + {c} * {w} * {f}": 3, "__e__ * (1 + {c} * {f})": 4}
OPERATORS = ("constant", "operator", "call", "drop", "duplicate", "term")
WEIGHTS = (0.3, 0.12, 0.06, 0.08, 0.04, 0.4)
MAX_TRIES = 50


class MutateSampler(Sampler):
    """Mutates ``prompt.parents[-1]`` (the best parent); deterministic in ``prompt.seed``."""

    name = "mutate"
    llm = False
    edit_formats = ("full", "crossover")  # it rewrites functions; diff and fix need a model reading the prompt
    # A quarter crossovers (when --edit-formats sets no mix): against mutations alone, 10 seeds of 2,000
    # samples, bin packing held out better on 7 of 10 (median -0.60 points) and TSP's map was fuller on 9 of
    # 10 (QD 1.20x); each within noise on the other measure (README, "Which settings find most").
    edit_mix = {"full": 0.75, "crossover": 0.25}
    # An AST edit calls no model: its sample costs only the evaluation. A tenth of a model's sample is
    # generous to the model (the embedded one took about 7 s a sample here, an evaluation 0.05-0.25 s).
    cost = 0.1

    def __init__(self, max_operators: int = 3):
        if max_operators < 1:
            raise ValueError(f"max_operators must be at least 1, not {max_operators}")
        self.max_operators = max_operators

    async def sample(self, prompt: Prompt) -> Sample:
        if not prompt.parents:
            raise SamplerError("the mutate sampler needs a parent program")
        if prompt.edit_format == "crossover" and len(prompt.parents) > 1:
            return Sample(text=crossover(prompt.parents[-1], prompt.parents[0], prompt.seed), model="mutate")
        return Sample(text=mutate(prompt.parents[-1], prompt.seed, self.max_operators), model="mutate")


def mutate(program: str, seed: int, max_operators: int = 3) -> str:
    """Source of the mutated evolvable functions of ``program`` (always parses, always differs)."""
    trees = _trees(program)
    rng = random.Random(seed)
    original = {name: ast.unparse(tree) for name, tree in trees.items()}
    for _ in range(MAX_TRIES):  # each retry continues the same rng stream, so the result stays deterministic
        mutated = {name: copy.deepcopy(tree) for name, tree in trees.items()}
        count = rng.choices((1, 2, 3), weights=(0.6, 0.3, 0.1))[0]
        for _ in range(min(count, max_operators)):
            name = rng.choice(sorted(mutated))
            op = rng.choices(OPERATORS, weights=WEIGHTS)[0]
            _APPLY[op](mutated[name], rng)
        if (answer := _answer(mutated, original)) is not None:
            return answer
    raise SamplerError(f"no valid mutation found in {MAX_TRIES} tries")


def crossover(recipient: str, donor: str, seed: int) -> str:
    """Source of ``recipient``'s evolvable functions with one subexpression of ``donor``'s same-named
    function grafted in: replacing a subexpression, or joined to it as a term, as ``_term`` joins its
    shapes. Grafts are compound subexpressions the recipient does not hold, whose local names are
    all in scope at the graft site and read as values only the recipient's features. With nothing
    to graft (no shared function, no such subexpression) it mutates the recipient."""
    trees, mates = _trees(recipient), _trees(donor)
    rng = random.Random(seed)
    original = {name: ast.unparse(tree) for name, tree in trees.items()}
    shared = sorted(set(trees) & set(mates))
    for _ in range(MAX_TRIES if shared else 0):
        name = rng.choice(shared)
        fn, mate = copy.deepcopy(trees[name]), mates[name]
        mate_parents = _parents(mate)
        local = set(_arguments(mate)) | {n.id for n in ast.walk(mate)
                                         if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        target = _target(fn, rng)
        if target is None:
            break
        own = {ast.unparse(e) for e in _expressions(fn)}  # what the recipient has already
        names = _variables(fn, target)
        scope, features = set(names), _features_of(fn, names)
        # A graft reads only names in scope, and as values only the recipient's features: an index
        # term of the mate (``start / unvisited``) must not spread from cell to cell.
        grafts = [e for e in _expressions(mate) if not isinstance(e, (ast.Constant, ast.Name))
                  and ast.unparse(e) not in own
                  and _names(e) & local <= scope and _names(e, mate_parents) & local <= set(features)]
        if not grafts:
            continue
        graft = copy.deepcopy(rng.choice(grafts))
        if rng.random() < 0.5 or not features:  # a join weighs the term by a feature in scope
            _replace(fn, target, graft)
        else:
            _join(fn, target, f"({ast.unparse(graft)})", sorted(features), rng)
        if ast.unparse(fn) == ast.unparse(mate):
            continue  # the mate itself: a known program
        if (answer := _answer({**trees, name: fn}, original)) is not None:
            return answer
    return mutate(recipient, seed)


def _trees(program: str) -> dict[str, ast.FunctionDef]:
    try:
        trees = {name: ast.parse(src).body[0] for name, src in evolvable_functions(program).items()}
    except (EditError, SyntaxError) as e:
        raise SamplerError(f"cannot mutate the parent: {e}") from e
    if not trees:
        raise SamplerError("the parent has no evolvable function to mutate")
    return trees


def _answer(trees: dict[str, ast.FunctionDef], original: dict[str, str]) -> str | None:
    """The source of the functions that changed, or None when none did or the result does not compile."""
    changed = {}
    for name, tree in trees.items():
        ast.fix_missing_locations(tree)
        src = ast.unparse(tree)
        if src != original[name]:
            changed[name] = src
    if changed and _compiles("\n\n\n".join(changed.values())):
        return "\n\n\n".join(changed.values()) + "\n"
    return None


def _compiles(source: str) -> bool:
    try:
        compile(source, "<mutant>", "exec", dont_inherit=True)  # compiles only: catches what ast.parse lets through
        return True
    except (SyntaxError, ValueError):
        return False


# --- finding places -----------------------------------------------------------

def _parents(fn: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(fn) for child in ast.iter_child_nodes(node)}


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _numbers(fn: ast.FunctionDef) -> list[tuple[ast.expr, float]]:
    """Numeric literals with their values; ``-2.5`` (a minus applied to 2.5) counts as one number."""
    parents = _parents(fn)
    out = []
    for node in ast.walk(fn):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and _is_number(node.operand):
            site, value = node, -node.operand.value
        elif _is_number(node) and not isinstance(parents.get(node), ast.UnaryOp):
            site, value = node, node.value
        else:
            continue
        # Indices, keyword arguments (axis=0) and defaults must stay as they are.
        if isinstance(parents.get(site), (ast.Subscript, ast.Slice, ast.keyword, ast.arguments)):
            continue
        out.append((site, value))
    return out


def _is_number(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _number(value: float | int) -> ast.expr:
    """A literal; negative ones as a minus applied to a positive constant, as Python writes them."""
    return ast.UnaryOp(ast.USub(), ast.Constant(-value)) if value < 0 else ast.Constant(value)


def _expressions(fn: ast.FunctionDef) -> list[ast.expr]:
    """Value expressions that may grow: inside return values and assigned values, not call targets.
    An indexing (``distances[current, unvisited]``) is one value: its container and its index
    are structure, and a term grown there would change which entries are read, not their value."""
    parents = _parents(fn)
    roots = [n.value for n in ast.walk(fn)
             if isinstance(n, (ast.Return, ast.Assign, ast.AugAssign, ast.AnnAssign)) and n.value is not None]
    out = []
    for root in roots:
        for node in _walk_values(root):
            if not isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Constant, ast.Compare,
                                     ast.Subscript)):
                continue
            parent = parents.get(node)
            if isinstance(node, ast.Constant) and not type(node.value) in (int, float):
                continue
            if isinstance(parent, ast.Call) and node is parent.func or isinstance(parent, (ast.Attribute, ast.keyword)):
                continue
            out.append(node)
    return out


def _walk_values(root: ast.AST):
    """``ast.walk`` that does not enter an indexing."""
    todo = collections.deque([root])
    while todo:
        node = todo.popleft()
        yield node
        if not isinstance(node, ast.Subscript):
            todo.extend(ast.iter_child_nodes(node))


def _bodies(fn: ast.FunctionDef) -> list[list[ast.stmt]]:
    return [body for node in ast.walk(fn) for field in ("body", "orelse", "finalbody")
            if isinstance(body := getattr(node, field, None), list) and body and isinstance(body[0], ast.stmt)]


def _arguments(fn: ast.FunctionDef) -> list[str]:
    return [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs if a.arg not in ("self", "cls")]


def _variables(fn: ast.FunctionDef, at: ast.AST) -> list[str]:
    """Arguments and names assigned by top-level statements before the one holding ``at``."""
    names = _arguments(fn)
    for stmt in fn.body:
        if any(node is at for node in ast.walk(stmt)):
            break
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id not in names:
                names.append(node.id)
    return names


def _features_of(fn: ast.FunctionDef, names: list[str]) -> list[str]:
    """What a new term may read, of the ``names`` in scope: those ``fn`` reads as values, and its own
    unread variables (the seed's offered features), not those it reads only as an index
    (``distances[current, unvisited]``'s ``current``), a container or an object (``distances``,
    ``task.goals``' ``task``), nor arguments it no longer reads (a dropped statement was their
    only use). City indices carry no meaning a heuristic should learn: a term in them fits the
    training instances' numbering, not their geometry; a matrix in a term breaks the shape.
    A function that reads values only through indexings offers those indexings; one that reads
    nothing (a constant seed) offers all of its names."""
    parents, arguments, scope = _parents(fn), set(_arguments(fn)), set(names)
    body = [node for stmt in fn.body for node in ast.walk(stmt)]  # not the annotations
    plain, structural = set(), set()
    for node in body:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            (structural if _structural(node, parents) else plain).add(node.id)
    stored = {n.id for n in body if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    features = (plain & (arguments | stored)) | (stored - structural - arguments)
    if features:
        return [n for n in names if n in features]
    indexings = sorted({ast.unparse(n) for n in body if isinstance(n, ast.Subscript) and _names(n) <= scope | {"np"}})
    return indexings or (names if not structural else [])


def _names(e: ast.AST, parents: dict[ast.AST, ast.AST] | None = None) -> set[str]:
    """The names ``e`` reads; given its tree's ``parents``, only those it reads as values."""
    return {n.id for n in ast.walk(e) if isinstance(n, ast.Name) and not (parents and _structural(n, parents))}


def _structural(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether a name is read as a container, an object or (at any depth) an index, not as a value."""
    parent = parents.get(node)
    if isinstance(parent, (ast.Subscript, ast.Attribute)) and node is parent.value:
        return True  # a container or an object
    while parent is not None:  # anywhere inside an index
        if isinstance(parent, ast.Subscript) and node is not parent.value:
            return True
        node, parent = parent, parents.get(parent)
    return False


def _replace(fn: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for node in ast.walk(fn):
        for field, value in ast.iter_fields(node):
            if value is old:
                setattr(node, field, new)
                return
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if item is old:
                        value[i] = new
                        return


def _round(x: float) -> float:
    """Three significant digits: readable programs, and perturbations land on a grid."""
    return float(f"{x:.3g}")


# --- operators ----------------------------------------------------------------

def _constant(fn: ast.FunctionDef, rng: random.Random) -> None:
    numbers = _numbers(fn)
    if not numbers:
        return _term(fn, rng)
    site, v = rng.choice(numbers)
    kind = rng.random()
    if kind < 0.45:
        new = v * math.exp(rng.gauss(0, 0.3))  # relative step
    elif kind < 0.75:
        new = v + rng.gauss(0, max(abs(v), 1.0) * 0.5)  # absolute step, can cross zero
    elif kind < 0.85:
        new = v * 10 ** rng.uniform(-1, 1)  # change of scale
    elif kind < 0.93:
        new = -v
    else:
        new = float(rng.choice((0, 0.5, 1, 2, 10)))
    # Integers become floats half the time; floats stay floats.
    value = int(round(new)) if type(v) is int and rng.random() < 0.5 else _round(float(new))
    _replace(fn, site, _number(value))


def _operator(fn: ast.FunctionDef, rng: random.Random) -> None:
    nodes = [n for n in ast.walk(fn) if isinstance(n, (ast.BinOp, ast.Compare))
             and (not isinstance(n, ast.BinOp) or isinstance(n.op, BINOPS))]
    if not nodes:
        return _term(fn, rng)
    node = rng.choice(nodes)
    if isinstance(node, ast.BinOp):
        node.op = rng.choice([op for op in BINOPS if not isinstance(node.op, op)])()
    else:
        i = rng.randrange(len(node.ops))
        node.ops[i] = rng.choice([op for op in COMPARES if not isinstance(node.ops[i], op)])()


def _call(fn: ast.FunctionDef, rng: random.Random) -> None:
    calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and isinstance(n.func.value, ast.Name) and n.func.value.id in ("np", "numpy")
             and n.func.attr in UNARY_NP and len(n.args) == 1]
    if not calls:
        return _term(fn, rng)
    node = rng.choice(calls)
    node.func.attr = rng.choice([f for f in UNARY_NP if f != node.func.attr])


def _drop(fn: ast.FunctionDef, rng: random.Random) -> None:
    # Never the function's last statement (usually its return) nor a docstring.
    spots = [(body, i) for body in _bodies(fn) for i, s in enumerate(body)
             if len(body) > 1 and not _is_docstring(s) and not (body is fn.body and i == len(body) - 1)
             and not (len(body) == 2 and _is_docstring(body[0]))]
    if not spots:
        return _term(fn, rng)
    body, i = rng.choice(spots)
    del body[i]


def _duplicate(fn: ast.FunctionDef, rng: random.Random) -> None:
    spots = [(body, i) for body in _bodies(fn) for i, s in enumerate(body)
             if not _is_docstring(s) and not isinstance(s, (ast.Return, ast.FunctionDef))]
    if not spots:
        return _term(fn, rng)
    body, i = rng.choice(spots)
    body.insert(i + 1, copy.deepcopy(body[i]))


def _features(names: list[str], rng: random.Random) -> tuple[str, str]:
    """Two features: a variable, or a difference or ratio of two (the seed's own building blocks)."""
    def one() -> str:
        a = rng.choice(names)
        pick = rng.random()
        if pick < 0.35 or len(names) < 2:
            return a
        b = rng.choice([n for n in names if n != a])
        return f"({a} - {b})" if pick < 0.65 else f"({a} / {b})" if pick < 0.85 else f"(({a} - {b}) / {b})"
    return one(), one()


def _target(fn: ast.FunctionDef, rng: random.Random) -> ast.expr | None:
    """An expression to grow or replace; half the time the whole returned value, the most direct
    way to change a score."""
    exprs = _expressions(fn)
    if not exprs:
        return None
    returns = [n.value for n in ast.walk(fn) if isinstance(n, ast.Return) and n.value is not None]
    return rng.choice(returns) if returns and rng.random() < 0.5 else rng.choice(exprs)


def _term(fn: ast.FunctionDef, rng: random.Random) -> None:
    target = _target(fn, rng)
    names = [] if target is None else _features_of(fn, _variables(fn, target))
    if not names:
        return
    v, w = _features(names, rng)
    t = _round(10 ** rng.uniform(-1, 2))
    shape = rng.choices(list(TERMS), weights=list(TERMS.values()))[0].format(v=v, w=w, t=t)
    _join(fn, target, shape, names, rng)


def _join(fn: ast.FunctionDef, target: ast.expr, term: str, names: list[str], rng: random.Random) -> None:
    """Replace ``target`` by a JOINS form of it and ``term`` (source), with a random weight."""
    c = _round(rng.choice((-1, 1)) * 10 ** rng.uniform(-2, 1.5))
    join = rng.choices(list(JOINS), weights=list(JOINS.values()))[0]
    new = ast.parse(join.format(c=c, w=rng.choice(names), f=term), mode="eval").body
    # Every join holds __e__ as the left operand of its top BinOp.
    new.left = copy.deepcopy(target)
    _replace(fn, target, new)


_APPLY: dict[str, Callable[[ast.FunctionDef, random.Random], None]] = {
    "constant": _constant, "operator": _operator, "call": _call, "drop": _drop, "duplicate": _duplicate,
    "term": _term,
}

"""Turn a sampler's raw text into function sources to splice into a program.

Language models rarely answer with just a function. This module copes with what
they do write: chat prose around the code, one or several ```python fences
(closed or not), trailing junk after the function (example usage, explanations,
a cut-off last line), a whole program instead of a function, FunSearch's
versioned names (the prompt shows ``priority_v0``, ``priority_v1`` and asks for
``priority_v2``; the answer's ``priority_v2`` becomes ``priority``), a body-only
answer that continues the header the prompt ended with, tabs and CRLF.

Truncation follows FunSearch's sampler: a function that stops parsing at line N
is cut before line N, so a trailing half-written line costs only that line.
Everything here parses (``ast``, ``tokenize``); nothing is executed.
"""
from __future__ import annotations

import ast
import builtins
import io
import re
import textwrap
import tokenize
from dataclasses import dataclass, field

from evosearch.program import EditError, evolvable_functions

__all__ = ["extract_functions", "EditError"]

_DEF = re.compile(r"^(?P<indent> *)(?:async +)?def +(?P<name>[A-Za-z_]\w*) *\(")
_CLASS = re.compile(r"^ *class +(?P<name>[A-Za-z_]\w*) *[(:]")
_FENCE_OPEN = re.compile(r"^\s*(?:```+|~~~+)[ \t]*(?:python3?|py|Python)?[ \t]*")
_FENCE_CLOSE = re.compile(r"[ \t]*(?:```+|~~~+)[ \t]*$")
_VERSION = re.compile(r"^(?P<base>\w+?)_v(?P<version>\d+)$")
_BUILTINS = frozenset(dir(builtins))


@dataclass
class _Def:
    """One top-level function found in the answer."""

    name: str
    line: int  # 0-based index of its first line (decorators included) in the normalized text
    node: ast.FunctionDef | ast.AsyncFunctionDef | None = None
    source: str = ""
    error_line: int = 0  # 1-based line of the answer where parsing failed, when node is None
    error_msg: str = ""

    @property
    def error(self) -> str:
        return f"syntax error at line {self.error_line}: {self.error_msg}"


@dataclass
class _Answer:
    lines: list[str]
    fences: list[tuple[int, int]]  # (first, last+1) line ranges of fenced code
    defs: list[_Def] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # their methods are not functions to splice
    # Module-level imports and simple assignments outside any function: bound name -> (line, source).
    statements: dict[str, tuple[int, str]] = field(default_factory=dict)


def extract_functions(text: str, functions: list[str], header: str | None = None,
                      program: str | None = None) -> dict[str, str]:
    """Function name -> source for each of ``functions`` the answer defines,
    plus any helper functions they call that the answer also defines.

    ``header``: the ``def ...:`` line (optionally with its docstring) the prompt
    ended with; an answer made of indented body lines completes it.
    ``program``: the parent program. Module-level imports and constants from the
    answer that a kept function uses are moved into that function's body, unless
    ``program`` already binds the name at top level (without ``program`` every
    such import is moved in). Helpers the answer re-defines that exist outside the
    evolve blocks of ``program`` are left out: they may not change.

    Raises EditError with a one-line reason when no usable function is found.
    """
    if not functions:
        raise ValueError("extract_functions needs at least one function name")
    answer = _scan(text)
    if not any(line.strip() for line in answer.lines):
        raise EditError("no code")

    chosen = _choose(answer.defs, functions)
    if not chosen and header is not None:
        body_only = _complete_header(answer, header, functions)
        if body_only is not None:
            chosen = {body_only[0]: body_only[1]}
    if not chosen:
        raise EditError(_why_nothing(answer, functions))

    for base, d in chosen.items():
        if d.node is None:
            raise EditError(d.error)
        if _is_empty(d.node):
            raise EditError(f"function {d.name} has an empty body")

    known, frozen = _program_names(program)
    renames = {d.name: base for base, d in chosen.items() if d.name != base}
    by_name = {d.name: d for d in answer.defs if d.node is not None}  # later definitions win
    kept: dict[str, _Def] = dict(chosen)
    # Helpers: functions of the answer that kept functions call, transitively.
    todo = list(chosen.values())
    while todo:
        for name in sorted(_free_names(todo.pop().node)):
            helper = by_name.get(name)
            # Skip: unknown names, recursion into a kept function, trusted functions the answer echoed.
            if helper is None or name in kept or name in renames or name in frozen:
                continue
            kept[name] = helper
            todo.append(helper)

    out = {}
    for name, d in kept.items():
        source = _inject(d, answer.statements, known | set(kept) | set(renames))
        source = _rename(source, renames)
        out[name] = _checked(source, d)
    return out


# --- reading the answer -----------------------------------------------------

def _scan(text: str) -> _Answer:
    """Normalize line ends, indentation and fences; find functions and module statements."""
    lines, fences, fence_start = [], [], None
    for i, raw in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n")):
        line = raw
        if _FENCE_OPEN.match(line) and line.lstrip()[:3] in ("```", "~~~"):
            rest = _FENCE_OPEN.sub("", line, count=1)
            if fence_start is None:
                fence_start = i + (0 if rest.strip() else 1)
            else:
                fences.append((fence_start, i))
                fence_start = None
            line = rest
        elif _FENCE_CLOSE.search(line) and fence_start is not None:  # code then ``` on one line
            line = _FENCE_CLOSE.sub("", line)
            fences.append((fence_start, i + 1))
            fence_start = None
        body = line.lstrip(" \t\u00a0")
        lead = line[:len(line) - len(body)].replace("\u00a0", " ").expandtabs(4)
        lines.append((lead + body).rstrip())
    if fence_start is not None:  # an unclosed fence runs to the end
        fences.append((fence_start, len(lines)))

    answer = _Answer(lines, fences)
    covered = 0
    for i, line in enumerate(lines):
        if i < covered:
            continue
        m = _DEF.match(line)
        if m:
            first, end, indent = _extent(lines, i)
            answer.defs.append(_parse_def(m["name"], lines, first, end, indent))
            covered = end
        elif m := _CLASS.match(line):  # skip the class body: a method is not a program's function
            answer.classes.append(m["name"])
            covered = _extent(lines, i)[1]
        else:
            _module_statement(line, i, answer.statements)
    return answer


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _extent(lines: list[str], i: int) -> tuple[int, int, int]:
    """Lines [first, end) of the function whose def is on line i: decorators above,
    then every following line that is blank, a comment, indented deeper, or closes
    a bracket of a signature spread over several lines."""
    indent = _indent(lines[i])
    first = i
    while first > 0 and lines[first - 1].lstrip().startswith("@") and _indent(lines[first - 1]) == indent:
        first -= 1
    end = i + 1
    while end < len(lines):
        line = lines[end]
        stripped = line.lstrip()
        if stripped and not stripped.startswith("#") and _indent(line) <= indent \
                and not (_indent(line) == indent and stripped[0] in ")]}"):
            break
        end += 1
    while end > i + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    return first, end, indent


def _parse_def(name: str, lines: list[str], first: int, end: int, indent: int) -> _Def:
    src = [line[indent:] if line.strip() else "" for line in lines[first:end]]
    error_line, error_msg = 0, ""
    n = len(src)
    while n > 0:
        code = "\n".join(src[:n])
        try:
            tree = ast.parse(code)
        except SyntaxError as e:  # cut before the offending line, as FunSearch does
            if not error_msg:
                error_line, error_msg = first + (e.lineno or n), e.msg
            n = min(n - 1, (e.lineno or n) - 1)
            while n > 0 and not src[n - 1].strip():
                n -= 1
            continue
        if len(tree.body) == 1 and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
            node = tree.body[0]
            # A cut that lost every return leaves a function that can only return None: report the cause.
            if n == len(src) or any(isinstance(s, (ast.Return, ast.Yield)) for s in ast.walk(node)):
                return _Def(name, first, node, code)
        break
    return _Def(name, first, error_line=error_line or first + 1,
                error_msg=error_msg or f"cannot parse function {name}")


def _module_statement(line: str, i: int, statements: dict[str, tuple[int, str]]) -> None:
    """Record a one-line import or NAME = value outside functions (the answer's module scope)."""
    stripped = line.strip()
    if not stripped or not re.match(r"(import|from)\s|[A-Za-z_]\w*\s*(:[^=]+)?=[^=]", stripped):
        return
    try:
        tree = ast.parse(stripped)
    except SyntaxError:
        return
    if len(tree.body) != 1:
        return
    node = tree.body[0]
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            if alias.name != "*":
                statements[(alias.asname or alias.name).split(".")[0]] = (i, stripped)
    elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        statements[node.targets[0].id] = (i, stripped)
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        statements[node.target.id] = (i, stripped)


# --- choosing ----------------------------------------------------------------

def _base(name: str, functions: list[str]) -> str | None:
    """The evolvable function a name stands for: itself, or its versioned form (priority_v2)."""
    if name in functions:
        return name
    m = _VERSION.match(name)
    if m and m["base"] in functions:
        return m["base"]
    return None


def _choose(defs: list[_Def], functions: list[str]) -> dict[str, _Def]:
    """For each evolvable function, the answer's newest definition: the highest
    version wins; a plain name counts as the newest version seen so far; among
    equals, the last one that parses (a later broken copy does not hide it)."""
    best: dict[str, tuple[tuple[int, int, int], _Def]] = {}
    top: dict[str, int] = {}
    for d in defs:
        base = _base(d.name, functions)
        if base is None:
            continue
        m = _VERSION.match(d.name) if d.name != base else None
        version = int(m["version"]) if m else top.get(base, -1)
        top[base] = max(top.get(base, -1), version)
        rank = (version, d.node is not None, d.line)
        if base not in best or rank > best[base][0]:
            best[base] = (rank, d)
    return {base: best[base][1] for base in functions if base in best}


def _complete_header(answer: _Answer, header: str, functions: list[str]) -> tuple[str, _Def] | None:
    """Try the answer as the body of ``header``: its leading indented lines, or a fenced block without a def."""
    head = [line.expandtabs(4).rstrip() for line in header.replace("\r\n", "\n").split("\n")]
    while head and not head[-1].strip():
        head.pop()
    m = next((_DEF.match(line) for line in head if _DEF.match(line)), None)
    if m is None:
        raise ValueError(f"header has no def line: {header!r}")
    base = _base(m["name"], functions)
    if base is None:
        return None
    # Body lines sit one level under the def, or where the header's docstring sits.
    body_indent = _indent(head[-1]) if len(head) > 1 and head[-1].strip() else len(m["indent"]) + 4
    lines = answer.lines
    # The strongest sign of a body-only answer is that it starts indented; a fenced block
    # without a def is weaker (it is often prose), so its syntax errors are not reported.
    candidates = []
    start = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > 0):
        end += 1
    if end > start:
        candidates.append((start, end))
    candidates += [(a, b) for a, b in answer.fences if not any(_DEF.match(line) for line in lines[a:b])]
    first_error = None
    for k, (a, b) in enumerate(candidates):
        body = textwrap.dedent("\n".join(lines[a:b])).strip("\n")
        if not body.strip():
            continue
        code = head + textwrap.indent(body, " " * body_indent).split("\n")
        d = _parse_def(m["name"], code, 0, len(code), len(m["indent"]))
        if d.node is not None and not _is_empty(d.node):
            d.line = a
            return base, d
        if d.node is None and first_error is None and k == 0 and end > start:
            # Line numbers of the answer, not of header + answer.
            d.line, d.error_line = a, max(d.error_line - len(head) + a, a + 1)
            first_error = d
    return (base, first_error) if first_error else None


def _why_nothing(answer: _Answer, functions: list[str]) -> str:
    wanted = " or ".join(functions)
    if answer.defs or answer.classes:
        found = list(dict.fromkeys([d.name for d in answer.defs] + [f"class {c}" for c in answer.classes]))
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        return f"no function named {wanted} (found: {', '.join(found[:5])}{more})"
    if answer.fences:
        return f"no function named {wanted}"
    return "no code"


# --- rewriting the kept functions ----------------------------------------------

def _is_empty(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A body of only a docstring, pass and ``...``: the model echoed the header and stopped."""
    for stmt in node.body:
        if isinstance(stmt, ast.Pass):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                and (isinstance(stmt.value.value, str) or stmt.value.value is Ellipsis):
            continue
        return False
    return True


def _local_names(node: ast.AST) -> set[str]:
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.arg):
            names.add(sub.arg)
        elif isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
            names.add(sub.id)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub is not node:
            names.add(sub.name)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in sub.names)
    return names


def _free_names(node: ast.AST) -> set[str]:
    """Names a function reads but does not bind itself (an approximation of its free variables)."""
    loads = {sub.id for sub in ast.walk(node) if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load)}
    return loads - _local_names(node) - _BUILTINS


def _program_names(program: str | None) -> tuple[set[str], set[str]]:
    """(names the program binds at top level, functions defined outside its evolve blocks)."""
    if program is None:
        return set(), set()
    tree = ast.parse(program)
    bound = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(stmt.name)
        else:
            bound |= _local_names(stmt)
    functions = {s.name for s in tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return bound, functions - set(evolvable_functions(program))


def _inject(d: _Def, statements: dict[str, tuple[int, str]], known: set[str]) -> str:
    """Move the module-level imports and constants this function needs into its body."""
    needed: dict[str, tuple[int, str]] = {}
    todo = [n for n in _free_names(d.node) if n in statements and n not in known]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed[name] = statements[name]
        stmt = ast.parse(statements[name][1]).body[0]
        todo += [n for n in _free_names(stmt) if n in statements and n not in known and n not in needed]
    if not needed:
        return d.source
    body = d.node.body
    if body[0].lineno == d.node.lineno:  # "def f(x): return x" has no line to insert before
        return d.source
    docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
        and isinstance(body[0].value.value, str)
    after = body[0].end_lineno if docstring else body[0].lineno - 1  # after the docstring, else first
    pad = " " * body[0].col_offset
    lines = d.source.split("\n")
    new = [pad + src for _, src in sorted(set(needed.values()))]
    return "\n".join(lines[:after] + new + lines[after:])


def _rename(source: str, renames: dict[str, str]) -> str:
    """Rename identifiers token by token (not inside strings or comments), keeping the layout."""
    if not any(old in source for old in renames):
        return source
    lines = source.split("\n")
    edits = [(tok.start, tok.end, renames[tok.string])
             for tok in tokenize.generate_tokens(io.StringIO(source + "\n").readline)
             if tok.type == tokenize.NAME and tok.string in renames]
    for (row, col), (_, end), new in reversed(edits):
        lines[row - 1] = lines[row - 1][:col] + new + lines[row - 1][end:]
    return "\n".join(lines)


def _checked(source: str, d: _Def) -> str:
    """Rewriting must not break a function that parsed; if it did, keep the original."""
    try:
        ast.parse(source)
        return source
    except SyntaxError:
        return d.source


"""Programs as text: EVOLVE-BLOCK regions, evolvable functions, splicing.

A program is the skeleton with its evolve blocks rewritten. Only code between
``# EVOLVE-BLOCK-START`` and ``# EVOLVE-BLOCK-END`` may change; the rest (imports,
trusted helpers) stays as the problem wrote it. Parsing never executes code.
"""
from __future__ import annotations

import ast
import functools
from dataclasses import dataclass

START, END = "# EVOLVE-BLOCK-START", "# EVOLVE-BLOCK-END"


class EditError(ValueError):
    """A proposed edit cannot be applied; the message says why."""


class RejectedEdit(EditError):
    """An edit that breaks the rules (touches code outside the evolve blocks, SEARCH text not
    found): the message is shown to the model when it is asked again."""


@dataclass(frozen=True)
class Block:
    start: int  # 0-based index of the START marker line
    end: int  # 0-based index of the END marker line


# Programs are parsed again and again (prompts show the same elites, children share parents):
# the pure functions of a program's text below keep their recent answers.
CACHED = 1024


def blocks(code: str) -> list[Block]:
    return list(_blocks(code))


@functools.lru_cache(maxsize=CACHED)
def _blocks(code: str) -> tuple[Block, ...]:
    lines = code.splitlines()
    found, open_at = [], None
    for i, line in enumerate(lines):
        tag = line.strip()
        if tag.startswith(START):
            if open_at is not None:
                raise EditError(f"line {i + 1}: nested {START}")
            open_at = i
        elif tag.startswith(END):
            if open_at is None:
                raise EditError(f"line {i + 1}: {END} without {START}")
            found.append(Block(open_at, i))
            open_at = None
    if open_at is not None:
        raise EditError(f"line {open_at + 1}: {START} is never closed")
    if not found:
        raise EditError(f"no {START} ... {END} region")
    return tuple(found)


def _functions(code: str) -> dict[str, tuple[int, int]]:
    """Top-level function name -> (first line, last line), 0-based, decorators included."""
    return dict(_function_spans(code))


@functools.lru_cache(maxsize=CACHED)
def _function_spans(code: str) -> tuple[tuple[str, tuple[int, int]], ...]:
    tree = ast.parse(code)
    spans = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            spans[node.name] = (first, node.end_lineno - 1)
    return tuple(spans.items())


def evolvable_functions(code: str) -> dict[str, str]:
    """Name -> source of each top-level function inside an evolve block, in order."""
    return dict(_evolvable(code))


@functools.lru_cache(maxsize=CACHED)
def _evolvable(code: str) -> tuple[tuple[str, str], ...]:
    lines = code.splitlines()
    regions = blocks(code)
    out = {}
    for name, (a, b) in _functions(code).items():
        if any(r.start < a and b < r.end for r in regions):
            out[name] = "\n".join(lines[a:b + 1])
    return tuple(out.items())


def replace_functions(code: str, new: dict[str, str]) -> str:
    """Put each function of ``new`` into the program: one that exists in an
    evolve block is replaced in place; a new helper goes at the end of the
    first block. Redefining a function outside the blocks is an EditError."""
    lines = code.splitlines()
    regions = blocks(code)
    spans = _functions(code)
    inside = evolvable_functions(code)
    for name in new:
        if name in spans and name not in inside:
            raise RejectedEdit(f"function '{name}' is outside the evolve blocks and may not change")
    # Replace from the bottom up so earlier line numbers stay valid.
    edits = sorted(((spans[n], src) for n, src in new.items() if n in inside), reverse=True)
    for (a, b), src in edits:
        lines[a:b + 1] = src.rstrip("\n").splitlines()
    helpers = [src.rstrip("\n") for n, src in new.items() if n not in inside]
    if helpers:
        end = blocks("\n".join(lines))[0].end
        lines[end:end] = ["", *"\n\n".join(helpers).splitlines()]
    out = "\n".join(lines) + "\n"
    ast.parse(out)  # a splice can only break syntax if ``new`` was broken; fail loudly here
    assert len(blocks(out)) == len(regions)
    return out


def outside(code: str) -> list[str]:
    """The program's lines outside its evolve blocks (markers included): what no edit may change."""
    lines = code.splitlines()
    keep, at = [], 0
    for b in blocks(code):
        keep += lines[at:b.start + 1]
        at = b.end
    return [line.rstrip() for line in keep + lines[at:]]


def check_frozen(parent: str, child: str) -> None:
    """RejectedEdit unless ``child`` keeps every line of ``parent`` outside its evolve blocks."""
    try:
        n = len(blocks(child))
    except EditError as e:
        raise RejectedEdit(f"the edit broke the EVOLVE-BLOCK markers ({e})") from None
    if n != len(blocks(parent)):
        raise RejectedEdit(f"the edit changed the number of EVOLVE-BLOCK regions ({len(blocks(parent))} -> {n})")
    before, after = outside(parent), outside(child)
    if before != after:
        at = next((k for k, (a, b) in enumerate(zip(before, after)) if a != b), min(len(before), len(after)))
        line = before[at] if at < len(before) else after[at]
        raise RejectedEdit(f"the edit changes code outside the EVOLVE-BLOCK regions (near {line.strip()!r}); "
                           f"only code between {START} and {END} may change")


@functools.lru_cache(maxsize=CACHED)
def ast_size(code: str) -> int:
    """Number of AST nodes in the evolve blocks' functions (the program-size descriptor)."""
    return sum(sum(1 for _ in ast.walk(ast.parse(src))) for src in evolvable_functions(code).values())

"""Edits a model proposes to a parent program, beyond rewriting whole functions.

The diff format (AlphaEvolve, Aider) asks for one or more blocks

    <<<<<<< SEARCH
    lines copied from the parent
    =======
    the lines that replace them
    >>>>>>> REPLACE

applied in order. A SEARCH text that is not in the program, or that is in it more
than once, or that lies (even in part) outside the EVOLVE-BLOCK regions, rejects
the edit with a message written for the model, which sees it when asked again.
Whatever the format, ``check_frozen`` then verifies that no line outside the
blocks changed. Nothing here executes code.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from .program import END, START, RejectedEdit, blocks, check_frozen

__all__ = ["Replace", "parse_diff", "apply_diff", "rationale"]

_SEARCH = re.compile(r"^\s*<{5,}\s*SEARCH\s*$")
_DIVIDER = re.compile(r"^\s*={5,}\s*$")
_REPLACE = re.compile(r"^\s*>{5,}\s*REPLACE\s*$")
_CHANGE = re.compile(r"^\s*#\s*Change\s*:\s*(?P<text>.+?)\s*$", re.M | re.I)
_FENCE = re.compile(r"^\s*```")


@dataclass(frozen=True)
class Replace:
    search: str
    replace: str


def parse_diff(text: str) -> list[Replace]:
    """The SEARCH/REPLACE blocks of an answer, in order (code fences around them are ignored)."""
    lines = text.replace("\r\n", "\n").replace("\t", "    ").split("\n")
    out, i = [], 0
    while i < len(lines):
        if not _SEARCH.match(lines[i]):
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not _DIVIDER.match(lines[j]):
            if _SEARCH.match(lines[j]) or _REPLACE.match(lines[j]):
                raise RejectedEdit(f"SEARCH block {len(out) + 1} has no ======= line")
            j += 1
        k = j + 1
        while k < len(lines) and not _REPLACE.match(lines[k]):
            if _SEARCH.match(lines[k]):
                break
            k += 1
        if j >= len(lines):
            raise RejectedEdit(f"SEARCH block {len(out) + 1} has no ======= line")
        if k >= len(lines) or not _REPLACE.match(lines[k]):
            raise RejectedEdit(f"SEARCH block {len(out) + 1} has no >>>>>>> REPLACE line")
        out.append(Replace(_unfence("\n".join(lines[i + 1:j])), _unfence("\n".join(lines[j + 1:k]))))
        i = k + 1
    if not out:
        raise RejectedEdit("no SEARCH/REPLACE block found (write <<<<<<< SEARCH, the lines to change, "
                           "=======, the new lines, >>>>>>> REPLACE)")
    return out


def _unfence(text: str) -> str:
    return "\n".join(line for line in text.split("\n") if not _FENCE.match(line))


def apply_diff(program: str, edits: list[Replace]) -> str:
    """``program`` with each edit applied in turn; RejectedEdit (a message for the model) if one cannot be."""
    code = program
    for n, edit in enumerate(edits, 1):
        code = _apply_one(code, edit, n)
    try:
        ast.parse(code)
    except SyntaxError as e:
        raise RejectedEdit(f"after the edits the program has a syntax error at line {e.lineno}: {e.msg}") from None
    check_frozen(program, code)
    return code


def _apply_one(code: str, edit: Replace, n: int) -> str:
    lines = code.split("\n")
    search = edit.search.strip("\n").split("\n")
    if not "".join(search).strip():
        raise RejectedEdit(f"SEARCH block {n} is empty: copy the lines to change from the program")
    hits = _find(lines, search, strip=False)
    loose = not hits
    if loose:  # the model often gets indentation slightly wrong: match ignoring it
        hits = _find(lines, search, strip=True)
    if not hits:
        raise RejectedEdit(f"SEARCH block {n} does not match the program: its lines must be copied exactly "
                           f"(first line: {search[0].strip()!r})")
    if len(hits) > 1:
        raise RejectedEdit(f"SEARCH block {n} matches {len(hits)} places: include more lines to make it unique")
    a = hits[0]
    b = a + len(search) - 1
    regions = blocks(code)
    if not any(r.start < a and b < r.end for r in regions):
        spans = ", ".join(f"{r.start + 2}-{r.end}" for r in regions)
        raise RejectedEdit(f"SEARCH block {n} (lines {a + 1}-{b + 1}) is outside the EVOLVE-BLOCK regions "
                           f"(lines {spans}); only code between {START} and {END} may change")
    new = edit.replace.strip("\n").split("\n") if edit.replace.strip() else []
    if loose:  # shift the replacement by the indentation the model got wrong
        shift = _indent(lines[a]) - _indent(search[0])
        new = [(" " * shift + line) if shift > 0 else line[min(-shift, _indent(line)):] for line in new]
    return "\n".join(lines[:a] + new + lines[b + 1:])


def _find(lines: list[str], search: list[str], strip: bool) -> list[int]:
    norm = (lambda s: s.strip()) if strip else (lambda s: s.rstrip())
    want = [norm(s) for s in search]
    have = [norm(s) for s in lines]
    m = len(want)
    return [i for i in range(len(have) - m + 1) if have[i:i + m] == want]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def rationale(text: str, limit: int = 200) -> str | None:
    """The model's stated change (Evolution of Thought): a ``# Change: ...`` line, or else the
    first line of prose before the first code block or SEARCH block of a chat answer."""
    m = _CHANGE.search(text)
    if m:
        return m.group("text")[:limit]
    for line in text.replace("\r\n", "\n").split("\n"):
        s = line.strip()
        if _FENCE.match(s) or _SEARCH.match(s) or s.startswith(("def ", "import ", "from ")):
            return None
        if s and not s.startswith("#"):
            return s.strip("*_ ")[:limit] or None
    return None

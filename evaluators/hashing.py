"""Syntactic and functional fingerprints of candidate programs (pure functions).

* The syntactic hash identifies programs that differ only in formatting,
  comments or docstrings: it hashes the normalized AST, so the same code
  re-sampled by an LLM with a different comment is recognised without running it.
* The functional hash identifies programs that behave alike on the probe
  instances: it hashes their outputs, with floats rounded to a few mantissa
  bits so that reassociated arithmetic (``a*b*c`` vs ``a*(b*c)``) still matches.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import math
from typing import Any

DEFAULT_MANTISSA_BITS = 32


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                # A body of only a docstring still needs a statement to stay valid.
                node.body = body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=1024)  # the same text comes back often (duplicates, cache hits)
def syntactic_hash(code: str) -> str:
    """sha256 of the program's AST without docstrings; comments and layout never
    reach the AST. Raises SyntaxError (or ValueError for NUL bytes) on bad code."""
    tree = _strip_docstrings(ast.parse(code))
    dump = ast.dump(tree, annotate_fields=False, include_attributes=False)
    return hashlib.sha256(dump.encode()).hexdigest()


def round_mantissa(x: float, bits: int) -> float:
    """``x`` with its mantissa rounded to ``bits`` bits (exact for |bits| >= 53)."""
    if not math.isfinite(x) or x == 0.0 or bits >= 53:
        return x + 0.0  # folds -0.0 into 0.0
    m, e = math.frexp(x)
    try:
        return math.ldexp(round(m * (1 << bits)) / (1 << bits), e)
    except OverflowError:  # rounded up past the largest float: keep the largest such value
        return math.copysign(math.ldexp(1.0 - 2.0 ** -bits, e), x)


def _canonical(value: Any, bits: int) -> Any:
    kind = type(value)  # fast paths for the exact types JSON parsing produces
    if kind is int or kind is str or kind is bool or value is None:
        return value
    if kind is list and set(map(type, value)) <= {int}:  # ranks, indices: the usual probe output
        return value
    if kind is list:
        return [_canonical(v, bits) for v in value]
    # bool before int: bool is an int subclass but a different output.
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "__nan__"
        if math.isinf(value):
            return "__inf__" if value > 0 else "__-inf__"
        return round_mantissa(value, bits)
    if isinstance(value, (list, tuple)):
        return [_canonical(v, bits) for v in value]
    if isinstance(value, dict):
        return {str(k): _canonical(v, bits) for k, v in value.items()}
    # numpy scalars and arrays, for callers hashing in-process outputs
    if hasattr(value, "tolist"):
        return _canonical(value.tolist(), bits)
    raise TypeError(f"cannot hash output of type {type(value).__name__}")


def functional_hash(outputs: Any, mantissa_bits: int = DEFAULT_MANTISSA_BITS) -> str:
    """sha256 of canonical JSON of ``outputs`` (JSON-like data) with every float
    rounded to ``mantissa_bits`` mantissa bits. Ints and floats stay distinct
    (a scorer may accept one and not the other); dict key order is irrelevant."""
    canonical = _canonical(outputs, mantissa_bits)
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()

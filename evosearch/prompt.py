"""FunSearch's best-shot prompt: k parents as versioned functions, asking for the next version.

The fixed part (instructions, problem context) comes first and the parents
last, so servers with prefix caching (vLLM, llama.cpp) reuse the shared part.
"""
from __future__ import annotations

import ast
import io
import tokenize

from .program import blocks, evolvable_functions
from .samplers.base import Prompt

SYSTEM = ("You are an expert Python programmer improving a function by evolutionary search. "
          "Each version below was scored by trusted code; higher scores are better. "
          "Reply with exactly one ```python code block that defines the requested function(s) "
          "and nothing else. Keep the same signature; you may use numpy as np.")


def rename(source: str, old: str, new: str) -> str:
    """Rename identifier ``old`` to ``new`` (names only: strings and comments are untouched)."""
    lines = source.splitlines(keepends=True)
    hits = [tok.start for tok in tokenize.generate_tokens(io.StringIO(source).readline)
            if tok.type == tokenize.NAME and tok.string == old]
    for row, col in reversed(hits):
        line = lines[row - 1]
        lines[row - 1] = line[:col] + new + line[col + len(old):]
    return "".join(lines)


def versioned(functions: dict[str, str], version: int) -> str:
    """Every evolvable function renamed ``name_v{version}``, calls between them included."""
    out = []
    for src in functions.values():
        for name in functions:
            src = rename(src, name, f"{name}_v{version}")
        out.append(src)
    return "\n\n".join(out)


def program_context(skeleton: str) -> str:
    """The skeleton outside its evolve blocks: imports and trusted helpers the model may call."""
    lines = skeleton.splitlines()
    for block in reversed(blocks(skeleton)):
        del lines[block.start:block.end + 1]
    return "\n".join(lines).strip()


def signature(source: str) -> str:
    """A function's lines before its body (decorators and ``def`` line(s)), with a newline."""
    node = ast.parse(source).body[0]
    return "\n".join(source.splitlines()[:node.body[0].lineno - 1]) + "\n"


def build_prompt(*, description: str, skeleton: str, parents: list[tuple[str, float]], seed: int) -> Prompt:
    """``parents``: (program code, score) pairs, any order; shown worst first, best last."""
    parents = sorted(parents, key=lambda p: p[1])
    names = list(evolvable_functions(skeleton))
    shown = []
    for version, (code, score) in enumerate(parents):
        shown.append(f"# Version {version} (score {score:.6g})\n{versioned(evolvable_functions(code), version)}")
    k = len(parents)
    wanted = ", ".join(f"`{n}_v{k}`" for n in names)
    user = (f"Problem: {description}\n\nProgram context:\n```python\n{program_context(skeleton)}\n```\n\n"
            + "\n\n".join(f"```python\n{s}\n```" for s in shown)
            + f"\n\nWrite {wanted}, an improved version of the functions above. "
              f"Change the logic, not only the names.")
    first = names[0]
    # FunSearch's trick: a short docstring in the header keeps the model from copying the long one.
    header = (rename(signature(evolvable_functions(skeleton)[first]), first, f"{first}_v{k}")
              + f'    """Improved version of `{first}_v{k - 1}`."""\n')
    completion = (f'"""{description}"""\n\n{program_context(skeleton)}\n\n\n' + "\n\n\n".join(shown)
                  + f"\n\n\n# Version {k} (improved)\n{header}")
    return Prompt(system=SYSTEM, user=user, parents=[c for c, _ in parents], functions=names, seed=seed,
                  completion=completion, header=header)

"""FunSearch's best-shot prompt: k parents as versioned functions, asking for the next version.

The fixed part (instructions, problem context) comes first and the parents
last, so servers with prefix caching (vLLM, llama.cpp) reuse the shared part.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import io
import math
import tokenize
from dataclasses import dataclass

from .program import blocks, evolvable_functions
from .samplers.base import Prompt

from .samplers.base import ALL_FORMATS as EDIT_FORMATS  # listed once, with the sampler contract

# One system text for every format, so the shared head of a prompt is the same across formats.
SYSTEM = ("You are an expert Python programmer improving a program by evolutionary search. "
          "Each version below was scored by trusted code; higher scores are better. "
          "Answer in the format asked for at the end. Keep function signatures; you may use numpy as np.")
CHANGE_ASK = ("Start your answer with one line `# Change: <what you change and why>`, then ")
# Failure text shown to the model: the tail of a traceback says the most.
ERROR_CHARS = 600
METRICS_SHOWN = 8



@dataclass
class Shown:
    """A program as the prompt shows it: its score, the evaluator's feedback and, for Evolution
    of Thought, the change its author stated and how that change turned out."""

    code: str
    score: float | None = None
    id: int | None = None
    metrics: dict | None = None  # per-instance or per-part scores from the evaluator
    status: str = "ok"
    error: str | None = None  # why it failed (fix mode)
    change: str | None = None  # the model's stated change that produced this program
    delta: float | None = None  # its score minus its best parent's


@functools.lru_cache(maxsize=1024)  # prompts show the same elites again and again
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


def feedback(p: Shown) -> list[str]:
    """Comment lines about a shown program: metrics, error, stated change and its outcome."""
    out = []
    if p.metrics:
        items = [f"{k} {_num(v)}" for k, v in list(p.metrics.items())[:METRICS_SHOWN]]
        more = len(p.metrics) - METRICS_SHOWN
        out.append("# Metrics: " + ", ".join(items) + (f" (and {more} more)" if more > 0 else ""))
    if p.error:
        text = p.error.strip()
        text = ("..." + text[-ERROR_CHARS:]) if len(text) > ERROR_CHARS else text
        out += [f"# Error ({p.status}):"] + [f"#   {line}" for line in text.splitlines() if line.strip()]
    if p.change:
        outcome = f" -> score {p.delta:+.4g} vs its parent" if p.delta is not None and math.isfinite(p.delta) else ""
        out.append(f"# Change: {p.change}{outcome}")
    return out


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _as_shown(p) -> Shown:
    return p if isinstance(p, Shown) else Shown(code=p[0], score=p[1])


def shared_head(description: str, skeleton: str, insights: list[str]) -> tuple[str, str]:
    """The part every prompt of a run shares (chat form, completion form): instructions, problem,
    context, insights. It comes first so prefix caches (vLLM, llama.cpp) keep it between samples."""
    context = program_context(skeleton)
    chat = f"Problem: {description}\n\nProgram context:\n```python\n{context}\n```\n\n"
    code = f'"""{description}"""\n\n{context}\n\n\n'
    if insights:
        chat += "Insights from earlier samples of this run:\n" + "".join(f"- {x}\n" for x in insights) + "\n"
        code += "".join(f"# Insight: {x}\n" for x in insights) + "\n\n"
    return chat, code


def build_prompt(*, description: str, skeleton: str, parents: list, seed: int, edit_format: str = "full",
                 insights: list[str] | None = None, inspirations: list[Shown] | None = None) -> Prompt:
    """A prompt in one edit format, shared head first, the parents last.

    ``parents``: ``Shown`` or (code, score) pairs. full: FunSearch's best-shot prompt over k
    parents (shown worst first) asking for the next version; crossover: the same over two
    parents, asking to combine them; diff: the best parent's whole program, asking for
    SEARCH/REPLACE blocks (chat only); fix: one failed program and its error, asking for a repair.
    ``inspirations`` (AlphaEvolve): other elites shown in the chat form after the shared head, before the parents.
    The returned ``Prompt.parents[-1]`` is the program the answer is spliced into."""
    if edit_format not in EDIT_FORMATS:
        raise ValueError(f"unknown edit format {edit_format!r} (choose {', '.join(EDIT_FORMATS)})")
    shown = [_as_shown(p) for p in parents]
    if edit_format == "fix":
        shown = shown[-1:]
    else:
        shown = distinct(sorted(shown, key=lambda p: -math.inf if p.score is None else p.score))
    if edit_format == "diff":
        shown = shown[-1:]
    chat_head, code_head = shared_head(description, skeleton, insights or [])
    others = _inspiration_text(inspirations or [])
    names = list(evolvable_functions(skeleton))
    if edit_format == "diff":
        return _diff_prompt(chat_head, others, shown[0], names, seed)
    versions = []
    for version, p in enumerate(shown):
        label = f"failed: {p.status}" if edit_format == "fix" else f"score {_num(p.score)}"
        versions.append("\n".join([f"# Version {version} ({label})", *feedback(p),
                                    versioned(evolvable_functions(p.code), version)]))
    k = len(shown)
    wanted = ", ".join(f"`{n}_v{k}`" for n in names)
    ask = {
        "full": f"Write {wanted}, an improved version of the functions above. Change the logic, not only the names.",
        "crossover": f"Write {wanted}, combining the best ideas of the versions above into one better version.",
        "fix": f"Version {k - 1} failed with the error shown. Write {wanted}, a repaired version that keeps its "
               f"idea but runs correctly.",
    }[edit_format]
    user = (chat_head + others + "\n\n".join(f"```python\n{v}\n```" for v in versions)
            + f"\n\n{ask} {CHANGE_ASK}one ```python code block defining the function(s).")
    first = names[0]
    doc = {"full": f"Improved version of `{first}_v{k - 1}`.",
           "crossover": f"Combines the ideas of `{first}_v0` to `{first}_v{k - 1}`.",
           "fix": f"Fixed version of `{first}_v{k - 1}`."}[edit_format]
    # FunSearch's trick: a short docstring in the header keeps the model from copying the long one.
    header = rename(signature(evolvable_functions(skeleton)[first]), first, f"{first}_v{k}") + f'    """{doc}"""\n'
    tag = {"full": "improved", "crossover": "combined", "fix": "fixed"}[edit_format]
    completion = code_head + "\n\n\n".join(versions) + f"\n\n\n# Version {k} ({tag})\n{header}"
    return Prompt(system=SYSTEM, user=user, parents=[p.code for p in shown], functions=names, seed=seed,
                  completion=completion, header=header, completion_shared=len(code_head),
                  user_shared=len(chat_head), edit_format=edit_format)


def distinct(shown: list[Shown]) -> list[Shown]:
    """The shown programs without repeats of the same functions (the better copy kept): two copies
    of one program waste the prompt's versions and teach a small model to copy."""
    out: dict[tuple, Shown] = {}
    for p in shown:  # worst first: a later (better) copy replaces an earlier one, in its place
        key = tuple(evolvable_functions(p.code).values())
        out.pop(key, None)
        out[key] = p
    return list(out.values())


def _inspiration_text(inspirations: list[Shown]) -> str:
    if not inspirations:
        return ""
    parts = ["\n\n".join(["\n".join([f"# score {_num(p.score)}", *feedback(p)]),
                           *evolvable_functions(p.code).values()]) for p in inspirations]
    return ("Other programs of the population, for inspiration:\n"
            + "".join(f"```python\n{x}\n```\n" for x in parts) + "\n")


def _diff_prompt(chat_head: str, others: str, parent: Shown, names: list[str], seed: int) -> Prompt:
    notes = "\n".join(feedback(parent))
    user = (chat_head + others + f"Current program (score {_num(parent.score)}):\n```python\n{parent.code.rstrip()}\n```\n"
            + (f"{notes}\n" if notes else "")
            + "\nImprove the program by editing it. " + CHANGE_ASK
            + "one or more edit blocks of this form:\n<<<<<<< SEARCH\n<lines copied exactly from the program>\n"
              "=======\n<the new lines>\n>>>>>>> REPLACE\n"
              "Only lines between # EVOLVE-BLOCK-START and # EVOLVE-BLOCK-END may change.")
    # No completion form: a completion model cannot be steered into this format by code alone.
    return Prompt(system=SYSTEM, user=user, parents=[parent.code], functions=names, seed=seed,
                  user_shared=len(chat_head), edit_format="diff")


def retry_prompt(prompt: Prompt, answer: str, reason: str, seed: int) -> Prompt:
    """The prompt again, with the rejected answer and why it was rejected (the shared head stays first)."""
    reason = " ".join(reason.split())
    user = (f"{prompt.user}\n\nYour previous answer was:\n{answer.strip()[:2000]}\n\n"
            f"It was rejected: {reason}\nAnswer again, avoiding that.")
    completion = prompt.completion
    if completion and prompt.header and completion.endswith(prompt.header):
        cut = len(completion) - len(prompt.header)
        completion = completion[:cut] + f"# A previous attempt was rejected: {reason}\n" + prompt.header
    return dataclasses.replace(prompt, user=user, completion=completion, seed=seed)

"""An insights library (CoEvo): now and then the model reads what happened so far in the run
(which stated changes improved on their parents, which failed and why) and writes a few
bullet lines of lessons; the latest lines go into later prompts' shared head.

``digest`` turns the recent committed rows into the material shown to the model, and is also
the LLM-free summary used with the mutate sampler (it has no model to ask) or when the
model's answer holds no usable bullet: built from the rows alone, it keeps same seed = same run.
"""
from __future__ import annotations

import re
from collections import Counter

from .samplers.base import Prompt

MAX_INSIGHTS = 5
MAX_CHARS = 160  # per insight line
SYSTEM = ("You are an expert Python programmer reviewing an evolutionary search over programs. "
          "Summarise what the results teach, for whoever writes the next versions.")
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(?P<text>\S.*?)\s*$")


def digest(rows: list[dict], parent_scores: dict[int, float | None], limit: int = 8) -> list[str]:
    """Facts from committed rows: the largest improvements over the parent (with the stated
    change, if any), the edits that made things worse, and the most common failure reasons."""
    gains, failures = [], Counter()
    for row in rows:
        if row["status"] == "ok":
            base = [parent_scores.get(p) for p in row["parents"]]
            base = [s for s in base if s is not None]
            if base and row["score"] is not None:
                gains.append((row["score"] - max(base), row))
        else:
            reason = (row.get("reason") or "").strip().splitlines()
            failures[f"{row['status']}: {reason[-1][:100] if reason else 'no reason'}"] += 1
    gains.sort(key=lambda g: (-g[0], g[1]["id"]))
    out = []
    for delta, row in [g for g in gains if g[0] > 0][:3]:
        what = row.get("rationale") or f"a {row.get('edit_format') or 'full'} edit"
        out.append(f"improved by {delta:+.4g}: {what}"[:MAX_CHARS])
    worse = [g for g in gains if g[0] < 0]
    if worse:
        delta, row = worse[-1]
        what = row.get("rationale") or f"a {row.get('edit_format') or 'full'} edit"
        out.append(f"worst change {delta:+.4g}: {what}"[:MAX_CHARS])
    for reason, n in failures.most_common(2):
        out.append(f"{n} of {len(rows)} recent samples failed with {reason}"[:MAX_CHARS])
    return out[:limit]


def insight_prompt(description: str, facts: list[str], previous: list[str], seed: int) -> Prompt:
    """Chat prompt asking for a few bullet lines of lessons (no completion form: it is prose)."""
    user = (f"Problem: {description}\n\nRecent results of the search:\n" + "".join(f"- {f}\n" for f in facts)
            + ("\nEarlier insights:\n" + "".join(f"- {p}\n" for p in previous) if previous else "")
            + f"\nWrite at most {MAX_INSIGHTS} short bullet lines starting with '- ': what worked, what failed, "
              "what to try next. No code.")
    return Prompt(system=SYSTEM, user=user, parents=[], functions=[], seed=seed)


def parse_insights(text: str) -> list[str]:
    """The bullet lines of an answer (at most MAX_INSIGHTS, each cut to MAX_CHARS); code is ignored."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else _BULLET.match(line)
        if m:
            item = m.group("text").strip("*_ ")
            if item and item not in out:
                out.append(item[:MAX_CHARS])
    return out[:MAX_INSIGHTS]

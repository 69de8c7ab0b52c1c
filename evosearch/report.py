"""What a run found, as one self-contained HTML file (and the data the live dashboard serves).

``load_run`` reads a run folder into one JSON-able dict: the store's rows as compact columns (every text once, in a
shared string table), lineage diffs, the islands' archives replayed from the store, QD metrics, usage per model.
``render`` wraps that dict and the page's own script (report_assets/) into one HTML file that opens offline: the
data and plotly.js travel gzipped and base64-encoded, and the browser unpacks them with DecompressionStream. The
page computes its plots from the columns, so the same script draws the report and the dashboard.

The store is opened read-only (SQLite WAL: a reader never blocks the run), so a report can be made of a run that is
still going. Columns are read by name when present: a store from an older or newer version degrades to fewer views.
"""
from __future__ import annotations

import base64
import difflib
import functools
import gzip
import json
import math
import sqlite3
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from .tuning import NAME as TUNE

ASSETS = Path(__file__).with_name("report_assets")
REPORT_NAME = "report.html"
# programs columns the report reads: the first schema's, then later ones (any may be missing in an older store)
FIRST_COLUMNS = ("id", "island", "parents", "sampler", "model", "prompt_id", "response", "code", "status", "reason",
                 "score", "descriptors", "metrics", "cache_hit", "duplicate_of", "archive", "tokens_in", "tokens_out",
                 "sample_s", "eval_s", "created", "finished")
PROGRAM_COLUMNS = (*FIRST_COLUMNS, "edit_format", "rationale", "epoch", "cost", "retries", "commit_seq", "staleness")
TEXT_COLUMNS = ("code", "response", "reason", "rationale", "metrics")  # stored once each in the string table


class ReportError(Exception):
    """The folder cannot be reported on (a user mistake: one line)."""


def connect(db_path: Path) -> sqlite3.Connection:
    """A read-only connection: the run (the store's one writer) is never blocked or changed."""
    if not db_path.is_file():
        raise ReportError(f"{db_path.parent} is not a run directory (no evosearch.db)")
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    return db


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]


def _json(text: Any, default: Any = None) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


def _num(x: Any) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _finite(obj: Any) -> Any:
    """A JSON tree with NaN and infinities as null (json.loads reads them from files; JSON.parse does not)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class Strings:
    """A table of distinct texts: each program refers to its code, answer, prompt ... by index."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self.items: list[str] = []

    def __call__(self, text: str | None) -> int | None:
        if text is None:
            return None
        i = self.index.get(text)
        if i is None:
            i = self.index[text] = len(self.items)
            self.items.append(text)
        return i


def load_run(run_dir: str | Path) -> dict:
    """Everything the report shows, as one JSON-able dict (see the module docstring)."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    db = connect(run_dir / "evosearch.db")
    try:
        data = _read_store(db, run_dir)
    finally:
        db.close()
    data["build_s"] = round(time.perf_counter() - started, 3)
    return data


def _read_store(db: sqlite3.Connection, run_dir: Path) -> dict:
    have = _columns(db, "programs")
    if not have:
        raise ReportError(f"{run_dir}: the store has no programs table")
    cols = [c for c in PROGRAM_COLUMNS if c in have]
    rows = db.execute(f"SELECT {', '.join(cols)} FROM programs ORDER BY id").fetchall()
    meta = {r[0]: _json(r[1]) for r in db.execute("SELECT key, value FROM meta")} if _columns(db, "meta") else {}
    config = meta.get("config") or _yaml(run_dir / "config.yaml") or {}
    strings = Strings()
    prompts, prompt_index = _prompts(db, strings)
    events = ([{"at_commit": r[0], **(_json(r[1], {}) or {})} for r in db.execute(
        "SELECT at_commit, event FROM events ORDER BY id")] if _columns(db, "events") else [])
    axes = _axes(config, rows)

    t0 = min((r["created"] for r in rows if "created" in cols and r["created"] is not None), default=None)
    p: dict[str, list] = {k: [] for k in ("id", "island", "parents", "status", "score", "archive", "edit_format",
                                         "model", "tokens_in", "tokens_out", "cost", "retries", "t", "sample_s",
                                         "eval_s", "commit", "staleness", "cache_hit", "duplicate_of", "epoch",
                                         "desc", "prompt", "code", "response", "reason", "rationale", "metrics",
                                         "diff")}
    code_of: dict[int, str] = {}
    present = set(cols)
    done = meta.get("committed") if isinstance(meta.get("committed"), int) else math.inf
    for r in rows:
        get = (lambda c: r[c] if c in present else None)
        pid = r["id"]
        parents = _json(get("parents"), []) or []
        code = get("code")
        if code is not None:
            code_of[pid] = code
        desc = _json(get("descriptors"))
        p["id"].append(pid)
        p["island"].append(get("island"))
        p["parents"].append(parents)
        p["status"].append(get("status"))
        p["score"].append(_num(get("score")))
        p["archive"].append(get("archive"))
        p["edit_format"].append(get("edit_format"))
        p["model"].append(get("model") or get("sampler"))
        for c in ("tokens_in", "tokens_out", "retries", "duplicate_of", "epoch", "staleness"):
            p[c].append(get(c))
        # commit order: recorded (commit_seq), or in older stores the id of every finished row below meta "committed"
        p["commit"].append(get("commit_seq") if "commit_seq" in present else
                           pid if get("status") != "pending" and pid < done else None)
        for c in ("cost", "sample_s", "eval_s"):
            v = _num(get(c))
            p[c].append(None if v is None else round(v, 6))
        finished = get("finished")
        p["t"].append(None if finished is None or t0 is None else round(finished - t0, 3))
        p["cache_hit"].append(get("cache_hit"))
        p["desc"].append(None if not isinstance(desc, dict) else [_num(desc.get(a["name"])) for a in axes])
        p["prompt"].append(prompt_index.get(get("prompt_id")))
        for c in TEXT_COLUMNS:
            p[c].append(strings(get(c)))
        # the diff from the edited parent (the last in parents) to this program
        base = code_of.get(parents[-1]) if parents else None
        p["diff"].append(strings(_diff(base, code, parents[-1], pid)) if base is not None and code is not None
                         else None)

    n_pending = sum(1 for s in p["status"] if s == "pending")
    committed = sum(1 for c in p["commit"] if c is not None)
    # Samples are sampler calls; constant-tuning trials (sampler "tune") are evaluations without one.
    trial = [("sampler" in present and r["sampler"] == TUNE) for r in rows]
    n_samples = sum(1 for r, t in zip(rows, trial) if r["id"] > 0 and not t)
    evaluations = sum(1 for r in rows if r["id"] > 0 and "code" in present and r["code"] is not None
                      and r["status"] != "pending")
    committed_samples = sum(1 for r, t, c in zip(rows, trial, p["commit"]) if r["id"] > 0 and not t and c is not None)
    last_write = max((r[c] for r in rows for c in ("created", "finished") if c in cols and r[c]), default=None)
    summary = _json_file(run_dir / "summary.json")
    complete = committed_samples >= (config.get("samples") or 0) and not n_pending
    return {
        "run": {"name": run_dir.resolve().name, "dir": str(run_dir.resolve()), "problem": config.get("problem"),
                "programs": len(rows), "samples": n_samples, "evaluations": evaluations, "trials": sum(trial),
                "committed": committed, "pending": n_pending, "target": config.get("samples"),
                "state": "complete" if complete else "incomplete", "t0": t0, "last_write": last_write,
                "generated": time.time(), "missing_columns": _missing(have)},
        "config": _finite(config),
        "summary": _finite(summary),
        "usage": _finite(meta.get("sampler_usage")),
        "axes": axes,
        "programs": p,
        "prompts": prompts,
        "strings": strings.items,
        "events": _finite(events),
        "archives": _replay_archives(p, events, axes, config),
        "qd": _qd_history(run_dir / "qd_metrics.json"),
        "insights": ([dict(r) for r in db.execute("SELECT at_sample, text, model FROM insights ORDER BY at_sample")]
                     if _columns(db, "insights") else []),
    }


def _missing(have: list[str]) -> list[str]:
    """Columns this version's store writes that the run's store lacks (it is older)."""
    from .store import ADDED_COLUMNS
    current = set(FIRST_COLUMNS) | {c for table, c, _ in ADDED_COLUMNS if table == "programs"}
    return [c for c in PROGRAM_COLUMNS if c in current and c not in have]


def _yaml(path: Path) -> dict | None:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _prompts(db: sqlite3.Connection, strings: Strings) -> tuple[list, dict]:
    """Distinct prompts as [system, user] string indexes, and prompt_id -> position in that list."""
    have = _columns(db, "prompts")
    if not have:
        return [], {}
    cols = [c for c in ("id", "system", "user", "completion") if c in have]
    out, seen, index = [], {}, {}
    for r in db.execute(f"SELECT {', '.join(cols)} FROM prompts ORDER BY id"):
        r = dict(zip(cols, r))
        user = r.get("user") if r.get("user") is not None else r.get("completion")
        key = (strings(r.get("system")), strings(user))
        if key not in seen:
            seen[key] = len(out)
            out.append(list(key))
        index[r["id"]] = seen[key]
    return out, index


@functools.lru_cache(maxsize=65536)  # the dashboard rebuilds a growing run: old diffs are not made again
def _diff(before: str, after: str, parent: int, child: int) -> str:
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), f"program {parent}",
                                        f"program {child}", n=2))


_WARNED: set = set()


def _axes(config: dict, rows: list) -> list[dict]:
    """The archive's behaviour axes: the problem's descriptors plus program size (and runtime when on); when the
    problem cannot be loaded here (moved, or an older run), the descriptor names found in the store with their
    observed range."""
    axes = []
    try:
        from .engine import axes as engine_axes  # the run's own: problem descriptors, size, runtime when on
        from .problem import _import_folder, resolve_folder
        cls = _import_folder(resolve_folder(config["problem"]))  # descriptors are class attributes: no instance
        found = engine_axes(cls, SimpleNamespace(runtime_descriptor=bool(config.get("runtime_descriptor"))))
        axes = [{"name": d.name, "low": float(d.low), "high": float(d.high), "bins": int(d.bins)} for d in found]
    except Exception as e:  # any failure here only costs the fixed ranges
        if config.get("problem") not in _WARNED:  # once per problem: the dashboard rebuilds a run often
            _WARNED.add(config.get("problem"))
            print(f"evosearch report: descriptor ranges from the data ({type(e).__name__}: {e})", file=sys.stderr)
    if axes:
        return axes
    values: dict[str, list[float]] = {}
    for r in rows:
        for k, v in (_json(r["descriptors"] if "descriptors" in r.keys() else None, {}) or {}).items():
            if _num(v) is not None:
                values.setdefault(k, []).append(float(v))
    return [{"name": k, "low": min(v), "high": max(v) if max(v) > min(v) else min(v) + 1, "bins": 10}
            for k, v in values.items()]


def _cell(desc: list, axes: list[dict]) -> tuple[int, ...] | None:
    if desc is None or any(d is None for d in desc):
        return None
    out = []
    for v, a in zip(desc, axes):
        frac = (v - a["low"]) / (a["high"] - a["low"])
        out.append(min(a["bins"] - 1, max(0, int(math.floor(frac * a["bins"])))))
    return tuple(out)


def _replay_archives(p: dict, events: list[dict], axes: list[dict], config: dict) -> dict:
    """Each island's archive rebuilt from the store: committed ok programs in commit order (the seed everywhere),
    migrations and resets from the events; one elite per grid cell. Also the coverage and QD score after each
    commit (for runs without qd_metrics.json). The grid is the axes' own, whatever --archive the run used."""
    n_islands = int(config.get("islands") or 0) or 1 + max((i for i in p["island"] if i is not None), default=0)
    cells_total = math.prod(a["bins"] for a in axes) if axes else 1
    by_id = {pid: k for k, pid in enumerate(p["id"])}
    islands: list[dict] = [{} for _ in range(n_islands)]
    due: dict[int, list[dict]] = {}
    for e in events:  # events happen right after the commit numbered at_commit
        due.setdefault(e.get("at_commit"), []).append(e)
    offset = p["score"][by_id[0]] if 0 in by_id and p["score"][by_id[0]] is not None else 0.0
    history = {"commit": [], "coverage": [[] for _ in range(n_islands)], "qd_score": [[] for _ in range(n_islands)]}
    order = sorted((k for k, c in enumerate(p["commit"]) if c is not None), key=lambda k: p["commit"][k])
    every = max(1, len(order) // 400)
    neutral = bool(config.get("neutral"))  # neutral drift: a tie takes the cell

    def add(island: int, k: int) -> None:
        if k is None or not 0 <= island < n_islands or p["score"][k] is None:
            return
        cell = _cell(p["desc"][k], axes)
        if cell is None:
            return
        best = islands[island].get(cell)
        if best is None or p["score"][k] > p["score"][best] or (neutral and p["score"][k] == p["score"][best]):
            islands[island][cell] = k

    for n, k in enumerate(order):
        seq = p["commit"][k]
        if p["status"][k] == "ok" and (p["island"][k] is None or p["archive"][k] not in (None, "stale")):
            if p["island"][k] is None:  # the seed starts every island
                for i in range(n_islands):
                    add(i, k)
            else:
                add(p["island"][k], k)
        for e in due.get(seq, ()):
            if e.get("event") == "migrate":
                add(e.get("to", -1), by_id.get(e.get("program_id")))
            elif e.get("event") == "reset" and 0 <= e.get("island", -1) < n_islands:
                islands[e["island"]].clear()
                add(e["island"], by_id.get(e.get("program_id")))
        if n % every == 0 or n == len(order) - 1:
            history["commit"].append(seq)
            for i, isl in enumerate(islands):
                history["coverage"][i].append(round(len(isl) / cells_total, 6))
                history["qd_score"][i].append(round(sum(p["score"][j] - offset for j in isl.values()), 6))
    # 2-D maps on the first two axes (the best elite over the other axes)
    shown = axes[:2]
    maps = []
    for isl in islands:
        z = [[None] * shown[0]["bins"] for _ in range(shown[1]["bins"] if len(shown) > 1 else 1)] if shown else []
        ids = [[None] * len(row) for row in z]
        for cell, k in isl.items():
            x, y = cell[0], (cell[1] if len(shown) > 1 else 0)
            if z[y][x] is None or p["score"][k] > z[y][x]:
                z[y][x], ids[y][x] = p["score"][k], p["id"][k]
        maps.append({"z": z, "ids": ids, "elites": len(isl)})
    return {"axes": shown, "maps": maps, "cells": cells_total, "offset": offset, "history": history}


def _qd_history(path: Path) -> dict | None:
    """qd_metrics.json as columns per island: commit, coverage, QD score, best."""
    raw = _json_file(path)
    if not isinstance(raw, dict) or not raw.get("history"):
        return None
    out: dict[str, Any] = {"commit": [], "islands": {}}
    for snap in raw["history"]:
        out["commit"].append(snap.get("commit"))
        for s in snap.get("islands", []):
            col = out["islands"].setdefault(str(s.get("island")), {"coverage": [], "qd_score": [], "best": []})
            for key in ("coverage", "qd_score", "best"):
                col[key].append(_num(s.get(key)))
    return out


# --- HTML ------------------------------------------------------------------------------------------------------

def _packed(obj: Any) -> str:
    return base64.b64encode(gzip.compress(obj if isinstance(obj, bytes) else obj.encode(), 6, mtime=0)).decode()


_PLOTLY: str | None = None


def plotly_js() -> str:
    """plotly.js from the plotly package (pinned with it, no CDN), gzipped and base64-encoded once per process."""
    global _PLOTLY
    if _PLOTLY is None:
        from plotly.offline import get_plotlyjs
        _PLOTLY = _packed(get_plotlyjs())
    return _PLOTLY


def page(body_data: str, *, live: bool = False) -> str:
    """The page around its data: ``body_data`` is the packed data (report) or empty (dashboard: fetched)."""
    template = (ASSETS / "page.html").read_text()
    return (template.replace("/*STYLE*/", (ASSETS / "report.css").read_text())
            .replace("/*SCRIPT*/", (ASSETS / "report.js").read_text())
            .replace("@MODE@", "live" if live else "report")
            .replace("@PLOTLY@", "" if live else plotly_js())
            .replace("@DATA@", body_data))


def render(data: dict) -> str:
    return page(_packed(json.dumps(data, separators=(",", ":"), allow_nan=False)))


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the run in ``run_dir`` (default: RUN_DIR/report.html); returns its path."""
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / REPORT_NAME
    html = render(load_run(run_dir))
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html)
    tmp.replace(out)  # a reader never sees half a file
    return out


def write_report_safely(run_dir: str | Path) -> Path | None:
    """For the end of a run: a failure to report is printed, never raised over the run's own outcome."""
    try:
        return write_report(run_dir)
    except Exception as e:  # the run's results are in the store whatever happens here
        print(f"evosearch: the report could not be written: {type(e).__name__}: {e}", file=sys.stderr)
        return None

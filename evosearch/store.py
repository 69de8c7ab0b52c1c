"""The program store: every sampled program, its outcome and the run's state, in SQLite.

One database per run directory, written by one owner (the engine). A program's
row is written when its prompt is built (status "pending"), updated when its
sample arrives and again when its evaluation ends, so a kill at any moment
loses nothing that was sampled: resume finds pending rows and finishes them.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (id INTEGER PRIMARY KEY, system TEXT, user TEXT);
CREATE TABLE IF NOT EXISTS programs (
    id INTEGER PRIMARY KEY,          -- sample index: the order in which results are committed
    island INTEGER,
    parents TEXT NOT NULL,           -- JSON list of program ids
    sampler TEXT, model TEXT,
    prompt_id INTEGER REFERENCES prompts(id),
    response TEXT,                   -- raw sampler output
    code TEXT,                       -- the full program, once a sample parsed
    status TEXT NOT NULL,            -- pending | ok | no_code | syntax | timeout | memory | crash | invalid | rejected | sampler_error
    reason TEXT,
    score REAL,
    descriptors TEXT, metrics TEXT,  -- JSON
    syntactic_hash TEXT, functional_hash TEXT,
    cache_hit TEXT, duplicate_of INTEGER,
    archive TEXT,                    -- new | improve | not_added, set when committed to the island
    tokens_in INTEGER, tokens_out INTEGER,
    sample_s REAL, eval_s REAL,
    created REAL, finished REAL
);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, at_commit INTEGER, event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS programs_status ON programs(status);
-- CoEvo insights: what the model concluded from the run so far, made when sample at_sample was due
CREATE TABLE IF NOT EXISTS insights (at_sample INTEGER PRIMARY KEY, text TEXT NOT NULL, model TEXT, created REAL);
"""
# Columns added after the first schema: (table, column, type); added to older databases on open.
ADDED_COLUMNS = (
    ("programs", "edit_format", "TEXT"),  # full | diff | crossover | fix
    ("programs", "rationale", "TEXT"),  # the model's stated change (Evolution of Thought)
    ("programs", "attempts", "TEXT"),  # JSON: earlier rejected answers [{response, reason}]
    ("programs", "epoch", "INTEGER"),  # the island's epoch (resets so far) when the prompt was drawn
    ("programs", "cost", "REAL"),  # USD of the sample's LLM request (Sample.extra["cost"]; None: no price known)
    ("programs", "retries", "INTEGER"),  # HTTP retries its request took (Sample.extra["retries"])
    ("prompts", "completion", "TEXT"), ("prompts", "header", "TEXT"),
    ("prompts", "completion_shared", "INTEGER"), ("prompts", "user_shared", "INTEGER"),
)

JSON_COLUMNS = ("parents", "descriptors", "metrics", "attempts")


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None)  # autocommit: each write is durable at once
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process kill
        self.db.executescript(SCHEMA)
        for table, column, kind in ADDED_COLUMNS:
            if column not in {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self.db.close()

    # --- run metadata -------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # --- programs -------------------------------------------------------------
    def add_prompt(self, system: str, user: str) -> int:
        return self.db.execute("INSERT INTO prompts (system, user) VALUES (?, ?)", (system, user)).lastrowid

    def prompt(self, prompt_id: int) -> tuple[str, str]:
        row = self.db.execute("SELECT system, user FROM prompts WHERE id = ?", (prompt_id,)).fetchone()
        return row["system"], row["user"]

    def set_prompt_forms(self, prompt_id: int, completion: str, header: str, completion_shared: int,
                         user_shared: int) -> None:
        """The completion form and the shared-head lengths of a prompt, so a resumed sample gets the same prompt."""
        self.db.execute("UPDATE prompts SET completion = ?, header = ?, completion_shared = ?, user_shared = ? "
                        "WHERE id = ?", (completion, header, completion_shared, user_shared, prompt_id))

    def prompt_row(self, prompt_id: int) -> dict:
        return dict(self.db.execute("SELECT * FROM prompts WHERE id = ?", (prompt_id,)).fetchone())

    # --- insights (CoEvo) ----------------------------------------------------------
    def add_insights(self, at_sample: int, text: str, model: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO insights VALUES (?, ?, ?, ?)", (at_sample, text, model, time.time()))

    def insights(self, up_to: int) -> tuple[int, str] | None:
        """The latest insights made at a sample index <= up_to, as (at_sample, text)."""
        row = self.db.execute("SELECT at_sample, text FROM insights WHERE at_sample <= ? ORDER BY at_sample DESC "
                              "LIMIT 1", (up_to,)).fetchone()
        return (row[0], row[1]) if row else None

    def begin(self, program_id: int, *, island: int | None, parents: list[int], sampler: str,
              prompt_id: int | None = None) -> None:
        self.db.execute(
            "INSERT INTO programs (id, island, parents, sampler, prompt_id, status, created) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
            (program_id, island, json.dumps(parents), sampler, prompt_id, time.time()))

    def update(self, program_id: int, **fields: Any) -> None:
        for key in JSON_COLUMNS:
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE programs SET {cols} WHERE id = ?", (*fields.values(), program_id))

    def get(self, program_id: int) -> dict | None:
        row = self.db.execute("SELECT * FROM programs WHERE id = ?", (program_id,)).fetchone()
        return _decode(row) if row else None

    def programs(self, where: str = "1", params: tuple = ()) -> Iterator[dict]:
        for row in self.db.execute(f"SELECT * FROM programs WHERE {where} ORDER BY id", params):
            yield _decode(row)

    def count(self, where: str = "1", params: tuple = ()) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM programs WHERE {where}", params).fetchone()[0]

    def status_counts(self, where: str = "1") -> dict[str, int]:
        return dict(self.db.execute(f"SELECT status, COUNT(*) FROM programs WHERE {where} GROUP BY status").fetchall())

    def usage(self) -> dict:
        """LLM tokens and cost summed over the sampled programs (None: no row has a cost). The sampler's own
        account, with retries and failed requests, is meta "sampler_usage"."""
        tokens_in, tokens_out, answered, cost = self.db.execute(
            "SELECT COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0), COUNT(tokens_in), SUM(cost) "
            "FROM programs").fetchone()
        return {"tokens_in": tokens_in, "tokens_out": tokens_out, "answered": answered, "cost": cost}

    def next_id(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM programs").fetchone()[0]

    # --- island events (migrations, resets) -------------------------------------
    def add_events(self, at_commit: int, events: list[dict]) -> None:
        self.db.executemany("INSERT INTO events (at_commit, event) VALUES (?, ?)",
                            [(at_commit, json.dumps(e)) for e in events])

    def events(self) -> list[dict]:
        return [{"at_commit": r[0], **json.loads(r[1])} for r in self.db.execute("SELECT at_commit, event FROM events ORDER BY id")]


def _decode(row: sqlite3.Row) -> dict:
    out = dict(row)
    for key in JSON_COLUMNS:
        if out.get(key) is not None:
            out[key] = json.loads(out[key])
    return out

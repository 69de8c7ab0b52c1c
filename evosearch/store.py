"""The program store: every sampled program, its outcome and the run's state, in SQLite.

One database per run directory, written by one owner (the engine). A sample's life is
four recorded hand-offs, each one write (or one transaction):

  ``ask``       its prompt and row (status "pending") when the planner draws it;
  ``answered``  the sampler's answer and the child's code (or ``failed``: no code);
  ``evaluated`` the evaluator's verdict;
  ``commit``    its place in the islands: archive result, island events and the
                commit's sequence number, all or nothing.

A kill at any moment loses nothing that was sampled: resume replays the commits in
their recorded order (``commit_seq``), commits what finished but was not committed,
and finishes pending rows. Other readers (reports) may open the file read-only.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections import OrderedDict
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterator

from evaluators.evaluation import STATUSES


class Outcome(StrEnum):
    """A program's status: pending, ok, or why it failed. The evaluator's statuses plus the engine's."""

    PENDING = "pending"
    OK = "ok"
    SYNTAX = "syntax"  # the code does not parse
    TIMEOUT = "timeout"
    MEMORY = "memory"
    CRASH = "crash"
    INVALID = "invalid"  # the trusted scorer refused the output
    REJECTED = "rejected"  # stopped by a cheap cascade stage
    NO_CODE = "no_code"  # no function could be read from the answer
    EDIT_REJECTED = "edit_rejected"  # the edit touched frozen code, or its SEARCH text was not found
    SAMPLER_ERROR = "sampler_error"  # no answer (endpoint down, refused, ...)


assert set(STATUSES) <= set(Outcome), "an evaluator status is missing from Outcome"
# Failures a fix-mode prompt can repair: the program exists and ran (or parsed) badly.
REPAIRABLE = (Outcome.CRASH, Outcome.TIMEOUT, Outcome.INVALID, Outcome.MEMORY, Outcome.SYNTAX)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS prompts (id INTEGER PRIMARY KEY, system TEXT, user TEXT);
CREATE TABLE IF NOT EXISTS programs (
    id INTEGER PRIMARY KEY,          -- sample index, in the order the planner drew the samples (0: the seed program)
    island INTEGER,                  -- the island its parents came from (NULL: the seed program)
    parents TEXT NOT NULL,           -- JSON list of program ids shown in its prompt, sorted by score, worst first,
                                     -- best last; a diff keeps only the best; fix mode: the failed program
    sampler TEXT, model TEXT,        -- sampler (or bandit arm) name; the model that answered
    prompt_id INTEGER REFERENCES prompts(id),
    response TEXT,                   -- raw sampler output (the last attempt's)
    code TEXT,                       -- the full program, once an answer gave one
    status TEXT NOT NULL,            -- evosearch.store.Outcome: pending | ok | one failure
    reason TEXT,                     -- one line: why it failed
    score REAL,                      -- the training score (status ok)
    descriptors TEXT, metrics TEXT,  -- JSON: behaviour descriptors (with size), per-run metrics
    syntactic_hash TEXT, functional_hash TEXT,
    cache_hit TEXT, duplicate_of INTEGER,  -- syntactic | functional, and the program whose result was reused
    archive TEXT,                    -- islands.ArchiveResult (new | improve | not_added | stale), set at commit
                                     -- (NULL: not offered to an island: a failure, or the seed, in every island)
    tokens_in INTEGER, tokens_out INTEGER,  -- LLM tokens over every attempt, failed and empty answers included
    sample_s REAL, eval_s REAL,      -- seconds waiting for the answer; sandbox seconds
    created REAL, finished REAL      -- unix times: asked, evaluated
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
    ("programs", "cost", "REAL"),  # USD of the sample's LLM requests, every attempt (None: no price known)
    ("programs", "retries", "INTEGER"),  # HTTP retries its requests took, failed requests included
    ("programs", "seen", "INTEGER"),  # commits the prompt could see (results in the islands when it was drawn)
    ("programs", "commit_seq", "INTEGER"),  # order of its commit to the islands (0: the seed); NULL: not committed
    ("programs", "staleness", "INTEGER"),  # results committed after its prompt was drawn, before it: commit_seq - seen
    ("programs", "exploit", "INTEGER"),  # --selection exploit: 1 if its prompt showed the archipelago's best, 0 if
                                         # cells of its island (NULL: another selection, crossover, a repair or a
                                         # tuning trial)
    ("prompts", "completion", "TEXT"), ("prompts", "header", "TEXT"),
    ("prompts", "completion_shared", "INTEGER"), ("prompts", "user_shared", "INTEGER"),
)
INDEXES = "CREATE UNIQUE INDEX IF NOT EXISTS programs_commit ON programs(commit_seq) WHERE commit_seq IS NOT NULL"

JSON_COLUMNS = ("parents", "descriptors", "metrics", "attempts")
# What a commit reads of a program: resume replays 10^6 commits from these columns alone.
REPLAYED = ("id", "island", "parents", "sampler", "status", "reason", "score", "descriptors", "epoch", "seen",
            "archive", "commit_seq", "staleness", "exploit")
CACHED = 4096  # committed rows kept decoded in memory (they never change again): prompts show elites often


class StoreError(Exception):
    """The file is not a usable store (a user mistake: one line)."""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None)  # autocommit: each write is durable at once
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process kill
            self.db.executescript(SCHEMA)
            added = False
            for table, column, kind in ADDED_COLUMNS:
                if column not in {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                    added |= column == "commit_seq"
            if added:  # a store from before commit numbers: its commits were in id order, up to meta "committed"
                done = self.get_meta("committed")
                if done is not None:
                    self.db.execute("UPDATE programs SET commit_seq = id WHERE id < ? AND status != 'pending'", (done,))
            self.db.execute(INDEXES)
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise StoreError(f"{self.path} is not a usable evosearch store ({e})") from None
        self._cache: OrderedDict[int, dict] = OrderedDict()

    def close(self) -> None:
        self.db.close()

    def _transaction(self):
        return _Transaction(self.db)

    # --- run metadata -------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # --- the life of a sample ---------------------------------------------------
    def ask(self, program_id: int, *, island: int | None, parents: list[int], sampler: str,
            edit_format: str | None = None, epoch: int | None = None, seen: int | None = None,
            prompt: dict | None = None, prompt_id: int | None = None, exploit: bool | None = None) -> int | None:
        """Record a drawn sample (status pending) with its prompt: ``prompt`` (system, user, completion,
        header, completion_shared, user_shared) is stored, or ``prompt_id`` names one stored already.
        Returns the prompt's id."""
        with self._transaction():
            if prompt is not None:
                prompt_id = self.db.execute(
                    "INSERT INTO prompts (system, user, completion, header, completion_shared, user_shared) "
                    "VALUES (:system, :user, :completion, :header, :completion_shared, :user_shared)", prompt).lastrowid
            self.db.execute(
                "INSERT INTO programs (id, island, parents, sampler, prompt_id, status, edit_format, epoch, seen, "
                "exploit, created) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                (program_id, island, json.dumps(parents), sampler, prompt_id, edit_format, epoch, seen,
                 None if exploit is None else int(exploit), time.time()))
        return prompt_id

    def answered(self, program_id: int, *, response: str | None, model: str | None, sample_s: float | None,
                 tokens_in: int, tokens_out: int, retries: int, cost: float | None, rationale: str | None = None,
                 attempts: list | None = None, code: str | None = None) -> None:
        """The sampler's answer (usage summed over every attempt so far), the rejected attempts so far and,
        once an edit applied, the code (None: left as it is)."""
        more = {k: v for k, v in (("attempts", attempts), ("code", code)) if v is not None}
        self._update(program_id, response=response, model=model, sample_s=sample_s, tokens_in=tokens_in,
                     tokens_out=tokens_out, retries=retries, cost=cost, rationale=rationale, **more)

    def set_aside(self, program_id: int, attempts: list) -> None:
        """The evaluated answer is asked again (a duplicate of a known program): it moves into ``attempts`` and
        the row waits for a new answer (code cleared, so a restart asks again from the attempts)."""
        self._update(program_id, attempts=attempts, code=None)

    def set_code(self, program_id: int, code: str) -> None:
        self._update(program_id, code=code)

    def failed(self, program_id: int, outcome: Outcome, reason: str, **usage: Any) -> None:
        """A sample that gave no program to evaluate (no answer, no code, a rejected edit)."""
        self._update(program_id, status=Outcome(outcome).value, reason=reason, finished=time.time(), **usage)

    def evaluated(self, program_id: int, *, status: str, reason: str | None, score: float | None,
                  descriptors: dict | None, metrics: dict | None, syntactic_hash: str | None,
                  functional_hash: str | None, cache_hit: str | None, duplicate_of: int | None,
                  eval_s: float | None) -> None:
        self._update(program_id, status=Outcome(status).value, reason=reason, score=score, descriptors=descriptors,
                     metrics=metrics, syntactic_hash=syntactic_hash, functional_hash=functional_hash,
                     cache_hit=cache_hit, duplicate_of=duplicate_of, eval_s=eval_s, finished=time.time())

    def commit(self, row: dict, seq: int, archive: str | None, events: list[dict], verdict: dict | None = None) -> None:
        """Record that ``row`` entered the islands as commit number ``seq``: all of it or nothing.
        ``verdict``: the evaluator's (``evaluated``'s fields), when it is recorded with its commit."""
        staleness = None if row.get("seen") is None else seq - row["seen"]
        with self._transaction():
            if verdict is not None:
                self.evaluated(row["id"], **verdict)
            self.db.execute("UPDATE programs SET commit_seq = ?, staleness = ?, archive = ? WHERE id = ?",
                            (seq, staleness, None if archive is None else str(archive), row["id"]))
            if events:
                self.db.executemany("INSERT INTO events (at_commit, event) VALUES (?, ?)",
                                    [(seq, json.dumps(e)) for e in events])
        row.update(commit_seq=seq, staleness=staleness, archive=None if archive is None else str(archive))
        self._cache.pop(row["id"], None)  # read back whole on first use

    def set_archive(self, results: list[tuple[int, str | None]]) -> None:
        """Archive results that arrived after their commits (islands in actors answer later)."""
        with self._transaction():
            self.db.executemany("UPDATE programs SET archive = ? WHERE id = ?",
                                [(None if r is None else str(r), i) for i, r in results])
        for i, _ in results:
            self._cache.pop(i, None)

    def _update(self, program_id: int, **fields: Any) -> None:
        for key in JSON_COLUMNS:
            if key in fields and fields[key] is not None:
                fields[key] = json.dumps(fields[key])
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE programs SET {cols} WHERE id = ?", (*fields.values(), program_id))

    # --- reading programs ---------------------------------------------------------
    def get(self, program_id: int) -> dict | None:
        row = self._cache.get(program_id)
        if row is not None:
            self._cache.move_to_end(program_id)
            return row
        row = self.db.execute("SELECT * FROM programs WHERE id = ?", (program_id,)).fetchone()
        if row is None:
            return None
        row = _decode(row)
        if row["commit_seq"] is not None:
            self._remember(row)
        return row

    def _remember(self, row: dict) -> None:
        self._cache[row["id"]] = row
        if len(self._cache) > CACHED:
            self._cache.popitem(last=False)

    def programs(self, where: str = "1", params: tuple = ()) -> Iterator[dict]:
        for row in self.db.execute(f"SELECT * FROM programs WHERE {where} ORDER BY id", params):
            yield _decode(row)

    def committed(self) -> Iterator[dict]:
        """Every committed program in commit order, with what replaying its commit reads (REPLAYED)."""
        loads = json.loads
        for row in self.db.execute(f"SELECT {', '.join(REPLAYED)} FROM programs WHERE commit_seq IS NOT NULL "
                                   "ORDER BY commit_seq"):
            out = dict(zip(REPLAYED, row))
            out["parents"] = loads(out["parents"])
            if out["descriptors"] is not None:
                out["descriptors"] = loads(out["descriptors"])
            yield out

    def uncommitted(self) -> tuple[list[dict], list[int]]:
        """Programs past the last commit: those finished (in id order) and the ids still pending."""
        done, pending = [], []
        for row in self.db.execute("SELECT * FROM programs WHERE commit_seq IS NULL ORDER BY id"):
            if row["status"] == Outcome.PENDING:
                pending.append(row["id"])
            else:
                done.append(_decode(row))
        return done, pending

    def verdicts(self) -> Iterator[dict]:
        """The evaluator's verdict of every evaluated program, in the order they were recorded
        (what an evaluator's caches held when the run stopped)."""
        cols = ("id", "status", "reason", "score", "descriptors", "metrics", "syntactic_hash", "functional_hash",
                "duplicate_of")
        for row in self.db.execute(f"SELECT {', '.join(cols)} FROM programs WHERE syntactic_hash IS NOT NULL "
                                   "AND status != 'pending' ORDER BY finished, id"):
            yield _decode(row)

    def top(self, where: str = "1", params: tuple = (), limit: int = 1) -> list[dict]:
        """Up to ``limit`` rows matching ``where`` (undecoded), best score first, ties in id order."""
        return [dict(r) for r in self.db.execute(f"SELECT * FROM programs WHERE {where} "
                                                 "ORDER BY score DESC, id LIMIT ?", (*params, limit))]

    def count(self, where: str = "1", params: tuple = ()) -> int:
        return self.db.execute(f"SELECT COUNT(*) FROM programs WHERE {where}", params).fetchone()[0]

    def status_counts(self, where: str = "1") -> dict[str, int]:
        return dict(self.db.execute(f"SELECT status, COUNT(*) FROM programs WHERE {where} GROUP BY status").fetchall())

    def usage(self) -> dict:
        """LLM tokens and cost summed over the sampled programs, every attempt of each (None: no row has a
        cost). The sampler's own account is meta "sampler_usage"."""
        tokens_in, tokens_out, answered, cost, retries = self.db.execute(
            "SELECT COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0), COUNT(tokens_in), SUM(cost), "
            "COALESCE(SUM(retries), 0) FROM programs").fetchone()
        return {"tokens_in": tokens_in, "tokens_out": tokens_out, "answered": answered, "cost": cost,
                "retries": retries}

    def next_id(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM programs").fetchone()[0]

    # --- prompts ------------------------------------------------------------------
    def prompt(self, prompt_id: int) -> tuple[str, str]:
        row = self.db.execute("SELECT system, user FROM prompts WHERE id = ?", (prompt_id,)).fetchone()
        return row["system"], row["user"]

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

    # --- island events (migrations, resets) -------------------------------------
    def events(self) -> list[dict]:
        return [{"at_commit": r[0], **json.loads(r[1])}
                for r in self.db.execute("SELECT at_commit, event FROM events ORDER BY id")]


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN")

    def __exit__(self, kind, value, tb):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _decode(row: sqlite3.Row) -> dict:
    out = dict(row)
    for key in JSON_COLUMNS:
        if out.get(key) is not None:
            out[key] = json.loads(out[key])
    return out

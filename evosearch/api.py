"""The Python API: run a search from a script or a notebook, and read any run folder as tables.

    import evosearch
    result = evosearch.search("bin_packing", sampler="mutate", samples=50, quiet=True)
    result.best_score, result.best_code          # the best program found (training score)
    result.programs()                            # every sampled program: a DataFrame with pandas, else dicts

    result = await evosearch.search_async("bin_packing", sampler="mutate")   # inside a running loop (Jupyter)
    evosearch.open_run("runs/bin_packing-...")   # a finished, stopped or still running run folder

Settings are the run config's keys (``evosearch run --help``, underscores for dashes). The store's tables
and columns are described in docs/store.md.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from .config import RunConfig, load_yaml, make_config
from .problem import Problem, check_problem, load_problem

# What a program row's JSON columns hold (evosearch/store.py writes them as JSON text).
_JSON = ("parents", "descriptors", "metrics", "attempts")


def prepare(problem: str | Path | Problem | None, settings: dict[str, Any], config_file: str | Path | None = None,
            resume: str | Path | None = None) -> tuple[RunConfig, Problem]:
    """The run's config (defaults < YAML file < settings; a resumed run's saved config first) and its loaded,
    checked problem. Cheap: nothing of the engine, Ray or pyribs is imported, so mistakes answer at once."""
    if isinstance(problem, Problem):
        problem = problem.folder
    layers = [load_yaml(config_file) if config_file else {}, settings]
    if problem is not None:
        layers[-1] = {**settings, "problem": str(problem)}
    if resume is not None:
        from .launch import saved_config

        layers.insert(0, saved_config(Path(resume)))
    config = make_config(*layers)
    loaded = load_problem(config.problem, config.data_dir, config.seed, config.problem_options)
    check_problem(loaded)
    if Path(config.problem).is_dir():
        config.problem = str(loaded.folder)  # absolute, so --resume works from any directory
    return config, loaded


async def execute(config: RunConfig, problem: Problem, run_dir: Path) -> dict:
    """Run the search into ``run_dir`` and return its summary. Interrupted (Ctrl-C, task cancelled), it
    still writes summary.json, best.py and report.html from what the store holds, then re-raises."""
    import asyncio

    from .launch import run_search

    try:
        return await run_search(config, problem, run_dir)
    except (asyncio.CancelledError, KeyboardInterrupt):
        write_partial_summary(run_dir, "interrupted")
        from .report import write_report_safely
        write_report_safely(run_dir)
        raise


async def search_async(problem: str | Path | Problem, *, config: str | Path | None = None,
                       resume: str | Path | None = None, **settings: Any) -> "SearchResult":
    """Run a search in the running event loop (a notebook's) and return its result.

    ``problem``: a built-in or installed name, a problem folder, or a loaded Problem (its folder is used).
    ``config``: a YAML file of settings; ``resume``: a run folder to continue; ``settings``: run config keys."""
    from .launch import new_run_dir
    from .progress import Terminal

    run_config, loaded = prepare(None if resume is not None and problem is None else problem, settings, config,
                                 resume)
    run_dir = Path(resume) if resume is not None else new_run_dir(run_config)
    with Terminal(run_dir):
        await execute(run_config, loaded, run_dir)
    return SearchResult(run_dir)


def search(problem: str | Path | Problem, *, config: str | Path | None = None, resume: str | Path | None = None,
           **settings: Any) -> "SearchResult":
    """Run a search and return its result (see :func:`search_async` for the arguments). Works from a plain
    script and from code that already runs an event loop (it then runs the search in a thread of its own)."""
    import asyncio
    import threading

    coroutine = search_async(problem, config=config, resume=resume, **settings)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = asyncio.run(coroutine)
        except BaseException as e:  # handed to the caller's thread
            outcome["error"] = e

    thread = threading.Thread(target=run, name="evosearch-search")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def open_run(run_dir: str | Path) -> "SearchResult":
    """A run folder (finished, stopped or still running) as a :class:`SearchResult`."""
    return SearchResult(Path(run_dir))


class SearchResult:
    """A run folder, read-only: its summary, best program and store tables. Tables come back as pandas
    DataFrames when pandas is installed (``as_frame=None``), else as lists of dicts."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "evosearch.db").is_file():
            raise FileNotFoundError(f"{self.run_dir} holds no run (no evosearch.db)")

    def __repr__(self) -> str:
        return f"SearchResult({str(self.run_dir)!r}: best {self.best_score} of {len(self._rows('id > 0'))} samples)"

    # --- summary and best program ------------------------------------------------------
    @property
    def summary(self) -> dict | None:
        """summary.json: the end-of-run report (train and held-out scores of the seed and the best program)."""
        path = self.run_dir / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    @property
    def config(self) -> dict:
        import yaml

        return yaml.safe_load((self.run_dir / "config.yaml").read_text())

    @property
    def best(self) -> dict | None:
        """The row of the best scored program (highest training score; the earliest of equals)."""
        rows = self._rows("status = 'ok' ORDER BY score DESC, id LIMIT 1")
        return rows[0] if rows else None

    @property
    def best_score(self) -> float | None:
        return self.best["score"] if self.best else None

    @property
    def best_code(self) -> str | None:
        return self.best["code"] if self.best else None

    @property
    def test_score(self) -> float | None:
        """The best program's held-out score, from summary.json (None until the run ends)."""
        return ((self.summary or {}).get("best") or {}).get("test")

    # --- tables ---------------------------------------------------------------------------
    def programs(self, where: str = "1", params: tuple = (), as_frame: bool | None = None):
        """Every sampled program (id 0 is the seed), ordered by id; ``where`` is an SQL condition."""
        return _table(self._rows(f"{where} ORDER BY id", params), as_frame)

    def events(self, as_frame: bool | None = None):
        """Island events (migrations, resets), each with the commit it happened at."""
        rows = [{"at_commit": r[0], **json.loads(r[1])}
                for r in self._query("SELECT at_commit, event FROM events ORDER BY id")]
        return _table(rows, as_frame)

    def prompts(self, as_frame: bool | None = None):
        return _table([dict(r) for r in self._query("SELECT * FROM prompts ORDER BY id")], as_frame)

    def insights(self, as_frame: bool | None = None):
        return _table([dict(r) for r in self._query("SELECT * FROM insights ORDER BY at_sample")], as_frame)

    def meta(self) -> dict:
        """The run's state: config, commits recorded, the sampler's account (sampler_usage)."""
        return {r[0]: json.loads(r[1]) for r in self._query("SELECT key, value FROM meta")}

    def connect(self) -> sqlite3.Connection:
        """A read-only SQLite connection to the store (it is in WAL mode: reading never blocks the run)."""
        db = sqlite3.connect(f"{(self.run_dir / 'evosearch.db').resolve().as_uri()}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        return db

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        db = self.connect()
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def _rows(self, where: str, params: tuple = ()) -> list[dict]:
        out = []
        for row in self._query(f"SELECT * FROM programs WHERE {where}", params):
            row = dict(row)
            for key in _JSON:
                if row.get(key) is not None:
                    row[key] = json.loads(row[key])
            out.append(row)
        return out


def _table(rows: list[dict], as_frame: bool | None):
    if as_frame is False:
        return rows
    try:
        import pandas
    except ImportError:
        if as_frame:
            raise
        return rows
    return pandas.DataFrame.from_records(rows)


def write_partial_summary(run_dir: str | Path, why: str) -> dict | None:
    """summary.json and best.py from the store of a run that did not reach its end-of-run report: training
    scores only (the held-out evaluation did not run; ``evosearch run --resume`` finishes the run)."""
    run_dir = Path(run_dir)
    try:
        run = SearchResult(run_dir)
        seed, best = run._rows("id = 0"), run.best
        outcomes: dict[str, int] = {}
        for r in run._query("SELECT status, COUNT(*) FROM programs WHERE id > 0 GROUP BY status"):
            outcomes[r[0]] = r[1]
        usage = run.meta().get("sampler_usage")
    except (FileNotFoundError, sqlite3.Error):
        return None
    if best is None:
        return None

    def side(row: dict) -> dict:
        return {"id": row["id"], "train": row["score"], "train_metrics": row["metrics"], "test": None,
                "test_metrics": None, "test_status": "not evaluated"}

    summary = {"problem": Path(run.config.get("problem", "")).name, "samples": sum(outcomes.values()),
               "outcomes": outcomes, "seed": side(seed[0]) if seed else None, "best": side(best),
               "gain_train": best["score"] - seed[0]["score"] if seed and seed[0]["score"] is not None else None,
               "gain_test": None, "stopped": f"{why}: held-out split not evaluated; evosearch run --resume "
                                             f"{run_dir} finishes the run", "sampler_usage": usage}
    (run_dir / "best.py").write_text(best["code"])
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary

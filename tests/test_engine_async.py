"""Async commits through the real CLI: results enter the islands as they land, every commit is
numbered in the store, and a run killed with SIGKILL resumes to exactly the islands it had
(the recorded commit order replayed), then finishes."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from evosearch.committer import Committer
from evosearch.config import make_config
from evosearch.engine import axes, commit_mode, island_kwargs
from evosearch.problem import load_problem
from evosearch.samplers import make_sampler
from evosearch.store import Store
from islands.archipelago import Archipelago

SAMPLES = 40
ARGS = ["run", "bin_packing", "--sampler", "mutate", "--samples", str(SAMPLES), "--seed", "2", "--commit-mode", "async",
        "--concurrency", "6", "--islands", "2", "--migration-interval", "8", "--reset-interval", "16",
        "--problem-options", "{train_items: 200, test_items: 300}", "--workers", "2", "--quiet"]


def replay(db: Path) -> tuple[list[dict], list]:
    """Feed a store's commits, in their recorded order, to a fresh committer; check each one does
    what the run recorded (archive result, island events); return the rows and the islands' stats."""
    store = Store(db)
    try:
        cfg = make_config(store.get_meta("config"))
        problem = load_problem(cfg.problem, None, cfg.seed, cfg.problem_options)
        archipelago = Archipelago(cfg.islands, axes(problem, cfg), migration_interval=cfg.migration_interval,
                                  reset_interval=cfg.reset_interval, selection=cfg.selection,
                                  island_kwargs=island_kwargs(cfg))
        committer = Committer(cfg, store, archipelago, axes(problem, cfg))
        events = {}
        for e in store.events():
            events.setdefault(e.pop("at_commit"), []).append(e)
        rows = list(store.committed())
        for seq, row in enumerate(rows):
            assert row["commit_seq"] == seq
            result, made = committer.commit(row, record=False)
            assert (result, made) == (row["archive"], events.get(seq, [])), f"commit {seq} (program {row['id']})"
        return rows, archipelago.stats()
    finally:
        store.close()


def count(db: Path, where: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute(f"SELECT COUNT(*) FROM programs WHERE {where}").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_killed_async_run_resumes_to_exactly_the_islands_it_had(tmp_path):
    out = tmp_path / "run"
    db = out / "evosearch.db"
    proc = subprocess.Popen([sys.executable, "-m", "evosearch", *ARGS, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and count(db, "commit_seq IS NOT NULL") < 20:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    before, islands_before = replay(db)  # what the killed driver had: every recorded commit reproduces
    assert 20 <= len(before) < SAMPLES + 1

    done = subprocess.run([sys.executable, "-m", "evosearch", "run", "--resume", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    after, islands_after = replay(db)
    assert [r["id"] for r in after[:len(before)]] == [r["id"] for r in before]  # the old commits, in their order
    # Every sample committed once (constant tuning's trials, when a new best came, are on top of them).
    assert sorted(r["id"] for r in after) == list(range(len(after)))
    assert sum(r["sampler"] != "tune" for r in after) == SAMPLES + 1
    assert count(db, "status = 'pending'") == 0
    # The islands the finished run reported are the ones its commit order rebuilds.
    assert json.loads((out / "qd_metrics.json").read_text())["final"] == islands_after
    # Async: commits followed completion, not sample order, and each row says what its prompt missed.
    assert [r["id"] for r in after] != sorted(r["id"] for r in after)
    assert all(r["staleness"] is not None and r["staleness"] >= 0 for r in after[1:])


def test_commit_mode_follows_the_sampler_unless_set():
    base = {"problem": "bin_packing"}
    assert commit_mode(make_config(base), make_sampler("mutate")) == "ordered"
    assert commit_mode(make_config({**base, "sampler": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}),
                       make_sampler("openai", base_url="http://127.0.0.1:9/v1", model="m")) == "async"
    assert commit_mode(make_config({**base, "commit_mode": "async"}), make_sampler("mutate")) == "async"

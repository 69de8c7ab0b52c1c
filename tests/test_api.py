"""The Python API from a plain script and from inside a running event loop (as in Jupyter), in fresh
interpreters, with the real sandbox and store."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(sampler="mutate", samples=12, islands=2, workers=2, quiet=True,
             problem_options={"train_items": 200, "test_items": 300})


def python(code: str, cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_is_cheap(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import evosearch; evosearch.search"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=True)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "evosearch.api" in imported
    assert {"numpy", "ribs", "ray", "pandas", "evosearch.engine", "rich"}.isdisjoint(imported)


@pytest.mark.slow
def test_search_from_a_plain_script(tmp_path):
    out = python(f"""
        import json, evosearch
        result = evosearch.search("bin_packing", out="run", **{SMALL!r})
        table = result.programs()
        rows = result.programs(as_frame=False)
        print(json.dumps({{"type": type(table).__name__, "columns": list(table.columns), "n": len(table),
                           "best": result.best_score, "best_id": result.best["id"], "code": result.best_code,
                           "test": result.test_score, "summary_best": result.summary["best"]["train"],
                           "first_parents": rows[1]["parents"], "rows_type": type(rows[0]).__name__,
                           "events": len(result.events(as_frame=False)), "meta": sorted(result.meta()),
                           "repr": repr(result)}}))
    """, tmp_path)
    assert out["type"] == "DataFrame" and out["n"] == 13 and out["rows_type"] == "dict"
    for column in ("id", "island", "parents", "status", "score", "descriptors", "code", "tokens_in", "archive"):
        assert column in out["columns"]
    assert out["best"] == out["summary_best"] and out["test"] is not None
    assert out["code"] == (tmp_path / "run" / "best.py").read_text()
    assert isinstance(out["first_parents"], list) and out["first_parents"]
    assert {"config", "commit_mode"} <= set(out["meta"])
    assert out["repr"].startswith("SearchResult('run': best ")


@pytest.mark.slow
def test_search_inside_a_running_event_loop(tmp_path):
    # What a notebook does: top-level await (search_async), and the plain call from code under a running loop.
    out = python(f"""
        import asyncio, json, evosearch

        async def notebook_cell():
            first = await evosearch.search_async("bin_packing", out="a", **{SMALL!r})
            second = evosearch.search("bin_packing", out="b", **{SMALL!r})  # a loop runs here: a thread of its own
            return first, second

        first, second = asyncio.run(notebook_cell())
        a, b = first.programs(as_frame=False), second.programs(as_frame=False)
        print(json.dumps({{"same": [r["code"] for r in a] == [r["code"] for r in b], "n": len(a),
                           "scores": [first.best_score, second.best_score]}}))
    """, tmp_path)
    assert out["n"] == 13 and out["same"]  # same seed, LLM-free sampler: the same run either way
    assert out["scores"][0] == out["scores"][1]


def test_a_cancelled_search_writes_its_summary_so_far(tmp_path):
    out = python(f"""
        import asyncio, json, sqlite3, evosearch

        async def main():
            task = asyncio.create_task(evosearch.search_async("bin_packing", out="run", **{{**{SMALL!r}, "samples": 2000}}))
            while True:
                await asyncio.sleep(0.5)
                try:
                    with sqlite3.connect("run/evosearch.db") as db:
                        if db.execute("SELECT COUNT(*) FROM programs WHERE status = 'ok'").fetchone()[0] > 5:
                            break
                except sqlite3.Error:
                    pass
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return "cancelled"

        outcome = asyncio.run(main())
        result = evosearch.open_run("run")
        print(json.dumps({{"outcome": outcome, "summary": result.summary, "best": result.best_score}}))
    """, tmp_path)
    assert out["outcome"] == "cancelled"
    assert out["summary"]["stopped"].startswith("interrupted") and out["summary"]["best"]["train"] == out["best"]

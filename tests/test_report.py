"""The run report (evosearch/report.py) in a real browser: headless Chromium opens the offline page of a real
LLM-free run and the tests read what it rendered (lineage, plot data, diffs, the program table)."""
import asyncio
import difflib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from browser import Browser
from evosearch.report import load_run

SMALL = ["--problem-options", "{train_items: 200, test_items: 300}", "--workers", "2", "--quiet"]


def evosearch(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evosearch", *args], capture_output=True, text=True, timeout=600)


def chain_to_seed(db: sqlite3.Connection, pid: int) -> list[int]:
    chain = []
    while pid is not None:
        chain.append(pid)
        parents = json.loads(db.execute("SELECT parents FROM programs WHERE id = ?", (pid,)).fetchone()[0])
        pid = parents[-1] if parents else None  # the edited parent is the last
    return chain[::-1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "mutate-s0"
    proc = evosearch("run", "bin_packing", "--sampler", "mutate", "--samples", "30", "--seed", "0", "--out",
                     str(out), *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def in_browser(url: str, script):
    async def go():
        async with Browser() as b:
            await b.open(url)
            out = await script(b)
            return out, b.errors
    return asyncio.run(go())


@pytest.mark.slow
def test_the_report_of_a_real_run_shows_its_lineage_plots_and_programs(run_dir):
    page = run_dir / "report.html"
    assert page.is_file(), "the end of a run writes report.html"
    html = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # self-contained: nothing to fetch
    db = sqlite3.connect(run_dir / "evosearch.db")
    best = db.execute("SELECT MAX(score) FROM programs WHERE status = 'ok'").fetchone()[0]
    # the program with the longest lineage, and the diff of its last step as Python's difflib writes it
    ids = [r[0] for r in db.execute("SELECT id FROM programs ORDER BY id")]
    deepest = max(ids, key=lambda i: (len(chain_to_seed(db, i)), i))
    chain = chain_to_seed(db, deepest)
    assert len(chain) >= 3, chain
    before, after = (db.execute("SELECT code FROM programs WHERE id = ?", (i,)).fetchone()[0] for i in chain[-2:])
    added = next(l[1:].strip() for l in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="")
                 if l.startswith("+") and not l.startswith("+++") and l[1:].strip())
    one = db.execute("SELECT p.id, p.response, pr.user FROM programs p JOIN prompts pr ON pr.id = p.prompt_id "
                     "WHERE p.id = ?", (chain[-1],)).fetchone()

    async def script(b: Browser):
        seen = {"samples": await b.js("document.body.dataset.samples"),
                "best_y": await b.js("Math.max(...document.getElementById('plot-best-samples').data.at(-1).y)"),
                "islands": await b.js("document.getElementById('plot-best-samples').data.map(t => t.name)"),
                "outcomes": await b.js("document.getElementById('plot-outcomes').data.map(t => [t.name, t.y.reduce((a, b) => a + b, 0)])"),
                "heatmap": await b.js("document.getElementById('plot-archive-0').data[0].z.flat().filter(v => v != null)")}
        await b.js(f"(() => {{ const el = document.getElementById('lineage-id'); el.value = {deepest}; "
                   "el.dispatchEvent(new Event('change')); })()")
        seen["steps"] = await b.js("[...document.querySelectorAll('#lineage .step')].map(s => Number(s.dataset.id))")
        seen["lineage_text"] = await b.js("document.getElementById('lineage').innerText")
        seen["added_lines"] = await b.js("[...document.querySelectorAll('#lineage .step:last-child .diff .add')]"
                                         ".map(e => e.textContent)")
        # the program table: search, then open one program's prompt and raw answer
        await b.js(f"(() => {{ const el = document.getElementById('search'); el.value = '#{deepest}'; "
                   "el.dispatchEvent(new Event('input')); })()")
        await b.wait("document.querySelectorAll('#programs-table tr.row').length === 1")
        seen["row_after_search"] = await b.js("document.querySelector('#programs-table tr.row').dataset.id")
        await b.js(f"document.querySelector('#programs-table tr.row[data-id=\"{deepest}\"]').click()")
        seen["detail"] = await b.js("document.getElementById('detail').innerText")
        return seen

    seen, errors = in_browser(page.as_uri(), script)
    assert errors == []
    assert seen["samples"] == "30"
    assert seen["best_y"] == pytest.approx(best)
    assert seen["islands"] == ["island 0", "island 1", "island 2", "island 3", "all islands"]
    statuses = dict(db.execute("SELECT status, COUNT(*) FROM programs GROUP BY status").fetchall())
    assert dict(seen["outcomes"]) == statuses
    assert max(seen["heatmap"]) <= best and len(seen["heatmap"]) >= 1
    assert seen["steps"] == chain
    assert f"{len(chain) - 1} steps from program 0 to program {deepest}" in seen["lineage_text"]
    assert any(added in line for line in seen["added_lines"]), (added, seen["added_lines"])
    assert seen["row_after_search"] == str(deepest)
    assert f"program {deepest}" in seen["detail"]
    assert one[2].strip().splitlines()[0] in seen["detail"]  # its prompt
    assert one[1].strip().splitlines()[0] in seen["detail"]  # its raw answer


@pytest.mark.slow
def test_a_store_from_an_older_version_still_reports(run_dir, tmp_path):
    """Columns added since the first schema, the events and insights tables and the side files may be missing."""
    old = tmp_path / "old-run"
    old.mkdir()
    shutil.copy(run_dir / "evosearch.db", old / "evosearch.db")
    db = sqlite3.connect(old / "evosearch.db")
    for column in ("edit_format", "rationale", "attempts", "epoch", "cost", "retries"):
        db.execute(f"ALTER TABLE programs DROP COLUMN {column}")
    db.execute("DROP TABLE events")
    db.execute("DROP TABLE insights")
    db.execute("DELETE FROM meta")  # no config in the store, and no config.yaml beside it
    db.commit()
    db.close()
    proc = evosearch("report", str(old))
    assert proc.returncode == 0, proc.stderr
    assert "report.html" in proc.stdout

    async def script(b: Browser):
        return {"overview": await b.js("document.getElementById('overview-body').innerText"),
                "maps": await b.js("document.querySelectorAll('#maps .plot').length"),
                "best_y": await b.js("Math.max(...document.getElementById('plot-best-samples').data.at(-1).y)")}

    seen, errors = in_browser((old / "report.html").as_uri(), script)
    assert errors == []
    missing = seen["overview"].split("older store")[1].splitlines()[0]
    assert all(c in missing for c in ("edit_format", "rationale", "epoch", "cost", "retries")), missing
    assert seen["maps"] >= 1  # the archive rebuilt from descriptors found in the store
    assert seen["best_y"] == pytest.approx(json.loads((run_dir / "summary.json").read_text())["best"]["train"])


@pytest.mark.slow
def test_archives_rebuilt_from_the_store_match_the_runs_own(run_dir):
    """Replaying commits, migrations and resets from the store gives each island the elites the run had."""
    data = load_run(run_dir)
    final = json.loads((run_dir / "qd_metrics.json").read_text())["final"]
    assert [m["elites"] for m in data["archives"]["maps"]] == [s["elites"] for s in final]
    assert data["run"]["state"] == "complete" and data["run"]["samples"] == 30


def test_report_of_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    proc = evosearch("report", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"evosearch: error: {tmp_path} is not a run directory (no evosearch.db)"
    assert not (tmp_path / "report.html").exists()


def test_archives_rebuilt_with_neutral_drift_let_a_tie_take_the_cell():
    from evosearch.report import _replay_archives

    # The seed, then two programs of island 0 in one cell, the second tying the first.
    p = {"id": [0, 1, 2], "island": [None, 0, 0], "score": [-5.0, -3.0, -3.0], "desc": [[0.1], [0.6], [0.7]],
         "status": ["ok"] * 3, "archive": [None, "new", "replace"], "commit": [0, 1, 2]}
    axes = [{"name": "x", "low": 0.0, "high": 1.0, "bins": 2}]
    for neutral, held in ((False, 1), (True, 2)):
        maps = _replay_archives(p, [], axes, {"islands": 1, "neutral": neutral})["maps"]
        assert maps[0]["ids"] == [[0, held]] and maps[0]["elites"] == 2

"""The live dashboard (evosearch/dashboard.py) beside a real running search, in headless Chromium: it sees the run
grow, compares it with a finished run, and leaves the stores as they were (read-only)."""
import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from browser import Browser
from evosearch.dashboard import serve
from evosearch.report import load_run

SMALL = ["--problem-options", "{train_items: 200, test_items: 300}", "--workers", "2", "--quiet"]


def committed(run_dir: Path) -> int:
    db = sqlite3.connect(f"file:{run_dir / 'evosearch.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM programs WHERE status != 'pending'").fetchone()[0]
    except sqlite3.OperationalError:  # the run has not made its tables yet
        return 0
    finally:
        db.close()


@pytest.fixture
def server(tmp_path):
    srv = serve(tmp_path, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv, f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.slow
def test_dashboard_follows_a_live_run_and_compares_runs(server, tmp_path):
    srv, url = server
    assert srv.server_address[0] == "127.0.0.1"
    done = tmp_path / "finished"
    proc = subprocess.run([sys.executable, "-m", "evosearch", "run", "bin_packing", "--sampler", "mutate",
                           "--samples", "10", "--seed", "1", "--out", str(done), *SMALL],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    live = tmp_path / "live"
    # A budget it never reaches: the test ends it with Ctrl-C. (2,000 samples of cache hits once finished
    # before a slow browser start had watched it grow.)
    run = subprocess.Popen([sys.executable, "-m", "evosearch", "run", "bin_packing", "--sampler", "mutate",
                            "--samples", "1000000", "--seed", "0", "--out", str(live), *SMALL],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        async def watch():
            async with Browser() as b:
                await b.open(url + "?every=1", "window.evo && window.evo.ready && "
                                               "document.querySelector('#runs a.cur').textContent === 'live'")
                first = int(await b.js("document.body.dataset.samples"))
                await b.wait(f"Number(document.body.dataset.samples) >= {first + 10}", timeout=240)
                later = int(await b.js("document.body.dataset.samples"))
                renders = await b.js("window.evo.renders")
                compare = await b.js("document.getElementById('plot-compare').data.map(t => t.name)")
                # a step of the live run's lineage and its table follow too
                steps = await b.js("document.querySelectorAll('#lineage .step').length")
                rows = await b.js("document.querySelectorAll('#programs-table tr.row').length")
                return first, later, renders, compare, steps, rows, b.errors
        first, later, renders, compare, steps, rows, errors = asyncio.run(watch())
        assert run.poll() is None, "the run was still going while the dashboard watched"
        assert later >= first + 10 and renders >= 2
        assert sorted(compare) == ["finished", "live"]
        assert steps >= 1 and rows >= 1
        assert errors == []
        # a report of the run while it goes (read-only; the store is in WAL mode)
        data = load_run(live)
        assert data["run"]["state"] == "incomplete" and data["run"]["samples"] >= later
    finally:
        run.send_signal(signal.SIGINT)  # Ctrl-C: the run stops cleanly and writes its report
        try:
            out, err = run.communicate(timeout=600)  # a hang guard: stopping writes the report, slow under load
        except subprocess.TimeoutExpired:
            run.kill()  # a Ctrl-C that did not stop the run fails the test; the run must not outlive it
            raise
    assert run.returncode == 130, err[-3000:]
    assert "continue with: evosearch run --resume" in err
    assert (live / "report.html").is_file(), "an interrupted run writes its report"
    assert committed(live) >= later


def test_dashboard_api_serves_only_run_folders(server, tmp_path):
    srv, url = server
    (tmp_path / "not-a-run").mkdir()

    def get(path):
        with urllib.request.urlopen(url + path, timeout=30) as r:
            return r.status, r.headers, r.read()

    status, headers, body = get("")
    assert status == 200 and b'data-mode="live"' in body
    assert json.loads(get("api/runs")[2]) == []
    for bad in ("api/run?name=not-a-run", "api/run?name=..%2F..%2Fetc", "etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as e:
            get(bad)
        assert e.value.code == 404
    status, headers, body = get("plotly.min.js")
    assert status == 200 and headers["Content-Type"] == "text/javascript" and b"plotly" in body[:2000].lower()


@pytest.mark.slow
def test_dashboard_beside_a_run_on_a_ray_cluster(ray_cluster, server, tmp_path):
    """With --backend ray the driver is the store's one writer: the dashboard reads its run folder as it grows."""
    srv, url = server
    run = subprocess.Popen([sys.executable, "-m", "evosearch", "run", "bin_packing", "--sampler", "mutate",
                            "--samples", "400", "--seed", "0", "--backend", "ray", "--address", ray_cluster.address,
                            "--out", str(tmp_path / "on-ray"), *SMALL], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)

    def samples() -> int:
        with urllib.request.urlopen(url + "api/runs", timeout=60) as r:
            runs = json.loads(r.read())
        return runs[0]["samples"] if runs else 0

    try:
        seen = [samples()]
        deadline = time.monotonic() + 400
        while (len(set(seen)) < 3 or seen[-1] < 10) and run.poll() is None and time.monotonic() < deadline:
            time.sleep(2)
            seen.append(samples())
        assert len(set(seen)) >= 3 and seen == sorted(seen), seen  # seen growing, never shrinking
        with urllib.request.urlopen(url + "api/run?name=on-ray", timeout=120) as r:
            data = json.loads(r.read())
        assert data["config"]["backend"] == "ray" and data["run"]["samples"] >= seen[-1]
    finally:
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=180)

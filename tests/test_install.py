"""A user's first install: a clean clone into a fresh venv (no system site-packages), timed.

The time is reported (printed, and recorded as a junit property), never asserted: it depends on
the network and the machine. What is asserted is that nothing needs a compiler and that the
installed command runs the embedded model. benchmarks/install_time.py measures the same with and
without pip's cache.
"""
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_clean_clone_installs_into_a_fresh_venv_and_runs_the_embedded_model(tmp_path, record_property):
    clone, venv = tmp_path / "evosearch", tmp_path / "venv"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    # --only-binary: every dependency must come as a wheel, so nothing compiles (the project itself,
    # pure Python, is still built from the clone).
    start = time.perf_counter()
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-cache-dir", "--only-binary", ":all:",
                          "-e", f"{clone}[local]"], env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - start
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    print(f"\nfirst install of .[local] into a fresh venv (no pip cache): {seconds:.1f} s")
    record_property("install_seconds", round(seconds, 1))

    run = tmp_path / "run"
    proc = subprocess.run([str(venv / "bin" / "evosearch"), "run", "bin_packing", "--samples", "2", "--out", str(run),
                           "--problem-options", "{train_items: 200, test_items: 300}", "--workers", "1",
                           "--quiet"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    db = sqlite3.connect(run / "evosearch.db")
    try:
        models = [m for (m,) in db.execute("SELECT model FROM programs WHERE id > 0")]
    finally:
        db.close()
    assert models == ["gemma3-270m-q4_k_m"] * 2

"""`ray list actors` during a run on the loopback cluster names evosearch's actors (island, evaluator, sampler)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ray_list_actors_shows_named_actors(ray_cluster, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    run = subprocess.Popen([sys.executable, "-m", "evosearch", "run", "bin_packing", "--backend", "ray",
                            "--address", ray_cluster.address, "--sampler", "mutate", "--samples", "5000",
                            "--islands", "2", "--workers", "1", "--sampler-resource", "sampler_node", "--quiet",
                            "--problem-options", "{train_items: 200, test_items: 300}", "--out", str(tmp_path / "run")],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    names: set[str] = set()
    last = ""
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and run.poll() is None:
            listed = subprocess.run(["ray", "list", "actors", "--address", ray_cluster.dashboard_url, "--filter",
                                     "state=ALIVE", "--format", "json", "--limit", "1000"],
                                    env=env, capture_output=True, text=True, timeout=120)
            last = listed.stdout + listed.stderr
            if listed.returncode == 0 and "[" in listed.stdout:
                actors = json.loads(listed.stdout[listed.stdout.index("["):])  # after any warning lines
                names = {a.get("name") or "" for a in actors}
                if len([n for n in names if n.startswith("evosearch-")]) >= 5:
                    break
            time.sleep(2)
    finally:
        os.killpg(run.pid, signal.SIGINT)
        _, stderr = run.communicate(timeout=120)
    ours = sorted(n.rsplit("-", 1)[0] for n in names if n.startswith("evosearch-"))
    assert ours == ["evosearch-evaluator-0", "evosearch-evaluator-1", "evosearch-island-0", "evosearch-island-1",
                    "evosearch-sampler-mutate-0"], (names, last[-2000:], stderr[-3000:])

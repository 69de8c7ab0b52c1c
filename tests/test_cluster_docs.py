"""cluster/README.md sections 1 and 2 run as written: their code blocks are executed in order, as a user
pastes them into one shell, on loopback. Only free ports, private /tmp paths and HOME (so the generated
~/.ray/auth_token is the test's own) are swapped in. The cluster is stopped by killing exactly its processes
(tests/ray_cluster.py), never with `ray stop`."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ray_cluster import LoopbackCluster, free_port

REPO = Path(__file__).resolve().parents[1]
README = REPO / "cluster" / "README.md"


def section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end)]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def agent_logs(temp_dir: Path) -> str:
    """The head's dashboard agent log, which says why a job found no agent."""
    logs = sorted(temp_dir.glob("session_*/logs/dashboard_agent*.log"))
    return "".join(f"\n--- {p}\n" + p.read_text(errors="replace")[-3000:] for p in logs)


@pytest.mark.slow
def test_sections_1_and_2_run_as_written(tmp_path):
    text = README.read_text()
    first, second = section(text, "## 1. ", "## 2. "), section(text, "## 2. ", "## 3. ")
    shell = code_blocks(first, "bash") + code_blocks(second, "bash")
    python = code_blocks(second, "python")
    assert len(shell) == 2 and len(python) == 1

    cluster = LoopbackCluster()  # free ports, a private temp dir, and a stop() that kills only its processes
    swaps = {"6379": str(cluster.port), "8265": str(cluster.dashboard_port), "52365": str(free_port()),
             "52366": str(free_port()), "/tmp/ray-loopback": str(cluster.temp_dir)}
    outs = sorted(set(re.findall(r"/tmp/[\w.-]+", "\n".join(shell + python))) - set(swaps))
    swaps.update({path: str(tmp_path / Path(path).name) for path in outs})

    pattern = re.compile("|".join(re.escape(old) for old in sorted(swaps, key=len, reverse=True)))

    def swapped(code: str) -> str:  # one pass, so a new port never gets swapped again
        return pattern.sub(lambda m: swaps[m.group(0)], code)

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # the conftest's token is not the doc's
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    try:
        script = "set -euo pipefail\n" + "\n".join(swapped(block) for block in shell)
        proc = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        transcript = proc.stdout + proc.stderr
        (tmp_path / "transcript.txt").write_text(transcript)
        assert proc.returncode == 0, transcript[-5000:] + agent_logs(cluster.temp_dir)
        assert (home / ".ray" / "auth_token").is_file()  # the token the doc generated is the one in use
        for run in ("loopback-bp-s0", "job-bp-s0"):
            summary = json.loads((tmp_path / run / "summary.json").read_text())
            assert summary["samples"] == 40 and summary["outcomes"] == {"ok": 40}
            assert summary["best"]["test"] is not None and summary["ray"]
        assert "Job 'raysubmit_" in transcript and "succeeded" in transcript

        # The Python block, in a fresh interpreter: the environment says token mode, as the doc's prose asks.
        proc = subprocess.run([sys.executable, "-c", swapped(python[0])], cwd=REPO, env={**env, "RAY_AUTH_MODE": "token"},
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
        assert "SUCCEEDED" in proc.stdout, proc.stdout[-5000:]
        summary = json.loads((tmp_path / "job-example" / "summary.json").read_text())
        assert summary["samples"] == 60 and summary["ray"]
    finally:
        cluster.stop()

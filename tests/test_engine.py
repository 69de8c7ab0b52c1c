"""End to end through the real CLI: sandboxed evaluation, SQLite store, determinism, kill -9 and resume."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

SMALL = ["--problem-options", "{train_items: 200, test_items: 300}", "--workers", "2", "--quiet"]


def evosearch(*args, cwd=None, check=True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "evosearch", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, **kw)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def samples(run_dir: Path) -> int:
    """Sampler calls recorded (the seed and constant-tuning trials are not samples)."""
    db = sqlite3.connect(run_dir / "evosearch.db")
    try:
        return db.execute("SELECT COUNT(*) FROM programs WHERE id > 0 AND sampler != 'tune'").fetchone()[0]
    finally:
        db.close()


def rows(run_dir: Path) -> list[tuple]:
    db = sqlite3.connect(run_dir / "evosearch.db")
    try:
        return db.execute("SELECT id, status, score, code, parents, archive FROM programs ORDER BY id").fetchall()
    finally:
        db.close()


@pytest.fixture(scope="module")
def mutate_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "a"
    evosearch("run", "bin_packing", "--sampler", "mutate", "--samples", "40", "--seed", "0", "--out", str(out), *SMALL)
    return out


def test_every_sample_is_recorded_with_an_outcome(mutate_run):
    recorded = rows(mutate_run)
    assert [r[0] for r in recorded] == list(range(41))  # the seed program and 40 samples
    assert all(r[1] != "pending" for r in recorded)
    assert all(r[2] is not None for r in recorded if r[1] == "ok")
    assert (mutate_run / "best.py").read_text().count("EVOLVE-BLOCK-START") == 1
    assert (mutate_run / "summary.json").is_file() and (mutate_run / "config.yaml").is_file()


def test_same_seed_same_run(mutate_run, tmp_path):
    evosearch("run", "bin_packing", "--sampler", "mutate", "--samples", "40", "--seed", "0", "--out", str(tmp_path / "b"),
              *SMALL)
    assert [r[:5] for r in rows(tmp_path / "b")] == [r[:5] for r in rows(mutate_run)]


def test_sigkill_then_resume_loses_nothing_and_matches_an_uninterrupted_run(mutate_run, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "evosearch", "run", "bin_packing", "--sampler", "mutate",
                             "--samples", "40", "--seed", "0", "--out", str(out), *SMALL],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(rows(out)) >= 15:
                break
        except sqlite3.OperationalError:
            pass  # the database or its schema is not there yet
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its sandbox workers, mid-run
    proc.wait()
    before = rows(out)
    assert 15 <= len(before) < 41

    evosearch("run", "--resume", str(out), "--quiet")
    after = {r[0]: r for r in rows(out)}
    for r in before:  # everything recorded before the kill is still there, finished work unchanged
        assert r[0] in after
        if r[3] is not None:  # a sample that had arrived is evaluated as it was, not drawn again
            assert after[r[0]][3] == r[3]
        if r[1] != "pending":
            assert after[r[0]][:5] == r[:5]
    assert [after[i][:5] for i in sorted(after)] == [r[:5] for r in rows(mutate_run)]


def test_each_prompt_records_whether_it_exploited_and_the_summary_says_how_each_kind_did(mutate_run):
    db = sqlite3.connect(mutate_run / "evosearch.db")
    kinds = db.execute("SELECT sampler, exploit, status, score FROM programs WHERE commit_seq IS NOT NULL "
                       "ORDER BY commit_seq").fetchall()
    formats = dict(db.execute("SELECT id, edit_format FROM programs WHERE sampler = 'mutate'").fetchall())
    exploits = dict(db.execute("SELECT id, exploit FROM programs WHERE sampler = 'mutate'").fetchall())
    db.close()
    # The default selection (exploit, share 0.5): every full prompt is one kind or the other; a crossover
    # (mutate's default mix has a quarter) and a tuning trial draw their parents otherwise.
    assert set(formats.values()) == {"full", "crossover"}
    assert {e for i, e in exploits.items() if formats[i] == "full"} == {0, 1}
    assert all(exploits[i] is None for i, f in formats.items() if f == "crossover")
    assert all(e is None for s, e, _, _ in kinds if s in ("seed", "tune"))
    tally, best = {}, kinds[0][3]
    for _, exploit, status, score in kinds[1:]:
        if exploit is not None:
            t = tally.setdefault("exploit" if exploit else "explore", {"rows": 0, "ok": 0, "new_bests": 0})
            t["rows"] += 1
            t["ok"] += status == "ok"
            t["new_bests"] += status == "ok" and score > best
        best = max(best, score) if status == "ok" else best
    assert json.loads((mutate_run / "summary.json").read_text())["prompts"] == tally


def test_a_users_own_problem_folder_runs(tmp_path):
    folder = tmp_path / "squares"
    folder.mkdir()
    (folder / "skeleton.py").write_text(
        "# EVOLVE-BLOCK-START\ndef f(x):\n    return x + 1.0\n# EVOLVE-BLOCK-END\n")
    (folder / "problem.py").write_text('''
from evosearch.problem import Descriptor, InvalidOutput, Problem


class Squares(Problem):
    description = "fit x**2"
    descriptors = (Descriptor("slope", -10, 10, 5),)
    timeout_s = 5

    def instances(self, split):
        return {"xs": [0.5 * i for i in range(-4, 5)]} if split != "probe" else {"p": [1.0, 2.0]}

    @staticmethod
    def run(program, xs):
        return [float(program["f"](x)) for x in xs]

    def score(self, xs, ys):
        if not isinstance(ys, list) or len(ys) != len(xs):
            raise InvalidOutput("one value per x")
        return {"score": -sum((y - x * x) ** 2 for x, y in zip(xs, ys)), "slope": ys[-1] - ys[0]}
''')
    out = tmp_path / "run"
    evosearch("run", str(folder), "--sampler", "mutate", "--samples", "15", "--out", str(out), "--quiet")
    recorded = rows(out)
    assert samples(out) == 15 and recorded[0][1] == "ok" and all(r[1] != "pending" for r in recorded)


def test_problems_lists_the_built_ins():
    listing = evosearch("problems").stdout.splitlines()
    names = {line.split()[0] for line in listing}
    assert {"bin_packing", "optimizer"} <= names
    assert all(len(line.split(maxsplit=1)) == 2 for line in listing)


def test_installed_problem_through_an_entry_point(tmp_path):
    """A distribution on sys.path announcing a problem in the evosearch.problems group."""
    pkg = tmp_path / "tiny_problem"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "skeleton.py").write_text("# EVOLVE-BLOCK-START\ndef g(x):\n    return 2 * x\n# EVOLVE-BLOCK-END\n")
    (pkg / "problem.py").write_text('''
from evosearch.problem import Problem


class Tiny(Problem):
    description = "tiny installed problem"

    def instances(self, split):
        return {"a": 3}

    @staticmethod
    def run(program, x):
        return program["g"](x)

    def score(self, x, y):
        return {"score": -abs(float(y) - 10)}
''')
    dist = tmp_path / "tiny_problem-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-problem\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[evosearch.problems]\ntiny = tiny_problem.problem:Tiny\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    assert "tiny installed problem" in evosearch("problems", env=env).stdout
    out = tmp_path / "run"
    evosearch("run", "tiny", "--sampler", "mutate", "--samples", "5", "--out", str(out), "--quiet", env=env)
    assert samples(out) == 5


@pytest.mark.parametrize("args, message", [
    (["run", "no_such_problem"], "unknown problem 'no_such_problem'"),
    (["run", "bin_packing", "--samples", "-3"], "'samples' must be at least 1"),
    (["run", "bin_packing", "--problem-options", "{colour: red}", "--sampler", "mutate"], "bad option"),
    (["run", "bin_packing", "--sampler", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1"],
     "cannot reach"),
    (["run", "--resume", "/nonexistent/run"], "not a run directory"),
])
def test_user_mistakes_end_with_one_line(tmp_path, args, message):
    proc = evosearch(*args, "--out", str(tmp_path / "o"), check=False, cwd=tmp_path) if args[:2] != ["run", "--resume"] \
        else evosearch(*args, check=False, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("evosearch: error:")
    assert not (tmp_path / "o" / "evosearch.db").exists()  # nothing left that would block the same command


def test_resume_of_a_damaged_store_is_one_line(tmp_path):
    (tmp_path / "config.yaml").write_text("problem: bin_packing\n")
    (tmp_path / "evosearch.db").write_bytes(b"not a database at all" * 50)
    proc = evosearch("run", "--resume", str(tmp_path), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is not a usable evosearch store" in proc.stderr.strip().splitlines()[-1]


def test_problem_folder_missing_a_part(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "problem.py").write_text("")
    proc = evosearch("run", str(tmp_path / "broken"), "--sampler", "mutate", "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "has no skeleton.py" in proc.stderr and "Traceback" not in proc.stderr

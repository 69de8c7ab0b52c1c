"""The command line as a new user meets it: --version, --help, quick one-line mistakes, `eval`, the example
config, Ctrl-C. Everything runs the real CLI in a subprocess (real sandbox, real store)."""
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--problem-options", "{train_items: 200, test_items: 300}", "--workers", "2"]


def evosearch(*args, cwd=None, check=True, env=None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           **(env or {})}
    proc = subprocess.run([sys.executable, *kw.pop("python_flags", []), "-m", "evosearch", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600, env=env, **kw)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def one_line_error(proc, message):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("evosearch: error:") and message in last, proc.stderr


def test_version():
    from importlib.metadata import version
    assert evosearch("--version").stdout.strip() == f"evosearch {version('evosearch')}"


def test_run_help_says_each_default_once():
    text = evosearch("run", "--help", env={"COLUMNS": "200"}).stdout
    flags = re.split(r"\n  (?=--)", text.split("options:")[1])
    for flag in flags:
        assert flag.count("(default") <= 1, flag
    assert "(default: 100)" in next(f for f in flags if f.startswith("--samples "))
    assert "(default: the embedded model)" in next(f for f in flags if f.startswith("--model "))
    assert "(default: the sampler's own: {full: 0.75, crossover: 0.25} for mutate, {full: 1.0} for the others)" \
        in " ".join(next(f for f in flags if f.startswith("--edit-formats ")).split())


def test_a_mistyped_problem_is_named_before_the_engine_loads(tmp_path):
    # Python's own import log: the answer must not wait for the engine, pyribs or Ray to import.
    proc = evosearch("run", "bin_pakcing", "--sampler", "mutate", check=False, cwd=tmp_path, python_flags=["-X", "importtime"])
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert {"ribs", "ray", "evosearch.launch", "evosearch.engine", "numpy"}.isdisjoint(imported)
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert errors == ["evosearch: error: unknown problem 'bin_pakcing' (not a folder, built-in or installed problem; "
                      "see `evosearch problems`)"]
    assert not (tmp_path / "runs").exists()


def write_problem(folder: Path, descriptors: str = 'Descriptor("mean", 0.0, 20.0, 4)', skeleton: str | None = None,
                  score: str = '{"score": -abs(float(y) - 10), "mean": float(y)}',
                  instances: str = '{"a": 3, "b": 5}', extra: str = "") -> Path:
    folder.mkdir()
    (folder / "skeleton.py").write_text(skeleton if skeleton is not None else
                                        "# EVOLVE-BLOCK-START\ndef g(x):\n    return x + 1\n# EVOLVE-BLOCK-END\n")
    (folder / "problem.py").write_text(f'''
from evosearch.problem import Descriptor, Problem


class Tiny(Problem):
    description = "tiny"
    descriptors = ({descriptors},)
    timeout_s = 10
{extra}
    def instances(self, split):
        return {instances}

    @staticmethod
    def run(program, x):
        return program["g"](x)

    def score(self, x, y):
        return {score}
''')
    return folder


@pytest.mark.parametrize("kind, message", [
    ("low_high", "descriptor 'mean' needs low < high, got low 5.0, high 5.0"),
    ("no_markers", "no # EVOLVE-BLOCK-START ... # EVOLVE-BLOCK-END region"),
    ("no_function", "no top-level function between the EVOLVE-BLOCK markers"),
])
def test_a_malformed_problem_ends_in_one_line_and_leaves_no_run_folder(tmp_path, kind, message):
    folder = {"low_high": lambda: write_problem(tmp_path / "p", descriptors='Descriptor("mean", 5.0, 5.0, 4)'),
              "no_markers": lambda: write_problem(tmp_path / "p", skeleton="def g(x):\n    return x + 1\n"),
              "no_function": lambda: write_problem(tmp_path / "p", skeleton="# EVOLVE-BLOCK-START\nK = 1\n"
                                                                            "# EVOLVE-BLOCK-END\ndef g(x):\n    return x\n"),
              }[kind]()
    work = tmp_path / "work"
    work.mkdir()
    one_line_error(evosearch("run", str(folder), "--sampler", "mutate", check=False, cwd=work), message)
    one_line_error(evosearch("run", str(folder), "--sampler", "mutate", "--out", str(tmp_path / "o"), check=False,
                             cwd=work), message)
    assert list(work.iterdir()) == [] and not (tmp_path / "o").exists()


def test_a_descriptor_missing_from_the_scores_is_named_as_missing(tmp_path):
    folder = write_problem(tmp_path / "p", score='{"score": -abs(float(y) - 10)}')
    proc = evosearch("run", str(folder), "--sampler", "mutate", "--samples", "2", "--out", str(tmp_path / "o"),
                     "--workers", "1", check=False)
    one_line_error(proc, "descriptor 'mean' is missing from score()'s metrics (it returned score)")
    assert "nan" not in proc.stderr


FUNSEARCH_STYLE = '''
import numpy as np

def priority(item, bins):
    """Best fit, written as a published heuristic is: the function alone."""
    return -(bins - item)
'''


@pytest.mark.slow
def test_eval_scores_a_file_on_both_splits_with_their_own_deadlines(tmp_path):
    (tmp_path / "h.py").write_text(FUNSEARCH_STYLE)
    proc = evosearch("eval", "bin_packing", str(tmp_path / "h.py"), *SMALL[:2], "--json", "--test-timeout-s", "45")
    result = json.loads(proc.stdout)
    assert result["program"] == "priority in the skeleton"
    assert result["train"]["status"] == result["test"]["status"] == "ok"
    assert result["train"]["score"] == pytest.approx(-86.2)  # Best Fit, as the seed program scores
    assert result["test"]["timeout_s"] == 45 and result["train"]["timeout_s"] == 30  # bin packing's own
    # A program slow only on the larger held-out instances: the held-out deadline alone decides.
    (tmp_path / "slow.py").write_text(FUNSEARCH_STYLE.replace('"""\n', '"""\n    import time; time.sleep(0.02 if len(bins) > 130 else 0)\n', 1))
    proc = evosearch("eval", "bin_packing", str(tmp_path / "slow.py"), *SMALL[:2], "--json", "--timeout-s", "60",
                     "--test-timeout-s", "1", check=False)
    result = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert (result["train"]["status"], result["test"]["status"]) == ("ok", "timeout")
    # A whole program (a run's best.py) is taken as it is; the table form names both splits.
    (tmp_path / "best.py").write_text((REPO / "problems" / "bin_packing" / "skeleton.py").read_text())
    text = evosearch("eval", "bin_packing", str(tmp_path / "best.py"), *SMALL[:2]).stdout
    assert "(whole program)" in text and re.search(r"^train ok .*excess_pct", text, re.M) \
        and re.search(r"^test  ok ", text, re.M)


def test_eval_mistakes_are_one_line(tmp_path):
    one_line_error(evosearch("eval", "bin_packing", str(tmp_path / "none.py"), check=False), "cannot read")
    (tmp_path / "x.py").write_text("x = 1\n")
    one_line_error(evosearch("eval", "bin_packing", str(tmp_path / "x.py"), check=False),
                   "no top-level function to put into the skeleton")


@pytest.mark.slow
def test_the_example_config_runs_as_it_is(tmp_path):
    proc = evosearch("run", "--config", str(REPO / "examples" / "run.yaml"), cwd=tmp_path)
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["samples"] == 60 and summary["best"]["test"] is not None
    assert "qd_score_offset" in summary["islands"]["qd_score_note"]
    log = (run_dir / "run.log").read_text()
    assert "samples 60/60" in log and "held-out evaluation" in log
    assert f"run {Path('runs') / run_dir.name}: 60 samples" in proc.stdout


def start_a_long_run(out: Path) -> subprocess.Popen:
    """A mutate run in a session of its own, returned once it has 20 programs that ran."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "evosearch", "run", "bin_packing", "--sampler", "mutate",
                             "--samples", "2000", "--out", str(out), *SMALL], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(1)
        try:
            with sqlite3.connect(out / "evosearch.db") as db:
                if db.execute("SELECT COUNT(*) FROM programs WHERE status = 'ok'").fetchone()[0] > 20:
                    break
        except sqlite3.Error:
            continue
    return proc


def children(pid: int) -> list[int]:
    """The processes ``pid`` started, from any of its threads (the pool starts workers from its own)."""
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def alive(pid: int) -> bool:
    try:  # a zombie (state Z) has ended; only its parent has not read its status yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_ctrl_c_ends_cleanly_writes_the_summary_and_resume_finishes(tmp_path):
    out = tmp_path / "run"
    proc = start_a_long_run(out)
    # Ctrl-C in a terminal signals the whole foreground process group: the CLI and its sandbox workers.
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "never retrieved" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == (f"evosearch: interrupted; summary so far in {out / 'summary.json'}; "
                                               f"continue with: evosearch run --resume {out}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"].startswith("interrupted") and summary["best"]["train"] is not None
    assert (out / "best.py").read_text().startswith('"""Online bin packing')
    assert "run ended by KeyboardInterrupt" in (out / "run.log").read_text()
    evosearch("run", "--resume", str(out), "--samples", "100", "--quiet")
    summary = json.loads((out / "summary.json").read_text())
    assert "stopped" not in summary and summary["best"]["test"] is not None


@pytest.mark.slow
def test_sigterm_stops_a_run_as_ctrl_c_does_and_leaves_no_worker(tmp_path):
    # `kill`, `ray job stop` and a scheduler preempting a node send SIGTERM to the CLI alone.
    out = tmp_path / "run"
    proc = start_a_long_run(out)
    workers = children(proc.pid)
    assert workers, "the run has sandbox workers"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=600)  # a hang guard
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "never retrieved" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == (f"evosearch: terminated (SIGTERM); summary so far in "
                                               f"{out / 'summary.json'}; continue with: evosearch run --resume {out}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"].startswith("interrupted") and summary["best"]["train"] is not None
    assert (out / "report.html").is_file() and "run ended by CancelledError: SIGTERM" in (out / "run.log").read_text()
    deadline = time.monotonic() + 60  # a hang guard: the sandbox workers end with the run they serve
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [w for w in workers if alive(w)], "a sandbox worker outlived its run"
    with sqlite3.connect(out / "evosearch.db") as db:
        done = db.execute("SELECT COUNT(*) FROM programs WHERE status != 'pending'").fetchone()[0]
    evosearch("run", "--resume", str(out), "--samples", str(done + 5), "--quiet")
    assert "stopped" not in json.loads((out / "summary.json").read_text())


def test_a_run_that_finds_nothing_says_what_to_try(tmp_path):
    # The seed is already optimal (score 0 is the maximum), so no child can beat it.
    # Its validation split would fail every program: with the seed the only training best, nothing is picked
    # between, so it is never run and the summary has no validation entry.
    folder = write_problem(tmp_path / "p", score='{"score": -abs(float(y) - x - 1), "mean": float(y)}',
                           extra="    validation = True\n",
                           instances='{"c": "not a number"} if split == "valid" else {"a": 3, "b": 5}')
    proc = evosearch("run", str(folder), "--sampler", "mutate", "--samples", "4", "--out", str(tmp_path / "o"),
                     "--workers", "1")
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["best"]["id"] == summary["seed"]["id"] == 0
    assert "validation" not in summary and "valid:" not in proc.stdout
    assert "nothing beat the seed in 4 samples: try more (--samples) or another --sampler" in proc.stdout
    # The embedded model alone (the default sampler) gets the pointer to a sampler beside it.
    from evosearch.launch import format_summary
    summary["samplers"] = {"local": {"rows": 4, "ok": 4, "new_bests": 0}}
    assert "--sampler local+mutate adds LLM-free mutations" in format_summary(summary, tmp_path / "o")
    summary["best"]["id"] = 3  # something did beat the seed: no hint
    assert "nothing beat the seed" not in format_summary(summary, tmp_path / "o")


def test_a_validation_split_picks_the_reported_program_among_the_last_training_bests(tmp_path):
    # Training wants g(3), g(5) near 10; the validation split asks g(20) near 10 as well, so the training bests
    # (steeper or flatter fits of the same two points) disagree there.
    folder = write_problem(tmp_path / "p", extra="    validation = True\n",
                           instances='{"c": 20} if split == "valid" else {"a": 3, "b": 5}')
    out = tmp_path / "o"
    proc = evosearch("run", str(folder), "--sampler", "mutate", "--samples", "30", "--validation-picks", "4",
                     "--out", str(out), "--workers", "1")
    summary = json.loads((out / "summary.json").read_text())
    con = sqlite3.connect(out / "evosearch.db")
    chain, best = [], None  # the new bests in commit order, read from the store
    for pid, score in con.execute("SELECT id, score FROM programs WHERE status = 'ok' "
                                  "ORDER BY COALESCE(commit_seq, id), id"):
        if best is None or score > best:
            chain, best = chain + [pid], score
    code = dict(con.execute("SELECT id, code FROM programs"))
    from evosearch.problem import evaluate_trusted, load_problem
    problem = load_problem(folder)
    valid = {pid: evaluate_trusted(problem, code[pid], "valid")[0].score for pid in chain[-4:]}
    picked = max(reversed(chain[-4:]), key=valid.get)  # ties: the later, better on training
    v = summary["validation"]
    assert [c["id"] for c in v["candidates"]] == chain[-4:]
    assert [c["valid"] for c in v["candidates"]] == [valid[pid] for pid in chain[-4:]]
    assert v["training_best"] == chain[-1] and v["picked"] == picked != chain[-1]  # this run exercises a real pick
    assert summary["best"]["id"] == picked and (out / "best.py").read_text() == code[picked]
    assert f"id {picked} scores best on the validation split" in proc.stdout
    # Without picks (or for a problem without a validation split) the training best is reported.
    proc = evosearch("run", "--resume", str(out), "--validation-picks", "0")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["id"] == chain[-1] and "validation" not in summary

"""Constant tuning in a real run (real CLI, sandbox, store): trials are normal program rows, a stalled
search tunes the best untuned program, and a run killed with SIGKILL mid-tuning resumes without losing
or repeating an evaluation."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

from evosearch.program import check_frozen
from evosearch.tuning import exposed, literals

PROBLEM = '''
import time

from evosearch.problem import Descriptor, InvalidOutput, Problem


class Curve(Problem):
    description = "fit a curve with constants"
    descriptors = (Descriptor("slope", -10, 10, 5),)
    timeout_s = 10

    def instances(self, split):
        return {"xs": [0.25 * i for i in range(-8, 9)]} if split != "probe" else {"p": [1.0, 2.0, 3.0]}

    @staticmethod
    def run(program, xs):
        time.sleep(0.05)  # slow enough that a kill lands mid-tuning
        return [float(program["f"](x)) for x in xs]

    def score(self, xs, ys):
        if not isinstance(ys, list) or len(ys) != len(xs):
            raise InvalidOutput("one value per x")
        return {"score": -sum((y - (1.7 * x * x - 0.6 * x + 0.4)) ** 2 for x, y in zip(xs, ys)),
                "slope": ys[-1] - ys[0]}
'''
# The same fit scored in steps of 10: plateaus, where the search stalls and tunings start there.
PLATEAU_PROBLEM = PROBLEM.replace("import time", "import math\nimport time").replace(
    'return {"score": -sum((y - (1.7 * x * x - 0.6 * x + 0.4)) ** 2 for x, y in zip(xs, ys)),',
    'return {"score": -10 * math.ceil(0.1 * sum((y - (1.7 * x * x - 0.6 * x + 0.4)) ** 2 for x, y in zip(xs, ys))),')
assert PLATEAU_PROBLEM.count("math.ceil") == 1
SKELETON = "# EVOLVE-BLOCK-START\ndef f(x):\n    return 1.0 * x * x + 0.5 * x + 1.0\n# EVOLVE-BLOCK-END\n"
TUNE_EVALS = 12
ARGS = ["--sampler", "mutate", "--samples", "40", "--seed", "0", "--selection", "best", "--islands", "1",
        "--parents", "1", "--tune-evals", str(TUNE_EVALS), "--workers", "2", "--quiet"]
PATIENCE = 4
PLATEAU_EVALS = 10  # more than one CMA-ES generation (7 for 3 literals): a kill can land mid-tuning
PLATEAU_ARGS = [*ARGS, "--tune-evals", str(PLATEAU_EVALS), "--tune-patience", str(PATIENCE)]  # later flags win


def evosearch(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "evosearch", *args], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def rows(run_dir: Path) -> list[dict]:
    db = sqlite3.connect(run_dir / "evosearch.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM programs ORDER BY id")]
    finally:
        db.close()


KEY = ("id", "status", "score", "code", "parents", "sampler", "island")


@dataclass(frozen=True)
class Case:
    problem: Path  # the problem folder
    args: list[str]
    evals: int  # trials per tuning
    run: Path  # the uninterrupted reference run


def make_case(tmp_path_factory, name: str, source: str, args: list[str], evals: int) -> Case:
    folder = tmp_path_factory.mktemp("problems") / name
    folder.mkdir()
    (folder / "skeleton.py").write_text(SKELETON)
    (folder / "problem.py").write_text(source)
    out = tmp_path_factory.mktemp("runs") / name
    evosearch("run", str(folder), "--out", str(out), *args)
    return Case(folder, args, evals, out)


@pytest.fixture(scope="module")
def smooth(tmp_path_factory) -> Case:
    return make_case(tmp_path_factory, "curve", PROBLEM, ARGS, TUNE_EVALS)


@pytest.fixture(scope="module")
def plateau(tmp_path_factory) -> Case:
    return make_case(tmp_path_factory, "steps", PLATEAU_PROBLEM, PLATEAU_ARGS, PLATEAU_EVALS)


# An LLM stand-in installed as pip would leave a plugin (a real model cannot be made to write given programs):
# five shapes, none a new best for long, each new to the run once, so --tune-llm tunes them one after another.
WRITER = '''
from evosearch.samplers.base import Sample, Sampler


class Writer(Sampler):
    name = "writer"  # llm = True: the base class's default
    edit_formats = ("full",)

    async def sample(self, prompt):
        k = prompt.seed % 5
        return Sample(text=f"def f(x):\\n    return x * x - x * {k} + x / {k + 1}\\n", model="writer")
'''


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Case:
    plugin = tmp_path_factory.mktemp("plugin")
    (plugin / "writer_sampler.py").write_text(WRITER)
    dist = plugin / "writer_sampler-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: writer-sampler\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[evosearch.samplers]\nwriter = writer_sampler:Writer\n")
    with pytest.MonkeyPatch.context() as env:  # the runs (subprocesses) find the plugin on their path
        env.setenv("PYTHONPATH", os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")]))
        # Scores in steps (the plateau problem): chains of new bests end, and the slot is free for the others.
        args = [*ARGS, "--sampler", "writer", "--commit-mode", "ordered", "--samples", "40"]
        yield make_case(tmp_path_factory, "written", PLATEAU_PROBLEM, args, TUNE_EVALS)


def new_best(recorded: dict[int, dict], e: int) -> bool:
    return e > 0 and recorded[e]["score"] is not None and recorded[e]["score"] > max(
        r["score"] for r in recorded.values() if r["id"] < e and r["score"] is not None)


def tunings(recorded: dict[int, dict]) -> dict[int, list[dict]]:
    """Trial rows per tuned elite."""
    by_elite: dict[int, list[dict]] = {}
    for r in recorded.values():
        if r["sampler"] == "tune":
            by_elite.setdefault(json.loads(r["parents"])[0], []).append(r)
    return by_elite


def test_a_tuned_child_is_a_normal_program_row(smooth):
    recorded = {r["id"]: r for r in rows(smooth.run)}
    trials = [r for r in recorded.values() if r["sampler"] == "tune"]
    assert trials, "no tuning happened"
    by_elite: dict[int, list[dict]] = {}
    for r in trials:
        (elite,) = json.loads(r["parents"])  # one parent: the tuned elite (lineage)
        by_elite.setdefault(elite, []).append(r)
        parent = recorded[elite]
        assert parent["sampler"] in ("mutate", "tune") and parent["status"] == "ok" and elite < r["id"]
        # Evaluated, hashed and committed like any child: score, both hashes, an archive outcome.
        assert r["status"] == "ok" and r["score"] is not None
        assert r["syntactic_hash"] and r["functional_hash"] and r["archive"] is not None
        assert r["island"] == parent["island"] and r["prompt_id"] is not None
        # Only the literals changed: the elite's literals and implicit coefficients (a coefficient on
        # each unweighted term of a sum), nothing outside the evolve block.
        check_frozen(parent["code"], r["code"])
        assert len(literals(r["code"])) == len(literals(exposed(parent["code"])))
        assert r["code"] != parent["code"]
    assert all(len(t) <= TUNE_EVALS for t in by_elite.values())
    # Each tuned elite was a new best when committed; a trial that set a new best was tuned again
    # (a chain), only once its own tuning had asked all its trials.
    assert all(new_best(recorded, e) for e in by_elite)
    chained = [e for e in by_elite if recorded[e]["sampler"] == "tune"]
    assert chained, "no trial that set a new best was tuned again"
    for e in chained:
        (source,) = json.loads(recorded[e]["parents"])
        assert min(r["id"] for r in by_elite[e]) > max(r["id"] for r in by_elite[source])
    # CMA-ES on a smooth score beats the elite it started from at least once.
    assert any(max(t["score"] for t in ts) > recorded[e]["score"] for e, ts in by_elite.items())
    # Samples (sampler calls) and evaluations are reported apart.
    summary = json.loads((smooth.run / "summary.json").read_text())
    assert summary["samples"] == 40
    assert summary["tuning"] == {"trials": len(trials), "tunings": len(by_elite)}
    assert summary["evaluations"] == 40 + len(trials)
    # ... and so does the report (evosearch report / dashboard).
    from evosearch.report import load_run
    run = load_run(smooth.run)["run"]
    assert (run["samples"], run["evaluations"], run["trials"]) == (40, 40 + len(trials), len(trials))
    assert run["state"] == "complete"


def test_a_stalled_search_tunes_the_best_untuned_program(plateau):
    recorded = {r["id"]: r for r in rows(plateau.run)}
    by_elite = tunings(recorded)
    first_trial = {e: min(r["id"] for r in ts) for e, ts in by_elite.items()}
    plateau = [e for e in by_elite if not new_best(recorded, e)]
    assert plateau, "no tuning on a plateau"
    for e in plateau:
        # A program a sampler wrote, first of its functional class, tuned once.
        assert recorded[e]["sampler"] in ("seed", "mutate") and recorded[e]["duplicate_of"] is None
        assert recorded[e]["status"] == "ok" and len(by_elite[e]) <= PLATEAU_EVALS
        # The best such program not tuned before: every rival committed before the stall was noticed
        # (ids below the first trial's, less the samples still in flight then) scores at most as well.
        tuned_before = {o for o in by_elite if first_trial[o] < first_trial[e]}
        rivals = [r["score"] for r in recorded.values() if r["status"] == "ok" and r["sampler"] != "tune"
                  and r["duplicate_of"] is None and r["id"] not in tuned_before and r["id"] < first_trial[e] - 3]
        assert recorded[e]["score"] >= max(rivals)
        # It waited for the stall: at least PATIENCE samples were asked before its first trial.
        assert sum(r["sampler"] != "tune" for r in recorded.values() if r["id"] < first_trial[e]) > PATIENCE
    # Without patience, a tuned elite is always a new best (the smooth run's rule).
    smooth = [e for e in by_elite if new_best(recorded, e)]
    assert smooth and len(plateau) + len(smooth) == len(by_elite)


def test_every_new_program_an_llm_wrote_is_tuned_best_first(written):
    recorded = {r["id"]: r for r in rows(written.run)}
    by_elite = tunings(recorded)
    novel = [r for r in recorded.values() if r["sampler"] == "writer" and r["status"] == "ok"
             and r["duplicate_of"] is None]
    assert len(novel) >= 3 and all(r["id"] in by_elite for r in novel)  # each new shape tuned, best or not
    assert any(not new_best(recorded, r["id"]) for r in novel)
    for e, trials in by_elite.items():
        assert recorded[e]["sampler"] in ("writer", "tune") and len(trials) <= written.evals
        assert all(len(literals(t["code"])) == len(literals(exposed(recorded[e]["code"]))) for t in trials)
    # Best first: of two LLM programs waiting together, the better one was tuned first.
    firsts = sorted((min(t["id"] for t in by_elite[r["id"]]), r) for r in novel)
    for (t1, a), (t2, b) in zip(firsts, firsts[1:]):
        if b["id"] < t1 - 3:  # b was committed (and so waiting) before a's tuning began
            assert a["score"] >= b["score"]


def test_llm_tunings_resume_exactly(written, tmp_path):
    kill_mid_tuning_and_resume(written, tmp_path,
                               after=lambda recorded: any(not new_best(recorded, e) for e in tunings(recorded)))


def test_same_seed_same_tuned_run(smooth, tmp_path):
    evosearch("run", str(smooth.problem), "--out", str(tmp_path / "again"), *ARGS)
    assert [tuple(r[k] for k in KEY) for r in rows(tmp_path / "again")] == \
        [tuple(r[k] for k in KEY) for r in rows(smooth.run)]


def test_sigkill_mid_tuning_then_resume_loses_and_repeats_no_evaluation(smooth, tmp_path):
    kill_mid_tuning_and_resume(smooth, tmp_path)


def test_plateau_tunings_resume_exactly(plateau, tmp_path):
    """Killed mid-tuning after a plateau tuning: the replay finds the same stall and the same targets."""
    kill_mid_tuning_and_resume(plateau, tmp_path,
                               after=lambda recorded: any(not new_best(recorded, e) for e in tunings(recorded)))


def kill_mid_tuning_and_resume(case: Case, tmp_path, after=lambda recorded: True):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "evosearch", "run", str(case.problem), "--out", str(out), *case.args]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    mid = False
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            now = rows(out)
        except sqlite3.OperationalError:
            now = []  # the database or its schema is not there yet
        trials = [r for r in now if r["sampler"] == "tune"]
        if trials and after({r["id"]: r for r in now}):
            last = [r for r in trials if r["parents"] == trials[-1]["parents"]]
            # Mid-tuning: some of the tuning's trials done, not all of them asked yet.
            if 2 <= sum(r["status"] != "pending" for r in last) and len(last) < case.evals:
                mid = True
                break
        time.sleep(0.02)
    assert proc.poll() is None and mid, "the run was not caught mid-tuning"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its sandbox workers
    proc.wait()
    before = rows(out)

    evosearch("run", "--resume", str(out), "--quiet")
    after_resume = {r["id"]: r for r in rows(out)}
    for r in before:  # nothing recorded before the kill is lost; what was evaluated stays as it was
        assert r["id"] in after_resume
        if r["status"] != "pending":
            assert tuple(after_resume[r["id"]][k] for k in KEY) == tuple(r[k] for k in KEY)
    # The resumed run is the uninterrupted one: every trial once, the same trials, in the same places.
    reference = rows(case.run)
    assert [tuple(after_resume[i][k] for k in KEY) for i in sorted(after_resume)] == \
        [tuple(r[k] for k in KEY) for r in reference]
    trial_codes = [(r["parents"], r["code"]) for r in after_resume.values() if r["sampler"] == "tune"]
    assert len(trial_codes) == len(set(trial_codes))


def test_tuning_in_async_commit_mode(smooth, tmp_path):
    """Async commits (the LLM samplers' default): trials are planned, answered and committed as there."""
    out = tmp_path / "async"
    evosearch("run", str(smooth.problem), "--out", str(out), "--commit-mode", "async", *ARGS)
    recorded = rows(out)
    trials = [r for r in recorded if r["sampler"] == "tune"]
    assert trials and all(r["commit_seq"] is not None for r in recorded)
    assert sum(r["sampler"] == "mutate" for r in recorded) == 40  # --samples counts sampler calls only
    per_elite: dict[str, int] = {}
    for r in trials:
        per_elite[r["parents"]] = per_elite.get(r["parents"], 0) + 1
    assert all(n <= TUNE_EVALS for n in per_elite.values())


class Writer:
    """A stand-in for a small LLM (a scripted sampler: a real model cannot be made to write a given
    program): by default it writes TSP's ``back - step`` once, the mix Gemma 3 270M wrote there with
    the wrong weight (a worse gap than nearest neighbour), then nearest neighbour again."""

    def __new__(cls, first: str = "back - step"):
        from evosearch.samplers.base import Sample, Sampler

        class Scripted(Sampler):
            name = "writer"  # llm = True: the base class's default

            def __init__(self):
                self.calls = 0

            async def sample(self, prompt):
                self.calls += 1
                body = first if self.calls == 1 else "-step"
                return Sample(text="def priority(current, start, unvisited, distances):\n"
                                   "    step = distances[current, unvisited]\n"
                                   "    back = distances[start, unvisited]\n"
                                   f"    return {body}\n", model="writer")
        return Scripted()


def tsp_run(tmp_path, writer=None, **knobs):
    import asyncio

    from evaluators.evaluator import Evaluator
    from evaluators.pool import WorkerPool
    from evosearch.config import make_config
    from evosearch.engine import Engine
    from evosearch.problem import load_problem
    from evosearch.store import Store

    options = {"train_instances": 8}
    config = make_config({"problem": "tsp", "problem_options": options, "workers": 1, "concurrency": 1,
                          "islands": 1, "samples": 4, "tune_evals": 18, "quiet": True, **knobs})
    problem = load_problem("tsp", None, 0, options)
    tmp_path.mkdir(exist_ok=True)
    store = Store(tmp_path / "evosearch.db")

    async def go():
        async with WorkerPool(problem.folder, None, 0, options, workers=1, hide=[str(tmp_path)]) as pool:
            evaluator = Evaluator(pool, timeout_s=None, memory_mb=None)
            await Engine(config, problem, store, writer or Writer(), evaluator).run()
    asyncio.run(go())
    db = sqlite3.connect(tmp_path / "evosearch.db")
    db.row_factory = sqlite3.Row
    return {r["id"]: dict(r) for r in db.execute("SELECT * FROM programs")}


def test_a_new_program_an_llm_wrote_is_tuned_though_not_a_new_best(tmp_path):
    """``back - step`` scores below the seed, so the new-best rule would never tune it; as an LLM's new
    program it is tuned, its two terms weighed (implicit coefficients), and a weighting beats the seed."""
    recorded = tsp_run(tmp_path)
    mix = next(r for r in recorded.values() if r["sampler"] == "writer" and "back - step" in r["code"])
    seed = recorded[0]
    assert mix["status"] == "ok" and mix["duplicate_of"] is None and mix["score"] < seed["score"]
    trials = [r for r in recorded.values() if r["sampler"] == "tune" and json.loads(r["parents"]) == [mix["id"]]]
    assert len(trials) == 18
    for r in trials:
        assert [p.function for p in literals(r["code"])] == ["priority", "priority"]  # back and step weighed
        check_frozen(seed["code"], r["code"])
    assert max(r["score"] for r in trials if r["status"] == "ok") > seed["score"]
    # The same run with --no-tune-llm: nothing is tuned (the mix is no new best; the seed has no literal).
    off = tsp_run(tmp_path / "off", tune_llm=False)
    assert not any(r["sampler"] == "tune" for r in off.values())


def test_an_llm_rewrite_of_the_seed_is_not_tuned(tmp_path):
    """``-0.5 * step`` has a literal, but it is nearest neighbour again (the seed's functional class): no
    new program, so its trials would only tune the seed's behaviour."""
    recorded = tsp_run(tmp_path, writer=Writer(first="-0.5 * step"), samples=2)
    rewrite = next(r for r in recorded.values() if r["sampler"] == "writer" and "-0.5 * step" in r["code"])
    assert rewrite["status"] == "ok" and rewrite["functional_hash"] == recorded[0]["functional_hash"]
    assert not any(r["sampler"] == "tune" for r in recorded.values())

"""`evosearch new-problem`: the written folder loads, passes its own tests and runs a search."""
import json
import subprocess
import sys

import pytest

from evosearch.problem import ProblemError, load_problem
from evosearch.scaffold import new_problem


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return new_problem("curve_fit", tmp_path_factory.mktemp("problems"))


def test_writes_a_complete_problem_folder(folder):
    assert folder.name == "curve_fit"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "problem.py", "skeleton.py", "test_problem.py"]
    problem = load_problem(folder)
    assert problem.name == "curve_fit" and type(problem).__name__ == "CurveFitProblem"
    assert [d.name for d in problem.descriptors] == ["roughness", "bias"]
    assert {split: len(problem.instances(split)) for split in ("probe", "train", "test")} == \
        {"probe": 1, "train": 2, "test": 1}
    assert "# EVOLVE-BLOCK-START" in problem.skeleton
    assert "evosearch run curve_fit" in (folder / "README.md").read_text()


def test_the_seed_is_a_straight_line_with_zero_roughness(folder):
    problem = load_problem(folder)
    ns: dict = {}
    exec(problem.skeleton, ns)
    instance = problem.instances("train")["train_0"]
    metrics = problem.score(instance, problem.output(ns, instance))
    assert abs(metrics["roughness"]) < 1e-9 and metrics["score"] < 0


@pytest.mark.parametrize("name", ["1st", "my-problem", "class", "", "a b"])
def test_rejects_names_that_are_not_identifiers(tmp_path, name):
    with pytest.raises(ProblemError, match="not a valid Python identifier") as error:
        new_problem(name, tmp_path)
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_rejects_an_existing_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ProblemError, match="already exists"):
        new_problem("taken", tmp_path)
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


def test_the_folders_own_tests_pass(folder):
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
                          cwd=folder.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "8 passed" in done.stdout


def test_a_mutation_search_runs_on_it(folder, tmp_path):
    done = subprocess.run([sys.executable, "-m", "evosearch", "run", str(folder), "--sampler", "mutate",
                           "--samples", "10", "--quiet", "--out", str(tmp_path / "run")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # outcomes cover every evaluated program: the 10 samples and the constant-tuning trials (on by default)
    assert summary["samples"] == 10 and sum(summary["outcomes"].values()) == 10 + summary["tuning"]["trials"]
    assert summary["outcomes"].get("ok", 0) > 0
    assert summary["best"]["train"] >= summary["seed"]["train"]
    assert (tmp_path / "run" / "best.py").is_file()

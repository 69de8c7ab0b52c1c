"""``evosearch new-problem NAME``: write a small problem folder that runs as it is.

The template is curve fitting (symbolic regression in miniature): evolve
``curve(x)`` to match noisy samples of a hidden function. Every part a problem
needs is there and commented: the skeleton with its EVOLVE-BLOCK, the trusted
harness ``episode`` (interactive: it asks the candidate for ``curve(x)`` and never
sends it the targets), the trusted ``score``, descriptors with fixed ranges, a probe
split, seeded instance generators, a README and a pytest file. The user edits
it into their own problem.
"""
from __future__ import annotations

import keyword
from pathlib import Path

from .problem import ProblemError

SKELETON = '''\
"""{name}: evolve `curve(x)` to fit noisy samples of an unknown function."""
import numpy as np


# Only the code between the markers evolves; imports and helpers outside stay as written.
# EVOLVE-BLOCK-START
def curve(x: np.ndarray) -> np.ndarray:
    """Returns the predicted y for every point of `x` (a 1-d array in [-1.5, 1.5])."""
    return 1.0 * x
# EVOLVE-BLOCK-END
'''

PROBLEM = '''\
"""{name}: fit a curve to points (a template written by `evosearch new-problem`).

Evolve ``curve(x)``; the score is minus the mean squared error against noisy
samples of a hidden target. Edit the generator, ``episode`` and ``score`` into your
own problem. Both run in trusted code: ``episode`` owns the instance and asks the
candidate's process (a sandbox) only for decisions, sending it only what it may see;
``score`` believes nothing and checks everything.
"""
from __future__ import annotations

import numpy as np

from evosearch.problem import Descriptor, InvalidOutput, Problem


def target(x: np.ndarray) -> np.ndarray:
    """The function evolution should rediscover."""
    return 0.5 * x ** 3 - x + 0.3 * np.sin(3 * x)


def samples(count: int, low: float, high: float, noise: float, seed: int) -> dict:
    """``count`` evenly spaced points in [low, high] with Gaussian noise on y; deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    x = np.linspace(low, high, count)
    return {{"x": x.tolist(), "y": (target(x) + rng.normal(0, noise, count)).tolist()}}


class {cls}(Problem):
    name = "{name}"
    description = "fit a curve to noisy points: evolve curve(x); score = -mean squared error"
    # MAP-Elites axes, each with a fixed range (values outside are clipped); the archive keeps
    # the best program per cell, so different kinds of fits survive side by side.
    descriptors = (
        # Mean |second difference| of the predictions over the spread of y: 0 for a straight line.
        Descriptor("roughness", 0.0, 0.2, 10),
        # Mean residual over the spread of y: systematic over- (> 0) or under-shoot (< 0).
        Descriptor("bias", -0.5, 0.5, 10),
    )
    timeout_s = 10.0  # wall-clock seconds for one split of one candidate
    memory_mb = 1024

    def __init__(self, data_dir=None, seed=0, points=64, noise=0.05):
        # Keyword arguments are problem options: --problem-options '{{points: 128}}'.
        super().__init__(data_dir, seed)
        if not isinstance(points, int) or points < 3:
            raise ValueError(f"points must be an integer of at least 3, not {{points!r}}")
        self.points, self.noise = points, float(noise)

    def instances(self, split):
        # "probe": a small fixed grid; the outputs there are hashed, and candidates with equal
        # outputs count as one (functional duplicates are not evaluated twice).
        if split == "probe":
            return {{"grid": {{"x": np.linspace(-1.5, 1.5, 13).tolist()}}}}
        # "train" is what evolution optimizes; "test" is held out: here, the same curve further
        # out (extrapolation). Distinct seeds per split; self.data_dir is where --data-dir points.
        if split == "train":
            return {{f"train_{{i}}": samples(self.points, -1.0, 1.0, self.noise, 1000 * self.seed + i)
                    for i in range(2)}}
        return {{"test_0": samples(self.points, -1.5, 1.5, self.noise, 1000 * self.seed + 500)}}

    def episode(self, instance, candidate):
        # Trusted side: runs in the evaluation worker, not next to the candidate. Each
        # candidate.<function>(args) sends only its arguments to the candidate's sandboxed
        # process (here x, never y) and returns its answer as plain data (numbers, lists, dicts,
        # numpy arrays); .map([args, ...]) asks several independent calls in one round trip.
        # Keep budgets, counters and hidden data here: the candidate can read anything in its
        # own process, nothing in this one. Return what ``score`` checks.
        x = np.asarray(instance["x"], dtype=float)
        return np.asarray(candidate.curve(x), dtype=float).reshape(-1).tolist()

    def score(self, instance, output):
        # Trusted side: believe nothing; check the output, then measure it.
        y = np.asarray(instance["y"], dtype=float)
        if not isinstance(output, list) or len(output) != len(y):
            raise InvalidOutput(f"expected {{len(y)}} predictions")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in output):
            raise InvalidOutput("predictions must be numbers")
        pred = np.asarray(output, dtype=float)
        if not np.isfinite(pred).all():
            raise InvalidOutput("predictions must be finite")
        spread = float(y.std()) or 1.0
        mse = float(np.mean((pred - y) ** 2))
        # "score" (higher is better) plus each descriptor; the default aggregate averages instances.
        return {{"score": -mse, "mse": mse,
                "roughness": float(np.abs(np.diff(pred, 2)).mean() / spread),
                "bias": float((pred - y).mean() / spread)}}
'''

TEST = '''\
"""Tests of the {name} problem: run `pytest` in this folder."""
import asyncio
from pathlib import Path

import pytest

from evaluators.hashing import functional_hash
from evaluators.pool import WorkerPool
from evosearch.problem import InvalidOutput, load_problem

FOLDER = Path(__file__).resolve().parent


def program(code):
    namespace = {{}}
    exec(compile(code, "<program>", "exec"), namespace)
    return namespace


def evaluate(problem, code, split):
    # In this process, for trusted code only (the tests' own programs); candidates go through the sandbox.
    ns = program(code)
    per_instance = {{n: problem.score(i, problem.output(ns, i)) for n, i in problem.instances(split).items()}}
    return problem.aggregate(per_instance)


def test_the_seed_scores_on_every_split():
    problem = load_problem(FOLDER)
    for split in ("train", "test"):
        score = evaluate(problem, problem.skeleton, split)
        assert score.score < 0 and set(score.descriptors) == {{"roughness", "bias"}}
    # The true curve must beat the seed (a line): the score measures what it should.
    truth = problem.skeleton.replace("return 1.0 * x", "return 0.5 * x ** 3 - x + 0.3 * np.sin(3 * x)")
    assert evaluate(problem, truth, "train").score > evaluate(problem, problem.skeleton, "train").score


def test_instances_are_deterministic_for_a_seed():
    assert load_problem(FOLDER, seed=1).instances("train") == load_problem(FOLDER, seed=1).instances("train")
    assert load_problem(FOLDER, seed=1).instances("train") != load_problem(FOLDER, seed=2).instances("train")


@pytest.mark.parametrize("output, reason", [
    ("nope", "expected"), ([0.0], "expected"), ([None] * 4, "numbers"), ([float("nan")] * 4, "finite"),
])
def test_score_rejects_bad_outputs(output, reason):
    with pytest.raises(InvalidOutput, match=reason):
        load_problem(FOLDER).score({{"x": [0, 1, 2, 3], "y": [0, 1, 2, 3]}}, output)


def test_probe_tells_different_curves_apart():
    problem = load_problem(FOLDER)
    probes = problem.instances("probe")

    def hash_of(code):
        ns = program(code)
        return functional_hash({{n: problem.output(ns, i, "probe") for n, i in probes.items()}})

    seed = problem.skeleton
    assert hash_of(seed.replace("1.0 * x", "x * 1.0")) == hash_of(seed)
    assert hash_of(seed.replace("1.0 * x", "2.0 * x")) != hash_of(seed)


PEEK = """
def curve(x):
    import gc
    for obj in gc.get_objects():  # a candidate looking for the targets it must not see
        if isinstance(obj, dict) and isinstance(obj.get("y"), list) and len(obj["y"]) == len(x):
            return np.asarray(obj["y"])
    return 1.0 * x
"""


def test_the_seed_runs_in_the_sandbox_and_the_targets_stay_out_of_reach():
    async def main(codes):
        pool = WorkerPool(FOLDER, workers=1)
        await pool.start()
        try:
            return [await pool.run(code, "train") for code in codes]
        finally:
            await pool.close()

    seed = load_problem(FOLDER).skeleton
    peek = seed[:seed.index("def curve")] + PEEK.lstrip() + seed[seed.index("# EVOLVE-BLOCK-END"):]
    honest, peeking = asyncio.run(main([seed, peek]))
    assert honest["status"] == "ok", honest["reason"]
    assert peeking["score"] == honest["score"]  # it found nothing, so it is the seed
'''

README = '''\
# {name}

A problem folder for evosearch, written by `evosearch new-problem {name}`: evolve `curve(x)` to fit noisy samples
of a hidden function (score = minus the mean squared error). Edit it into your own problem.

```bash
evosearch run {name} --sampler mutate --samples 100     # LLM-free search, from the folder's parent
evosearch run {name}                                    # with the embedded model
pytest {name}                                           # the folder's own tests
```

| file | what |
|---|---|
| `skeleton.py` | the seed program; code between `# EVOLVE-BLOCK-START` and `# EVOLVE-BLOCK-END` evolves |
| `problem.py` | one `Problem` subclass: instances per split (`probe`, `train`, `test`), `episode` (trusted: \
asks the sandboxed candidate for `curve(x)`, never sends it y), `score` (trusted), descriptors |
| `test_problem.py` | the seed scores, instances are seeded, bad outputs are rejected, probes separate programs, \
the sandbox runs it and a candidate scanning its process for the targets finds nothing |

Descriptors (MAP-Elites axes, fixed ranges): `roughness` in [0, 0.2] (mean absolute second difference of the
predictions over the spread of y) and `bias` in [-0.5, 0.5] (mean residual over the spread of y).
Options: `--problem-options '{{points: 128, noise: 0.1}}'`.
'''


def _class_name(name: str) -> str:
    words = [w for w in name.split("_") if w]
    return "".join(w[:1].upper() + w[1:] for w in words) + "Problem"


def new_problem(name: str, parent_dir: Path) -> Path:
    """Write the template problem folder ``parent_dir / name`` and return its path.

    Raises ProblemError (one line) if ``name`` is not a Python identifier or the folder exists."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ProblemError(f"problem name {name!r} is not a valid Python identifier (letters, digits, _)")
    parent = Path(parent_dir)
    folder = parent / name
    if folder.exists():
        raise ProblemError(f"{folder} already exists")
    if parent.exists() and not parent.is_dir():
        raise ProblemError(f"{parent} is not a directory")
    folder.mkdir(parents=True)
    values = {"name": name, "cls": _class_name(name)}
    # No __init__.py: pytest then imports test_problem.py by its path, and a folder named like a
    # standard module (say "random") cannot shadow it.
    for filename, template in (("skeleton.py", SKELETON), ("problem.py", PROBLEM), ("test_problem.py", TEST),
                               ("README.md", README)):
        (folder / filename).write_text(template.format(**values))
    return folder

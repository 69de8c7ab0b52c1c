"""The problem API: what a user writes to state a problem.

A problem is a folder holding two files:

* ``skeleton.py``: the seed program. Code between ``# EVOLVE-BLOCK-START`` and
  ``# EVOLVE-BLOCK-END`` is what evolution may change; every top-level function
  there is an evolvable function.
* ``problem.py``: one subclass of :class:`Problem`: instance sets per split,
  the sandbox-side ``run`` and the trusted ``score`` / ``aggregate``.

Trust boundary: ``run`` executes inside the sandbox next to the candidate and
must return plain data (JSON types); ``score`` and ``aggregate`` run in trusted
code on the instance the trusted side holds and on that plain data only.
Nothing here imports the engine, so a problem can be loaded by a bare worker.
"""
from __future__ import annotations

import abc
import importlib.metadata
import importlib.util
import inspect
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "problems"
ENTRY_POINT_GROUP = "evosearch.problems"
SPLITS = ("probe", "train", "test")


class ProblemError(Exception):
    """A problem cannot be found or is malformed (a user mistake: one line)."""


class InvalidOutput(Exception):
    """The candidate's output breaks the problem's rules; the message is recorded."""


@dataclass(frozen=True)
class Descriptor:
    """A MAP-Elites behaviour axis with a fixed range (values outside are clipped)."""

    name: str
    low: float
    high: float
    bins: int = 10


@dataclass
class Score:
    """Trusted verdict on one program over one split."""

    score: float  # higher is better
    descriptors: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class Problem(abc.ABC):
    """Base class of every problem; subclass it in ``problem.py``.

    Subclasses set ``name``, ``description`` and ``descriptors`` and implement
    ``instances``, ``run`` and ``score``; ``aggregate`` and ``probe`` have
    defaults. Construction must be cheap and deterministic for a given
    ``(data_dir, seed)``: every evaluator worker builds its own copy.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    descriptors: ClassVar[tuple[Descriptor, ...]] = ()
    timeout_s: ClassVar[float] = 10.0  # wall-clock deadline of one evaluation
    memory_mb: ClassVar[int] = 1024  # address-space limit of the candidate process

    def __init__(self, data_dir: str | Path | None = None, seed: int = 0):
        self.data_dir = Path(data_dir) if data_dir else None
        self.seed = seed

    # Set by load_problem: the folder this problem was loaded from.
    folder: Path

    @property
    def skeleton(self) -> str:
        return (self.folder / "skeleton.py").read_text()

    @abc.abstractmethod
    def instances(self, split: str) -> dict[str, Any]:
        """Instances by name for split "probe" (small, for functional hashing),
        "train" (what evolution optimizes) or "test" (held out, reported)."""

    @staticmethod
    @abc.abstractmethod
    def run(program: dict[str, Any], instance: Any) -> Any:
        """Sandbox side: call the candidate's functions (``program`` is the
        namespace of the executed candidate) on one instance; return JSON data."""

    def probe(self, program: dict[str, Any], instance: Any) -> Any:
        """Sandbox side: outputs on a probe instance, hashed for dedup."""
        return self.run(program, instance)

    @abc.abstractmethod
    def score(self, instance: Any, output: Any) -> dict[str, float]:
        """Trusted: check ``output`` (raise InvalidOutput) and measure it.
        Returns per-instance metrics; must include "score" (higher is better)."""

    def aggregate(self, per_instance: dict[str, dict[str, float]]) -> Score:
        """Trusted: combine per-instance metrics; default is the mean of each."""
        keys = next(iter(per_instance.values())).keys()
        missing = [d.name for d in self.descriptors if d.name not in keys]
        if missing:  # a scorer bug, not a bad candidate: name the key rather than score it nan
            raise ValueError(f"descriptor '{missing[0]}' is missing from score()'s metrics (it returned "
                             f"{', '.join(sorted(keys))})")
        means = {k: sum(m[k] for m in per_instance.values()) / len(per_instance) for k in keys}
        score = means.pop("score")
        desc = {d.name: means[d.name] for d in self.descriptors}
        return Score(score=score, descriptors=desc, metrics=means)


def evaluate_trusted(problem: Problem, code: str, split: str) -> tuple[Score, dict[str, dict[str, float]]]:
    """Execute ``code`` in this process and score it over ``split``, as a sandbox worker does.
    Only for code you trust (baselines, tests): candidates always go through the evaluators."""
    namespace: dict[str, Any] = {}
    exec(compile(code, "<program>", "exec"), namespace)
    per_instance = {name: problem.score(inst, problem.run(namespace, inst))
                    for name, inst in problem.instances(split).items()}
    return problem.aggregate(per_instance), per_instance


def _import_folder(folder: Path) -> type[Problem]:
    for part in ("problem.py", "skeleton.py"):
        if not (folder / part).is_file():
            raise ProblemError(f"problem folder {folder} has no {part}")
    mod_name = f"evosearch_problem_{abs(hash(str(folder)))}"
    if mod_name in sys.modules:
        module = sys.modules[mod_name]
    else:
        spec = importlib.util.spec_from_file_location(mod_name, folder / "problem.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # a user's broken problem.py: name it in one line
            del sys.modules[mod_name]
            raise ProblemError(f"{folder / 'problem.py'} failed to import: {type(e).__name__}: {e}") from e
    classes = [c for c in vars(module).values()
               if inspect.isclass(c) and issubclass(c, Problem) and c is not Problem
               and c.__module__ == module.__name__]
    if len(classes) != 1:
        raise ProblemError(f"{folder / 'problem.py'} must define exactly one Problem subclass, found {len(classes)}")
    return classes[0]


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def resolve_folder(ref: str | Path) -> Path:
    """A problem reference (folder path, built-in name, or entry-point name) -> its folder."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path.resolve()
    if (BUILTIN_DIR / str(ref) / "problem.py").is_file():
        return BUILTIN_DIR / str(ref)
    eps = _entry_points()
    if str(ref) in eps:
        target = eps[str(ref)].load()  # a Problem subclass or a module inside the folder
        source = inspect.getfile(target)
        return Path(source).resolve().parent
    raise ProblemError(f"unknown problem '{ref}' (not a folder, built-in or installed problem; "
                       f"see `evosearch problems`)")


def load_problem(ref: str | Path, data_dir: str | Path | None = None, seed: int = 0,
                 options: dict[str, Any] | None = None) -> Problem:
    """Build a problem; ``options`` are keyword arguments of its constructor."""
    folder = resolve_folder(ref)
    cls = _import_folder(folder)
    try:
        problem = cls(data_dir=data_dir, seed=seed, **(options or {}))
    except (TypeError, ValueError) as e:
        raise ProblemError(f"problem '{ref}': bad option: {e}") from e
    problem.folder = folder
    if not problem.name:
        problem.name = folder.name
    return problem


def check_problem(problem: Problem) -> None:
    """ProblemError naming the first mistake in the descriptors or the skeleton: what a search needs, checked
    before a run starts (a sandbox worker loads problems without it: it runs whole programs)."""
    from .program import EditError, evolvable_functions  # pure text/AST code, no engine

    names = [d.name for d in problem.descriptors]
    if len(set(names)) != len(names):
        raise ProblemError(f"problem '{problem.name}': descriptor names repeat: {', '.join(names)}")
    for d in problem.descriptors:
        if not isinstance(d, Descriptor):
            continue  # other axis kinds (islands.Categorical) check themselves
        if not (math.isfinite(d.low) and math.isfinite(d.high) and d.low < d.high):
            raise ProblemError(f"problem '{problem.name}': descriptor '{d.name}' needs low < high, "
                               f"got low {d.low}, high {d.high}")
        if isinstance(d.bins, bool) or int(d.bins) != d.bins or d.bins < 1:
            raise ProblemError(f"problem '{problem.name}': descriptor '{d.name}' needs bins >= 1, got {d.bins}")
    skeleton = problem.folder / "skeleton.py"
    try:
        functions = evolvable_functions(problem.skeleton)
    except SyntaxError as e:
        raise ProblemError(f"{skeleton}: line {e.lineno}: {e.msg}") from None
    except EditError as e:
        raise ProblemError(f"{skeleton}: {e} (mark the code to evolve with lines "
                           f"'# EVOLVE-BLOCK-START' and '# EVOLVE-BLOCK-END')") from None
    if not functions:
        raise ProblemError(f"{skeleton}: no top-level function between the EVOLVE-BLOCK markers to evolve")


def available_problems() -> dict[str, str]:
    """Name -> one-line description of built-in and installed problems."""
    found: dict[str, str] = {}
    refs = [p.name for p in sorted(BUILTIN_DIR.iterdir()) if (p / "problem.py").is_file()]
    refs += sorted(_entry_points())
    for ref in refs:
        try:
            cls = _import_folder(resolve_folder(ref))
            found.setdefault(ref, cls.description)
        except ProblemError as e:
            found.setdefault(ref, f"(broken: {e})")
    return found

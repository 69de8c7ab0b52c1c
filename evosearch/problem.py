"""The problem API: what a user writes to state a problem.

A problem is a folder holding two files:

* ``skeleton.py``: the seed program. Code between ``# EVOLVE-BLOCK-START`` and
  ``# EVOLVE-BLOCK-END`` is what evolution may change; every top-level function
  there is an evolvable function.
* ``problem.py``: one subclass of :class:`Problem`: instance sets per split,
  the harness in one of two forms, and the trusted ``score`` / ``aggregate``.

The two forms of the harness (define exactly one):

* ``episode(instance, candidate)`` -- **interactive, the default choice.** Runs on the
  trusted side and owns the episode: it keeps the instance, the state, budgets and
  counters, and asks the candidate for decisions (``candidate.priority(item, bins)``),
  getting back plain data. The candidate's process holds only its program and the
  arguments it was sent, so no frame walking, ``gc`` scan or code patching there can
  see future inputs, lift a budget or change a counter. Use it whenever the rules say
  what the candidate may see or how often it may be asked (online order, node budgets,
  training steps, held-out targets).
* ``run(program, instance)`` -- **construction.** Runs inside the sandbox next to the
  candidate, which can read and change everything there, including the whole
  instance. Use it only when the candidate legitimately computes the whole output
  from the whole instance (e.g. a circle packing from ``n``) and ``score`` checks
  everything that matters.

Either way ``score`` and ``aggregate`` run in trusted code on the instance the trusted
side holds and on the harness's plain-data output.
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
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from evaluators.episode import Candidate

# Part of this module's API, from evaluators.episode (which loads numpy): imported when first used, so
# the CLI can check a problem name before anything heavy loads.
_EPISODE_API = ("Candidate", "CandidateFailed", "Frozen", "local_candidate")


def __getattr__(name: str) -> Any:
    if name in _EPISODE_API:
        import evaluators.episode
        return getattr(evaluators.episode, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    ``instances``, ``score`` and one harness: ``episode`` (interactive, trusted) or
    ``run`` (construction, sandboxed); ``aggregate`` and the probes have defaults.
    Construction must be cheap and deterministic for a given ``(data_dir, seed)``:
    every evaluator worker builds its own copy.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    descriptors: ClassVar[tuple[Descriptor, ...]] = ()
    timeout_s: ClassVar[float] = 10.0  # wall-clock deadline of one evaluation (see timeout_for)
    # True: instances("valid") gives a validation split, drawn as the held-out one is but never reported. The run
    # then reports the best on it of its last training bests (--validation-picks), not the training best itself:
    # a search that fits its training instances (constant tuning does) stops being rewarded for it.
    validation: ClassVar[bool] = False
    memory_mb: ClassVar[int] = 1024  # address-space limit of the candidate process
    # Interactive form: modules the candidate's process imports before it drops privileges
    # (e.g. the classes of what an episode sends it, if the candidate's uid cannot read them).
    preload: ClassVar[tuple[str, ...]] = ()

    def __init__(self, data_dir: str | Path | None = None, seed: int = 0):
        self.data_dir = Path(data_dir) if data_dir else None
        self.seed = seed

    # Set by load_problem: the folder this problem was loaded from.
    folder: Path

    @property
    def skeleton(self) -> str:
        return (self.folder / "skeleton.py").read_text()

    def timeout_for(self, split: str) -> float:
        """The deadline of one evaluation on ``split``; override when splits differ in size."""
        return self.timeout_s

    @abc.abstractmethod
    def instances(self, split: str) -> dict[str, Any]:
        """Instances by name for split "probe" (small, for functional hashing),
        "train" (what evolution optimizes), "test" (held out, reported) and, where
        ``validation`` is set, "valid" (picks the reported program among the training bests)."""

    # ------------------------------------------------------------------ interactive form (trusted)

    def episode(self, instance: Any, candidate: Candidate) -> Any:
        """Trusted side: play one instance, asking ``candidate.<function>(*args)`` for each
        decision (``candidate.<function>.map([args, ...])`` asks several independent ones in one
        round trip); return the output for ``score`` (any data). Send only what the candidate
        may see. A failure of the candidate ends the episode by itself; raise InvalidOutput
        (or any exception) to reject an answer."""
        raise NotImplementedError

    def probe_episode(self, instance: Any, candidate: Candidate) -> Any:
        """Trusted side: outputs on a probe instance, hashed for dedup (JSON data)."""
        return self.episode(instance, candidate)

    # ------------------------------------------------------------------ construction form (sandboxed)

    def run(self, program: dict[str, Any], instance: Any) -> Any:
        """Sandbox side: call the candidate's functions (``program`` is the namespace of the
        executed candidate) on one instance; return JSON data. The candidate can read and
        change anything here: enforce no rule in it (use ``episode``). Define it as a static
        method. (On an interactive problem this plays the episode in this process, for trusted
        code only, like ``output``.)"""
        if self.interactive():
            return self.output(program, instance)
        raise NotImplementedError(f"{type(self).__name__} defines neither episode nor run")

    def probe(self, program: dict[str, Any], instance: Any) -> Any:
        """Sandbox side: outputs on a probe instance, hashed for dedup."""
        if self.interactive():
            return self.output(program, instance, "probe")
        return self.run(program, instance)

    @classmethod
    def interactive(cls) -> bool:
        """True for the interactive form (``episode`` defined), False for construction (``run``)."""
        return cls.episode is not Problem.episode

    def output(self, program: dict[str, Any] | str, instance: Any, split: str = "train") -> Any:
        """The harness's output for a *trusted* program (a namespace or source) in this process,
        in either form: for baselines and tests. Candidates go through the evaluators."""
        if self.interactive():
            from evaluators.episode import local_candidate
            candidate = local_candidate(program)
            return (self.probe_episode if split == "probe" else self.episode)(instance, candidate)
        if isinstance(program, str):
            namespace: dict[str, Any] = {}
            exec(compile(program, "<program>", "exec"), namespace)
            program = namespace
        return (self.probe if split == "probe" else self.run)(program, instance)

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
    per_instance = {name: problem.score(inst, problem.output(namespace, inst, split))
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
    cls = classes[0]
    if cls.interactive() == (cls.run is not Problem.run):
        raise ProblemError(f"{folder / 'problem.py'}: {cls.__name__} must define exactly one harness: "
                           "episode(instance, candidate) (interactive) or run(program, instance) (construction)")
    return cls


def problem_class(ref: str | Path) -> type[Problem]:
    """The Problem subclass of a reference, imported but not built (no instance is read)."""
    return _import_folder(resolve_folder(ref))


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

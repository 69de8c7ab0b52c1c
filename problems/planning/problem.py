"""Classical planning with evolved heuristics, after Correa, Pereira and Seipp (2025),
"Classical Planning with LLM-Generated Heuristics: Challenging the State of the Art with Python Code".

Evolve ``heuristic(task) -> h``: built once per grounded task, ``h(state)`` is called
on the states that pyperplan's greedy best-first search generates. Tasks are the easy
tasks of one IPC 2023 learning-track domain (problem option ``domain``): evolution sees
``train_tasks`` of its training tasks, spread evenly from smallest to largest; the
held-out split is its 30 testing tasks of level ``test_level`` ("easy", "medium" or "hard", when the
data holds them), each split with its own deadline (``task_timeout_s`` per task, times 4 for
medium and 16 for hard tasks). Each search may call h ``budget`` times
(a count, not seconds, so the outcome is the same on every machine).

The harness is interactive: the search, its budget and its count run on the trusted
side, which sends the candidate's process a copy of the task once and then each state
to evaluate; the plan is still replayed on the trusted copy of the task before it counts.
Score = tasks solved, minus half the mean fraction of the budget used (unsolved tasks use all of it): ties in coverage go to
the heuristic that searched less, and one more solved task always outweighs them.
"""
from __future__ import annotations

import json
import math

import numpy as np

from evosearch.problem import Descriptor, Frozen, InvalidOutput, Problem, ProblemError, Score
from problems.planning import tasks
from problems.planning.search import gbfs, heuristic_value

BUDGET = 2000  # heuristic calls per task
# Seconds per task an evaluation may take (the deadline of a split = this x its tasks x LEVEL_SCALE):
# 12 s x 10 training tasks is the 120 s that pyperplan's hFF needs at most on a training split here.
TASK_TIMEOUT_S = 12.0
LEVEL_SCALE = {"easy": 1.0, "medium": 4.0, "hard": 16.0}  # bigger tasks: slower grounding, slower h
TRAIN_TASKS = 10
PROBE_TASKS = (10, 30, 50)  # 1-based positions among the training tasks whose states fingerprint a heuristic
PROBE_STATES = {"breadth": 100, "walks": 6, "walk_length": 30}
# Plan length over the number of goal atoms false at the start, averaged over solved training
# tasks: how much preparation each goal needs on the heuristic's plans (measured 1.5 to 5.0 for
# blind, goal count and hFF over the nine domains; longer, detouring plans score higher). A
# program that solves nothing sits at the top of the range.
STEPS_PER_GOAL = Descriptor("steps_per_goal", 0.0, 8.0, 16)


def _evenly(names: list[str], count: int) -> list[str]:
    if count >= len(names):
        return names
    return [names[round(i * (len(names) - 1) / (count - 1))] for i in range(count)] if count > 1 else names[:1]


class Planning(Problem):
    name = "planning"
    description = ("classical planning: evolve heuristic(task) -> h(state) for greedy best-first search on "
                   "IPC 2023 tasks; score = training tasks solved within a budget of h calls")
    descriptors = (STEPS_PER_GOAL,)
    timeout_s = 120.0  # pyperplan's hFF needs 1-45 s of CPU for a training split (159 s on transport)
    memory_mb = 2048
    preload = ("pyperplan.task",)  # the task's classes, unpickled by the candidate's process

    def __init__(self, data_dir=None, seed=0, domain="blocksworld", budget=BUDGET, train_tasks=TRAIN_TASKS,
                 test_tasks=None, test_level="easy", task_timeout_s=TASK_TIMEOUT_S, test_budget=None):
        super().__init__(data_dir, seed)
        if test_level not in tasks.LEVELS:
            raise ValueError(f"test_level must be one of {', '.join(tasks.LEVELS)}, not {test_level!r}")
        if not isinstance(task_timeout_s, (int, float)) or isinstance(task_timeout_s, bool) or task_timeout_s <= 0:
            raise ValueError(f"task_timeout_s must be a positive number of seconds, not {task_timeout_s!r}")
        if domain not in tasks.DOMAINS:
            raise ValueError(f"domain must be one of {', '.join(tasks.DOMAINS)}, not {domain!r}")
        if type(budget) is not int or budget < 1:
            raise ValueError(f"budget must be a positive number of heuristic calls, not {budget!r}")
        if test_budget is not None and (type(test_budget) is not int or test_budget < 1):
            raise ValueError(f"test_budget must be a positive number of heuristic calls or null, not {test_budget!r}")
        if type(train_tasks) is not int or train_tasks < 1:
            raise ValueError(f"train_tasks must be a positive integer, not {train_tasks!r}")
        if test_tasks is not None and (type(test_tasks) is not int or test_tasks < 1):
            raise ValueError(f"test_tasks must be a positive integer or null (all), not {test_tasks!r}")
        if self.data_dir is None:
            raise ProblemError("the planning problem needs the IPC 2023 tasks: pass --data-dir "
                               f"(the folder holding {tasks.IPC_FOLDER})")
        self.root = self.data_dir / tasks.IPC_FOLDER
        if not (self.root / domain / "domain.pddl").is_file():
            raise ProblemError(f"no IPC 2023 domain {domain!r} under {self.root} (wrong --data-dir?)")
        if not tasks.task_files(self.root, domain, "testing", test_level):
            raise ProblemError(f"no {test_level} testing tasks of {domain!r} under {self.root / domain / 'testing'} "
                               f"(the IPC 2023 learning track's benchmarks repository has them)")
        tasks.require_pyperplan()
        self.domain, self.budget = domain, budget
        self.test_budget = test_budget or budget  # medium and hard tasks need more calls than training ones
        self.train_tasks, self.test_tasks = train_tasks, test_tasks
        self.test_level, self.task_timeout_s = test_level, float(task_timeout_s)
        self._instances: dict[str, dict] = {}

    @property
    def skeleton(self) -> str:
        # The domain's PDDL goes into the program's context (outside the evolve block), as in the
        # paper's prompts: the model sees the predicates and actions the atoms come from.
        text = (self.folder / "skeleton.py").read_text()
        pddl = (self.root / self.domain / "domain.pddl").read_text().strip().splitlines()
        comment = "\n".join([f"# The {self.domain} domain (PDDL) of every task:",
                             *(f"#   {line}".rstrip() for line in pddl)])
        return text.replace("\n# EVOLVE-BLOCK-START", f"\n{comment}\n\n\n# EVOLVE-BLOCK-START", 1)

    def split_tasks(self, split: str) -> list[str]:
        """Names of the tasks of a split ("p05", ...; the probe split's come from training)."""
        if split == "probe":
            names = tasks.task_files(self.root, self.domain, "training")
            return [names[min(i, len(names)) - 1] for i in PROBE_TASKS]
        if split == "train":
            return _evenly(tasks.task_files(self.root, self.domain, "training"), self.train_tasks)
        if split == "test":
            return _evenly(tasks.task_files(self.root, self.domain, "testing", self.test_level),
                           self.test_tasks or 10 ** 6)
        raise ValueError(f"unknown split {split!r}")

    def timeout_for(self, split: str) -> float:
        # Each split gets the same allowance per task, scaled by the level's size: a held-out split of
        # 30 medium tasks must not inherit the deadline of 10 easy training tasks.
        level = self.test_level if split == "test" else "easy"
        calls = self.test_budget / self.budget if split == "test" else 1.0
        return self.task_timeout_s * len(self.split_tasks(split)) * LEVEL_SCALE[level] * calls

    def instances(self, split):
        # Grounded lazily and kept: the worker asks once per split, the tasks are shared by its sandboxes.
        if split not in self._instances:
            self._instances[split] = self._build(split)
        return self._instances[split]

    def _build(self, split):
        folder = "testing" if split == "test" else "training"
        level = self.test_level if split == "test" else "easy"
        grounded = {name: tasks.load(str(self.root), self.domain, folder, name, level)
                    for name in self.split_tasks(split)}
        if split == "probe":
            return {f"{self.domain}/{name}": {"task": g.task, "states": tasks.sample_states(g, seed=i, **PROBE_STATES)}
                    for i, (name, g) in enumerate(grounded.items())}
        bounds = {}
        if split == "test" and (self.root / "upper_bounds.json").is_file():
            bounds = json.loads((self.root / "upper_bounds.json").read_text())
        prefix = f"{self.domain}/{folder}" + ("" if level == "easy" else f"/{level}")
        return {f"{prefix}/{name}": {
                    "grounded": g, "budget": self.test_budget if split == "test" else self.budget,
                    "wire": Frozen(g.task),
                    "upper_bound": bounds.get(f"{self.domain}/{folder}/{level}/{name}.pddl")}
                for name, g in grounded.items()}

    def episode(self, instance, candidate):
        # The search and its budget run here; the candidate gets its own copy of the task once
        # and then only the states the search asks about.
        wire = instance["wire"]  # the task, pickled once per worker rather than once per evaluation
        return gbfs(lambda task: candidate.heuristic(wire), instance["grounded"].task, instance["budget"])

    def probe_episode(self, instance, candidate):
        # GBFS only compares h values, so dense ranks over the fixed states (inf ranked last, as -1)
        # identify a heuristic's search exactly where it matters: h, 2h and h + 1 hash alike.
        h = candidate.heuristic(instance["task"])
        if not callable(h):
            raise TypeError(f"heuristic(task) must return a callable h(state), not {type(h).__name__}")
        values = [heuristic_value(v) for v in h.map([(state,) for state in instance["states"]])]
        rank = {v: i for i, v in enumerate(sorted({v for v in values if v != math.inf}))}
        return [rank.get(v, -1) for v in values]

    def score(self, instance, output):
        if not isinstance(output, dict) or set(output) != {"plan", "evaluations"}:
            raise InvalidOutput("expected {'plan': [...] or None, 'evaluations': int}")
        evaluations = output["evaluations"]
        if type(evaluations) is not int or evaluations < 0:
            raise InvalidOutput(f"evaluations must be a non-negative integer, not {evaluations!r}")
        budget, grounded = instance["budget"], instance["grounded"]
        bound = instance.get("upper_bound")
        quality = {} if bound is None else {"quality": 0.0}
        if output["plan"] is None:
            return {"score": 0.0, "solved": 0.0, "evaluations": float(budget), "effort": 1.0, "plan_length": 0.0,
                    "steps_per_goal": 0.0, **quality}
        try:
            length = tasks.check_plan(grounded, output["plan"])
        except ValueError as e:
            raise InvalidOutput(f"invalid plan: {e}") from None
        # Every state on the plan was evaluated; the sandbox's count is only a tie-breaker.
        evaluations = min(max(evaluations, length + 1), budget)
        open_goals = len(grounded.task.goals - grounded.task.initial_state)
        if bound is not None:  # IPC quality score: best known plan length (test tasks) over this plan's
            quality["quality"] = min(1.0, bound / max(length, 1))
        return {"score": 1.0, "solved": 1.0, "evaluations": float(evaluations), "effort": evaluations / budget,
                "plan_length": float(length),
                "steps_per_goal": length / max(open_goals, 1), **quality}

    def aggregate(self, per_instance):
        metrics = list(per_instance.values())
        solved = sum(m["solved"] for m in metrics)
        # Calls over each task's own budget (the held-out split may have its own, test_budget).
        effort = float(np.mean([m.get("effort", m["evaluations"] / self.budget) for m in metrics]))
        steps = [m["steps_per_goal"] for m in metrics if m["solved"]]
        lengths = [m["plan_length"] for m in metrics if m["solved"]]
        summary = {"solved": solved, "coverage": solved / len(metrics), "tasks": float(len(metrics)),
                   "evaluations": float(np.mean([m["evaluations"] for m in metrics])),
                   "plan_length": float(np.mean(lengths)) if lengths else 0.0}
        if all("quality" in m for m in metrics):  # summed over tasks, as in the IPC
            summary["quality"] = float(sum(m["quality"] for m in metrics))
        return Score(score=solved - 0.5 * effort,
                     descriptors={STEPS_PER_GOAL.name: float(np.mean(steps)) if steps else STEPS_PER_GOAL.high},
                     metrics=summary)

"""Run configuration: one dataclass is the single source of truth for YAML keys,
CLI flags, their help text and validation."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from islands.archives import ARCHIVES

BACKENDS = ("local", "ray")
COMMIT_MODES = ("ordered", "async")


class ConfigError(ValueError):
    """A bad config key or value (a user mistake: one line)."""


def knob(default: Any, help: str, *, minimum: float | None = None, choices: tuple | None = None, **kw):
    meta = {"help": help, "minimum": minimum, "choices": choices}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class RunConfig:
    problem: str = knob("", "problem: a built-in or installed name, or a folder holding problem.py and skeleton.py")
    sampler: str = knob("local", "where candidates come from: local (embedded Gemma 3 270M), openai "
                                 "(any OpenAI-compatible endpoint), vllm (in-process vLLM on a GPU), mutate "
                                 "(LLM-free AST mutations), or an installed one (evosearch.samplers entry points); "
                                 "A+B: several, picked per sample by the --models bandit at each one's relative "
                                 "cost (mutate: 0.1, others 1)")
    model: str | None = knob(None, "model name for --sampler openai; a Hugging Face name or local folder for "
                                   "--sampler vllm; a GGUF path for --sampler local (default: the embedded model)")
    base_url: str | None = knob(None, "endpoint for --sampler openai, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = knob("OPENAI_API_KEY", "environment variable holding the API key for --sampler openai")
    temperature: float = knob(0.8, "sampling temperature of LLM samplers", minimum=0)
    answer_tokens: int = knob(512, "most tokens per LLM answer", minimum=16)
    max_tokens: int | None = knob(None, "run budget in LLM tokens (prompt + answer): no request starts that could "
                                        "exceed it, counting requests in flight at their worst case (None: no limit)",
                                  minimum=1)
    max_cost: float | None = knob(None, "run budget in USD for --sampler openai, kept like --max-tokens; the price "
                                        "comes from a built-in table or --prices (None: no limit)", minimum=0.000001)
    prices: dict = knob({}, "USD per 1M input and output tokens, over the built-in table, e.g. "
                            "'{my-model: [0.5, 1.5]}' (local endpoints are free unless priced here)")
    top_p: float | None = knob(None, "nucleus sampling of LLM samplers (None: the server's default)", minimum=0)
    n_per_request: int = knob(1, "answers per LLM request (OpenAI and vLLM honour it; the spares go to the next "
                                 "samples with the same prompt)", minimum=1)
    request_timeout_s: float = knob(120, "--sampler openai: seconds one HTTP attempt may take", minimum=0.01)
    retries: int = knob(3, "--sampler openai: further attempts after a 429, 5xx, timeout or dropped connection "
                           "(exponential backoff with jitter, or the server's Retry-After)", minimum=0)
    request_concurrency: int | None = knob(None, "--sampler openai: most requests in flight (None: --concurrency)",
                                           minimum=1)
    vllm_options: dict = knob({}, "--sampler vllm: more VLLMSampler options, e.g. '{tensor_parallel_size: 2, "
                                  "gpu_memory_utilization: 0.8, mode: completion}' (see cluster/VLLM.md)")
    samples: int = knob(100, "how many candidates to sample (the run's budget, the seed program excluded)", minimum=1)
    islands: int = knob(4, "number of islands (independent MAP-Elites archives)", minimum=1)
    parents: int = knob(2, "parents shown per prompt (FunSearch's k), sorted by score", minimum=1)
    seed: int = knob(0, "random seed: same seed and LLM-free sampler give the same run")
    workers: int = knob(max(1, os.cpu_count() or 1), "sandbox worker processes evaluating in parallel", minimum=1)
    concurrency: int = knob(4, "samples in flight at once (sampling overlaps evaluation)", minimum=1)
    commit_mode: str | None = knob(None, "when results enter the islands: ordered (in sample order; same seed + "
                                         "LLM-free sampler = same run) or async (as they land, --concurrency "
                                         "always in flight); default: async for LLM samplers, ordered for mutate",
                                   choices=COMMIT_MODES)
    migration_interval: int = knob(50, "ring-migrate each island's best to the next every N results (0: never)", minimum=0)
    migration_size: int = knob(1, "elites moved per migration", minimum=1)
    reset_interval: int = knob(0, "FunSearch reset of the weaker half of islands every N results (0: never)", minimum=0)
    migration_topology: str = knob("ring", "where migrants go: ring (to the next island) or random (to a random other "
                                           "island)", choices=("ring", "random"))
    selection: str = knob("exploit", "parent selection: uniform (over occupied cells, MAP-Elites), boltzmann "
                                     "(FunSearch: softmax over score clusters, decaying temperature), dgm (Darwin "
                                     "Godel Machine: sigmoid of score / (1 + children)), best ((1+1)-EPS hill "
                                     "climbing), curiosity (Cully & Demiris: cells whose children entered the archive), "
                                     "novelty (Lehman & Stanley's sparseness: cells far from the other elites), exploit "
                                     "(the archipelago's best parents on --exploit-share of prompts, the island's cells "
                                     "drawn by --explore on the rest), seed (always the seed program: random mutation "
                                     "baseline)",
                          choices=("uniform", "boltzmann", "dgm", "best", "curiosity", "novelty", "exploit", "seed"))
    exploit_share: float = knob(0.5, "--selection exploit: share of prompts showing the archipelago's best parents (the rest "
                                   "draw cells of their island by --explore)",
                                minimum=0)
    explore: str = knob("uniform", "--selection exploit: how the other prompts draw their island's cells: uniform, or "
                                   "curiosity (each child that enters the archive adds 1 to its parents' score, any other "
                                   "takes 0.5; p ~ sigmoid(score)): more cells on TSP, a worse held-out best on bin packing "
                                   "(README, \"Which settings find most\"), or novelty (p ~ mean distance to the 3 "
                                   "nearest other elites on the map): no more cells and a worse median best on both",
                        choices=("uniform", "curiosity", "novelty"))
    neutral: bool = knob(False, "neutral drift (grid and cvt archives): a program that ties its cell's elite takes its "
                                "place, and the newer of equal-scoring elites ranks first as a parent")
    archive: str = knob("grid", "island archive: grid (pyribs GridArchive over the descriptors), cvt (pyribs "
                                "CVTArchive, --cvt-cells centroids) or clusters (FunSearch-style: no grid, one "
                                "cluster per score)", choices=tuple(ARCHIVES))
    cvt_cells: int = knob(64, "centroids of the CVT archive (--archive cvt)", minimum=1)
    cluster_temperature: float = knob(0.1, "FunSearch's T0 for --selection boltzmann (T = T0 (1 - (n mod N) / N))",
                                      minimum=0.0001)
    cluster_temperature_period: int = knob(30000, "FunSearch's N for --selection boltzmann", minimum=1)
    tune_evals: int = knob(24, "constant tuning: each new best of the run (a tuning's own trials included) gets "
                              "this many CMA-ES trials of its numeric literals, each evaluated and recorded like a "
                              "sample but outside --samples, which counts sampler calls only (0: off)", minimum=0)
    tune_patience: int = knob(0, "constant tuning on a plateau: after this many samples without a new best (or "
                                 "since the last tuning ended), the best program not tuned yet is tuned (0: off, "
                                 "only new bests are tuned; off by default: on bin packing's small training split "
                                 "it measured worse held-out, see README)", minimum=0)
    tune_llm: bool = knob(True, "constant tuning of every new program an LLM sampler wrote (first of its functional "
                                "class, not the seed's, best first, one tuning at a time, when no new best waits): a "
                                "small model's right mix with the wrong weights is judged tuned; mutate's children are "
                                "tuned only as new bests")
    inspirations: int = knob(0, "extra elites from other cells shown in each prompt as inspirations", minimum=0)
    runtime_descriptor: bool = knob(False, "add measured evaluation time (log10 seconds) as a behaviour axis; "
                                           "wall-clock, so runs stop being exactly repeatable")
    timeout_s: float | None = knob(None, "wall-clock deadline of one evaluation (default: the problem's)", minimum=0.01)
    validation_picks: int = knob(100, "for a problem with a validation split: the run reports the best on it of its "
                                      "last N training bests (each a new best when it was committed; a 2,000-sample "
                                      "TSP run has 21 to 59), not the training best itself (0: the training best)",
                                 minimum=0)
    test_timeout_s: float | None = knob(None, "wall-clock deadline of one evaluation on the held-out (and "
                                              "validation) split (the end-of-run report, `evosearch eval`), whose "
                                              "instances may be larger than training's (default: --timeout-s)",
                                        minimum=0.01)
    memory_mb: int | None = knob(None, "memory limit of one candidate process in MiB (default: the problem's)", minimum=16)
    unsafe_no_sandbox: bool = knob(False, "run candidates even where nothing confines them (no usable bubblewrap, no "
                                          "Landlock): they then have your user's full powers over files, network "
                                          "and processes")
    probe: bool = knob(True, "run probe inputs first and skip functional duplicates (functional hashing)")
    data_dir: str | None = knob(None, "directory with benchmark data the problem can load (e.g. ../shared/data)")
    problem_options: dict = knob({}, "problem constructor options, e.g. '{distribution: or}' (YAML)")
    out: str | None = knob(None, "run directory (default: runs/<problem>-<time>)")
    quiet: bool = knob(False, "no progress line")
    edit_formats: dict | None = knob(None, "mix of edit formats asked of the sampler, as weights: full (function "
                                           "rewrite), diff (SEARCH/REPLACE), crossover (two parents), fix (repair a "
                                           "failed program), e.g. '{full: 0.5, diff: 0.3, crossover: 0.1, fix: 0.1}'; "
                                           "formats a sampler cannot do are left out for it (mutate: no diff or fix; "
                                           "local: no diff) (default: the sampler's own: {full: 0.75, crossover: 0.25} "
                                           "for mutate, {full: 1.0} for the others)")
    samples_per_prompt: int = knob(1, "samples drawn from each prompt, each with its own seed (FunSearch draws "
                                      "several; a prompt cache then reuses the whole prompt)", minimum=1)
    edit_retries: int = knob(1, "times a rejected edit (outside the EVOLVE-BLOCKs, SEARCH text not found) is asked "
                                "again with the reason shown to the model", minimum=0)
    # Off by default: with the embedded model it doubled the model calls and found no more novel programs
    # (benchmarks/small_model_novelty.json); a model that follows the reason given may do better.
    duplicate_retries: int = knob(0, "times a child that is a functional duplicate of a known program (the one "
                                     "it edits, or any the evaluator has seen: same outputs on the probe inputs) "
                                     "is asked again, told so, 1.5x hotter; the duplicate stays in the row's "
                                     "attempts", minimum=0)
    insights_interval: int = knob(0, "every N samples the model summarises what worked and what failed so far "
                                     "(CoEvo insights, shown in later prompts); 0: off", minimum=0)
    models: dict = knob({}, "several samplers in one run, picked per sample by a cost-aware UCB bandit: name -> "
                            "spec, e.g. '{gemma: {sampler: local}, mut: {sampler: mutate}, big: {sampler: openai, "
                            "model: M, base_url: URL, cost: 10}}' (empty: just --sampler)")
    backend: str = knob("local", "where the parts run: local (one process, asyncio) or ray (islands, samplers and "
                                 "evaluators as Ray actors; see cluster/README.md)", choices=BACKENDS)
    address: str | None = knob(None, "--backend ray: Ray cluster to join, auto or HOST:PORT (default: start a private "
                                     "Ray instance on this machine)")
    evaluator_actors: int = knob(2, "--backend ray: evaluator actors, each owning --workers sandbox workers", minimum=1)
    sampler_actors: int = knob(1, "--backend ray: sampler actors", minimum=1)
    sampler_gpus: float = knob(0.0, "--backend ray: GPUs per sampler actor (1 for an in-process vLLM)", minimum=0)
    sandbox_resource: str = knob("sandbox", "--backend ray: custom resource marking nodes where the sandbox works; "
                                            "each evaluator actor takes 1 ('' places them anywhere)")
    sampler_resource: str = knob("", "--backend ray: custom resource sampler actors need, e.g. a GPU node "
                                     "type ('' places them anywhere)")

    def validate(self) -> "RunConfig":
        hints = typing.get_type_hints(RunConfig)
        for f in dataclasses.fields(self):
            value = _coerce(f.name, hints[f.name], getattr(self, f.name))
            lo, choices = f.metadata["minimum"], f.metadata["choices"]
            if value is not None and lo is not None and value < lo:
                raise ConfigError(f"config '{f.name}' must be at least {lo}, got {value}")
            if choices and value is not None and value not in choices:
                raise ConfigError(f"config '{f.name}' must be one of {', '.join(choices)}, got '{value}'")
            setattr(self, f.name, value)
        if self.exploit_share > 1:
            raise ConfigError(f"config 'exploit_share' must be at most 1, got {self.exploit_share}")
        _check_sampler("sampler", self.sampler)
        names = self.sampler.split("+")
        if len(names) > 1 and self.models:
            raise ConfigError("give several samplers either as --sampler A+B or as --models, not both")
        if not self.problem:
            raise ConfigError("no problem given (evosearch run PROBLEM; see `evosearch problems`)")
        if "openai" in names and not (self.base_url and self.model):
            raise ConfigError("--sampler openai needs --base-url and --model")
        if "vllm" in names and not self.model:
            raise ConfigError("--sampler vllm needs --model (a Hugging Face name or a local path)")
        if (self.max_cost is not None or self.max_tokens is not None) and self.arms():
            # Each arm would keep a budget of its own, so the run could spend one per arm.
            raise ConfigError("--max-cost and --max-tokens do not work with several samplers (--sampler A+B, "
                              "--models) yet")
        if (self.max_cost is not None or self.max_tokens is not None) and self.sampler not in ("openai", "vllm"):
            raise ConfigError("--max-cost and --max-tokens (the run budget) need --sampler openai or vllm")
        if (self.max_cost is not None or self.max_tokens is not None) and self.backend == "ray":
            # A sampler actor keeps its own account, which --resume does not restore yet.
            raise ConfigError("--max-cost and --max-tokens do not work with --backend ray yet")
        if self.backend == "ray" and importlib.util.find_spec("ray") is None:
            raise ConfigError("--backend ray needs Ray: pip install 'evosearch[ray]'")
        from .samplers.budget import parse_prices

        try:
            parse_prices(self.prices)
        except ValueError as e:
            raise ConfigError(f"config 'prices': {e}") from None
        if self.edit_formats is not None:
            _check_edit_formats(self.edit_formats)
        _check_models(self.models)
        return self

    def arms(self) -> dict:
        """The bandit's arms, name -> spec as in ``models``: ``models`` itself, or one arm per sampler of
        ``--sampler A+B`` (named after it, at its class's ``cost``); empty for a single sampler."""
        if self.models or "+" not in self.sampler:
            return dict(self.models)
        from .samplers import sampler_class

        return {name: {"sampler": name, "cost": sampler_class(name).cost} for name in self.sampler.split("+")}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_edit_formats(mix: dict) -> None:
    from .prompt import EDIT_FORMATS

    for name, weight in mix.items():
        if name not in EDIT_FORMATS:
            raise ConfigError(f"config 'edit_formats': unknown format '{name}' (choose {', '.join(EDIT_FORMATS)})")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ConfigError(f"config 'edit_formats': weight of '{name}' must be a number >= 0, got {weight!r}")
    if not sum(mix.values()) > 0:
        raise ConfigError("config 'edit_formats' needs at least one format with a positive weight")


def _check_sampler(key: str, value: str) -> None:
    """One sampler name, or several joined by + (a bandit over them)."""
    from .samplers import sampler_names

    names = value.split("+")
    for name in names:
        if name not in sampler_names():
            within = f" in '{value}'" if len(names) > 1 else ""
            raise ConfigError(f"config '{key}' must be one of {', '.join(sampler_names())}, got '{name}'{within}")
    if len(set(names)) < len(names):
        raise ConfigError(f"config '{key}': '{value}' names a sampler twice")


def _check_models(models: dict) -> None:
    from .samplers import sampler_names

    for name, spec in models.items():
        if not isinstance(spec, dict) or spec.get("sampler") not in sampler_names():
            raise ConfigError(f"config 'models': '{name}' needs a mapping with sampler: one of "
                              f"{', '.join(sampler_names())}")
        if spec["sampler"] == "openai" and not (spec.get("base_url") and spec.get("model")):
            raise ConfigError(f"config 'models': '{name}' (openai) needs base_url and model")
        cost = spec.get("cost", 1.0)
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or cost <= 0:
            raise ConfigError(f"config 'models': cost of '{name}' must be a number > 0, got {cost!r}")


def _coerce(name: str, hint: Any, value: Any) -> Any:
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config '{name}' may not be empty")
    if isinstance(value, str) and base is not str:
        try:
            value = yaml.safe_load(value)  # CLI strings: "3", "true", "{distribution: or}"
        except yaml.YAMLError:
            raise ConfigError(f"config '{name}': cannot read '{value}'") from None
    ok = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          bool: lambda v: isinstance(v, bool), str: lambda v: isinstance(v, (str, int, float)),
          dict: lambda v: isinstance(v, dict)}[base]
    if not ok(value):
        raise ConfigError(f"config '{name}' must be {base.__name__}, got {value!r}")
    return base(value)


def load_yaml(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of keys to values")
    return data


def make_config(*layers: dict) -> RunConfig:
    """Merge layers (defaults < YAML < CLI), rejecting unknown keys."""
    known = {f.name for f in dataclasses.fields(RunConfig)}
    merged: dict = {}
    for layer in layers:
        for key, value in layer.items():
            key = key.replace("-", "_")
            if key not in known:
                raise ConfigError(f"config key '{key}' is unknown (known: {', '.join(sorted(known))})")
            merged[key] = value
    return RunConfig(**merged).validate()


def add_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """One flag per knob (or per knob named in ``only``); each defaults to SUPPRESS so only flags the
    user gave override YAML."""
    for f in dataclasses.fields(RunConfig):
        if f.name == "problem" or (only is not None and f.name not in only):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        help_text = _with_default(f.metadata["help"], default)
        if typing.get_type_hints(RunConfig)[f.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text,
                                choices=f.metadata["choices"])


def _with_default(help_text: str, default: Any) -> str:
    """The help line with its default said once: knobs whose text already explains it (``(default: the
    problem's)``, ``(None: no limit)``) keep their own words; dicts print as the YAML one would type."""
    if "(default" in help_text or (default is None and "(None:" in help_text) or (default == "" and "(''" in help_text):
        return help_text
    if isinstance(default, dict):
        shown = yaml.safe_dump(default, default_flow_style=True, sort_keys=False).strip() if default else "{}"
    elif isinstance(default, bool):
        shown = "on" if default else "off"
    elif default is None:
        shown = "unset"
    else:
        shown = default
    return f"{help_text} (default: {shown})"

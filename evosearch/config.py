"""Run configuration: one dataclass is the single source of truth for YAML keys,
CLI flags, their help text and validation."""
from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SAMPLERS = ("local", "openai", "mutate")


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
                                 "(any OpenAI-compatible endpoint), mutate (LLM-free AST mutations)", choices=SAMPLERS)
    model: str | None = knob(None, "model name for --sampler openai; a GGUF path for --sampler local (default: the embedded model)")
    base_url: str | None = knob(None, "endpoint for --sampler openai, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = knob("OPENAI_API_KEY", "environment variable holding the API key for --sampler openai")
    temperature: float = knob(0.8, "sampling temperature of LLM samplers", minimum=0)
    max_tokens: int = knob(512, "most tokens per LLM answer", minimum=16)
    samples: int = knob(100, "how many candidates to sample (the run's budget, the seed program excluded)", minimum=1)
    islands: int = knob(4, "number of islands (independent MAP-Elites archives)", minimum=1)
    parents: int = knob(2, "parents shown per prompt (FunSearch's k), sorted by score", minimum=1)
    seed: int = knob(0, "random seed: same seed and LLM-free sampler give the same run")
    workers: int = knob(max(1, os.cpu_count() or 1), "sandbox worker processes evaluating in parallel", minimum=1)
    concurrency: int = knob(4, "samples in flight at once (sampling overlaps evaluation)", minimum=1)
    migration_interval: int = knob(50, "ring-migrate each island's best to the next every N results (0: never)", minimum=0)
    migration_size: int = knob(1, "elites moved per migration", minimum=1)
    reset_interval: int = knob(0, "FunSearch reset of the weaker half of islands every N results (0: never)", minimum=0)
    timeout_s: float | None = knob(None, "wall-clock deadline of one evaluation (default: the problem's)", minimum=0.01)
    memory_mb: int | None = knob(None, "memory limit of one candidate process in MiB (default: the problem's)", minimum=16)
    probe: bool = knob(True, "run probe inputs first and skip functional duplicates (functional hashing)")
    data_dir: str | None = knob(None, "directory with benchmark data the problem can load (e.g. ../shared/data)")
    problem_options: dict = knob({}, "problem constructor options, e.g. '{distribution: or}' (YAML)")
    out: str | None = knob(None, "run directory (default: runs/<problem>-<time>)")
    quiet: bool = knob(False, "no progress line")

    def validate(self) -> "RunConfig":
        hints = typing.get_type_hints(RunConfig)
        for f in dataclasses.fields(self):
            value = _coerce(f.name, hints[f.name], getattr(self, f.name))
            lo, choices = f.metadata["minimum"], f.metadata["choices"]
            if value is not None and lo is not None and value < lo:
                raise ConfigError(f"config '{f.name}' must be at least {lo}, got {value}")
            if choices and value not in choices:
                raise ConfigError(f"config '{f.name}' must be one of {', '.join(choices)}, got '{value}'")
            setattr(self, f.name, value)
        if not self.problem:
            raise ConfigError("no problem given (evosearch run PROBLEM; see `evosearch problems`)")
        if self.sampler == "openai" and not (self.base_url and self.model):
            raise ConfigError("--sampler openai needs --base-url and --model")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per knob; each defaults to SUPPRESS so only flags the user gave override YAML."""
    for f in dataclasses.fields(RunConfig):
        if f.name == "problem":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {default})"
        if typing.get_type_hints(RunConfig)[f.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text,
                                choices=f.metadata["choices"])

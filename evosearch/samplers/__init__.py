"""Samplers: where candidate programs come from.

``REGISTRY`` is the one list of sampler names (``name -> "module:Class"``); installed
packages add more through the ``evosearch.samplers`` entry point group, naming a
``Sampler`` subclass. A sampler's module is imported only when it is chosen, so a run
with the mutation sampler needs neither llama.cpp nor the openai package, nor vLLM.
Adding a sampler: one file with its ``Sampler`` subclass, one line here (or one entry
point).
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from evosearch.samplers.base import Prompt, Sample, Sampler, SamplerError

REGISTRY = {
    "local": "evosearch.samplers.local:LocalSampler",  # embedded Gemma 3 270M (llama.cpp)
    "openai": "evosearch.samplers.openai_api:OpenAISampler",  # any OpenAI-compatible endpoint
    "vllm": "evosearch.samplers.vllm_sampler:VLLMSampler",  # in-process vLLM on a GPU
    "mutate": "evosearch.samplers.mutate:MutateSampler",  # LLM-free AST mutations
}
SAMPLERS = tuple(REGISTRY)  # the built-in names (installed ones: sampler_names())
GROUP = "evosearch.samplers"

__all__ = ["Prompt", "Sample", "Sampler", "SamplerError", "REGISTRY", "SAMPLERS", "sampler_names", "sampler_class",
           "make_sampler"]


def _installed() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=GROUP) if ep.name not in REGISTRY}


def sampler_names() -> tuple[str, ...]:
    """Built-in names, then installed ones."""
    return (*REGISTRY, *sorted(_installed()))


def sampler_class(name: str) -> type[Sampler]:
    target = REGISTRY.get(name) or _installed().get(name)
    if target is None:
        raise ValueError(f"unknown sampler {name!r} (choose {', '.join(sampler_names())})")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Sampler)):
        raise ValueError(f"sampler {name!r} ({target}) is not a Sampler subclass")
    return cls


def make_sampler(name: str, config=None, **options) -> Sampler:
    """Sampler ``name`` built from the run ``config`` (its knobs as defaults, ``options`` on top), or
    from ``options`` alone when no config is given."""
    cls = sampler_class(name)
    try:
        sampler = cls.from_config(config, **options) if config is not None else cls(**options)
    except TypeError as e:  # a misspelled or missing option in the run config
        raise ValueError(f"sampler {name!r}: {e}") from None
    sampler.name = sampler.name or name
    return sampler

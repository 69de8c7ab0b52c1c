"""Samplers: where candidate programs come from.

``make_sampler(name, **options)`` builds one by name; LLM backends are imported
only when chosen, so a run with the mutation sampler needs neither llama.cpp
nor the openai package, nor vLLM.
"""
from __future__ import annotations

from evosearch.samplers.base import Prompt, Sample, Sampler, SamplerError

SAMPLERS = ("local", "openai", "vllm", "mutate")

__all__ = ["Prompt", "Sample", "Sampler", "SamplerError", "SAMPLERS", "make_sampler"]


def make_sampler(name: str, **kwargs) -> Sampler:
    """"local" (embedded Gemma 3 270M), "openai" (any OpenAI-compatible endpoint), "vllm" (in-process
    vLLM on a GPU) or "mutate" (LLM-free)."""
    if name == "local":
        from evosearch.samplers.local import LocalSampler as cls
    elif name == "openai":
        from evosearch.samplers.openai_api import OpenAISampler as cls
    elif name == "vllm":
        from evosearch.samplers.vllm_sampler import VLLMSampler as cls
    elif name == "mutate":
        from evosearch.samplers.mutate import MutateSampler as cls
    else:
        raise ValueError(f"unknown sampler {name!r} (choose {', '.join(SAMPLERS)})")
    try:
        return cls(**kwargs)
    except TypeError as e:  # a misspelled or missing option in the run config
        raise ValueError(f"sampler {name!r}: {e}") from None

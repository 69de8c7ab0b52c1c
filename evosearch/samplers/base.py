"""The sampler contract: a prompt in, candidate text out."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field


class SamplerError(Exception):
    """A sample could not be drawn (endpoint down, bad answer); recorded, never fatal."""


@dataclass
class Prompt:
    """What a sampler gets. Chat models read ``system`` and ``user``, completion
    models ``completion``; LLM-free samplers read ``parents``. ``seed`` is per sample so that deterministic
    samplers give the same text for the same run seed and sample index."""

    system: str
    user: str
    parents: list[str]  # parent programs (full code), worst first, best last
    functions: list[str]  # names of the evolvable functions
    seed: int
    # The same material as plain code ending in ``header`` (the next version's ``def`` line), for
    # completion models, which continue code far more reliably than they follow chat instructions.
    completion: str = ""
    header: str = ""
    # Lengths (in characters) of the run-wide shared head of ``completion`` and of ``user``
    # (instructions, problem, context, insights): a sampler with a prompt cache keeps that
    # part's KV state between samples and evaluates only the rest. 0: nothing shared.
    completion_shared: int = 0
    user_shared: int = 0
    arm: str = ""  # which arm of a BanditSampler draws this sample ("" for a single sampler)


@dataclass
class Sample:
    text: str  # raw model output (or mutated function source), parsed by evosearch.extract
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Sampler(abc.ABC):
    name: str = ""

    @abc.abstractmethod
    async def sample(self, prompt: Prompt) -> Sample:
        """Draw one candidate; raise SamplerError on failure."""

    async def check(self) -> None:
        """Fail fast (SamplerError with one line) if the sampler cannot work at all."""

    async def close(self) -> None:
        """Release resources."""

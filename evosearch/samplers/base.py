"""The sampler contract: a prompt in, candidate text out."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field


class SamplerError(Exception):
    """A sample could not be drawn (endpoint down, bad answer); recorded, never fatal. What the failed
    request still cost (tokens billed, HTTP retries, USD) goes with it, so the row counts it too."""

    def __init__(self, message: str = "", *, tokens_in: int = 0, tokens_out: int = 0, retries: int = 0,
                 cost: float | None = None):
        super().__init__(message)
        self.tokens_in, self.tokens_out, self.retries, self.cost = tokens_in, tokens_out, retries, cost


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
    edit_format: str = "full"  # what the prompt asks for (evosearch.prompt.EDIT_FORMATS)
    # This sample's temperature as a multiple of the sampler's (the engine raises it when it asks
    # again for an answer that duplicated a known program).
    temperature_scale: float = 1.0


@dataclass
class Sample:
    text: str  # raw model output (or mutated function source), parsed by evosearch.extract
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


# Every edit format a prompt can ask for (evosearch.prompt.EDIT_FORMATS).
ALL_FORMATS = ("full", "diff", "crossover", "fix")


class Sampler(abc.ABC):
    """What the engine reads of a sampler, besides ``sample``:

    ``name``          recorded per program (the registry's name);
    ``llm``           a model reads the prompt (False: LLM-free; runs default to ordered commits and
                      insights are the plain digest);
    ``edit_formats``  the formats it can answer (others are left out of the mix for it);
    ``edit_mix``      the mix of formats a run asks of it when ``--edit-formats`` sets none;
    ``arms``          None, or a bandit's samplers by arm name (``choose``, ``arm_sampler``);
    ``cost``          relative cost of one sample: its weight under a bandit when ``--sampler A+B``
                      names it (``--models`` entries say their own);
    ``meter``         None, or the budget meter a resumed run charges with what was spent;
    ``usage()``       None, or its account: tokens, cost, requests, retries, failures.

    ``from_config(config, **options)`` builds one from the run config (the registry calls it);
    the default passes only ``options``.
    """

    name: str = ""
    llm: bool = True
    edit_formats: tuple[str, ...] = ALL_FORMATS
    edit_mix: dict = {"full": 1.0}  # read, never changed
    arms: dict | None = None
    cost: float = 1.0
    meter = None

    @classmethod
    def from_config(cls, config, **options) -> "Sampler":
        return cls(**options)

    def usage(self) -> dict | None:
        return None

    @abc.abstractmethod
    async def sample(self, prompt: Prompt) -> Sample:
        """Draw one candidate; raise SamplerError on failure."""

    async def check(self) -> None:
        """Fail fast (SamplerError with one line) if the sampler cannot work at all."""

    async def close(self) -> None:
        """Release resources."""

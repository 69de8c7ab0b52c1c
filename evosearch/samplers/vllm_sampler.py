"""In-process vLLM on a GPU: ``vllm.LLM`` with prefix caching, fed in batches.

Samples that arrive while a batch generates are gathered into the next one, and
vLLM batches them on the GPU (one ``generate`` call at a time: ``vllm.LLM`` is not
thread-safe). Prefix caching is on, so the shared head of FunSearch prompts
(instructions, problem, skeleton) is computed once. Each request carries its
sample's seed. With ``n`` > 1 a request asks for n answers and the spares go to
the next samples with the same prompt, as in the OpenAI sampler.

The mapping between evosearch and vLLM is two pure functions,
:func:`sampling_params_kwargs` and :func:`samples_from_output`, tested without
vLLM; vLLM itself is imported only when the first batch runs. The sampler is built
from plain keyword arguments, so a Ray actor (``num_gpus=1``, or a placement group
for ``tensor_parallel_size`` > 1, see cluster/VLLM.md) can construct it remotely.
"""
from __future__ import annotations

import asyncio
import threading
import time

from evosearch.samplers.base import Prompt, Sample, Sampler, SamplerError
from evosearch.samplers.budget import Budget, Meter, find_price, parse_prices, worst_prompt_tokens
from evosearch.samplers.openai_api import SpareAnswers

INSTALL_HINT = "install with pip install -e '.[vllm]' on a machine with a CUDA GPU"


def chat_messages(prompt: Prompt, fold_system: bool) -> list[dict[str, str]]:
    if fold_system or not prompt.system.strip():
        user = f"{prompt.system.strip()}\n\n{prompt.user}" if prompt.system.strip() else prompt.user
        return [{"role": "user", "content": user}]
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}]


def sampling_params_kwargs(prompt: Prompt, *, n: int, temperature: float, top_p: float | None, answer_tokens: int,
                           mode: str) -> dict:
    """``vllm.SamplingParams`` keyword arguments for one sample's request."""
    from evosearch.samplers.local import COMPLETION_STOPS

    kwargs = dict(n=n, temperature=temperature * prompt.temperature_scale, max_tokens=answer_tokens, seed=prompt.seed)
    if top_p is not None:
        kwargs["top_p"] = top_p
    if mode == "completion":  # end the function body where the next top-level statement starts
        kwargs["stop"] = list(COMPLETION_STOPS)
    return kwargs


def samples_from_output(output, *, model: str, mode: str, header: str, seconds: float, cost: float | None
                        ) -> list[Sample]:
    """A ``vllm.RequestOutput`` (anything with ``prompt_token_ids`` and ``outputs`` of
    ``text``/``token_ids``/``finish_reason``) as Samples. The first carries the request's
    tokens, time and cost, so sums over samples equal the request's."""
    tokens_in = len(output.prompt_token_ids or [])
    tokens_out = sum(len(o.token_ids) for o in output.outputs)
    cached = getattr(output, "num_cached_tokens", None)  # prefix-cache hits, where vLLM reports them
    samples = []
    for j, o in enumerate(output.outputs):
        first = j == 0
        extra = {"finish_reason": o.finish_reason, "cost": (cost if first else 0.0) if cost is not None else None,
                 "retries": 0}
        if mode == "completion":
            extra["mode"] = "completion"
        if len(output.outputs) > 1:
            extra.update(answers_in_request=len(output.outputs), answer=j)
        if first and cached is not None:
            extra["cached_tokens"] = cached
        samples.append(Sample(text=(header if mode == "completion" else "") + (o.text or ""), model=model,
                              tokens_in=tokens_in if first else 0, tokens_out=tokens_out if first else 0,
                              seconds=seconds if first else 0.0, extra=extra))
    return samples


class VLLMSampler(Sampler):
    name = "vllm"

    @classmethod
    def from_config(cls, config, **options) -> "VLLMSampler":
        c = config
        return cls(**{**dict(model=c.model, temperature=c.temperature, answer_tokens=c.answer_tokens, top_p=c.top_p,
                             n=c.n_per_request, max_cost=c.max_cost, max_run_tokens=c.max_tokens, prices=c.prices,
                             seed=c.seed), **c.vllm_options, **options})

    def __init__(self, model: str, temperature: float = 0.8, answer_tokens: int = 512, top_p: float | None = None,
                 n: int = 1, mode: str = "chat", fold_system: bool = False, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.85, max_model_len: int | None = None, seed: int = 0,
                 max_batch: int = 256, max_cost: float | None = None, max_run_tokens: int | None = None,
                 prices: dict | None = None, budget: Budget | None = None, llm_options: dict | None = None):
        """``model``: a Hugging Face name or a local folder. ``llm_options``: more ``vllm.LLM``
        arguments (e.g. ``{dtype: bfloat16, distributed_executor_backend: ray}``). The budget
        knobs (and a shared ``budget``) are the OpenAI sampler's; a local model is free unless
        ``prices`` names it."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {temperature}")
        for name, value in (("answer_tokens", answer_tokens), ("n", n), ("tensor_parallel_size", tensor_parallel_size),
                            ("max_batch", max_batch)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, not {value}")
        if mode not in ("chat", "completion"):
            raise ValueError(f"mode must be chat or completion, not {mode!r}")
        self.model = model
        self.temperature = temperature
        self.answer_tokens = answer_tokens
        self.top_p = top_p
        self.n = n
        self.mode = mode
        self.fold_system = fold_system
        self.max_batch = max_batch
        self.llm_options = dict(model=model, tensor_parallel_size=tensor_parallel_size,
                                gpu_memory_utilization=gpu_memory_utilization, seed=seed,
                                enable_prefix_caching=True, **({"max_model_len": max_model_len} if max_model_len else {}),
                                **(llm_options or {}))
        self.budget = budget or Budget(max_cost=max_cost, max_tokens=max_run_tokens)
        self.meter = Meter(find_price(model, parse_prices(prices), local=True), self.budget)
        self.stats = {"requests": 0, "batches": 0, "answers": 0, "failures": 0}
        self._spare = SpareAnswers()
        self._llm = None
        self._load_lock = threading.Lock()
        self._queue: list[tuple[Prompt, asyncio.Future]] = []
        self._batcher: asyncio.Task | None = None

    # --- vLLM (imported lazily) ----------------------------------------------------------
    def _engine(self):
        with self._load_lock:
            if self._llm is None:
                try:
                    import vllm
                except ImportError as e:
                    raise SamplerError(f"the vllm sampler needs vLLM ({e}); {INSTALL_HINT}") from None
                try:
                    self._llm = vllm.LLM(**self.llm_options)
                except Exception as e:  # CUDA, memory or model-loading trouble: one line for the user
                    raise SamplerError(f"cannot start vLLM with {self.model}: {type(e).__name__}: "
                                       f"{' '.join(str(e).split())[:300]}") from None
            return self._llm

    async def check(self) -> None:
        await asyncio.to_thread(self._engine)

    def _generate(self, prompts: list[Prompt]) -> list[list[Sample]]:
        """One vLLM batch (in a worker thread)."""
        llm = self._engine()
        import vllm
        texts = []
        for p in prompts:
            if self.mode == "completion":
                texts.append(p.completion)
            else:
                texts.append(llm.get_tokenizer().apply_chat_template(
                    chat_messages(p, self.fold_system), tokenize=False, add_generation_prompt=True))
        params = [vllm.SamplingParams(**sampling_params_kwargs(
            p, n=self.n, temperature=self.temperature, top_p=self.top_p, answer_tokens=self.answer_tokens,
            mode=self.mode)) for p in prompts]
        start = time.perf_counter()
        outputs = llm.generate(texts, params, use_tqdm=False)
        seconds = (time.perf_counter() - start) / max(1, len(prompts))  # the batch's time, shared out
        return [samples_from_output(o, model=self.model, mode=self.mode, header=p.header, seconds=seconds,
                                    cost=self.meter.cost(len(o.prompt_token_ids or []),
                                                         sum(len(c.token_ids) for c in o.outputs)))
                for p, o in zip(prompts, outputs)]

    async def _run_batches(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            self.stats["batches"] += 1
            try:
                results = await asyncio.to_thread(self._generate, [p for p, _ in batch])
            except Exception as e:
                error = e if isinstance(e, SamplerError) else SamplerError(
                    f"vLLM: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), samples in zip(batch, results):
                if not future.done():
                    future.set_result(samples)

    # --- sampling -------------------------------------------------------------------------
    async def sample(self, prompt: Prompt) -> Sample:
        if self.mode == "completion" and not (prompt.completion and prompt.header):
            raise SamplerError("completion mode needs a prompt with completion text and a header")
        key = (self.mode, prompt.system, prompt.user, prompt.completion, prompt.temperature_scale)
        if (spare := self._spare.take(key)) is not None:
            return spare
        texts = [prompt.completion] if self.mode == "completion" else \
            [m["content"] for m in chat_messages(prompt, self.fold_system)]
        reservation = await self.meter.reserve(worst_prompt_tokens(*texts), self.n * self.answer_tokens)
        future = asyncio.get_running_loop().create_future()
        self._queue.append((prompt, future))
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._run_batches())
        self.stats["requests"] += 1
        try:
            samples = await future
        except BaseException:
            self.budget.cancel(reservation)
            self.stats["failures"] += 1
            raise
        self.meter.settle(reservation, samples[0].tokens_in, samples[0].tokens_out)
        self.stats["answers"] += len(samples)
        self._spare.put(key, samples[1:])
        return samples[0]

    def usage(self) -> dict:
        return {**self.meter.usage(), **self.stats, "retries": 0, "n": self.n, "spare_used": self._spare.used}

    async def close(self) -> None:
        if self._batcher is not None and not self._batcher.done():
            await asyncio.gather(self._batcher, return_exceptions=True)
        self._llm = None  # frees the GPU once nothing else holds the engine

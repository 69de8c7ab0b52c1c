"""Any OpenAI-compatible endpoint: OpenAI itself, ``vllm serve``, llama.cpp's server, Ollama, ...

Retries (429, 5xx, timeouts, dropped connections) are the openai SDK's own, with
exponential backoff, jitter and the server's Retry-After; an HTTP event hook on the
client counts and logs every retry and what caused it, per sample. At most
``concurrency`` requests are in flight; each attempt has its own ``timeout_s``.
Usage is charged to a run :class:`~evosearch.samplers.budget.Budget` that never
lets the run overshoot ``max_cost`` / ``max_run_tokens``.

With ``n`` > 1 one request asks for n answers (vLLM and OpenAI honour ``n``); the
spare answers are handed to the next samples with the same prompt. A server that
answers fewer (llama.cpp's server ignores ``n``) is then asked for one at a time.

The key is read from an environment variable (never from a config file, so it
stays out of the run's store); a local endpoint needs none.
"""
from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import logging
import os
import time
from collections import Counter, OrderedDict
from urllib.parse import urlparse

from evosearch.samplers.base import Prompt, Sample, Sampler, SamplerError
from evosearch.samplers.budget import Budget, Meter, find_price, parse_prices, worst_prompt_tokens

NO_KEY = "none"  # what local servers get when no key is set; they ignore it
SPARE_PROMPTS = 64  # prompts whose spare answers are kept (n > 1)

log = logging.getLogger(__name__)
# The outcome of each HTTP attempt of the request running in this task (None: no answer).
_attempts: contextvars.ContextVar[list | None] = contextvars.ContextVar("evosearch_attempts", default=None)


def is_local(base_url: str) -> bool:
    host = urlparse(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified or address.is_private


def _reason(error: BaseException) -> str:
    """The innermost cause in one line ("connection refused", "timed out", ...)."""
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    for e in reversed(seen):
        if isinstance(e, ConnectionRefusedError) or "Connection refused" in str(e):
            return "connection refused"
    inner = seen[-1]
    text = " ".join(str(inner).split()) or type(inner).__name__
    return text[:200]


def _one_line(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


class SpareAnswers:
    """Answers of n > 1 requests not handed out yet, by prompt (the latest ``limit`` prompts)."""

    def __init__(self, limit: int = SPARE_PROMPTS):
        self.limit = limit
        self.used = 0
        self._by_prompt: OrderedDict[tuple, list[Sample]] = OrderedDict()

    def take(self, key: tuple) -> Sample | None:
        spare = self._by_prompt.get(key)
        if not spare:
            return None
        sample = spare.pop(0)
        if not spare:
            del self._by_prompt[key]
        self.used += 1
        return sample

    def put(self, key: tuple, samples: list[Sample]) -> None:
        if samples:
            self._by_prompt[key] = samples
            self._by_prompt.move_to_end(key)
            while len(self._by_prompt) > self.limit:
                self._by_prompt.popitem(last=False)


class OpenAISampler(Sampler):
    name = "openai"

    @classmethod
    def from_config(cls, config, **options) -> "OpenAISampler":
        c = config
        return cls(**{**dict(base_url=c.base_url, model=c.model, api_key_env=c.api_key_env,
                             temperature=c.temperature, answer_tokens=c.answer_tokens, top_p=c.top_p,
                             timeout_s=c.request_timeout_s, max_retries=c.retries,
                             concurrency=c.request_concurrency or c.concurrency, n=c.n_per_request,
                             max_cost=c.max_cost, max_run_tokens=c.max_tokens, prices=c.prices), **options})

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", temperature: float = 0.8,
                 answer_tokens: int = 1024, top_p: float | None = None, timeout_s: float = 60, max_retries: int = 3,
                 concurrency: int = 8, n: int = 1, fold_system: bool = False, mode: str = "chat",
                 max_cost: float | None = None, max_run_tokens: int | None = None, prices: dict | None = None,
                 budget: Budget | None = None):
        """``answer_tokens``: most tokens per answer. ``timeout_s``: per HTTP attempt; ``max_retries``:
        further attempts after a 429, 5xx, timeout or dropped connection. ``concurrency``: requests
        in flight at most. ``n``: answers per request. ``max_cost`` (USD) and ``max_run_tokens``
        (prompt + answer tokens): the run budget; ``prices``: ``{model: [input, output]}`` USD per
        1M tokens, over the built-in table (a local endpoint is free unless priced here). ``budget``:
        a run budget shared with other samplers, instead of one of their own from the two limits.
        ``fold_system``: send the system text as the start of the user turn, for
        models without a system role (Gemma behind llama.cpp's "gemma" chat format drops it).
        ``mode``: "chat" (chat.completions with system/user) or "completion" (the legacy
        completions endpoint continuing ``prompt.completion``, as FunSearch drove its code
        model; for base models behind vLLM or llama.cpp). A completion sample is the prompt's
        header plus the continuation, so it reads as a whole function."""
        if urlparse(base_url).scheme not in ("http", "https"):
            raise ValueError(f"base_url must start with http:// or https://, not {base_url!r}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {temperature}")
        for name, value in (("answer_tokens", answer_tokens), ("concurrency", concurrency), ("n", n)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, not {value}")
        if timeout_s <= 0 or max_retries < 0:
            raise ValueError("timeout_s must be > 0 and max_retries >= 0")
        if mode not in ("chat", "completion"):
            raise ValueError(f"mode must be chat or completion, not {mode!r}")
        self.mode = mode
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.answer_tokens = answer_tokens
        self.top_p = top_p
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.n = n
        self.fold_system = fold_system
        self.budget = budget or Budget(max_cost=max_cost, max_tokens=max_run_tokens)
        price = find_price(model, parse_prices(prices), local=is_local(self.base_url))
        if self.budget.max_cost is not None and price is None:
            raise ValueError(f"no price known for model {model!r}, so max_cost cannot be kept; "
                             f"give it with prices, e.g. {{{model}: [input, output]}} USD per 1M tokens")
        self.meter = Meter(price, self.budget)
        self.stats: Counter = Counter()  # requests, attempts, retries, failures, answers, http_<status>
        self.n_honoured: bool | None = None  # learnt from the first n > 1 answer
        self._spare = SpareAnswers()
        self._clients: dict[int, tuple] = {}

    # --- client -----------------------------------------------------------------
    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        if is_local(self.base_url):
            return NO_KEY
        raise SamplerError(f"environment variable {self.api_key_env} is not set (needed for {self.base_url})")

    def _client(self):
        """One client (and concurrency gate) per event loop: its connections belong to the loop that opened them."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is None or entry[0] is not loop:
            try:
                import openai
            except ImportError:
                raise SamplerError("the openai sampler needs the openai package; pip install openai") from None
            http = openai.DefaultAsyncHttpxClient(
                event_hooks={"request": [self._on_request], "response": [self._on_response]})
            client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key(), timeout=self.timeout_s,
                                        max_retries=self.max_retries, http_client=http)
            self._clients = {k: v for k, v in self._clients.items() if not v[0].is_closed()}
            self._clients[id(loop)] = entry = (loop, client, asyncio.Semaphore(self.concurrency))
        return entry[1], entry[2]

    async def _on_request(self, request) -> None:
        attempts = _attempts.get()
        if attempts is None:
            return
        self.stats["attempts"] += 1
        if attempts:  # the SDK is retrying: say why
            self.stats["retries"] += 1
            log.warning("%s: retry %d of %d after %s", request.url, len(attempts), self.max_retries,
                        attempts[-1] or f"no answer within {self.timeout_s:g}s or a dropped connection")
        attempts.append(None)

    async def _on_response(self, response) -> None:
        attempts = _attempts.get()
        if attempts:
            attempts[-1] = f"HTTP {response.status_code}"
            if response.status_code == 429 or response.status_code >= 500:
                self.stats[f"http_{response.status_code}"] += 1

    def _error(self, e: Exception, attempts: list | None = None) -> SamplerError:
        import openai

        if isinstance(e, openai.APITimeoutError):
            text = f"{self.base_url}: no answer within {self.timeout_s:g}s"
        elif isinstance(e, openai.APIConnectionError):
            text = f"cannot reach {self.base_url}: {_reason(e)}"
        elif isinstance(e, openai.APIStatusError):
            message = _one_line(getattr(e, "message", e)).removeprefix(f"Error code: {e.status_code} - ")
            text = f"{self.base_url}: HTTP {e.status_code}: {message}"
        else:  # an answer that is not the JSON it should be
            text = f"{self.base_url}: bad answer: {type(e).__name__}: {_one_line(e)}"
        if attempts and len(attempts) > 1:
            text += f" ({len(attempts)} attempts: {', '.join(a or 'no answer' for a in attempts)})"
        return SamplerError(text, retries=max(0, len(attempts or ()) - 1))

    def messages(self, prompt: Prompt) -> list[dict[str, str]]:
        if self.fold_system:
            user = f"{prompt.system.strip()}\n\n{prompt.user}" if prompt.system.strip() else prompt.user
            return [{"role": "user", "content": user}]
        return ([{"role": "system", "content": prompt.system}] if prompt.system else []) + \
            [{"role": "user", "content": prompt.user}]

    async def check(self) -> None:
        """One cheap request (list the models), without retries, to fail fast on a bad URL or key."""
        import openai

        client = self._client()[0].with_options(max_retries=0, timeout=min(self.timeout_s, 10))
        try:
            await client.models.list()
        except openai.OpenAIError as e:
            raise self._error(e) from None

    # --- sampling ------------------------------------------------------------------
    def _request(self, prompt: Prompt, n: int) -> tuple[dict, list[str]]:
        """The request's arguments (but the client call) and its texts (to bound its prompt tokens)."""
        args = dict(model=self.model, temperature=self.temperature * prompt.temperature_scale,
                    max_tokens=self.answer_tokens, seed=prompt.seed)
        if n > 1:
            args["n"] = n
        if self.top_p is not None:
            args["top_p"] = self.top_p
        if self.mode == "completion":
            from evosearch.samplers.local import COMPLETION_STOPS

            if not prompt.completion or not prompt.header:
                raise SamplerError("completion mode needs a prompt with completion text and a header")
            # The API takes at most 4 stop sequences; these end a function in practice.
            return dict(args, prompt=prompt.completion, stop=COMPLETION_STOPS[:4]), [prompt.completion]
        chat = self.messages(prompt)
        return dict(args, messages=chat), [m["content"] for m in chat]

    async def sample(self, prompt: Prompt) -> Sample:
        key = (self.mode, prompt.system, prompt.user, prompt.completion, prompt.temperature_scale)
        if (spare := self._spare.take(key)) is not None:
            return spare
        import openai

        client, gate = self._client()
        async with gate:
            if (spare := self._spare.take(key)) is not None:  # from a same-prompt request while this one waited
                return spare
            n = self.n if self.n_honoured is not False else 1
            args, texts = self._request(prompt, n)
            reservation = await self.meter.reserve(worst_prompt_tokens(*texts), n * self.answer_tokens)
            attempts: list = []
            token = _attempts.set(attempts)
            self.stats["requests"] += 1
            start = time.perf_counter()
            try:
                create = client.completions.create if self.mode == "completion" else client.chat.completions.create
                response = await create(**args)
            except BaseException as e:
                self.budget.cancel(reservation)
                if isinstance(e, (openai.OpenAIError, ValueError)):  # ValueError: JSON that does not parse
                    self.stats["failures"] += 1
                    raise self._error(e, attempts) from None
                raise
            finally:
                _attempts.reset(token)
            seconds = time.perf_counter() - start
            usage = getattr(response, "usage", None)
            tokens_in = getattr(usage, "prompt_tokens", 0) or 0
            tokens_out = getattr(usage, "completion_tokens", 0) or 0
            cost = self.meter.settle(reservation, tokens_in, tokens_out)  # charged even if the answer is useless
            choices = getattr(response, "choices", None)
            if not choices:
                self.stats["failures"] += 1
                raise SamplerError(f"{self.base_url}: the answer has no choices", tokens_in=tokens_in,
                                   tokens_out=tokens_out, retries=len(attempts) - 1, cost=cost)
            if n > 1 and self.n_honoured is None:
                self.n_honoured = len(choices) >= n
                if not self.n_honoured:
                    log.info("%s answered %d of n=%d answers; asking for one per request from now on",
                             self.base_url, len(choices), n)
            model = getattr(response, "model", None) or self.model
            shared = {"retries": len(attempts) - 1, "attempts": attempts[:-1]}  # the failed attempts' outcomes
            samples = []
            for j, choice in enumerate(choices):
                if self.mode == "completion":
                    text, more = prompt.header + (choice.text or ""), {"mode": "completion"}
                else:
                    text, more = (choice.message.content if choice.message else "") or "", {}
                if len(choices) > 1:
                    more.update(answers_in_request=len(choices), answer=j)
                first = j == 0  # the first answer carries the request's usage, so sums over samples are exact
                samples.append(Sample(
                    text=text, model=model, tokens_in=tokens_in if first else 0,
                    tokens_out=tokens_out if first else 0, seconds=seconds if first else 0.0,
                    extra={"finish_reason": choice.finish_reason, **more, **shared,
                           "cost": cost if first or cost is None else 0.0}))
            self.stats["answers"] += len(samples)
            self._spare.put(key, samples[1:])
            return samples[0]

    def usage(self) -> dict:
        """Tokens, cost and request counts so far (what the run stores as ``sampler_usage``)."""
        return {**self.meter.usage(), **{k: self.stats[k] for k in
                ("requests", "attempts", "retries", "failures", "answers")}, "spare_used": self._spare.used,
                **{k: v for k, v in self.stats.items() if k.startswith("http_")},
                "n": self.n, "n_honoured": self.n_honoured}

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for loop, client, _ in clients.values():
            if loop is asyncio.get_running_loop():
                await client.close()

"""Any OpenAI-compatible chat endpoint: OpenAI itself, vLLM, llama.cpp's server, Ollama, ...

The key is read from an environment variable (never from a config file, so it
stays out of the run's store); a local endpoint needs none.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from urllib.parse import urlparse

from evosearch.samplers.base import Prompt, Sample, Sampler, SamplerError

NO_KEY = "none"  # what local servers get when no key is set; they ignore it


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


class OpenAISampler(Sampler):
    name = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", temperature: float = 0.8,
                 max_tokens: int = 1024, timeout_s: float = 60, max_retries: int = 3, fold_system: bool = False,
                 mode: str = "chat"):
        """``fold_system``: send the system text as the start of the user turn, for
        models without a system role (Gemma behind llama.cpp's "gemma" chat format drops it).
        ``mode``: "chat" (chat.completions with system/user) or "completion" (the legacy
        completions endpoint continuing ``prompt.completion``, as FunSearch drove its code
        model; for base models behind vLLM or llama.cpp). A completion sample is the prompt's
        header plus the continuation, so it reads as a whole function."""
        if not urlparse(base_url).scheme in ("http", "https"):
            raise ValueError(f"base_url must start with http:// or https://, not {base_url!r}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {temperature}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, not {max_tokens}")
        if mode not in ("chat", "completion"):
            raise ValueError(f"mode must be chat or completion, not {mode!r}")
        self.mode = mode
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.fold_system = fold_system
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, object]] = {}

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        if is_local(self.base_url):
            return NO_KEY
        raise SamplerError(f"environment variable {self.api_key_env} is not set (needed for {self.base_url})")

    def _client(self):
        """One client per event loop: its HTTP connections belong to the loop that opened them."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(id(loop))
        if entry is None or entry[0] is not loop:
            try:
                from openai import AsyncOpenAI
            except ImportError:
                raise SamplerError("the openai sampler needs the openai package; pip install openai") from None
            client = AsyncOpenAI(base_url=self.base_url, api_key=self._api_key(), timeout=self.timeout_s,
                                 max_retries=self.max_retries)
            self._clients = {k: v for k, v in self._clients.items() if not v[0].is_closed()}
            self._clients[id(loop)] = entry = (loop, client)
        return entry[1]

    def _error(self, e: Exception) -> SamplerError:
        import openai

        if isinstance(e, openai.APITimeoutError):
            return SamplerError(f"{self.base_url}: no answer within {self.timeout_s:g}s")
        if isinstance(e, openai.APIConnectionError):
            return SamplerError(f"cannot reach {self.base_url}: {_reason(e)}")
        if isinstance(e, openai.APIStatusError):
            message = " ".join(str(getattr(e, "message", e)).split())[:300]
            return SamplerError(f"{self.base_url}: HTTP {e.status_code}: {message}")
        return SamplerError(f"{self.base_url}: {type(e).__name__}: {' '.join(str(e).split())[:300]}")

    def messages(self, prompt: Prompt) -> list[dict[str, str]]:
        if self.fold_system:
            user = f"{prompt.system.strip()}\n\n{prompt.user}" if prompt.system.strip() else prompt.user
            return [{"role": "user", "content": user}]
        return ([{"role": "system", "content": prompt.system}] if prompt.system else []) + \
            [{"role": "user", "content": prompt.user}]

    async def check(self) -> None:
        """One cheap request (list the models), without retries, to fail fast on a bad URL or key."""
        import openai

        client = self._client().with_options(max_retries=0, timeout=min(self.timeout_s, 10))
        try:
            await client.models.list()
        except openai.OpenAIError as e:
            raise self._error(e) from None

    async def sample(self, prompt: Prompt) -> Sample:
        if self.mode == "completion":
            return await self._complete(prompt)
        import openai

        client = self._client()
        start = time.perf_counter()
        try:
            response = await client.chat.completions.create(
                model=self.model, messages=self.messages(prompt), temperature=self.temperature,
                max_tokens=self.max_tokens, seed=prompt.seed)
        except openai.OpenAIError as e:
            raise self._error(e) from None
        seconds = time.perf_counter() - start
        if not response.choices:
            raise SamplerError(f"{self.base_url}: the answer has no choices")
        choice = response.choices[0]
        usage = response.usage
        return Sample(text=choice.message.content or "", model=response.model or self.model,
                      tokens_in=usage.prompt_tokens if usage else 0, tokens_out=usage.completion_tokens if usage else 0,
                      seconds=seconds, extra={"finish_reason": choice.finish_reason})

    async def _complete(self, prompt: Prompt) -> Sample:
        import openai

        from evosearch.samplers.local import COMPLETION_STOPS

        if not prompt.completion or not prompt.header:
            raise SamplerError("completion mode needs a prompt with completion text and a header")
        start = time.perf_counter()
        try:
            # The API takes at most 4 stop sequences; these end a function in practice.
            response = await self._client().completions.create(
                model=self.model, prompt=prompt.completion, temperature=self.temperature,
                max_tokens=self.max_tokens, seed=prompt.seed, stop=COMPLETION_STOPS[:4])
        except openai.OpenAIError as e:
            raise self._error(e) from None
        seconds = time.perf_counter() - start
        if not response.choices:
            raise SamplerError(f"{self.base_url}: the answer has no choices")
        choice, usage = response.choices[0], response.usage
        return Sample(text=prompt.header + (choice.text or ""), model=response.model or self.model,
                      tokens_in=usage.prompt_tokens if usage else 0, tokens_out=usage.completion_tokens if usage else 0,
                      seconds=seconds, extra={"finish_reason": choice.finish_reason, "mode": "completion"})

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for loop, client in clients.values():
            if loop is asyncio.get_running_loop():
                await client.close()

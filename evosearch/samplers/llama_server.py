"""llama.cpp's OpenAI-compatible server (llama-server, from the xllamacpp wheel) with the
embedded Gemma model on a free loopback port: what the tests and benchmarks talk to, and a
quick way for a user to try ``--sampler openai`` without a key:

    python -m evosearch.samplers.llama_server --port 8080   # then --base-url http://127.0.0.1:8080/v1
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(threads: int = 2, n_ctx: int = 4096, parallel: int = 4, ready_s: float = 180):
    """llama.cpp's OpenAI-compatible server with the embedded model on a free loopback port, in
    its own process; yields its URL."""
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", prefix="llama_server-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "evosearch.samplers.llama_server", "--port", str(port),
                             "--n-ctx", str(n_ctx), "--threads", str(threads), "--parallel", str(parallel)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {proc.returncode}; see {log.name}")
            with contextlib.suppress(OSError), direct.open(f"{url}/models", timeout=2) as r:
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evosearch.samplers.llama_server",
                                     description="Serve the embedded Gemma 3 270M model on 127.0.0.1 "
                                                 "(OpenAI-compatible, /v1).")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None, help="default: half the cores")
    parser.add_argument("--parallel", type=int, default=4,
                        help="slots decoded together (continuous batching); also the largest n per request")
    args = parser.parse_args(argv)
    import xllamacpp

    from evosearch.samplers.local import default_threads, gemma_path, server_params

    params = server_params(xllamacpp, gemma_path(), args.n_ctx, args.threads or default_threads())
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_parallel = args.parallel
    params.kv_unified = True  # the slots share one context window, so each may use all of it
    params.cache_ram_mib = 8192  # a real server's default: any client may come back to an earlier prompt
    server = xllamacpp.Server(params)  # serves HTTP from its own threads until it is dropped
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"serving {server.listening_address}/v1", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    del server


if __name__ == "__main__":
    main()

"""Requests per second of the OpenAI-compatible sampler at several concurrency limits.

    python benchmarks/openai_concurrency.py [--concurrency 1 4 16] [--answer-tokens 16] [--threads 2]
                                            [--base-url URL --model NAME] [--out openai_concurrency.json]

Without ``--base-url`` it starts llama.cpp's OpenAI-compatible server
(``python -m evosearch.samplers.llama_server``, xllamacpp) with the embedded Gemma 3 270M model on a free
loopback port, and stops it at the end. Each level sends ``requests`` distinct
samples (the bin packing prompt with the seed program as parent, one seed each) all
at once through one ``OpenAISampler(concurrency=c)`` and times them to the last
answer, after one warm-up request. Reported per level: requests/s, answer tokens/s,
mean and p90 latency (sending to answer, not the wait for a free slot), retries and failures.

``measure(concurrencies)`` returns the rows, for other benchmarks to import.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from pathlib import Path

from evosearch.problem import load_problem
from evosearch.prompt import build_prompt
from evosearch.samplers.llama_server import llama_server
from evosearch.samplers.openai_api import OpenAISampler


def bin_packing_prompts(count: int):
    problem = load_problem("bin_packing", None, 0, {})
    return [build_prompt(description=problem.description, skeleton=problem.skeleton,
                         parents=[(problem.skeleton, -1.0)], seed=seed) for seed in range(count)]


async def _level(base_url: str, model: str, concurrency: int, requests: int, answer_tokens: int) -> dict:
    sampler = OpenAISampler(base_url, model=model, answer_tokens=answer_tokens, concurrency=concurrency,
                            fold_system=True, timeout_s=600)
    prompts = bin_packing_prompts(requests + 1)
    await sampler.sample(prompts[-1])  # warm-up: connection, server prompt cache
    start = time.perf_counter()
    samples = await asyncio.gather(*(sampler.sample(p) for p in prompts[:requests]), return_exceptions=True)
    wall = time.perf_counter() - start
    usage = sampler.usage()
    await sampler.close()
    ok = [s for s in samples if not isinstance(s, BaseException)]
    latencies = sorted(s.seconds for s in ok)  # from sending to the answer, not counting the wait for a slot
    return {"concurrency": concurrency, "requests": requests, "ok": len(ok), "wall_s": round(wall, 3),
            "requests_per_s": round(len(ok) / wall, 3),
            "answer_tokens_per_s": round(sum(s.tokens_out for s in ok) / wall, 2),
            "prompt_tokens_mean": round(statistics.mean(s.tokens_in for s in ok), 1) if ok else None,
            "latency_mean_s": round(statistics.mean(latencies), 3) if latencies else None,
            "latency_p90_s": round(latencies[int(0.9 * (len(latencies) - 1))], 3) if latencies else None,
            "retries": usage["retries"], "failures": usage["failures"]}


def measure(concurrencies=(1, 4, 16), *, requests: int | None = None, answer_tokens: int = 16,
            base_url: str | None = None, model: str = "gemma", threads: int = 2) -> list[dict]:
    """One row per concurrency level; ``requests`` per level defaults to max(8, 2 * concurrency)."""
    with contextlib.ExitStack() as stack:
        if base_url is None:
            base_url = stack.enter_context(llama_server(threads=threads))
        return [asyncio.run(_level(base_url, model, c, requests or max(8, 2 * c), answer_tokens))
                for c in concurrencies]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=None, help="per level (default: max(8, 2 * concurrency))")
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads of the started server")
    parser.add_argument("--base-url", default=None, help="an already running endpoint (default: start llama.cpp)")
    parser.add_argument("--model", default="gemma")
    parser.add_argument("--out", default="openai_concurrency.json")
    args = parser.parse_args()
    rows = measure(args.concurrency, requests=args.requests, answer_tokens=args.answer_tokens,
                   base_url=args.base_url, model=args.model, threads=args.threads)
    print(f"{'concurrency':>11} {'requests':>8} {'req/s':>7} {'answer tok/s':>12} {'prompt tok':>10} "
          f"{'latency mean':>12} {'p90':>7} {'retries':>7} {'failed':>6}")
    for r in rows:
        print(f"{r['concurrency']:>11} {r['requests']:>8} {r['requests_per_s']:>7.3f} {r['answer_tokens_per_s']:>12.2f} "
              f"{r['prompt_tokens_mean']:>10} {r['latency_mean_s']:>11.2f}s {r['latency_p90_s']:>6.2f}s "
              f"{r['retries']:>7} {r['requests'] - r['ok']:>6}")
    Path(args.out).write_text(json.dumps({"rows": rows, "answer_tokens": args.answer_tokens,
                                          "base_url": args.base_url or "llama-server via xllamacpp (embedded Gemma 3 270M)",
                                          "threads": args.threads}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

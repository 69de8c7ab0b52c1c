"""Embedded-model sampling speed and answer quality per edit format, with and without prefix reuse.

    PYTHONPATH=. python benchmarks/sampler_throughput.py [--samples 4] [--threads 1] [--answer-tokens 128]
                                 [--formats ...] [--same-prompt full] [--skip-openai] [--out sampler_throughput.json]

For each edit format (full, crossover, fix: completion form; diff and full-chat: chat
form) it builds engine-like bin packing prompts (the seed program and LLM-free mutants
as parents, scored in the sandbox; a crashing program with its real error for fix)
and draws ``--samples`` answers from the embedded Gemma 3 270M, alternating between
two prompts that share the run's head (as consecutive engine samples do), first with
the shared head's KV state reused, then with every prompt evaluated from scratch.
The answers must be identical both ways (prefix reuse keeps answers a function of
prompt and seed); only the time differs. A third pass ("same prompt") draws the
samples from one prompt only (``--same-prompt`` formats), where all but the last token is reused:
what an engine run with ``--samples-per-prompt`` > 1 does.

Reported per format: samples/s and answer tokens/s with and without reuse, the
speedup, prompt tokens reused per sample, and the rates of answers whose edit
applies ("edit ok": extracted and spliced, or SEARCH/REPLACE applied) and of
programs the sandbox scores ("valid"). The CPU is shared with other work, so the
load average at start and end is printed too. Then, unless ``--skip-openai``, the
OpenAI-compatible path against a local llama.cpp server at concurrency 1, 4, 16
(benchmarks/openai_concurrency.py).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from evaluators.evaluator import Evaluator
from evaluators.pool import WorkerPool
from evosearch.edits import apply_diff, parse_diff
from evosearch.extract import extract_functions
from evosearch.problem import load_problem
from evosearch.program import EditError, check_frozen, evolvable_functions, replace_functions
from evosearch.prompt import Shown, build_prompt
from evosearch.samplers.local import LocalSampler
from evosearch.samplers.mutate import mutate

OPTIONS = {"train_items": 200, "test_items": 300}
FORMATS = ("full", "crossover", "fix", "diff", "full-chat")


async def parents(problem, evaluator) -> tuple[list[Shown], list[Shown]]:
    """The seed program and three mutants, scored in the sandbox; and two programs that crash, with their errors."""
    seed = problem.skeleton
    programs = [seed] + [replace_functions(seed, extract_functions(mutate(seed, s), ["priority"])) for s in (1, 2, 3)]
    shown = []
    for k, code in enumerate(programs):
        r = await evaluator.evaluate(code, key=k)
        shown.append(Shown(code, r.score if r.ok else None, id=k, metrics=r.metrics or None, status=r.status,
                           error=None if r.ok else r.reason))
    failed = []
    for k, body in enumerate(("return -(bins - item)[len(bins) + 5]", "return -(bins - item) + undefined_name")):
        broken = seed.replace("return -(bins - item)", body)
        r = await evaluator.evaluate(broken, key=90 + k)
        failed.append(Shown(broken, None, id=90 + k, status=r.status, error=r.reason))
    return [s for s in shown if s.score is not None], failed


def prompts_for(problem, fmt: str, good: list[Shown], failed: list[Shown]) -> list:
    """Two prompts of the format sharing the head (different parents), as two consecutive engine samples."""
    base = "full" if fmt == "full-chat" else fmt
    sets = {"fix": [failed[0:1], failed[1:2]],
            "crossover": [good[0:2], good[1:3]], "diff": [good[0:1], good[1:2]]}.get(base, [good[0:2], good[1:3]])
    out = []
    for shown in sets:
        p = build_prompt(description=problem.description, skeleton=problem.skeleton, parents=shown, seed=0,
                         edit_format=base)
        if fmt == "full-chat":
            p = dataclasses.replace(p, completion="")  # the chat form of the same prompt
        out.append(p)
    return out


def edit(fmt: str, text: str, prompt, functions) -> str:
    base = prompt.parents[-1]
    if fmt == "diff":
        return apply_diff(base, parse_diff(text))
    code = replace_functions(base, extract_functions(text, functions, header=prompt.header or None, program=base))
    check_frozen(base, code)
    return code


async def draw(sampler: LocalSampler, prompts: list, seeds: list[int], reuse: bool, alternate: bool) -> dict:
    sampler.reuse_prefix = reuse
    sampler.forget_prefix()  # every pass starts from an empty cache
    samples, start, cpu = [], time.perf_counter(), time.process_time()
    for k, seed in enumerate(seeds):
        p = prompts[k % len(prompts)] if alternate else prompts[0]
        samples.append((p, await sampler.sample(dataclasses.replace(p, seed=seed))))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    out_tokens = sum(s.tokens_out for _, s in samples)
    # Per CPU-second as well as per wall second: on a shared CPU the wall clock mostly measures the neighbours.
    return {"samples": samples, "wall_s": wall, "cpu_s": cpu, "samples_per_s": len(samples) / wall,
            "samples_per_cpu_s": len(samples) / cpu,
            "answer_tokens_per_s": out_tokens / wall, "answer_tokens": out_tokens,
            "prompt_tokens": sum(s.tokens_in for _, s in samples) / len(samples),
            "reused_tokens": sum(s.extra.get("reused_tokens", 0) for _, s in samples) / len(samples),
            # The sampler times its prompt evaluation apart from generation (which reuse cannot change).
            "prompt_s": sum(s.extra["prompt_s"] for _, s in samples) / len(samples),
            "generate_tokens_per_s": out_tokens / max(sum(s.seconds - s.extra["prompt_s"] for _, s in samples), 1e-9)}


async def bench(args) -> dict:
    problem = load_problem("bin_packing", None, 0, OPTIONS)
    functions = list(evolvable_functions(problem.skeleton))
    sampler = LocalSampler(max_tokens=args.answer_tokens, threads=args.threads, seed=0)
    rows = []
    async with WorkerPool(problem.folder, None, 0, OPTIONS, workers=1, hide=[]) as pool:
        evaluator = Evaluator(pool, timeout_s=None, memory_mb=None, use_probe=False)
        good, failed = await parents(problem, evaluator)
        print(f"parents: {len(good)} scored, failing programs: {[f.status for f in failed]}", file=sys.stderr)
        seeds = list(range(1000, 1000 + args.samples))
        if args.formats:  # the first generation pays for loading the weights into memory: not measured
            await sampler.sample(dataclasses.replace(prompts_for(problem, "full", good, failed)[0], seed=1))
        for fmt in args.formats:
            prompts = prompts_for(problem, fmt, good, failed)
            reused = await draw(sampler, prompts, seeds, reuse=True, alternate=True)
            fresh = await draw(sampler, prompts, seeds, reuse=False, alternate=True)
            same = await draw(sampler, prompts, seeds, reuse=True, alternate=False) if fmt in args.same_prompt else None
            identical = [s.text for _, s in reused["samples"]] == [s.text for _, s in fresh["samples"]]
            applied = valid = 0
            for p, s in reused["samples"]:
                try:
                    code = edit(fmt.replace("-chat", ""), s.text, p, functions)
                except (EditError, SyntaxError):
                    continue
                applied += 1
                valid += (await evaluator.evaluate(code)).ok
            n = len(seeds)
            row = {"format": fmt, "form": "completion" if prompts[0].completion else "chat", "samples": n,
                   "prompt_tokens": round(reused["prompt_tokens"]),
                   "reused_tokens": round(reused["reused_tokens"]),
                   "samples_per_s_reuse": reused["samples_per_s"], "samples_per_s_fresh": fresh["samples_per_s"],
                   "speedup": reused["samples_per_s"] / fresh["samples_per_s"],
                   "samples_per_cpu_s_reuse": reused["samples_per_cpu_s"],
                   "samples_per_cpu_s_fresh": fresh["samples_per_cpu_s"],
                   "cpu_speedup": reused["samples_per_cpu_s"] / fresh["samples_per_cpu_s"],
                   "cpu_speedup_same_prompt": same and same["samples_per_cpu_s"] / fresh["samples_per_cpu_s"],
                   "prompt_s_reuse": reused["prompt_s"], "prompt_s_fresh": fresh["prompt_s"],
                   "prompt_s_same_prompt": same and same["prompt_s"],
                   "generate_tokens_per_s": fresh["generate_tokens_per_s"],
                   "samples_per_s_same_prompt": same and same["samples_per_s"],
                   "speedup_same_prompt": same and same["samples_per_s"] / fresh["samples_per_s"],
                   "answer_tokens_per_s_reuse": reused["answer_tokens_per_s"],
                   "answer_tokens_per_s_fresh": fresh["answer_tokens_per_s"],
                   "mean_answer_tokens": reused["answer_tokens"] / n,
                   "edit_ok_rate": applied / n, "valid_rate": valid / n, "identical_answers": identical,
                   "answers": [s.text[:400] for _, s in reused["samples"][:2]]}  # what the model wrote
            rows.append(row)
            print(f"{fmt}: {row['samples_per_s_reuse']:.3f} vs {row['samples_per_s_fresh']:.3f} samples/s, "
                  f"edit ok {applied}/{n}, valid {valid}/{n}, identical {identical}, load {os.getloadavg()[0]:.2f}",
                  file=sys.stderr)
    await sampler.close()
    return {"threads": args.threads, "answer_tokens": args.answer_tokens, "formats": rows}


def table(rows: list[dict]) -> str:
    head = (f"{'format':10} {'form':10} {'n':>2} {'prompt':>6} {'reused':>6} {'smp/s reuse':>11} {'smp/s fresh':>11} "
            f"{'wall x':>6} {'same-prompt x':>13} {'prompt ms reuse':>15} {'fresh':>6} {'same':>5} {'gen tok/s':>9} "
            f"{'edit ok':>7} {'valid':>6} same-text")
    lines = [head]
    for r in rows:
        same = f"{r['speedup_same_prompt']:>12.2f}x" if r.get("speedup_same_prompt") else f"{'-':>13}"
        same_ms = f"{1000 * r['prompt_s_same_prompt']:>5.0f}" if r.get("prompt_s_same_prompt") else f"{'-':>5}"
        lines.append(f"{r['format']:10} {r['form']:10} {r['samples']:>2} {r['prompt_tokens']:>6} {r['reused_tokens']:>6} "
                     f"{r['samples_per_s_reuse']:>11.3f} {r['samples_per_s_fresh']:>11.3f} {r['speedup']:>5.2f}x "
                     f"{same} {1000 * r['prompt_s_reuse']:>15.0f} {1000 * r['prompt_s_fresh']:>6.0f} {same_ms} "
                     f"{r['generate_tokens_per_s']:>9.1f} {r['edit_ok_rate']:>7.0%} {r['valid_rate']:>6.0%} "
                     f"{r['identical_answers']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4, help="answers per format and pass")
    # One thread: on a CPU shared with other work, llama.cpp's spinning threads crawl.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--answer-tokens", type=int, default=128)
    parser.add_argument("--same-prompt", nargs="*", default=["full"], choices=FORMATS,
                        help="formats also measured drawing every sample from one prompt")
    parser.add_argument("--formats", nargs="*", default=list(FORMATS), choices=FORMATS,
                        help="edit formats to measure (none: only the OpenAI table)")
    parser.add_argument("--skip-openai", action="store_true", help="skip the OpenAI-compatible server table")
    parser.add_argument("--out", default="sampler_throughput.json")
    args = parser.parse_args()
    load_start = os.getloadavg()
    start = time.perf_counter()
    result = asyncio.run(bench(args))
    print(table(result["formats"]))
    if not args.skip_openai:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from openai_concurrency import measure  # the other half of this benchmark, kept in its own script

        result["openai"] = measure([1, 4, 16])
        print("\nOpenAI-compatible sampler against llama.cpp's server:")
        for r in result["openai"]:
            print("  " + "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
    result["load_average_start"], result["load_average_end"] = load_start, os.getloadavg()
    result["wall_s"] = time.perf_counter() - start
    print(f"load average (1, 5, 15 min): start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}, "
          f"end {result['load_average_end'][0]:.2f} {result['load_average_end'][1]:.2f} "
          f"{result['load_average_end'][2]:.2f}; {os.cpu_count()} CPUs; {result['wall_s']:.0f} s in all")
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

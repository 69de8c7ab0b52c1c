"""The embedded model on two llama.cpp bindings, measured in one session: speed, determinism and
exact prefix reuse of the local sampler (Gemma 3 270M Q4_K_M).

    python benchmarks/embedded_backends.py --before-python /tmp/venv-before/bin/python \\
        --before-root /tmp/main-src [--rounds 2] [--threads 2] [--json benchmarks/embedded_backends.json]
    python benchmarks/embedded_backends.py ... --race 180 --json benchmarks/embedded_backends_race.json

"before" is another checkout of the project (e.g. main with llama-cpp-python, installed into its
own venv); "after" is this checkout. Each round runs one probe process per side, alternating, so
both see the same load. A probe loads the model and measures:

* generation tokens/s: chat prompts, 64 answer tokens each, no early stop, 3 seeds;
* prompt tokens/s: a fresh prompt's evaluation;
* same seed, same answer: one (prompt, seed) drawn again after other prompts;
* prefix reuse exact: prompts sharing a head, answers with the cache reused == answers without;
* the greedy answer (temperature 0), to compare the two bindings' texts.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are an expert Python programmer improving a heuristic for online bin packing."
USER = ("Write a Python function `priority_v2(item: float, bins: np.ndarray) -> np.ndarray` that scores each bin; "
        "the item goes into the bin with the highest score. Answer with one ```python block.")


def probe(threads: int) -> dict:
    from evosearch.samplers.base import Prompt
    from evosearch.samplers.local import LocalSampler

    def sampler(**kw):
        s = LocalSampler(threads=threads, n_ctx=2048, stop_after_code=False, **kw)
        s.temperature_spread = 0.0  # a fixed temperature on both sides (an attribute the old sampler ignores)
        return s

    def chat(seed, user=USER):
        return Prompt(SYSTEM, user, [], ["priority"], seed)

    head = "".join(f'"""Helper {k} of the bin packing context."""\ndef helper_{k}(x):\n    return x * {k}\n\n\n'
                   for k in range(8))
    header = "def priority_v1(item: float, bins: np.ndarray) -> np.ndarray:\n"

    def shared(variant, seed):
        body = f"def priority_v0(item: float, bins: np.ndarray) -> np.ndarray:\n    return -(bins - item) * {variant}\n\n\n"
        return Prompt(SYSTEM, USER, [], ["priority"], seed, completion=head + body + header, header=header,
                      completion_shared=len(head))

    async def go() -> dict:
        out = {}
        s = sampler(max_tokens=64)
        t0 = time.perf_counter()
        await s.sample(chat(0, "Say hi."))  # loads the model
        out["load_and_first_s"] = time.perf_counter() - t0
        gen = [await s.sample(chat(seed)) for seed in (1, 2, 3)]
        out["gen_tokens"] = sum(g.tokens_out for g in gen)
        out["gen_s"] = sum(g.seconds - g.extra["prompt_s"] for g in gen)
        again = await s.sample(chat(2))
        out["same_seed_same_answer"] = again.text == gen[1].text
        s.reuse_prefix = False
        fresh = await s.sample(chat(9, USER + " Keep it short. " * 20))
        out["prompt_tokens"], out["prompt_s"] = fresh.tokens_in, fresh.extra["prompt_s"]
        s.temperature = 0.0
        out["greedy_text"] = (await s.sample(chat(0))).text
        await s.close()
        order = [(1, 5), (2, 6), (2, 7), (1, 5), (3, 8)]
        texts = {}
        for reuse in (True, False):
            r = sampler(max_tokens=16, reuse_prefix=reuse)
            samples = [await r.sample(shared(v, seed)) for v, seed in order]
            texts[reuse] = [x.text for x in samples]
            out[f"reused_tokens_{reuse}"] = sum(x.extra["reused_tokens"] for x in samples)
            await r.close()
        out["prefix_reuse_exact"] = texts[True] == texts[False]
        out["same_prompt_after_others"] = texts[True][0] == texts[True][3]
        return out
    return asyncio.run(go())


def race(threads: int, seconds: float) -> dict:
    """Answer tokens per second over ``seconds`` of back-to-back 48-token answers (the same prompt,
    so after the first only the last prompt token is evaluated): generation speed alone."""
    from evosearch.samplers.base import Prompt
    from evosearch.samplers.local import LocalSampler

    s = LocalSampler(threads=threads, n_ctx=1024, stop_after_code=False, max_tokens=48)
    s.temperature_spread = 0.0

    async def go() -> dict:
        await s.sample(Prompt(SYSTEM, USER, [], ["priority"], 0))  # load, and the prompt in the cache
        tokens, gen_s, seed, end = 0, 0.0, 1, time.perf_counter() + seconds
        while time.perf_counter() < end:
            x = await s.sample(Prompt(SYSTEM, USER, [], ["priority"], seed))
            tokens, gen_s, seed = tokens + x.tokens_out, gen_s + x.seconds - x.extra["prompt_s"], seed + 1
        return {"race_tokens": tokens, "race_gen_s": gen_s, "race_answers": seed - 1}
    return asyncio.run(go())


def run_race(sides, threads: int, seconds: float) -> dict:
    """Both sides at once, so both see the same load: the fairest speed comparison on a shared machine."""
    procs = {label: subprocess.Popen([python, str(Path(__file__).resolve()), "--probe", "--race", str(seconds), "--threads",
                                      str(threads)], cwd=root, env=dict(os.environ, PYTHONPATH=str(root)),
                                     stdout=subprocess.PIPE, text=True) for label, python, root in sides}
    return {label: json.loads(p.communicate()[0].strip().splitlines()[-1]) for label, p in procs.items()}


def run_probe(python: str, root: Path, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--probe", "--threads", str(threads)], cwd=root,
                          env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"probe of {root} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--race", type=float, default=0, help="seconds of generation per side, both sides at once "
                                                          "(0: no race)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--before-python", default=None)
    ap.add_argument("--before-root", default=None)
    ap.add_argument("--before-label", default="llama-cpp-python 0.3.36 (main)")
    ap.add_argument("--after-label", default="xllamacpp (this checkout)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "embedded_backends.json"))
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(race(args.threads, args.race) if args.race else probe(args.threads)))
        return
    sides = [(args.after_label, sys.executable, ROOT)]
    if args.before_python:
        sides.insert(0, (args.before_label, args.before_python, Path(args.before_root)))
    runs = {label: [] for label, _, _ in sides}
    if args.race:
        for label, r in run_race(sides, args.threads, args.race).items():
            print(f"race: {label}: {r['race_tokens'] / r['race_gen_s']:.1f} answer tokens/s "
                  f"({r['race_answers']} answers)", flush=True)
            runs[label].append(r)
        Path(args.json).write_text(json.dumps({"threads": args.threads, "race_s": args.race, "runs": runs,
                                               "load_avg_1min": os.getloadavg()[0]}, indent=2) + "\n")
        return
    for k in range(args.rounds):
        for label, python, root in sides:
            runs[label].append(r := run_probe(python, root, args.threads))
            print(f"round {k}: {label}: {r['gen_tokens'] / r['gen_s']:.1f} tokens/s", flush=True)
    print(f"\nGemma 3 270M Q4_K_M, {args.threads} threads, {args.rounds} rounds (median), "
          f"load {os.getloadavg()[0]:.1f} at the end")
    print(f"{'binding':34} {'gen tok/s':>10} {'prompt tok/s':>13} {'load s':>7} {'same seed':>10} "
          f"{'reuse exact':>12} {'reused tok':>11}")
    summary = {}
    for label, rs in runs.items():
        row = {"gen_tokens_per_s": statistics.median(r["gen_tokens"] / r["gen_s"] for r in rs),
               "prompt_tokens_per_s": statistics.median(r["prompt_tokens"] / r["prompt_s"] for r in rs),
               "load_and_first_s": statistics.median(r["load_and_first_s"] for r in rs),
               "same_seed_same_answer": all(r["same_seed_same_answer"] and r["same_prompt_after_others"] for r in rs),
               "prefix_reuse_exact": all(r["prefix_reuse_exact"] for r in rs),
               "reused_tokens": rs[0]["reused_tokens_True"], "greedy_text": rs[0]["greedy_text"]}
        summary[label] = row
        print(f"{label:34} {row['gen_tokens_per_s']:10.1f} {row['prompt_tokens_per_s']:13.1f} "
              f"{row['load_and_first_s']:7.1f} {str(row['same_seed_same_answer']):>10} "
              f"{str(row['prefix_reuse_exact']):>12} {row['reused_tokens']:11d}")
    if len(runs) == 2:
        a, b = summary.values()
        print(f"greedy answers identical: {a['greedy_text'] == b['greedy_text']}")
        summary["greedy_identical"] = a["greedy_text"] == b["greedy_text"]
    Path(args.json).write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "summary": summary,
                                           "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The run report at 10,000 samples: build time and size, time for Chromium to draw it, and screenshots of the
report and of the live dashboard beside a running search.

10,000 real samples take hours on this machine (even LLM-free, about a second each with evaluation), so the
10,000-sample store is made synthetically but with the real schema and write path (evosearch.store.Store),
the real prompt layout (two versioned parents, FunSearch style), answers with a `# Change:` line and a code block
(30% SEARCH/REPLACE diffs), programs that drift by one edit per generation along real lineages, the failure mix
of an LLM run (syntax, timeout, crash, invalid, no code, rejected edits, sampler errors with tracebacks), two
priced models with retries, four islands with grid archives, ring migrations and qd_metrics.json. The dashboard
screenshot is of a real LLM-free run while it goes.

    PYTHONPATH=$PWD python benchmarks/report_pages.py [--samples 10000] [--no-browser]

Prints a table, writes benchmarks/report_pages.json and benchmarks/screenshots/*.png.
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import math
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from evosearch.store import Store  # noqa: E402

SYSTEM = ("You are an expert Python programmer improving a program by evolutionary search. Each version below was "
          "scored by trusted code; higher scores are better. Answer in the format asked for at the end. Keep "
          "function signatures; you may use numpy as np.")
HEAD = '"""Online bin packing: each item goes to the feasible bin of highest priority."""\nimport numpy as np\n'
DOC = ('    """Returns the priority with which we want to add `item` to each bin.\n\n    item: size of the item to '
       'place.\n    bins: remaining capacity of each bin the item fits in.\n    """\n')
TERMS = ["{c} * (item < {t})", "{c} * np.log1p(bins)", "{c} * (bins - item) ** 2", "{c} * np.exp(-(bins - item) / {t})",
         "{c} * (bins == bins.max())", "{c} * np.sqrt(np.maximum(bins - item, 0))", "{c} / (1 + bins - item)",
         "{c} * (bins - item < {t})", "{c} * np.arange(len(bins)) / max(len(bins), 1)", "{c} * np.tanh(item - {t})"]
CHANGES = ["prefer nearly full bins more strongly", "penalise leaving tiny gaps", "reward bins the item fills exactly",
           "smooth the best-fit score with a log term", "break ties towards older bins", "add a quadratic waste term",
           "scale the gap penalty with the item size", "drop a term that did not help", "tune the threshold",
           "mix best fit with worst fit for small items"]
FAILURES = [("syntax", 0.05, "SyntaxError: invalid syntax (line {l})"),
            ("timeout", 0.03, "timed out after 30 s (wall clock); process group killed"),
            ("crash", 0.05, "Traceback (most recent call last):\n  File \"program\", line {l}, in priority\n"
                            "ValueError: operands could not be broadcast together with shapes ({a},) ({b},)"),
            ("invalid", 0.05, "InvalidOutput: priority returned shape ({a},) for {b} bins"),
            ("no_code", 0.02, "no ```python block with a function priority in the answer"),
            ("rejected", 0.02, "edit rejected: SEARCH text not found in the program"),
            ("sampler_error", 0.01, "APITimeoutError: Request timed out. (after 3 retries)")]
MODELS = {"gpt-4o-mini": (0.7, 0.15, 0.60), "qwen2.5-coder-7b": (0.3, None, None)}  # share, USD per 1M in/out


def program(terms: list[str]) -> str:
    body = "    return -(bins - item)" + "".join(f" + {t}" for t in terms) + "\n"
    return f"{HEAD}\n\n# EVOLVE-BLOCK-START\ndef priority(item: float, bins: np.ndarray) -> np.ndarray:\n{DOC}{body}# EVOLVE-BLOCK-END\n"


def version(code: str, v: int, score: float) -> str:
    fn = code.split("# EVOLVE-BLOCK-START\n")[1].split("# EVOLVE-BLOCK-END")[0].replace("def priority(",
                                                                                       f"def priority_v{v}(")
    return f"```python\n# Version {v} (score {score:.6g})\n# Metrics: bins {-score:.4g}, l1 402\n{fn}```\n"


def make_store(run_dir: Path, n: int, seed: int = 0) -> dict:
    """A realistic n-sample run folder (see the module docstring); returns what it made."""
    rng = random.Random(seed)
    run_dir.mkdir(parents=True)
    config = {"problem": "bin_packing", "sampler": "openai", "samples": n, "islands": 4, "seed": seed,
              "models": {m: {"sampler": "openai", "model": m} for m in MODELS}, "concurrency": 8,
              "migration_interval": 50, "archive": "grid", "selection": "uniform", "edit_formats":
              {"full": 0.7, "diff": 0.3}, "runtime_descriptor": False}
    (run_dir / "config.yaml").write_text(json.dumps(config))
    store = Store(run_dir / "evosearch.db")
    store.set_meta("config", config)
    t0 = time.time() - 3 * 3600
    terms_of, score_of, desc_of = {0: []}, {0: -419.6}, {0: {"full_bins": 0.268, "size": 26.0}}
    store.ask(0, island=None, parents=[], sampler="seed")
    store._update(0, code=program([]), status="ok", score=-419.6, descriptors=desc_of[0], finished=t0)
    store.commit({"id": 0}, 0, None, [])
    islands: list[dict] = [{(2, 0): 0} for _ in range(4)]  # cell -> program id; the seed in every island
    cell = lambda d: (min(9, int(d["full_bins"] * 10)), min(9, int(d["size"] / 40)))
    history, events = [], 0
    for pid in range(1, n + 1):
        island = (pid - 1) % 4
        elites = list(islands[island].values())
        parents = sorted(rng.sample(elites, min(2, len(elites))), key=lambda e: score_of[e])
        edited = parents[-1]
        fmt = "diff" if rng.random() < 0.3 else "full"
        model = "gpt-4o-mini" if rng.random() < MODELS["gpt-4o-mini"][0] else "qwen2.5-coder-7b"
        terms = list(terms_of[edited])
        if terms and rng.random() < 0.25:
            terms.pop(rng.randrange(len(terms)))
        else:
            terms.append(rng.choice(TERMS).format(c=round(rng.uniform(-2, 2), 3), t=round(rng.uniform(0.05, 1), 3)))
        code = program(terms[-6:])
        change = rng.choice(CHANGES)
        user = ("Problem: FunSearch online bin packing: evolve priority(item, bins); score = -mean bins used\n\n"
                f"Program context:\n```python\n{HEAD}```\n\n"
                + "\n".join(version(program(terms_of[p]), v, score_of[p]) for v, p in enumerate(parents))
                + f"\nWrite `priority_v{len(parents)}`, an improved version of the functions above. Change the logic,"
                  " not only the names. Start your answer with one line `# Change: <what you change and why>`, then "
                  "one ```python code block defining the function(s).")
        fn = code.split("# EVOLVE-BLOCK-START\n")[1].split("# EVOLVE-BLOCK-END")[0]
        if fmt == "diff":
            old = program(terms_of[edited]).splitlines()[-2]
            response = f"# Change: {change}\n<<<<<<< SEARCH\n{old}\n=======\n{code.splitlines()[-2]}\n>>>>>>> REPLACE\n"
        else:
            response = f"# Change: {change}\n```python\n{fn}```\n"
        created = t0 + pid * 1.05 + rng.uniform(0, 0.5)
        seen = max(1, pid - config["concurrency"])  # results a prompt could see (async commits)
        store.ask(pid, island=island, parents=parents, sampler="openai", seen=seen,
                  prompt=dict(system=SYSTEM, user=user, completion=None, header=None, completion_shared=0,
                              user_shared=0))
        tokens_in, tokens_out = (len(SYSTEM) + len(user)) // 4, len(response) // 4
        share, p_in, p_out = MODELS[model]
        fields = dict(model=model, response=response, edit_format=fmt, rationale=change, epoch=0,
                      tokens_in=tokens_in, tokens_out=tokens_out, retries=rng.choice([0] * 30 + [1, 1, 2, 3]),
                      cost=None if p_in is None else (tokens_in * p_in + tokens_out * p_out) / 1e6,
                      sample_s=rng.lognormvariate(0.5, 0.6), created=created)
        r, status, reason = rng.random(), "ok", None
        for name, p, text in FAILURES:
            if r < p:
                status, reason = name, text.format(l=rng.randint(6, 14), a=rng.randint(1, 9), b=rng.randint(10, 30))
                break
            r -= p
        if status == "sampler_error":
            fields.update(response=None, tokens_out=0, rationale=None)
        if status not in ("no_code", "sampler_error", "rejected"):
            fields["code"] = code
        if status == "ok":
            progress = 6 * (1 - math.exp(-pid / (n / 3)))  # slow improvement over the run
            score = round(max(score_of[edited], -419.6 + progress) - abs(rng.gauss(0, 1.2)) + rng.gauss(0, 0.2), 1)
            desc = {"full_bins": min(0.999, max(0, rng.gauss(0.3, 0.12))), "size": float(26 + 9 * len(terms[-6:])
                                                                                          + rng.randint(-4, 4))}
            score_of[pid], terms_of[pid], desc_of[pid] = score, terms[-6:], desc
            c = cell(desc)
            old = islands[island].get(c)
            archive = "new" if old is None else "improve" if score > score_of[old] else "not_added"
            if archive != "not_added":
                islands[island][c] = pid
            dup = rng.random() < 0.15 and archive == "not_added"
            fields.update(status="ok", score=score, descriptors=desc, archive=archive, eval_s=rng.uniform(0.2, 2),
                          metrics={"bins": -score, "l1": 402.0, "excess_pct": (-score / 402 - 1) * 100},
                          cache_hit="functional" if dup else None, duplicate_of=edited if dup else None)
        else:
            fields.update(status=status, reason=reason, archive=None, eval_s=rng.uniform(0.01, 30) if status ==
                          "timeout" else rng.uniform(0.01, 0.5))
        fields["finished"] = created + fields["sample_s"] + (fields.get("eval_s") or 0)
        archive = fields.pop("archive")
        store._update(pid, **fields)  # all of a finished sample's columns at once (the engine writes them in steps)
        moved = []
        if pid % 50 == 0:  # ring migration of each island's best
            bests = [max(isl.values(), key=lambda e: score_of[e]) for isl in islands]
            for src, best in enumerate(bests):
                dst = (src + 1) % 4
                c = cell(desc_of[best])
                old = islands[dst].get(c)
                if old is None or score_of[best] > score_of[old]:
                    islands[dst][c] = best
                    moved.append({"event": "migrate", "from": src, "to": dst, "program_id": best,
                                  "status": "new" if old is None else "improve"})
            events += len(moved)
        store.commit({"id": pid, "seen": seen}, pid, archive, moved)
        if pid % 10 == 0 or pid == n:
            history.append({"commit": pid, "islands": [
                {"island": i, "epoch": 0, "elites": len(isl), "coverage": len(isl) / 100,
                 "qd_score": sum(score_of[e] + 419.6 for e in isl.values()), "best": max(score_of[e] for e in isl.values()),
                 "cells": 100, "qd_score_offset": -419.6} for i, isl in enumerate(islands)]})
    usage = {"tokens_in": store.usage()["tokens_in"], "tokens_out": store.usage()["tokens_out"],
             "cost": store.usage()["cost"], "requests": n, "retries": 0, "failures": 0}
    store.set_meta("sampler_usage", usage)
    store.close()
    (run_dir / "qd_metrics.json").write_text(json.dumps({"every": 10, "history": history, "final": history[-1]["islands"]}))
    best = max(score_of, key=score_of.get)
    (run_dir / "summary.json").write_text(json.dumps({"problem": "bin_packing", "samples": n,
                                                      "seed": {"id": 0, "train": -419.6, "test": -2087.6},
                                                      "best": {"id": best, "train": score_of[best], "test": None}}))
    return {"best": best, "events": events}


async def browse(report: Path, shots: Path, dashboard_url: str | None, small_report: Path) -> dict:
    from browser import Browser
    out = {}
    async with Browser(width=1280, height=860) as b:
        t = time.perf_counter()  # the peer: a report of 80 samples, in the same browser, under the same load
        await b.open(small_report.as_uri(), timeout=300)
        out["small_report_draw_s"] = round(time.perf_counter() - t, 2)
        out["small_report_draw_ms"] = await b.js("window.evo.timings")
        t = time.perf_counter()
        await b.open(report.as_uri(), timeout=300)
        out["report_draw_s"] = round(time.perf_counter() - t, 2)
        out["report_js_errors"] = list(b.errors)
        out["report_draw_ms"] = await b.js("window.evo.timings")  # plotly.js load, data unpack, each view
        await b.screenshot(shots / "report_top.png")
        await b.js("document.getElementById('lineage-section').scrollIntoView()")
        await asyncio.sleep(0.5)
        await b.screenshot(shots / "report_lineage.png")
        await b.js("document.getElementById('maps').scrollIntoView()")
        await asyncio.sleep(0.5)
        await b.screenshot(shots / "report_archives.png")
        # the table searched for "timeout" (a failure), then the best program's row opened: its diff, code, prompt
        await b.js("(() => { const el = document.getElementById('search'); el.value = 'timeout'; "
                   "el.dispatchEvent(new Event('input')); })()")
        await b.wait("!document.getElementById('page').textContent.includes(`(${window.evo.data.programs.id.length} programs)`)")
        await b.js("document.getElementById('programs-section').scrollIntoView()")
        await asyncio.sleep(0.5)
        await b.screenshot(shots / "report_search.png")
        best = await b.js("document.body.dataset.best && window.evo.data.run && "
                          "document.querySelector('[data-k=\"best program\"]').textContent")
        await b.js(f"(() => {{ const el = document.getElementById('search'); el.value = '#{best}'; "
                   "el.dispatchEvent(new Event('input')); })()")
        await b.wait("document.querySelectorAll('#programs-table tr.row').length === 1")
        await b.js("document.querySelector('#programs-table tr.row').click()")
        await b.js("document.getElementById('programs-section').scrollIntoView()")
        await asyncio.sleep(0.5)
        await b.screenshot(shots / "report_programs.png")
        out["lineage_steps"] = await b.js("document.querySelectorAll('#lineage .step').length")
    if dashboard_url:
        async with Browser(width=1280, height=860) as b:
            await b.open(dashboard_url + "?every=2", "window.evo && window.evo.ready && "
                                                       "document.querySelector('#runs a.cur').textContent === 'live'",
                         timeout=300)
            first = int(await b.js("document.body.dataset.samples"))
            await b.wait(f"Number(document.body.dataset.samples) >= {first + 150}", timeout=500)
            out["dashboard_samples_seen"] = [first, int(await b.js("document.body.dataset.samples"))]
            await b.screenshot(shots / "dashboard_live.png")
            out["dashboard_js_errors"] = list(b.errors)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--no-browser", action="store_true", help="only build and measure the report")
    args = ap.parse_args()
    from evosearch.report import load_run, plotly_js, render

    work = Path(tempfile.mkdtemp(prefix="evosearch-report-bench-"))
    run_dir = work / f"synthetic-{args.samples}"
    t = time.perf_counter()
    make_store(run_dir, args.samples)
    make_s = time.perf_counter() - t
    plotly_js()  # packed once per process; timed apart
    import evosearch.engine  # noqa: F401  (imported by a run anyway; pyribs takes seconds to import)
    t = time.perf_counter()  # the floor any report pays: reading every row of the store
    db = sqlite3.connect(f"file:{run_dir / 'evosearch.db'}?mode=ro", uri=True)
    db.execute("SELECT * FROM programs").fetchall(), db.execute("SELECT * FROM prompts").fetchall()
    db.close()
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    data = load_run(run_dir)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    html = render(data)
    render_s = time.perf_counter() - t
    (run_dir / "report.html").write_text(html)
    raw = json.dumps(data, separators=(",", ":")).encode()
    texts = sum(len(s.encode()) for s in data["strings"])
    db_bytes = (run_dir / "evosearch.db").stat().st_size + sum(p.stat().st_size for p in run_dir.glob("*.db-wal"))
    result = {
        "samples": args.samples, "synthetic_store_s": round(make_s, 1), "store_mb": round(db_bytes / 1e6, 2),
        "read_store_s": round(read_s, 2), "load_run_s": round(load_s, 2), "render_s": round(render_s, 2),
        "build_s": round(load_s + render_s, 2), "build_to_read_ratio": round((load_s + render_s) / read_s, 1),
        "report_mb": round(len(html.encode()) / 1e6, 2), "plotly_packed_mb": round(len(plotly_js()) / 1e6, 2),
        "data_packed_mb": round((len(html.encode()) - len(plotly_js())) / 1e6, 2),
        "data_json_mb": round(len(raw) / 1e6, 2), "distinct_texts": len(data["strings"]),
        "distinct_texts_mb": round(texts / 1e6, 2), "prompts_distinct": len(data["prompts"]),
        "json_gzip_ratio": round(len(raw) / len(gzip.compress(raw, 6)), 1),
    }
    if not args.no_browser:
        from evosearch.dashboard import serve
        shots = ROOT / "benchmarks" / "screenshots"
        shots.mkdir(exist_ok=True)
        runs = work / "runs"
        runs.mkdir()
        # real LLM-free runs on the same instances (seed 0): a finished MAP-Elites one and a live (1+1)-EPS one
        small = ["--problem-options", "{train_instances: 2, train_items: 500, test_items: 300}", "--workers", "2",
                 "--quiet"]
        subprocess.run([sys.executable, "-m", "evosearch", "run", "bin_packing", "--sampler", "mutate", "--samples",
                        "80", "--seed", "0", "--out", str(runs / "finished-map-elites"), *small], check=True,
                       capture_output=True)
        live = subprocess.Popen([sys.executable, "-m", "evosearch", "run", "bin_packing", "--sampler", "mutate",
                                 "--selection", "best", "--samples", "3000", "--seed", "0", "--out",
                                 str(runs / "live"), *small], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = serve(runs, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            result.update(asyncio.run(browse(run_dir / "report.html", shots,
                                             f"http://127.0.0.1:{server.server_address[1]}/",
                                             runs / "finished-map-elites" / "report.html")))
            result["draw_ratio_10k_to_80"] = round(result["report_draw_s"] / result["small_report_draw_s"], 2)
        finally:
            live.terminate()
            live.wait()
            server.shutdown()
        result["screenshots"] = sorted(str(p.relative_to(ROOT)) for p in shots.glob("*.png"))
    print(f"{'measure':<22} value")
    for k, v in result.items():
        print(f"{k:<22} {v}")
    (ROOT / "benchmarks" / "report_pages.json").write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

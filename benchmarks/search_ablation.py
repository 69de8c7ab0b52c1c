"""Search-quality ablation, LLM-free ``mutate`` sampler: FunSearch's bin packing (Weibull) or TSP.

    python benchmarks/search_ablation.py [--samples 300] [--seeds 0 1 2 3 4] [--arms default funsearch eps random]
        [--problem bin_packing|tsp] [--problem-options '{train_instances: 2, train_items: 500}']
        [--data-dir ../shared/data] [--tune-evals 24] [--tune-patience 0] [--curve] [--out runs/ablation]
        [--json ablation.json] [--reuse-rows earlier.json --reuse-arms eps] [--held-out-options '{test_instances: 32}']

Each (arm, seed) is one real run through the CLI (``python -m evosearch run``: real
sandbox workers, real store), with the same sample budget. Arms:

* ``default``   the default configuration: 4 MAP-Elites islands (GridArchive over
                full_bins x size), ``exploit`` parent selection (share 0.5), ring migration.
* ``funsearch`` FunSearch-style islands without a grid: 4 islands of score clusters
                (``--archive clusters``), Boltzmann selection over clusters, resets of
                the weaker half every samples/4 results, no migration (FunSearch has none).
* ``eps``       (1+1)-EPS hill climbing (Zhang et al. 2024, LLM4AD): one island, one
                parent, always the current best.
* ``random``    random mutation of the seed: one parent, always the seed program.
* ``grid_boltzmann``, ``grid_dgm``, ``grid_curiosity`` (extra, ``--arms``): the default
                islands with FunSearch's, the DGM's or curiosity parent selection instead of exploit.
* ``uniform``   the default islands with MAP-Elites' uniform selection (the default
                before ``exploit``); ``exploit30``/``exploit50``/``exploit80``: the
                ``exploit`` selection with that share of exploiting prompts, the others
                uniform cells; ``curious50``: share 0.5, the others drawn by curiosity.
* ``islands1``, ``islands2``: the default with one or two islands instead of four (each island's
                exploiting prompts climb its own best, so four islands split that budget four ways).
* ``xover25``   a quarter of the prompts ask for a crossover of two parents (the mutate sampler's
                subtree crossover, the mate from a distant cell): the mutate sampler's own default mix.
                Every other arm asks for function rewrites only (``{full: 1.0}``), as its rows measured
                before crossover became that default; ``default`` runs the engine's defaults as they are.
* ``neutral``   the default with neutral drift (``--neutral``: a tie takes its cell, and the newer of
                equal bests is the parent); ``eps_neutral``: (1+1)-EPS drifting the same way.
* ``<arm>+tune`` any arm with constant tuning (``--tune-evals`` CMA-ES trials per new best and, after
                ``--tune-patience`` samples without one, for the best untuned program); arms
                without the suffix run with tuning off. The engine's default configuration
                is ``default+tune`` (= ``xover25+tune``).

A run is a function of (arm, seed, code): the mutate sampler commits in order, so the
same seed gives the same programs whatever the machine's load or ``--workers``.
``--reuse-rows`` takes the rows of ``--reuse-arms`` from earlier JSONs of the same settings instead
of running them again: arms the code change did not touch (EPS: no tuning, no selection choice),
or every arm, to summarise seeds run in several invocations (the first file holding an (arm, seed) wins).

Samples (sampler calls) and evaluations (tuning trials included) are reported apart, so
arms compare at equal sample budget (the runs) and at equal evaluation budget (the curve's
x axis can be either). ``--curve`` adds, per run, the held-out excess (bin packing:
``excess_pct``; tsp: ``gap_pct``) of the best-so-far program (by training score) after
each checkpoint of samples, evaluated in the sandbox like the final report.

Per run it also reports the sampler's children by edit format (``children``): how many were novel,
entered an empty cell, improved a cell, and their median step in behaviour from the parent they edit.

Reported per arm over the seeds: median and spread (min..max) of the best program's (the run's reported
best: for a problem with a validation split, tsp, its pick among the last training bests)
held-out (test split) score, of its gain over the seed program on the same held-out
instances (each seed draws its own instances), and of the QD score of everything the run found: every
ok program of the run inserted into one fresh GridArchive over the engine's axes
(full_bins x size, 10 x 10), offset by the worst possible training score (one bin per
item; tsp: a gap of 1000%), so arms with and without a grid are measured alike.

Against EPS (and each other arm of ``--base``, e.g. ``eps eps+tune``), paired by seed (seeds both arms
ran): the median of the per-seed differences in held-out metric (negative: the arm is better) with a 95%
bootstrap interval over seeds and the Wilcoxon signed-rank p-value, and the ratio of median QD scores with
its bootstrap interval; with ``--curve``, the same paired difference at each checkpoint (``curve_vs_eps``,
``curve_vs_<base>``), since users stop at any budget. Seed-to-seed
spread is wide at these budgets; an interval that straddles 0 (or 1) says "not settled", not "equal".
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from ribs.archives import GridArchive

ROOT = Path(__file__).resolve().parent.parent

ARMS = {
    "default": [],
    "funsearch": ["--archive", "clusters", "--selection", "boltzmann", "--reset-interval", "{reset}",
                  "--migration-interval", "0"],
    "eps": ["--islands", "1", "--parents", "1", "--selection", "best"],
    "eps_neutral": ["--islands", "1", "--parents", "1", "--selection", "best", "--neutral"],  # EPS drifting on ties
    "random": ["--islands", "1", "--parents", "1", "--selection", "seed"],
    # Extra arms (not in the default list): the grid with score-aware parent selection.
    "grid_boltzmann": ["--selection", "boltzmann"],
    "grid_dgm": ["--selection", "dgm"],
    "grid_curiosity": ["--selection", "curiosity"],
    "uniform": ["--selection", "uniform"],
    "exploit30": ["--selection", "exploit", "--exploit-share", "0.3", "--explore", "uniform"],
    "exploit50": ["--selection", "exploit", "--exploit-share", "0.5", "--explore", "uniform"],
    "exploit80": ["--selection", "exploit", "--exploit-share", "0.8", "--explore", "uniform"],
    "curious50": ["--selection", "exploit", "--exploit-share", "0.5", "--explore", "curiosity"],
    "novel50": ["--selection", "exploit", "--exploit-share", "0.5", "--explore", "novelty"],
    "islands1": ["--islands", "1"],
    "islands2": ["--islands", "2"],
    # A quarter of the prompts ask for a crossover: the mutate sampler grafts a subexpression of a
    # distant cell's elite into the other parent (braces doubled: these strings go through format).
    "xover25": ["--edit-formats", "{{full: 0.75, crossover: 0.25}}"],
    # The default with neutral drift: ties replace a cell's elite, and the newer of equal bests is the parent.
    "neutral": ["--neutral"],
}
REWRITES_ONLY = ["--edit-formats", "{full: 1.0}"]
DEFAULT_ARMS = ["default", "funsearch", "eps", "random"]
TUNE = "+tune"  # suffix: the arm with constant tuning
CURVE_METRIC = {"bin_packing": "excess_pct", "tsp": "gap_pct"}
CHECKPOINTS = (50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000)


def arm_args(arm: str, args) -> list[str]:
    base, tuned = (arm[:-len(TUNE)], True) if arm.endswith(TUNE) else (arm, False)
    if base not in ARMS:
        raise SystemExit(f"unknown arm {arm!r} (known: {', '.join(ARMS)}, each also with {TUNE})")
    extra = [a.format(reset=max(1, args.samples // 4)) for a in ARMS[base]]
    if base not in ("default", "xover25", "neutral"):
        extra += REWRITES_ONLY
    return extra + ["--tune-evals", str(args.tune_evals if tuned else 0),
                    "--tune-patience", str(args.tune_patience)]


def qd_score(db: Path, axes, offset: float) -> tuple[float, int]:
    """QD score and filled cells of all ok programs of a run on one grid."""
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, score, descriptors FROM programs WHERE status = 'ok' ORDER BY id").fetchall()
    con.close()
    grid = GridArchive(solution_dim=(), solution_dtype=np.int64, dims=[d.bins for d in axes],
                       ranges=[(d.low, d.high) for d in axes], qd_score_offset=offset, seed=0)
    for pid, score, desc in rows:
        desc = json.loads(desc or "{}")
        values = np.clip([desc.get(d.name, d.low) for d in axes], [d.low for d in axes], [d.high for d in axes])
        grid.add_single(solution=pid, objective=score, measures=values)
    return float(grid.stats.qd_score), len(grid)


def children(db: Path, axes) -> dict:
    """Per edit format, what the sampler's children did: samples, novel (ran, and no functional
    duplicate), entered an empty cell of their island, improved a cell, and the median step in
    behaviour from the parent they edit (Euclidean, each problem axis scaled to [0, 1]; novel ones)."""
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, parents, descriptors, status, cache_hit, archive, edit_format, sampler "
                       "FROM programs").fetchall()
    con.close()
    desc = {pid: json.loads(d) for pid, _, d, *_ in rows if d}
    out: dict = {}
    for pid, parents, _, status, hit, archive, edit_format, sampler in rows:
        if sampler in ("seed", "tune"):
            continue
        k = out.setdefault(edit_format, {"samples": 0, "novel": 0, "new_cell": 0, "improved": 0, "steps": []})
        k["samples"] += 1
        k["new_cell"] += archive == "new"
        k["improved"] += archive == "improve"
        if status == "ok" and hit is None:
            k["novel"] += 1
            a, b = desc[pid], desc[json.loads(parents)[-1]]
            k["steps"].append(math.sqrt(sum(((a[d.name] - b[d.name]) / (d.high - d.low)) ** 2 for d in axes)))
    for k in out.values():
        steps = k.pop("steps")
        k["step_median"] = statistics.median(steps) if steps else None
    return out


def run_one(arm: str, seed: int, args, out: Path) -> dict:
    from evosearch.engine import SIZE
    from evosearch.problem import load_problem

    run_dir = out / f"{arm}-s{seed}"
    if (run_dir / "summary.json").is_file():  # done in an earlier invocation: reuse
        summary = json.loads((run_dir / "summary.json").read_text())
        wall = summary.get("ablation_wall_s")
    else:
        extra = arm_args(arm, args) + (["--data-dir", args.data_dir] if args.data_dir else [])
        cmd = [sys.executable, "-m", "evosearch", "run", args.problem, "--sampler", "mutate",
               "--samples", str(args.samples), "--seed", str(seed), "--workers", str(args.workers),
               "--problem-options", args.problem_options, "--out", str(run_dir), "--quiet", *extra]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{arm} seed {seed} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["ablation_wall_s"] = wall
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if summary["best"]["test"] is None and summary["best"].get("test_status") == "timeout" and not args.held_out:
        # The run's held-out report hit the problem's deadline (a loaded machine): measure it again here.
        code = sqlite3.connect(run_dir / "evosearch.db").execute(
            "SELECT code FROM programs WHERE id = ?", (summary["best"]["id"],)).fetchone()[0]
        again = held_out(args, seed, [code])[0]
        summary["best"].update(test=again.score, test_metrics=again.metrics, test_status=None if again.ok
                               else again.status, test_remeasured=True)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.held_out:
        # Another held-out split than the run's report used (e.g. more instances): score the seed and the best on it.
        summary = rescored(run_dir, summary, args, seed)
    problem_cls = type(load_problem(args.problem))
    axes = (*problem_cls.descriptors, SIZE)
    if args.problem == "bin_packing":
        # Offset: the worst possible training score, one bin per item, so every filled cell adds.
        offset = -float(args.options.get("train_items", 1000))
    else:  # tsp, minus gap %: a gap of 1000%, worse than random tours at these sizes (~450% at 60 cities)
        offset = -1000.0
    qd, cells = qd_score(run_dir / "evosearch.db", axes, offset=offset)
    metric = CURVE_METRIC.get(args.problem)
    row = {"arm": arm, "seed": seed, "samples": summary["samples"], "evaluations": summary.get("evaluations"),
           "tuning": summary.get("tuning"), "best_test": summary["best"]["test"],
           "seed_test": summary["seed"]["test"], "best_train": summary["best"]["train"],
           "best_test_metric": (summary["best"].get("test_metrics") or {}).get(metric),
           "seed_test_metric": (summary["seed"].get("test_metrics") or {}).get(metric), "qd_score": qd,
           "cells": cells, "archipelago_qd": sum(s["qd_score"] for s in summary["islands"]["final"]),
           "outcomes": summary["outcomes"], "children": children(run_dir / "evosearch.db", problem_cls.descriptors),
           "wall_s": wall}
    if args.curve and metric:
        row["curve"] = curve(run_dir, args, seed, metric)
    return row


def rescored(run_dir: Path, summary: dict, args, seed: int) -> dict:
    """The summary with the seed's and the best program's held-out results from ``--held-out-options``
    (cached in the run folder, one file per options)."""
    cached = run_dir / f"held_out-{_tag(args.held_out)}.json"
    if not cached.is_file():
        con = sqlite3.connect(run_dir / "evosearch.db")
        codes = [con.execute("SELECT code FROM programs WHERE id = ?", (summary[k]["id"],)).fetchone()[0]
                 for k in ("seed", "best")]
        con.close()
        results = held_out(args, seed, codes)
        cached.write_text(json.dumps({k: {"test": r.score, "test_metrics": r.metrics}
                                      for k, r in zip(("seed", "best"), results)}))
    again = json.loads(cached.read_text())
    return {**summary, "seed": {**summary["seed"], **again["seed"]}, "best": {**summary["best"], **again["best"]}}


def _tag(options: dict) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:10]


def best_so_far(db: Path, checkpoints) -> list[dict]:
    """At each checkpoint of samples (tuning trials not counted): the best program by training score
    among the results committed so far, with the samples and evaluations spent."""
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, sampler, status, score, code FROM programs ORDER BY id").fetchall()
    con.close()
    out, best, samples, evals = [], None, 0, 0
    marks = list(checkpoints)
    for pid, sampler, status, score, code in rows:
        if pid > 0:
            samples += sampler != "tune"
            evals += code is not None
        if status == "ok" and (best is None or score > best[1]):
            best = (pid, score, code)
        if marks and samples == marks[0] and pid > 0:
            out.append({"samples": samples, "evaluations": evals, "id": best[0], "train": best[1], "code": best[2]})
            marks.pop(0)
    return out


HELD_OUT_TIMEOUT_S = 600  # a generous deadline: the benchmark's own held-out runs are trusted seeds' programs


def held_out(args, seed: int, codes: list[str]) -> list:
    """Held-out evaluations (``Evaluation``) of programs, in the sandbox, one at a time."""
    from evaluators.evaluator import Evaluator
    from evaluators.pool import WorkerPool
    from evosearch.problem import load_problem

    async def evaluate():
        problem = load_problem(args.problem)
        options = {**args.options, **args.held_out}
        async with WorkerPool(problem.folder, args.data_dir, seed, options, workers=1) as pool:
            evaluator = Evaluator(pool, timeout_s=HELD_OUT_TIMEOUT_S)
            return [await evaluator.evaluate_split(code, "test") for code in codes]

    return asyncio.run(evaluate())


def curve(run_dir: Path, args, seed: int, metric: str) -> list[dict]:
    """Held-out ``metric`` of the best-so-far program at each checkpoint, evaluated in the sandbox
    (cached in the run folder as curve.json, by program: a run continued with --resume adds only its new bests)."""
    cached = run_dir / (f"curve-{_tag(args.held_out)}.json" if args.held_out else "curve.json")
    points = best_so_far(run_dir / "evosearch.db", [c for c in CHECKPOINTS if c <= args.samples])
    known = {p["id"]: p["held_out"] for p in json.loads(cached.read_text())} if cached.is_file() else {}
    todo = list({p["id"]: p["code"] for p in points if p["id"] not in known}.items())
    if todo:
        results = held_out(args, seed, [code for _, code in todo])
        known.update({pid: r.metrics.get(metric) for (pid, _), r in zip(todo, results)})
    for p in points:
        p["held_out"] = known[p["id"]]
        del p["code"]
    cached.write_text(json.dumps(points))
    return points


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):9.4f} [{min(values):.4f} .. {max(values):.4f}]"


BOOTSTRAP = 10_000  # resamples of the paired seeds


def paired(diff: np.ndarray, picks: np.ndarray) -> dict:
    """Per-seed differences (arm minus base): their median with a 95% bootstrap interval (``picks``: resampled
    seed indices) and the Wilcoxon signed-rank p-value."""
    from scipy.stats import wilcoxon

    diffs = np.median(diff[picks], axis=1)
    return {"pairs": len(diff), "metric_diff_median": float(np.median(diff)),
            "metric_diff_ci95": [float(x) for x in np.percentile(diffs, [2.5, 97.5])],
            "metric_diff_wilcoxon_p": float(wilcoxon(diff).pvalue) if np.any(diff) else 1.0}


def _picks(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, n, size=(BOOTSTRAP, n))


def against(rows: dict, base: dict) -> dict | None:
    """An arm against a baseline arm (each ``{seed: row}``), paired by seed: the median difference of held-out
    metric (arm minus base) and the ratio of median QD scores, each with a 95% bootstrap interval over seeds,
    and the Wilcoxon signed-rank p-value of the differences. None below 3 pairs."""
    seeds = sorted(s for s in rows if s in base and rows[s]["best_test_metric"] is not None
                   and base[s]["best_test_metric"] is not None)
    if len(seeds) < 3:
        return None
    diff = np.array([rows[s]["best_test_metric"] - base[s]["best_test_metric"] for s in seeds])
    qd = np.array([[rows[s]["qd_score"], base[s]["qd_score"]] for s in seeds])
    picks = _picks(len(seeds))
    ratios = np.median(qd[picks, 0], axis=1) / np.median(qd[picks, 1], axis=1)
    return {**paired(diff, picks), "qd_ratio": float(np.median(qd[:, 0]) / np.median(qd[:, 1])),
            "qd_ratio_ci95": [float(x) for x in np.percentile(ratios, [2.5, 97.5])]}


def curve_against(rows: dict, base: dict, marks: list[int]) -> dict:
    """At each checkpoint of the curves, the arm's best-so-far held-out metric against the baseline's, paired by
    seed as ``against`` pairs the final ones (the budget a user runs may be any of them): also on how many seeds
    the arm is ahead. Checkpoints with fewer than 3 pairs are left out."""
    out = {}
    for m in marks:
        pairs = [(_at(rows[s], m), _at(base[s], m)) for s in sorted(rows) if s in base]
        diff = np.array([a - b for a, b in pairs if a is not None and b is not None])
        if len(diff) >= 3:
            out[m] = {**paired(diff, _picks(len(diff))), "ahead": int((diff < 0).sum())}
    return out


def _at(row: dict, samples: int) -> float | None:
    """The held-out metric of a row's curve at a checkpoint (lower is better)."""
    return next((p["held_out"] for p in row.get("curve", []) if p["samples"] == samples), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=300, help="sample budget per run (the seed program excluded)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, help=f"arms ({', '.join(ARMS)}; each also +tune)")
    ap.add_argument("--problem", default="bin_packing", choices=sorted(CURVE_METRIC))
    ap.add_argument("--data-dir", default=None, help="public benchmark data (bin packing's held-out: Weibull 5k)")
    ap.add_argument("--tune-evals", type=int, default=24, help="CMA-ES trials per tuning in +tune arms")
    ap.add_argument("--tune-patience", type=int, default=0,
                    help="+tune arms: samples without a new best before the best untuned program is tuned (0: off)")
    ap.add_argument("--curve", action="store_true", help="held-out excess of the best-so-far at checkpoints")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--problem-options", default="{train_instances: 2, train_items: 500}",
                    help="bin packing options (smaller training set: the ablation fits a 2-core machine)")
    ap.add_argument("--held-out-options", default="{}",
                    help="problem options over --problem-options for the held-out scores only (the runs are the same), "
                         "e.g. '{test_instances: 32}' for TSP runs made when its held-out split had 4 instances")
    ap.add_argument("--out", default="runs/ablation", help="folder of the runs (an existing run is reused)")
    ap.add_argument("--base", nargs="+", default=["eps"],
                    help="arms every arm is paired with by seed (e.g. eps eps+tune: EPS without and with tuning)")
    ap.add_argument("--reuse-rows", nargs="+", default=[], help="JSONs this script wrote: take the rows of --reuse-arms "
                    "from them instead of running them again (the first file holding an (arm, seed) wins; the mutate "
                    "sampler's runs are deterministic: check one seed first)")
    ap.add_argument("--reuse-arms", nargs="+", default=["eps"], help="arms whose rows --reuse-rows gives")
    ap.add_argument("--no-run", action="store_true", help="only summarise: rows from --reuse-rows and finished runs "
                    "in --out (a missing one is skipped, not run)")
    ap.add_argument("--note", default=None, help="text kept in the JSON: how the rows were made (e.g. their commands)")
    ap.add_argument("--json", default=None, help="write rows and summary here (default: OUT/ablation.json)")
    args = ap.parse_args()
    # Parsed once; the strings go into the JSON.
    args.options = yaml.safe_load(args.problem_options) or {}
    args.held_out = yaml.safe_load(args.held_out_options) or {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reused = {}
    for source in args.reuse_rows:  # rows measured before, same settings: runs are a function of (arm, seed, code)
        earlier = json.loads(Path(source).read_text())
        for key in ("samples", "problem", "problem_options", "data_dir", "held_out_options"):
            if earlier.get(key, "{}" if key == "held_out_options" else None) != getattr(args, key):
                raise SystemExit(f"--reuse-rows {source}: {key} {earlier.get(key)!r} is not {getattr(args, key)!r}")
        for r in earlier["rows"]:
            if r["arm"] in args.reuse_arms:
                reused.setdefault((r["arm"], r["seed"]), dict(r, reused_from=r.get("reused_from", source)))
    rows = []
    for seed in args.seeds:  # seed-major: an interrupted ablation still has paired arms
        for arm in args.arms:
            r = reused.get((arm, seed))
            if r is None and args.no_run and not (out / f"{arm}-s{seed}" / "summary.json").is_file():
                print(f"{arm:10} seed {seed}: no row (--no-run)", flush=True)
                continue
            r = r or run_one(arm, seed, args, out)
            rows.append(r)
            print(f"{arm:10} seed {seed}: best test {r['best_test']:.4f} (seed {r['seed_test']:.4f})  "
                  f"held-out {r['best_test_metric']}  QD {r['qd_score']:.3f} over {r['cells']} cells  "
                  f"{r['samples']} samples, {r['evaluations']} evaluations  {r['wall_s'] or 0:.0f}s", flush=True)
            for edit_format, k in sorted((r.get("children") or {}).items()):
                n, step = k["samples"], k["step_median"]
                print(f"    {edit_format} children: {n}, novel {k['novel'] / n:.0%}, new cell {k['new_cell'] / n:.0%}, "
                      f"improved a cell {k['improved'] / n:.0%}, median step from the parent "
                      f"{'-' if step is None else f'{step:.3f}'}")
    print(f"\n{args.problem}, mutate sampler, {args.samples} samples per run, seeds {args.seeds}, "
          f"problem options {args.problem_options}, held-out options {args.held_out_options}, data dir {args.data_dir}")
    print(f"{'arm':15} {'best held-out score: median [min .. max]':>44} {'held-out gain over the seed':>38}"
          f" {'QD score: median [min .. max]':>42} {'wins vs ' + args.base[0]:>12} {'vs random':>10}"
          f" {'held-out ' + str(CURVE_METRIC.get(args.problem)):>30} {'evaluations':>12}")
    summary = {}
    by = {arm: {r["seed"]: r for r in rows if r["arm"] == arm} for arm in args.arms}
    arms = [arm for arm in args.arms if by[arm]]  # --no-run: an arm may have no row
    for arm in arms:
        tests = [r["best_test"] for r in by[arm].values()]
        qds = [r["qd_score"] for r in by[arm].values()]
        gains = [r["best_test"] - r["seed_test"] for r in by[arm].values()]
        wins = {}
        for other in (*args.base, "random"):
            paired = [s for s in by[arm] if s in by.get(other, {})]  # wins: strictly better held-out score
            wins[other] = f"{sum(by[arm][s]['best_test'] > by[other][s]['best_test'] for s in paired)}/{len(paired)}"
        metrics = [r["best_test_metric"] for r in by[arm].values() if r["best_test_metric"] is not None]
        evals = [r["evaluations"] or 0 for r in by[arm].values()]
        summary[arm] = {"held_out_metric_median": statistics.median(metrics) if metrics else None,
                        "held_out_metric_min": min(metrics, default=None),
                        "held_out_metric_max": max(metrics, default=None),
                        "samples_median": statistics.median(r["samples"] for r in by[arm].values()),
                        "evaluations_median": statistics.median(evals),
                        "best_test_median": statistics.median(tests), "best_test_min": min(tests),
                        "best_test_max": max(tests), "gain_median": statistics.median(gains),
                        "gain_min": min(gains), "gain_max": max(gains), "qd_median": statistics.median(qds), "qd_min": min(qds),
                        "qd_max": max(qds), **{f"wins_vs_{other}": n for other, n in wins.items()}}
        print(f"{arm:15} {spread(tests):>44} {spread(gains):>38} {spread(qds):>42} {wins[args.base[0]]:>12}"
              f" {wins['random']:>10} {spread(metrics) if metrics else '-':>30} {statistics.median(evals):>12.0f}")
    for base in (b for b in args.base if by.get(b)):
        print(f"\nagainst {base}, paired by seed: held-out {CURVE_METRIC.get(args.problem)} difference (arm - {base}; "
              f"negative: better), QD ratio; 95% bootstrap intervals over seeds")
        print(f"{'arm':15} {'pairs':>6} {'difference [95% interval]':>30} {'Wilcoxon p':>11} {'QD x base [95% interval]':>28}")
        for arm in arms:
            vs = against(by[arm], by[base]) if arm != base else None
            summary[arm][f"vs_{base}"] = vs
            if vs:
                lo, hi = vs["metric_diff_ci95"]
                qlo, qhi = vs["qd_ratio_ci95"]
                print(f"{arm:15} {vs['pairs']:>6} {vs['metric_diff_median']:>+12.3f} [{lo:+.3f} .. {hi:+.3f}]"
                      f" {vs['metric_diff_wilcoxon_p']:>11.3f} {vs['qd_ratio']:>12.2f}x [{qlo:.2f} .. {qhi:.2f}]")
    if args.curve and any(r.get("curve") for r in rows):
        print(f"\nbest-so-far held-out {CURVE_METRIC[args.problem]} (median over seeds) against samples")
        marks = sorted({p["samples"] for r in rows for p in r.get("curve", [])})
        print(f"{'arm':15}" + "".join(f"{m:>9}" for m in marks))
        for arm in arms:
            cells = []
            for m in marks:
                vals = [p["held_out"] for r in by[arm].values() for p in r.get("curve", [])
                        if p["samples"] == m and p["held_out"] is not None]
                cells.append(f"{statistics.median(vals):9.3f}" if vals else f"{'-':>9}")
            print(f"{arm:15}" + "".join(cells))
        for base in (b for b in args.base if by.get(b)):  # the budgets users run differ: who is ahead at each one
            print(f"\nat each checkpoint, paired with {base} by seed: seeds ahead, held-out difference (arm - {base}) "
                  "[95% interval], Wilcoxon p (one test per checkpoint: read them as a curve, not as separate claims)")
            for arm in arms:
                if arm == base:
                    continue
                summary[arm][f"curve_vs_{base}"] = vs = curve_against(by[arm], by[base], marks)
                for m, c in vs.items():
                    lo, hi = c["metric_diff_ci95"]
                    print(f"{arm:15} {m:>6} {c['ahead']:>3}/{c['pairs']:<3} {c['metric_diff_median']:>+9.3f} "
                          f"[{lo:+.3f} .. {hi:+.3f}]  p {c['metric_diff_wilcoxon_p']:.3f}")
    path = Path(args.json) if args.json else out / "ablation.json"
    path.write_text(json.dumps({"benchmark": "search_ablation", "problem": args.problem, "samples": args.samples,
                                "seeds": args.seeds, "tune_evals": args.tune_evals,
                                "tune_patience": args.tune_patience, "data_dir": args.data_dir,
                                "problem_options": args.problem_options,
                                "held_out_options": args.held_out_options, "command": " ".join(sys.argv), "note": args.note,
                                "rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()

"""How useful is the embedded model (Gemma 3 270M) on bin packing (or TSP): novel valid programs
per sample, improvements, and the best held-out score against the seed program (bin packing's
Best Fit, TSP's nearest neighbour).

    python benchmarks/small_model_novelty.py [--samples 200] [--seeds 0 1 2] [--label after] [--problem tsp]
        [--flags "--parents 2"] [--problem-options '{train_instances: 2, train_items: 500}']
        [--out runs/novelty] [--json benchmarks/small_model_novelty.json]

Each seed is one real run through the CLI (``python -m evosearch run bin_packing``, default
sampler ``local``: real llama.cpp, real sandbox, real store). ``--root`` runs another checkout
of the project (e.g. the commit before a change) so "before" and "after" come from one script.
Counted per run, from its store (every sample, failures included):

* valid: status ok.
* novel valid: ok, and its functional hash (behaviour on the probe inputs) not seen before in
  the run (the seed program included): the programs the search can actually use.
* improvement: ok and better on the training split than every program before it (seed included).
* asked again: answers set aside and asked again (``attempts``): ``asked_again`` all of them,
  ``duplicate_asks`` those that were a functional duplicate of a known program
  (``--duplicate-retries``); each also spent tokens.
* tuning trials (sampler ``tune``, constant tuning) are no samples: counted apart as ``trials``
  and ``trial_improvements``; their programs still count as seen for novelty.
* best held-out: the run's best program on the test split, against the seed program.
* by_sampler: samples, valid, novel valid and improvements of each sampler (a bandit's arms), so
  a model's share is told apart from the mutation operator's.
Rows are added to ``--json`` under ``--label`` (a re-run of a label replaces its rows).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Each problem's default --problem-options: bin packing's training split shrunk to fit a 2-core machine, TSP's own.
OPTIONS = {"bin_packing": "{train_instances: 2, train_items: 500}", "tsp": "{}"}


def counts(db: Path) -> dict:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM programs ORDER BY id")]
    con.close()
    seen, best = set(), None
    out = {"samples": 0, "valid": 0, "novel_valid": 0, "improvements": 0, "asked_again": 0, "duplicate_asks": 0,
           "tokens_out": 0, "trials": 0, "trial_improvements": 0, "by_sampler": {}}
    for r in rows:
        if r["status"] == "pending":  # an unfinished run's samples in flight
            continue
        ok = r["status"] == "ok"
        better = ok and best is not None and r["score"] > best
        if r["sampler"] == "tune":
            out["trials"] += 1
            out["trial_improvements"] += better
        elif r["id"] > 0:
            attempts = json.loads(r["attempts"] or "[]")
            # A bandit run's samples are also counted per arm, so each model's share is its own.
            arm = out["by_sampler"].setdefault(r["sampler"], {"samples": 0, "valid": 0, "novel_valid": 0,
                                                              "improvements": 0})
            novel = ok and r["functional_hash"] not in seen
            for tally in (out, arm):
                tally["samples"] += 1
                tally["valid"] += ok
                tally["novel_valid"] += novel
                tally["improvements"] += better
            out["tokens_out"] += r["tokens_out"] or 0
            out["asked_again"] += len(attempts)
            out["duplicate_asks"] += sum("duplicate_of" in a for a in attempts)
        if ok:
            seen.add(r["functional_hash"])
            best = r["score"] if best is None else max(best, r["score"])
    return out


def run_one(seed: int, args, out: Path) -> dict:
    run_dir = out / f"{args.label}-s{seed}"
    root = Path(args.root).resolve()
    if not (run_dir / "summary.json").is_file() and args.collect and (run_dir / "evosearch.db").is_file():
        # An unfinished run (stopped at a deadline): its samples so far, no held-out score.
        return {"label": args.label, "seed": seed, "flags": args.flags, "root": str(root), "finished": False,
                "problem_options": args.problem_options,
                **counts(run_dir / "evosearch.db"), "best_test": None, "best_fit_test": None, "wall_s": None}
    if args.collect and not (run_dir / "summary.json").is_file():
        raise SystemExit(f"--collect starts no run, and {run_dir} holds none")
    if not (run_dir / "summary.json").is_file():
        cmd = [sys.executable, "-m", "evosearch", "run", args.problem, "--samples", str(args.samples),
               "--seed", str(seed), "--workers", "1", "--problem-options", args.problem_options,
               "--out", str(run_dir), "--quiet", *shlex.split(args.flags)]
        env = dict(os.environ, PYTHONPATH=str(root))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"seed {seed} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["novelty_wall_s"] = time.perf_counter() - t0
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"label": args.label, "seed": seed, "flags": args.flags, "root": str(root), "problem": args.problem,
            "problem_options": args.problem_options, **counts(run_dir / "evosearch.db"),
            "best_test": summary["best"]["test"], "best_fit_test": summary["seed"]["test"],  # the seed's, any problem
            "wall_s": summary.get("novelty_wall_s"), "finished": True}


def per100(r: dict, key: str) -> float:
    return 100 * r[key] / max(1, r["samples"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)  # the measure; 20 was what a loaded 2-core machine allowed
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--label", default="current")
    ap.add_argument("--flags", default="", help="more `evosearch run` flags, one string")
    ap.add_argument("--root", default=str(ROOT), help="the checkout to run (default: this one)")
    ap.add_argument("--problem", default="bin_packing", choices=list(OPTIONS))
    ap.add_argument("--problem-options", default=None, help=f"default: {OPTIONS}")
    ap.add_argument("--out", default="runs/novelty")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "small_model_novelty.json"))
    ap.add_argument("--collect", action="store_true",
                    help="start no run: read the runs in --out as they are (unfinished ones without held-out)")
    args = ap.parse_args()
    if args.problem_options is None:
        args.problem_options = OPTIONS[args.problem]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        rows.append(r := run_one(seed, args, out))
        held_out = ("unfinished (no held-out score)" if not r["finished"] else
                    "best held-out: none (its evaluation failed or timed out)" if r["best_test"] is None else
                    f"best held-out {r['best_test']:.1f} vs the seed program {r['best_fit_test']:.1f}")
        print(f"{args.label} seed {seed}: {r['samples']} samples, {r['valid']} valid, {r['novel_valid']} novel valid, "
              f"{r['improvements']} improvements, {held_out}  {r['wall_s'] or 0:.0f}s", flush=True)
    path = Path(args.json)
    saved = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    saved["rows"] = [r for r in saved["rows"] if r["label"] != args.label] + rows
    # A file's own note wins (rows recorded before rows had problem_options ran on bin packing's default).
    saved.setdefault("problem_options", f"each row's problem_options (rows without one: {OPTIONS['bin_packing']})")
    path.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"\n{'label':24} {'seeds':>6} {'samples':>8} {'valid/100':>10} {'novel valid/100':>16} "
          f"{'improvements/100':>17} {'asked again/100':>16} {'beats the seed':>15}")
    for label in dict.fromkeys(r["label"] for r in saved["rows"]):
        rs = [r for r in saved["rows"] if r["label"] == label]
        med = {k: statistics.median(per100(r, k) for r in rs) for k in ("valid", "novel_valid", "improvements",
                                                                           "asked_again")}
        done = [r for r in rs if r.get("finished", True)]
        wins = sum(r["best_test"] is not None and r["best_test"] > r["best_fit_test"] for r in done)
        print(f"{label:24} {len(rs):6d} {sum(r['samples'] for r in rs):8d} {med['valid']:10.1f} "
              f"{med['novel_valid']:16.1f} {med['improvements']:17.1f} {med['asked_again']:16.1f} "
              f"{wins:>11d} of {len(done)}")
    print("(medians over seeds; per 100 samples; samples: all seeds together; "
          "beats the seed: held-out, of the finished runs)")
    print(f"\n{'label':24} {'sampler':8} {'samples':>8} {'valid':>6} {'novel valid':>12} {'improvements':>13}")
    for label in dict.fromkeys(r["label"] for r in saved["rows"]):
        arms: dict[str, Counter] = {}
        for r in (r for r in saved["rows"] if r["label"] == label):
            for arm, t in (r.get("by_sampler") or {}).items():
                arms.setdefault(arm, Counter()).update(t)
        for arm, t in arms.items():
            print(f"{label:24} {arm:8} {t['samples']:8d} {t['valid']:6d} {t['novel_valid']:12d} "
                  f"{t['improvements']:13d}")
    print("(all seeds together; rows recorded before the per-sampler count have none)")


if __name__ == "__main__":
    main()

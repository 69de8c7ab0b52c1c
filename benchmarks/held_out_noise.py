"""How well a problem's splits rank the programs a search finds: the training-best programs along
the curves of ``search_ablation.py`` runs, scored again on fresh instances of the training split's
size and of the held-out split's size (the problem built with another seed), beside their recorded
training score and held-out metric.

    python benchmarks/held_out_noise.py --ablation benchmarks/search_ablation_tsp_2000_own.json \\
        --runs /tmp/tspown/runs --arms exploit50+tune eps exploit80+tune [--fresh-seed 11] [--json out.json]

A rank correlation near 1 between the held-out metric and the same metric on fresh held-out-sized
instances says the held-out split can tell programs apart; near 0, that differences between arms'
held-out scores are mostly which instances were drawn. ``--repeat-seed`` scores every program on a
second fresh draw of the same sizes, so a split size can be judged by itself (``--fresh-options
'{train_instances: 32}'``: do 32 training instances rank the good programs alike on two draws?).
Programs are scored one at a time through ``evosearch eval`` (the sandbox). Prints the correlations
over all programs and over the good ones (``--good``: training metric below it), and writes every
program's scores as JSON. ``--good`` is in the problem's training metric: TSP's gap in %, bin packing's
mean bins (``--good 416`` on its 5 x 1,000-item split, where Best Fit uses about 420).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]


def score(problem: str, code: str, seed: int, options: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py") as f:
        f.write(code)
        f.flush()
        proc = subprocess.run([sys.executable, "-m", "evosearch", "eval", problem, f.name, "--seed", str(seed),
                               "--problem-options", options, "--json"], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"evosearch eval failed: {proc.stderr.strip()[-1000:]}")
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ablation", required=True, help="a JSON search_ablation.py wrote with --curve")
    ap.add_argument("--runs", default=None, help="the folder of its runs (--out); needed unless --programs")
    ap.add_argument("--arms", nargs="+", default=None, help="arms to take (default: all)")
    ap.add_argument("--fresh-seed", type=int, default=11, help="problem seed of the fresh instances")
    ap.add_argument("--fresh-options", default="{}", help="problem options over the ablation's for the fresh "
                    "instances, e.g. '{train_instances: 32}' to judge a larger training split")
    ap.add_argument("--repeat-seed", type=int, default=None, help="also score on the instances of this problem seed "
                    "(same --fresh-options): the rank correlation of two fresh draws")
    ap.add_argument("--good", type=float, default=16.0, help="training metric below which a program counts as good")
    ap.add_argument("--good-only", action="store_true", help="score only the good programs (saves time)")
    ap.add_argument("--programs", default=None, help="take the programs and their scores from an earlier --json of "
                    "this script instead of scoring them again (to recompute the correlations)")
    ap.add_argument("--note", default=None, help="text stored in the JSON (how the runs were made, what to read)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not (args.runs or args.programs):
        ap.error("--runs is needed to score programs (or --programs to reuse scored ones)")
    ablation = json.loads(Path(args.ablation).read_text())
    problem = ablation["problem"]
    fresh_options = json.dumps({**(yaml.safe_load(ablation["problem_options"]) or {}),
                                **(yaml.safe_load(args.fresh_options) or {})})
    programs = json.loads(Path(args.programs).read_text())["programs"] if args.programs else []
    rows = [] if args.programs else ablation["rows"]  # reused programs are not scored again
    for row in rows:
        if args.arms and row["arm"] not in args.arms:
            continue
        db = sqlite3.connect(Path(args.runs) / f"{row['arm']}-s{row['seed']}" / "evosearch.db")
        seen = {0}  # the seed program, and each program once per run however many checkpoints it held
        for point in row["curve"]:
            if point["id"] in seen or (args.good_only and -point["train"] >= args.good):
                continue
            seen.add(point["id"])
            code = db.execute("SELECT code FROM programs WHERE id = ?", (point["id"],)).fetchone()[0]
            fresh = score(problem, code, args.fresh_seed, fresh_options)
            programs.append({"run": (row["arm"], row["seed"]), "id": point["id"], "samples": point["samples"],
                             "train": -point["train"], "held_out": point["held_out"],
                             "fresh_train": -fresh["train"]["score"], "fresh_held_out": -fresh["test"]["score"]})
            if args.repeat_seed is not None:
                again = score(problem, code, args.repeat_seed, fresh_options)
                programs[-1].update(fresh_train_2=-again["train"]["score"], fresh_held_out_2=-again["test"]["score"])
            print(programs[-1], flush=True)
        db.close()
    pairs = {"held_out~fresh_held_out": ("held_out", "fresh_held_out"), "train~fresh_train": ("train", "fresh_train"),
             "train~held_out": ("train", "held_out"), "fresh_train~fresh_held_out": ("fresh_train", "fresh_held_out"),
             # The same fresh training instances for every program (a run's recorded training score is on its own
             # seed's instances): how well a training split of this size ranks programs by their held-out metric.
             "fresh_train~held_out": ("fresh_train", "held_out")}
    if args.repeat_seed is not None:
        pairs.update({"fresh_train~fresh_train_2": ("fresh_train", "fresh_train_2"),
                      "fresh_held_out~fresh_held_out_2": ("fresh_held_out", "fresh_held_out_2"),
                      "train~fresh_held_out": ("train", "fresh_held_out"),
                      "fresh_train~fresh_held_out_2": ("fresh_train", "fresh_held_out_2"),
                      "fresh_train_2~held_out": ("fresh_train_2", "held_out")})
    out = {}
    for label, chosen in (("all", programs), ("good", [p for p in programs if p["train"] < args.good])):
        if len(chosen) < 3:  # a rank correlation of fewer says nothing
            continue
        out[label] = {"programs": len(chosen), **{name: float(spearmanr([p[a] for p in chosen], [p[b] for p in chosen])[0])
                                                  for name, (a, b) in pairs.items()}}
        out[label]["mean_abs_held_out_change"] = sum(abs(p["held_out"] - p["fresh_held_out"]) for p in chosen) / len(chosen)
        print(f"{label}: {json.dumps(out[label])}")
    Path(args.json or "held_out_noise.json").write_text(json.dumps(
        {"benchmark": "held_out_noise", "problem": problem, "problem_options": ablation["problem_options"],
         "fresh_options": args.fresh_options, "fresh_seed": args.fresh_seed, "repeat_seed": args.repeat_seed,
         "good_below": args.good, "command": " ".join(sys.argv), "note": args.note, "spearman": out, "programs": programs}, indent=1))


if __name__ == "__main__":
    main()

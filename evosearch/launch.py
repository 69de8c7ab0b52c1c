"""Wire a run from its config: problem, store, backend (sampler, evaluator pool, islands), engine, report.

Imports are taken when a command needs them, and start-up work overlaps: the sampler's
check, the sandbox pool's start and the islands' import (pyribs pulls in scikit-learn)
run at once.
"""
from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

from .config import RunConfig
from .problem import Problem
from .store import Store, StoreError
from .tuning import NAME as TUNE


# Written beside the islands' QD scores in summary.json, which are meaningless without it.
QD_SCORE_NOTE = ("qd_score = sum over an island's elites of (score - qd_score_offset); the offset is the first score "
                 "the island received, the seed program's training score, so the QD score adds up how much each "
                 "occupied cell improves on the seed (a cell held by a program worse than the seed subtracts)")


class RunDirError(Exception):
    """The run directory cannot be used (a user mistake: one line)."""


def new_run_dir(config: RunConfig) -> Path:
    if config.out:
        run_dir = Path(config.out)
        if (run_dir / "evosearch.db").exists():
            raise RunDirError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or pick another --out")
    else:
        run_dir = Path("runs") / f"{Path(config.problem).name}-{time.strftime('%Y%m%d-%H%M%S')}-s{config.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)  # candidates run under other uids: they must not read the store
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return run_dir


def saved_config(run_dir: Path) -> dict:
    if not (run_dir / "evosearch.db").is_file() or not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no evosearch.db and config.yaml)")
    try:
        Store(run_dir / "evosearch.db").close()
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    except StoreError as e:
        raise RunDirError(str(e)) from None
    except yaml.YAMLError as e:
        raise RunDirError(f"{run_dir / 'config.yaml'} is damaged: {str(e).splitlines()[0]}") from None
    if not isinstance(saved, dict):
        raise RunDirError(f"{run_dir / 'config.yaml'} is damaged: not a mapping")
    if "max_tokens" in saved and "answer_tokens" not in saved:  # before the rename, max_tokens capped each answer
        saved["answer_tokens"] = saved.pop("max_tokens")
    saved.setdefault("explore", "uniform")  # saved before --explore: resumes as it ran
    return saved


def _import_islands() -> None:
    import islands.archipelago  # noqa: F401  (pyribs: seconds; done in a thread beside the pool's start)


async def run_search(config: RunConfig, problem: Problem, run_dir: Path) -> dict:
    """Run (or resume) the search stored in ``run_dir``; returns the summary (also written to summary.json)."""
    from evaluators.pool import PoolError

    from .backend import make_backend
    from .samplers.base import SamplerError

    store = Store(run_dir / "evosearch.db")
    fresh = store.next_id() == 0
    store.set_meta("config", config.to_dict())
    backend = make_backend(config, problem, run_dir)
    sampler = None
    try:
        await backend.start()
        sampler = backend.sampler
        try:
            await asyncio.gather(sampler.check(), backend.pool.start(), asyncio.to_thread(_import_islands))
        except (SamplerError, PoolError):  # unreachable endpoint; no sandbox here and no --unsafe-no-sandbox
            if fresh:  # nothing was run: leave no half-made run folder behind to block the same command
                sampler = None
                store.close()
                _remove_run(run_dir)
            raise
        if sampler.meter is not None:  # a resumed run has spent part of its budget already
            spent = store.usage()
            cost = spent["cost"] if spent["cost"] is not None else sampler.meter.cost(spent["tokens_in"],
                                                                                     spent["tokens_out"])
            sampler.meter.budget.charge(spent["tokens_in"], spent["tokens_out"], cost or 0.0, requests=0)
        summary = await _search(config, problem, run_dir, store, backend)
    finally:
        if sampler is not None:
            usage = sampler.usage()
            if usage:  # tokens, cost, retries and failures of the sampler's requests
                store.set_meta("sampler_usage", usage)
        await backend.close()
    summary["sampler_usage"] = store.get_meta("sampler_usage")
    (run_dir / "best.py").write_text(store.get(summary["best"]["id"])["code"])
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    store.close()
    from .report import write_report_safely

    write_report_safely(run_dir)  # report.html: the run in one offline page
    return summary


async def _search(config: RunConfig, problem: Problem, run_dir: Path, store: Store, backend) -> dict:
    from evaluators.evaluator import Evaluator
    from evaluators.sandbox import describe_layers

    from .engine import Engine
    from .progress import Progress

    pool = backend.pool
    if not config.quiet:
        print(f"sandbox: {describe_layers(pool.info['isolation'])} (details: evosearch doctor)", file=sys.stderr)
    evaluator = Evaluator(pool, timeout_s=config.timeout_s, memory_mb=config.memory_mb, use_probe=config.probe)
    progress = None if config.quiet else Progress(config.samples)
    engine = Engine(config, problem, store, backend.sampler, evaluator, progress,
                    make_archipelago=backend.make_archipelago)
    earlier = store.get_meta("evaluator_stats") or {}  # the evaluator's counters of earlier sessions (resumes)
    try:
        best = await engine.run()
    finally:
        store.set_meta("evaluator_stats", _add_counts(earlier, evaluator.stats()))
    if progress:
        progress.phase("held-out evaluation of the seed and the best program")
    # The held-out evaluations (sandbox) and the heatmap (matplotlib, in a thread) overlap.
    try:
        summary, islands = await asyncio.gather(report(problem, store, evaluator, best.program_id,
                                                       config.test_timeout_s, config.validation_picks),
                                                asyncio.to_thread(write_island_outputs, engine, run_dir))
    finally:
        if progress:
            progress.close()
    summary["evaluator"] = _add_counts(earlier, evaluator.stats())  # the whole run's, held-out report included
    store.set_meta("evaluator_stats", summary["evaluator"])
    summary["islands"] = islands
    summary["stop_reason"] = engine.stop_reason
    summary["commit_mode"] = engine.mode
    stats = backend.stats()
    if stats is not None:
        summary["ray"] = stats
    return summary


def _add_counts(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {**a, **b}}


def _remove_run(run_dir: Path) -> None:
    for name in ("evosearch.db", "evosearch.db-wal", "evosearch.db-shm", "config.yaml"):
        (run_dir / name).unlink(missing_ok=True)
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


def write_island_outputs(engine, run_dir: Path) -> dict:
    """Per-island QD metrics over time (qd_metrics.json) and the archive heatmap (heatmap.png)."""
    from islands.visualize import write_heatmap  # matplotlib only at the end of a run

    final = engine.archipelago.stats()
    (run_dir / "qd_metrics.json").write_text(json.dumps({"every": engine.qd_every, "history": engine.qd_history,
                                                         "final": final}, indent=1))
    heatmap = write_heatmap(engine.archipelago, run_dir / "heatmap.png", title=f"{engine.problem.name}: all islands")
    return {"final": final, "heatmap": "heatmap.png" if heatmap else None, "qd_metrics": "qd_metrics.json",
            "qd_score_note": QD_SCORE_NOTE}


def sampler_tally(store: Store, by: str = "sampler") -> dict:
    """Per sampler (a bandit's arms, ``tune``): rows, valid ones, and new bests (better on training than every
    program committed before, the seed included), so a run with several samplers says which found what.
    ``by="exploit"``: the same per kind of prompt of --selection exploit, "exploit" (the archipelago's best
    shown) and "explore" (cells of the island)."""
    out, best = {}, None
    for key, status, score in store.db.execute(
            f"SELECT {by}, status, score FROM programs WHERE commit_seq IS NOT NULL ORDER BY commit_seq"):
        better = status == "ok" and best is not None and score > best
        if status == "ok":
            best = score if best is None else max(best, score)
        if key is None or key == "seed":
            continue
        name = key if by == "sampler" else ("exploit" if key else "explore")
        tally = out.setdefault(name, {"rows": 0, "ok": 0, "new_bests": 0})
        tally["rows"] += 1
        tally["ok"] += status == "ok"
        tally["new_bests"] += better
    return out


PROMPT_KINDS = {"exploit": "showing the best of all", "explore": "showing island cells"}


def training_bests(store: Store) -> list[int]:
    """Ids of the programs that were a new best of the run when committed, in commit order (the seed first): the
    new bests ``sampler_tally`` counts."""
    rows = store.db.execute("SELECT id, score FROM programs WHERE status = 'ok' AND commit_seq IS NOT NULL "
                            "ORDER BY commit_seq").fetchall()
    out, best = [], None
    for pid, score in rows:
        if best is None or score > best:
            out.append(pid)
            best = score
    return out


async def validation_pick(store: Store, evaluator, best_id: int, picks: int,
                          timeout_s: float | None = None) -> dict | None:
    """Of the run's last ``picks`` training bests, the one that scores best on the validation split (ties: the
    later, better on training). Which training best holds out best is noise among near-equals unless another split
    decides; this one is never reported, so the held-out score stays unbiased. None when there is only one."""
    chain = training_bests(store)
    if not chain or chain[-1] != best_id:  # the engine's best is always a candidate
        chain.append(best_id)
    if min(picks, len(chain)) < 2:  # nothing to pick between (a first run that found nothing): no evaluation
        return None
    rows = [store.get(pid) for pid in chain[-picks:]]
    results = await asyncio.gather(*(evaluator.evaluate_split(row["code"], "valid", timeout_s=timeout_s)
                                     for row in rows))
    candidates = [{"id": row["id"], "train": row["score"], "valid": r.score if r.ok else None,
                   "valid_status": None if r.ok else r.status} for row, r in zip(rows, results)]
    scored = [c for c in candidates if c["valid"] is not None]
    picked = max(reversed(scored), key=lambda c: c["valid"])["id"] if scored else best_id
    return {"picked": picked, "training_best": best_id, "candidates": candidates}


async def report(problem: Problem, store: Store, evaluator, best_id: int, test_timeout_s: float | None = None,
                 validation_picks: int = 0) -> dict:
    """The best program against the seed, on training and held-out instances; with a validation split, the best
    is the validation pick among the last training bests (``validation``)."""
    counts = store.status_counts("id > 0")  # the seed program is not a sample
    # Samples are sampler calls (an LLM's, or mutate's); evaluations are programs that reached the evaluator,
    # tuning trials included: runs compare at equal LLM budget or at equal evaluation budget.
    trials = store.count("sampler = ?", (TUNE,))
    out = {"problem": problem.name, "samples": sum(counts.values()) - trials, "outcomes": counts,
           "evaluations": store.count("id > 0 AND code IS NOT NULL AND status != 'pending'"),
           "tuning": {"trials": trials, "tunings": store.db.execute(
               "SELECT COUNT(DISTINCT parents) FROM programs WHERE sampler = ?", (TUNE,)).fetchone()[0]}}
    out["samplers"] = sampler_tally(store)
    if kinds := sampler_tally(store, "exploit"):
        out["prompts"] = kinds
    if validation_picks and problem.validation and (
            picked := await validation_pick(store, evaluator, best_id, validation_picks, test_timeout_s)):
        out["validation"] = picked
        best_id = picked["picked"]
    for name, pid in (("seed", 0), ("best", best_id)):
        row = store.get(pid)
        held_out = await evaluator.evaluate_split(row["code"], "test", timeout_s=test_timeout_s)
        out[name] = {"id": pid, "sampler": row["sampler"], "train": row["score"], "train_metrics": row["metrics"],
                     "test": held_out.score, "test_metrics": held_out.metrics,
                     "test_status": held_out.status if not held_out.ok else None}
    for split in ("train", "test"):
        seed, best = out["seed"][split], out["best"][split]
        out[f"gain_{split}"] = None if seed is None or best is None else best - seed
    return out


def nothing_found_hint(summary: dict) -> str:
    """What to try when no program beat the seed: the first run's likely outcome with the embedded model."""
    samplers = set(summary.get("samplers") or {}) - {TUNE}
    if samplers == {"local"}:  # the 270M model alone (benchmarks/small_model_novelty.json: 0 of 3 seeds)
        return ("nothing beat the seed: the embedded 270M model seldom improves a program on its own; "
                "--sampler local+mutate adds LLM-free mutations beside it (README, \"Prompts and edits\"), "
                "--sampler openai a larger model")
    return f"nothing beat the seed in {summary['samples']} samples: try more (--samples) or another --sampler"


def format_summary(summary: dict, run_dir: Path) -> str:
    def metrics(m):
        return "  ".join(f"{k} {v:.4g}" for k, v in (m or {}).items())

    s, b = summary["seed"], summary["best"]
    tuning = summary.get("tuning") or {}
    tuned = f" ({tuning['trials']} tuning trials of {tuning['tunings']} elites)" if tuning.get("trials") else ""
    lines = [f"run {run_dir}: {summary['samples']} samples, {summary.get('evaluations', '?')} evaluations{tuned}, "
             "outcomes " + ", ".join(f"{k} {v}" for k, v in sorted(summary["outcomes"].items()))]
    for split in ("train", "test"):
        if s[split] is None or b[split] is None:
            status = b.get("test_status") or s.get("test_status")
            hint = "; a longer held-out deadline: --test-timeout-s" if status == "timeout" else ""
            lines.append(f"{split:5}: best {b[split]} seed {s[split]} ({status}{hint})")
            continue
        lines.append(f"{split:5}: best {b[split]:.6g} vs seed {s[split]:.6g} (gain {summary['gain_' + split]:+.6g})"
                     f"   best: {metrics(b[split + '_metrics'])}   seed: {metrics(s[split + '_metrics'])}")
    tally = summary.get("samplers") or {}
    if len(tally) > 1:  # a bandit, or tuning beside the sampler: who found what
        lines.append("by sampler: " + ", ".join(f"{name} {t['rows']} ({t['ok']} valid, {t['new_bests']} new bests)"
                                                  for name, t in tally.items())
                     + f"; the best is {b.get('sampler')}'s")
    if v := summary.get("validation"):  # the reported best was picked on the validation split
        valid = {c["id"]: "failed" if c["valid"] is None else f"{c['valid']:.6g}" for c in v["candidates"]}
        head = f"valid: of the last {len(valid)} training bests, id {v['picked']} scores best on the validation split"
        lines.append(f"{head} ({valid[v['picked']]})" + ("" if v["picked"] == v["training_best"] else
                     f"; the training best, id {v['training_best']}, {valid[v['training_best']]}"))
    kinds = summary.get("prompts") or {}
    if kinds:  # --selection exploit: how the exploiting and the exploring prompts did
        lines.append("prompts: " + ", ".join(
            f"{PROMPT_KINDS[name]} {t['rows']} ({t['ok']} valid, {t['new_bests']} new bests)"
            for name, t in sorted(kinds.items())))
    usage = summary.get("sampler_usage")
    if usage:
        cost = "unknown" if usage["cost"] is None else f"${usage['cost']:.4f}"
        lines.append(f"LLM: {usage['tokens_in']} prompt + {usage['tokens_out']} answer tokens, cost {cost}, "
                     f"{usage['requests']} requests, {usage['retries']} retries, {usage['failures']} failed")
    if summary.get("stop_reason"):
        lines.append(f"stopped early: {summary['stop_reason']}")
    if b["id"] == s["id"]:
        lines.append(nothing_found_hint(summary))
    lines.append(f"best program: {run_dir / 'best.py'} (id {b['id']})")
    return "\n".join(lines)

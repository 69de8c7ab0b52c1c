"""Wire a run from its config: problem, store, sampler, evaluator pool, engine, final report."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

from evaluators.evaluator import Evaluator
from evaluators.pool import WorkerPool
from evaluators.sandbox import describe_layers

from .config import RunConfig
from .engine import Engine
from .problem import Problem
from .progress import Progress
from .samplers import make_sampler
from .samplers.base import Sampler
from .store import Store


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
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def build_sampler(config: RunConfig) -> Sampler:
    options = {
        "local": dict(model_path=config.model, temperature=config.temperature, max_tokens=config.max_tokens,
                      seed=config.seed),
        "openai": dict(base_url=config.base_url, model=config.model, api_key_env=config.api_key_env,
                       temperature=config.temperature, max_tokens=config.max_tokens),
        "mutate": {},
    }[config.sampler]
    return make_sampler(config.sampler, **options)


async def run_search(config: RunConfig, problem: Problem, run_dir: Path) -> dict:
    store = Store(run_dir / "evosearch.db")
    store.set_meta("config", config.to_dict())
    sampler = build_sampler(config)
    try:
        await sampler.check()
        async with WorkerPool(problem.folder, config.data_dir, config.seed, config.problem_options,
                              workers=config.workers, hide=[str(run_dir)]) as pool:
            if not config.quiet:
                print(f"sandbox: {describe_layers(pool.info['isolation'])} (details: evosearch doctor)", file=sys.stderr)
            evaluator = Evaluator(pool, timeout_s=config.timeout_s, memory_mb=config.memory_mb, use_probe=config.probe)
            progress = None if config.quiet else Progress(config.samples)
            engine = Engine(config, problem, store, sampler, evaluator, progress)
            best = await engine.run()
            summary = await report(problem, store, evaluator, best.program_id)
            summary["evaluator"] = evaluator.stats()
    finally:
        await sampler.close()
    (run_dir / "best.py").write_text(store.get(summary["best"]["id"])["code"])
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    store.close()
    return summary


async def report(problem: Problem, store: Store, evaluator: Evaluator, best_id: int) -> dict:
    """The best program against the seed, on training and held-out instances."""
    counts = store.status_counts("id > 0")  # the seed program is not a sample
    out = {"problem": problem.name, "samples": sum(counts.values()), "outcomes": counts}
    for name, pid in (("seed", 0), ("best", best_id)):
        row = store.get(pid)
        held_out = await evaluator.evaluate_split(row["code"], "test")
        out[name] = {"id": pid, "train": row["score"], "train_metrics": row["metrics"],
                     "test": held_out.score, "test_metrics": held_out.metrics,
                     "test_status": held_out.status if not held_out.ok else None}
    for split in ("train", "test"):
        seed, best = out["seed"][split], out["best"][split]
        out[f"gain_{split}"] = None if seed is None or best is None else best - seed
    return out


def format_summary(summary: dict, run_dir: Path) -> str:
    def metrics(m):
        return "  ".join(f"{k} {v:.4g}" for k, v in (m or {}).items())

    s, b = summary["seed"], summary["best"]
    lines = [f"run {run_dir}: {summary['samples']} samples, outcomes "
             + ", ".join(f"{k} {v}" for k, v in sorted(summary["outcomes"].items()))]
    for split in ("train", "test"):
        if s[split] is None or b[split] is None:
            lines.append(f"{split:5}: best {b[split]} seed {s[split]} ({b.get('test_status') or s.get('test_status')})")
            continue
        lines.append(f"{split:5}: best {b[split]:.6g} vs seed {s[split]:.6g} (gain {summary['gain_' + split]:+.6g})"
                     f"   best: {metrics(b[split + '_metrics'])}   seed: {metrics(s[split + '_metrics'])}")
    lines.append(f"best program: {run_dir / 'best.py'} (id {b['id']})")
    return "\n".join(lines)

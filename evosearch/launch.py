"""Wire a run from its config: problem, store, sampler, evaluator pool, engine, final report."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import yaml

from evaluators.evaluator import Evaluator
from evaluators.pool import WorkerPool
from evaluators.sandbox import describe_layers

from .config import ConfigError, RunConfig
from .engine import Engine
from .problem import Problem
from .progress import Progress
from .samplers import make_sampler
from .samplers.base import Sampler
from .store import Store
from .tuning import NAME as TUNE


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
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    if "max_tokens" in saved and "answer_tokens" not in saved:  # before the rename, max_tokens capped each answer
        saved["answer_tokens"] = saved.pop("max_tokens")
    return saved


def sampler_spec(config: RunConfig) -> tuple[str, dict]:
    """The sampler's name and plain options: what make_sampler takes, here or in a Ray actor."""
    options = {
        "local": dict(model_path=config.model, temperature=config.temperature, max_tokens=config.answer_tokens,
                      seed=config.seed),
        "openai": dict(base_url=config.base_url, model=config.model, api_key_env=config.api_key_env,
                       temperature=config.temperature, answer_tokens=config.answer_tokens, top_p=config.top_p,
                       timeout_s=config.request_timeout_s, max_retries=config.retries,
                       concurrency=config.request_concurrency or config.concurrency, n=config.n_per_request,
                       max_cost=config.max_cost, max_run_tokens=config.max_tokens, prices=config.prices),
        "vllm": {**dict(model=config.model, temperature=config.temperature, answer_tokens=config.answer_tokens,
                        top_p=config.top_p, n=config.n_per_request, max_cost=config.max_cost,
                        max_run_tokens=config.max_tokens, prices=config.prices, seed=config.seed),
                 **config.vllm_options},
        "mutate": {},
    }[config.sampler]
    return config.sampler, options


def build_sampler(config: RunConfig) -> Sampler:
    if config.models:
        return build_bandit(config)
    name, options = sampler_spec(config)
    try:
        return make_sampler(name, **options)
    except ValueError as e:  # an option the sampler rejects, e.g. --max-cost for a model without a price
        raise ConfigError(str(e)) from None


def build_bandit(config: RunConfig) -> Sampler:
    """One sampler per entry of ``models`` (the run's knobs as defaults, the entry's keys on top), under a UCB bandit."""
    from .samplers.bandit import BanditSampler

    arms, costs = {}, {}
    for arm, spec in config.models.items():
        spec = dict(spec)
        name, costs[arm] = spec.pop("sampler"), float(spec.pop("cost", 1.0))
        base = dataclasses.replace(config, sampler=name, model=spec.pop("model", None),
                                   base_url=spec.pop("base_url", None))
        options = {**sampler_spec(base)[1], **spec}
        try:
            arms[arm] = make_sampler(name, **options)
        except ValueError as e:
            raise ConfigError(f"config 'models': '{arm}': {e}") from None
    return BanditSampler(arms, costs)


async def run_search(config: RunConfig, problem: Problem, run_dir: Path) -> dict:
    store = Store(run_dir / "evosearch.db")
    store.set_meta("config", config.to_dict())
    backend = None
    if config.backend == "ray":
        from .ray_backend import RayBackend  # Ray is imported only when chosen
        backend = await RayBackend(config, problem, run_dir).start()
        sampler = backend.sampler
    else:
        sampler = build_sampler(config)
    try:
        await sampler.check()
        meter = getattr(sampler, "meter", None)
        if meter is not None:  # a resumed run has spent part of its budget already
            spent = store.usage()
            cost = spent["cost"] if spent["cost"] is not None else meter.cost(spent["tokens_in"], spent["tokens_out"])
            meter.budget.charge(spent["tokens_in"], spent["tokens_out"], cost or 0.0, requests=0)
        pool = backend.pool if backend else WorkerPool(problem.folder, config.data_dir, config.seed,
                                                       config.problem_options, workers=config.workers,
                                                       hide=[str(run_dir)])
        async with pool:
            if not config.quiet:
                print(f"sandbox: {describe_layers(pool.info['isolation'])} (details: evosearch doctor)", file=sys.stderr)
            evaluator = Evaluator(pool, timeout_s=config.timeout_s, memory_mb=config.memory_mb, use_probe=config.probe)
            progress = None if config.quiet else Progress(config.samples)
            engine = Engine(config, problem, store, sampler, evaluator, progress,
                            **({"make_archipelago": backend.make_archipelago} if backend else {}))
            best = await engine.run()
            summary = await report(problem, store, evaluator, best.program_id)
            summary["evaluator"] = evaluator.stats()
            summary["islands"] = write_island_outputs(engine, run_dir)
            summary["stop_reason"] = engine.stop_reason
            if backend:
                summary["ray"] = backend.stats()
    finally:
        if hasattr(sampler, "usage"):  # tokens, cost, retries and failures of the sampler's requests
            store.set_meta("sampler_usage", sampler.usage())
        await sampler.close()
        if backend:
            await backend.close()
    summary["sampler_usage"] = store.get_meta("sampler_usage")
    (run_dir / "best.py").write_text(store.get(summary["best"]["id"])["code"])
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    store.close()
    return summary


def write_island_outputs(engine: Engine, run_dir: Path) -> dict:
    """Per-island QD metrics over time (qd_metrics.json) and the archive heatmap (heatmap.png)."""
    from islands.visualize import write_heatmap  # matplotlib only at the end of a run

    final = engine.archipelago.stats()
    (run_dir / "qd_metrics.json").write_text(json.dumps({"every": engine.qd_every, "history": engine.qd_history,
                                                         "final": final}, indent=1))
    heatmap = write_heatmap(engine.archipelago, run_dir / "heatmap.png", title=f"{engine.problem.name}: all islands")
    return {"final": final, "heatmap": "heatmap.png" if heatmap else None, "qd_metrics": "qd_metrics.json"}


async def report(problem: Problem, store: Store, evaluator: Evaluator, best_id: int) -> dict:
    """The best program against the seed, on training and held-out instances."""
    counts = store.status_counts("id > 0")  # the seed program is not a sample
    # Samples are sampler calls (an LLM's, or mutate's); evaluations are programs that reached the evaluator,
    # tuning trials included: runs compare at equal LLM budget or at equal evaluation budget.
    trials = store.count("sampler = ?", (TUNE,))
    out = {"problem": problem.name, "samples": sum(counts.values()) - trials, "outcomes": counts,
           "evaluations": store.count("id > 0 AND code IS NOT NULL AND status != 'pending'"),
           "tuning": {"trials": trials, "tunings": store.db.execute(
               "SELECT COUNT(DISTINCT parents) FROM programs WHERE sampler = ?", (TUNE,)).fetchone()[0]}}
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
    tuning = summary.get("tuning") or {}
    tuned = f" ({tuning['trials']} tuning trials of {tuning['tunings']} elites)" if tuning.get("trials") else ""
    lines = [f"run {run_dir}: {summary['samples']} samples, {summary.get('evaluations', '?')} evaluations{tuned}, "
             "outcomes " + ", ".join(f"{k} {v}" for k, v in sorted(summary["outcomes"].items()))]
    for split in ("train", "test"):
        if s[split] is None or b[split] is None:
            lines.append(f"{split:5}: best {b[split]} seed {s[split]} ({b.get('test_status') or s.get('test_status')})")
            continue
        lines.append(f"{split:5}: best {b[split]:.6g} vs seed {s[split]:.6g} (gain {summary['gain_' + split]:+.6g})"
                     f"   best: {metrics(b[split + '_metrics'])}   seed: {metrics(s[split + '_metrics'])}")
    usage = summary.get("sampler_usage")
    if usage:
        cost = "unknown" if usage["cost"] is None else f"${usage['cost']:.4f}"
        lines.append(f"LLM: {usage['tokens_in']} prompt + {usage['tokens_out']} answer tokens, cost {cost}, "
                     f"{usage['requests']} requests, {usage['retries']} retries, {usage['failures']} failed")
    if summary.get("stop_reason"):
        lines.append(f"stopped early: {summary['stop_reason']}")
    lines.append(f"best program: {run_dir / 'best.py'} (id {b['id']})")
    return "\n".join(lines)

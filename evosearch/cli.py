"""The `evosearch` command: run, eval, problems, doctor, new-problem.

Each subcommand imports what it needs when it runs, so `evosearch --help` and a mistyped problem name
answer at once: the engine, pyribs and Ray load only once the problem and the settings are checked."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError, add_arguments

# Exceptions that mean "the user asked for something that cannot be": one line, exit status 2.
# Named by module so catching them never imports the module (an import error is not a user mistake).
USER_ERRORS = (("evosearch.config", "ConfigError"), ("evosearch.problem", "ProblemError"),
               ("evosearch.launch", "RunDirError"), ("evosearch.samplers.base", "SamplerError"),
               ("evosearch.pipeline", "SearchError"),  # RayBackendError too
               ("evaluators.pool", "PoolError"))  # e.g. no sandbox here and no --unsafe-no-sandbox


def _user_errors() -> tuple[type[Exception], ...]:
    # A module that was never imported cannot have raised its error.
    return tuple(getattr(sys.modules[m], name) for m, name in USER_ERRORS if m in sys.modules)


def _version() -> str:
    import evosearch

    return f"evosearch {evosearch.__version__}"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="evosearch", description="LLM-guided evolutionary program search")
    top.add_argument("--version", action="version", version=_version())
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a search", description=(
        "Run a search on PROBLEM. Settings come from the defaults, then --config FILE (YAML, same keys as the "
        "flags with underscores; see examples/run.yaml), then the flags given here."))
    run.add_argument("problem", nargs="?", help="built-in or installed problem name, or a problem folder")
    run.add_argument("--config", metavar="FILE", help="YAML file of settings")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run stored in RUN_DIR (flags given here override)")
    add_arguments(run)
    ev = sub.add_parser("eval", help="score a program file on a problem's training and held-out splits",
                        description="Score FILE against PROBLEM's train and test splits in the sandbox, as a run "
                                    "scores its candidates. FILE is a whole program (e.g. a run's best.py) or just "
                                    "the evolved functions, which are then put into the problem's skeleton.")
    ev.add_argument("problem", help="built-in or installed problem name, or a problem folder")
    ev.add_argument("file", help="the program to score")
    ev.add_argument("--config", metavar="FILE", help="YAML file of settings, e.g. a run's config.yaml")
    ev.add_argument("--json", action="store_true", help="print the result as JSON")
    add_arguments(ev, only=("data_dir", "problem_options", "seed", "timeout_s", "test_timeout_s", "memory_mb"))
    sub.add_parser("problems", help="list available problems")
    sub.add_parser("doctor", help="show which sandbox isolation layers are active on this machine")
    new = sub.add_parser("new-problem", help="write a working problem folder to start from")
    new.add_argument("name", help="problem name (a Python identifier)")
    new.add_argument("--dir", default=".", help="where to create the folder (default: here)")
    add_report_parsers(sub)
    return top


def _settings(args: argparse.Namespace, *own: str) -> dict:
    """The run-config flags the user gave (argparse leaves the others out)."""
    return {k: v for k, v in vars(args).items() if k not in ("command", "config", "resume", "problem", *own)}


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from .api import execute, prepare

    config, problem = prepare(args.problem, _settings(args), args.config, args.resume)  # checked before any folder
    from .launch import format_summary, new_run_dir  # the engine, pyribs: only now
    from .progress import Terminal

    run_dir = Path(args.resume) if args.resume else new_run_dir(config)
    print(f"evosearch: {config.problem} with sampler {config.sampler}, {config.samples} samples, "
          f"{config.islands} islands, seed {config.seed} -> {run_dir} (log: {run_dir / 'run.log'})", file=sys.stderr)

    async def main() -> dict:
        # SIGTERM (kill, `ray job stop`, a scheduler preempting the node) stops the run as Ctrl-C does: the
        # task is cancelled and writes its summary and report. A second SIGTERM kills at once.
        loop, task = asyncio.get_running_loop(), asyncio.current_task()

        def terminate() -> None:
            loop.remove_signal_handler(signal.SIGTERM)
            task.cancel("SIGTERM")

        loop.add_signal_handler(signal.SIGTERM, terminate)
        return await execute(config, problem, run_dir)

    try:
        with Terminal(run_dir):
            summary = asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError) as e:
        partial = (run_dir / "summary.json").is_file()
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else "terminated (SIGTERM)"
        print(f"\nevosearch: {why}{'; summary so far in ' + str(run_dir / 'summary.json') if partial else ''}"
              f"; continue with: evosearch run --resume {run_dir}", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 128 + signal.SIGTERM
    print(format_summary(summary, run_dir))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import asyncio

    from .api import prepare
    from .program import EditError

    config, problem = prepare(args.problem, _settings(args, "file", "json"), args.config)
    path = Path(args.file)
    try:
        code = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    try:
        code, how = program_for(problem, code)
    except (EditError, SyntaxError) as e:
        raise ConfigError(f"{path}: {e}") from None
    results = asyncio.run(_evaluate(config, problem, code))
    if args.json:
        print(json.dumps({"problem": problem.name, "file": str(path), "program": how, **results}, indent=2))
    else:
        print(f"{problem.name}: {path} ({how})")
        for split, r in results.items():
            metrics = "  ".join(f"{k} {v:.4g}" for k, v in (r["metrics"] or {}).items())
            score = "-" if r["score"] is None else f"{r['score']:.6g}"
            detail = metrics if r["status"] == "ok" else r["reason"]
            print(f"{split:5} {r['status']:8} score {score:>10}  {r['eval_s']:7.1f} s (limit {r['timeout_s']:g} s)"
                  f"  {detail}")
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


def program_for(problem, code: str) -> tuple[str, str]:
    """The program to run for a file: itself when it has EVOLVE-BLOCK markers, else the skeleton with the
    file's top-level functions put in (a published heuristic is often just the function)."""
    import ast

    from .program import END, START, replace_functions

    if START in code and END in code:
        return code, "whole program"
    tree = ast.parse(code)
    functions = {node.name: ast.get_source_segment(code, node) for node in tree.body
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if not functions:
        raise SyntaxError("no EVOLVE-BLOCK markers and no top-level function to put into the skeleton")
    return replace_functions(problem.skeleton, functions), f"{', '.join(functions)} in the skeleton"


async def _evaluate(config, problem, code: str) -> dict:
    import asyncio

    from evaluators.evaluator import Evaluator
    from evaluators.pool import WorkerPool

    async with WorkerPool(problem.folder, config.data_dir, config.seed, config.problem_options, workers=2) as pool:
        evaluator = Evaluator(pool, timeout_s=config.timeout_s, memory_mb=config.memory_mb, use_probe=False)
        train_s = config.timeout_s or pool.info.get("timeout_s") or problem.timeout_s
        limits = {"train": train_s, "test": config.test_timeout_s or train_s}
        done = await asyncio.gather(*(evaluator.evaluate_split(code, split, timeout_s=limits[split])
                                      for split in limits))
    return {split: {"status": e.status, "score": e.score, "metrics": e.metrics, "reason": e.reason,
                    "eval_s": e.eval_s, "timeout_s": limits[split]} for split, e in zip(limits, done)}


def cmd_problems(args: argparse.Namespace) -> int:
    from .problem import available_problems
    problems = available_problems()
    width = max(map(len, problems), default=0)
    for name, description in problems.items():
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from evaluators.pool import isolation_layers
    from evaluators.sandbox import describe_layers
    layers = isolation_layers()
    width = max(map(len, layers))
    for layer, state in layers.items():
        print(f"{layer:<{width}}  {state}")
    print(f"sandbox: {describe_layers(layers)}")
    return 0


def cmd_new_problem(args: argparse.Namespace) -> int:
    from .scaffold import new_problem
    folder = new_problem(args.name, Path(args.dir))
    print(f"wrote {folder}; try: evosearch run {folder} --sampler mutate --samples 10")
    return 0


# --- report and dashboard -------------------------------------------------------------------------------------
def add_report_parsers(sub) -> None:
    rep = sub.add_parser("report", help="write a run's self-contained HTML report", description=(
        "Write RUN_DIR/report.html: best score over samples and time, outcomes, the best program's lineage with "
        "diffs, the islands' archives, tokens and cost per model, the config and every program with its prompt and "
        "answer. Works on a finished, interrupted or still running run (the store is only read)."))
    rep.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (holding evosearch.db)")
    rep.add_argument("-o", "--output", metavar="FILE", help="where to write the page (default: RUN_DIR/report.html)")
    dash = sub.add_parser("dashboard", help="live web page over run folders", description=(
        "Serve a live page over the run folders in RUNS_DIR (or one run folder): the report's views, refreshed as "
        "runs go, and their best scores side by side. Stores are only read. On a Ray cluster run it where the "
        "driver writes its run folder (e.g. the head node) and forward the port: ssh -L 8765:127.0.0.1:8765 HOST."))
    dash.add_argument("runs_dir", metavar="RUNS_DIR", nargs="?", default="runs", help="folder of run folders, or one "
                      "run folder (default: runs)")
    dash.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback shows prompts and "
                      "code to the network (default: 127.0.0.1)")
    dash.add_argument("--port", type=int, default=8765, help="port (0: any free one; default: 8765)")


def cmd_report(args: argparse.Namespace) -> int:
    from .report import ReportError, write_report
    try:
        out = write_report(args.run_dir, args.output)
    except ReportError as e:
        print(f"evosearch: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard import serve
    if not Path(args.runs_dir).is_dir():
        print(f"evosearch: error: {args.runs_dir} is not a folder", file=sys.stderr)
        return 2
    try:
        server = serve(args.runs_dir, args.host, args.port)
    except OSError as e:
        print(f"evosearch: error: cannot listen on {args.host}:{args.port}: {e.strerror}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"evosearch dashboard: http://{host}:{port}/ over {Path(args.runs_dir).resolve()} (Ctrl-C to stop)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


COMMANDS = {"run": cmd_run, "eval": cmd_eval, "problems": cmd_problems, "doctor": cmd_doctor,
            "new-problem": cmd_new_problem,
            "report": cmd_report, "dashboard": cmd_dashboard}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:  # outside a run (a run handles its own): no traceback
        print("\nevosearch: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if isinstance(e, _user_errors()):
            print(f"evosearch: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())

"""The `evosearch` command: run, problems."""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .config import ConfigError, add_arguments, load_yaml, make_config



def _user_errors() -> tuple[type[Exception], ...]:
    from evaluators.pool import PoolError  # e.g. no sandbox here and no --unsafe-no-sandbox: one line
    from .engine import SearchError
    from .launch import RunDirError
    from .problem import ProblemError
    from .samplers.base import SamplerError
    return ConfigError, PoolError, ProblemError, RunDirError, SamplerError, SearchError


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="evosearch", description="LLM-guided evolutionary program search")
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a search", description=(
        "Run a search on PROBLEM. Settings come from the defaults, then --config FILE (YAML, same keys as the "
        "flags with underscores), then the flags given here."))
    run.add_argument("problem", nargs="?", help="built-in or installed problem name, or a problem folder")
    run.add_argument("--config", metavar="FILE", help="YAML file of settings")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue the run stored in RUN_DIR (flags given here override)")
    add_arguments(run)
    sub.add_parser("problems", help="list available problems")
    sub.add_parser("doctor", help="show which sandbox isolation layers are active on this machine")
    new = sub.add_parser("new-problem", help="write a working problem folder to start from")
    new.add_argument("name", help="problem name (a Python identifier)")
    new.add_argument("--dir", default=".", help="where to create the folder (default: here)")
    add_report_parsers(sub)
    return top


def cmd_run(args: argparse.Namespace) -> int:
    from .launch import format_summary, new_run_dir, run_search, saved_config
    from .problem import load_problem
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "resume", "problem")}
    if args.problem:
        flags["problem"] = args.problem
    if args.resume:
        run_dir = Path(args.resume)
        config = make_config(saved_config(run_dir), load_yaml(args.config) if args.config else {}, flags)
    else:
        config = make_config(load_yaml(args.config) if args.config else {}, flags)
    problem = load_problem(config.problem, config.data_dir, config.seed, config.problem_options)
    if Path(config.problem).is_dir():
        config.problem = str(problem.folder)  # absolute, so --resume works from any directory
    if not args.resume:
        run_dir = new_run_dir(config)
    print(f"evosearch: {config.problem} with sampler {config.sampler}, {config.samples} samples, "
          f"{config.islands} islands, seed {config.seed} -> {run_dir}", file=sys.stderr)
    try:
        summary = asyncio.run(run_search(config, problem, run_dir))
    except KeyboardInterrupt:
        print(f"\nevosearch: interrupted; continue with: evosearch run --resume {run_dir}", file=sys.stderr)
        write_report_safely(run_dir)
        return 130
    print(format_summary(summary, run_dir))
    return 0


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


def write_report_safely(run_dir: Path) -> None:
    from .report import write_report_safely as write
    write(run_dir)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return {"run": cmd_run, "problems": cmd_problems, "doctor": cmd_doctor,
                "new-problem": cmd_new_problem, "report": cmd_report, "dashboard": cmd_dashboard}[args.command](args)
    except _user_errors() as e:
        print(f"evosearch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

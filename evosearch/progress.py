"""What a run shows while it goes: one progress line, log messages above it, run.log, a heartbeat.

* ``Terminal(run_dir)`` (a context manager, used by the CLI and the Python API) routes ``logging`` and
  ``warnings`` for the run: warnings and retries print above the progress line, and everything (with a
  status line every ``LOG_EVERY_S``) goes to ``run_dir/run.log``.
* ``Progress(total)`` is what the engine drives: ``update(row, best_score, archipelago)`` after every
  commit, ``phase(text)`` when the run does something other than sampling (the held-out evaluation),
  ``close()`` at the end. On a terminal it is a rich progress bar on one line at any width, with elapsed
  time, ETA, tokens and cost; elsewhere (a log file, CI) a plain line every ``LOG_EVERY_S``. A thread
  writes a heartbeat line when nothing was said for ``HEARTBEAT_S`` (a slow sample or evaluation).
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("evosearch.progress")

LOG_EVERY_S = 10.0  # status lines in run.log and on a non-terminal stream
HEARTBEAT_S = 30.0  # at least one line this often, even when no result arrives
STALLED_S = 15.0  # the bar says what it waits for after this long without a result

_terminal: "Terminal | None" = None  # the active one; a Progress made during it draws on its console


class _ConsoleHandler(logging.Handler):
    """Log records as one line each, printed above a live progress bar when one is shown."""

    def __init__(self, terminal: "Terminal"):
        super().__init__(logging.WARNING)
        self.terminal = terminal
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.name == "py.warnings":  # warnings.warn: the message, not the source line under it
                text = text.splitlines()[0]
            self.terminal.say(text)
        except Exception:
            self.handleError(record)


def _file_filter(record: logging.LogRecord) -> bool:
    # Our own info lines, and warnings from anything (httpx's per-request info lines stay out).
    return record.name.startswith("evosearch") or record.levelno >= logging.WARNING


class Terminal:
    """Logging and the console for one run; ``run_dir`` None: no run.log (e.g. before the folder exists)."""

    def __init__(self, run_dir: str | Path | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.tty = _isatty(self.stream)
        self.console = None
        if self.tty:
            from rich.console import Console

            self.console = Console(file=self.stream, highlight=False, soft_wrap=False)
        self.progress: Progress | None = None
        self.log_path = Path(run_dir) / "run.log" if run_dir else None
        self._handlers: list[logging.Handler] = []
        self._saved: tuple | None = None

    def say(self, line: str) -> None:
        """A line for the user: above the progress bar on a terminal, else a plain line."""
        if self.console is not None:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def __enter__(self) -> "Terminal":
        global _terminal
        root = logging.getLogger()
        self._saved = (root.level, _terminal)
        self._handlers.append(_ConsoleHandler(self))
        if self.log_path is not None:
            file = logging.FileHandler(self.log_path, encoding="utf-8")
            file.setLevel(logging.INFO)
            file.addFilter(_file_filter)
            file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            self._handlers.append(file)
        for handler in self._handlers:
            root.addHandler(handler)
        root.setLevel(min(root.level or logging.WARNING, logging.INFO))
        logging.captureWarnings(True)  # warnings.warn -> logging -> above the bar and into run.log
        _terminal = self
        log.info("%s", " ".join(["evosearch", *sys.argv[1:]]) if sys.argv and "evosearch" in sys.argv[0]
                 else "evosearch API run")
        return self

    def __exit__(self, kind, error, tb) -> None:
        global _terminal
        if self.progress is not None:
            self.progress.close()
        if kind is not None:
            log.info("run ended by %s: %s", kind.__name__, error)
        root = logging.getLogger()
        for handler in self._handlers:
            root.removeHandler(handler)
            handler.close()
        self._handlers.clear()
        logging.captureWarnings(False)
        root.setLevel(self._saved[0])
        _terminal = self._saved[1]


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _count(n: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Samples done of ``total``, best score, valid rate, elites, rate, tokens, cost; see the module doc."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.terminal = _terminal
        if self.terminal is not None:
            self.terminal.progress = self
        self.stream = stream or (self.terminal.stream if self.terminal else sys.stderr)
        self.tty = _isatty(self.stream)
        self.start, self.start_wall = time.monotonic(), time.time()
        self.seen = self.valid = self.trials = 0  # samples (sampler calls), ok ones, tuning trials
        self.evaluated = 0  # samples with code, which reached the evaluator (the summary's "evaluations")
        self.tokens = 0
        self.cost: float | None = None
        self.best: float | None = None
        self.elites = 0
        self._replayed = 0  # results committed before this process started (resume): not in the rate
        self._last_result = self.start
        self._last_line = self.start  # the first line: at the first result, or a heartbeat
        self._phase: tuple[str, float] | None = None
        self._closed = False
        self._bar = self._task = None
        if self.tty:
            self._start_bar()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="evosearch-heartbeat", daemon=True)
        self._beat.start()

    # --- what the engine calls ----------------------------------------------------------
    def update(self, row: dict, best: float, archipelago) -> None:
        if row["id"] == 0:
            return  # the seed program is not a sample
        now = time.monotonic()
        if row.get("sampler") == "tune":  # an evaluation without a sample (evosearch/tuning.py)
            self.trials += 1
            self.best = best
            return
        self.seen += 1
        self.valid += row["status"] == "ok"
        self.evaluated += row.get("code") is not None
        self.tokens += (row.get("tokens_in") or 0) + (row.get("tokens_out") or 0)
        if row.get("cost") is not None:
            self.cost = (self.cost or 0.0) + row["cost"]
        self.best = best
        replayed = (row.get("finished") or time.time()) < self.start_wall  # finished before this process began
        self._replayed += replayed
        self._last_result = now
        if now - self._last_line >= (0.5 if self.tty else LOG_EVERY_S) or self.seen >= self.total:
            self.elites = sum(s["elites"] for s in archipelago.stats())  # remote calls under Ray: not every commit
        if self._bar is not None:
            if replayed:  # a resumed run's replay: move the bar, keep it out of the speed estimate
                self._bar.reset(self._task, completed=self.seen, start=True)
            else:
                self._bar.update(self._task, completed=self.seen)
        if now - self._last_line >= LOG_EVERY_S or self.seen == 1 or self.seen >= self.total:
            self._line()

    def phase(self, text: str | None) -> None:
        """Say what the run does now, e.g. "held-out evaluation"; None: back to sampling."""
        self._phase = (text, time.monotonic()) if text else None
        if text:
            self._line()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._phase = None
        if self._bar is not None:
            self._bar.stop()
        log.info("%s", self.status())

    # --- rendering ----------------------------------------------------------------------
    def status(self, now: float | None = None) -> str:
        """The plain status line (run.log, non-terminals)."""
        now = now or time.monotonic()
        return "  ".join(p for p in (f"samples {self.seen}/{self.total}", *self._stats(now)) if p)

    def _stats(self, now: float) -> list[str]:
        parts = []
        if self._phase is not None:
            parts.append(f"{self._phase[0]} ({now - self._phase[1]:.0f} s)")
        elif self.seen < self.total and now - self._last_result >= STALLED_S:
            parts.append(f"waiting {now - self._last_result:.0f} s for sample {self.seen + 1}")
        if self.best is not None:
            parts.append(f"best {self.best:.6g}")
        if self.seen:
            parts.append(f"valid {100 * self.valid / self.seen:.0f}%")
        if self.trials:
            parts.append(f"evals {self.evaluated + self.trials} ({self.trials} tuning)")
        if self.tokens:
            parts.append(f"{_count(self.tokens)} tok")
        if self.cost is not None:
            parts.append(f"${self.cost:.4f}")
        parts.append(f"elites {self.elites}")
        fresh, spent = self.seen - self._replayed, now - self.start
        if fresh > 0:
            parts.append(f"{fresh / max(spent, 1e-9):.2f}/s")
        if not self.tty:
            remaining = (self.total - self.seen) * spent / fresh if fresh > 0 else None
            parts.append(f"elapsed {_clock(spent)} eta {_clock(remaining)}")
        return parts

    def _line(self) -> None:
        self._last_line = time.monotonic()
        line = self.status(self._last_line)
        log.info("%s", line)
        if not self.tty:
            if self.terminal is not None:
                self.terminal.say(line)
            else:
                self.stream.write(line + "\n")
                self.stream.flush()

    def _heartbeat(self) -> None:
        # A line at least every HEARTBEAT_S (run.log, and a non-terminal), so a slow sample or the held-out
        # evaluation is never silence; on a terminal the bar's clock ticks as well.
        while not self._stop.wait(min(HEARTBEAT_S, LOG_EVERY_S) / 2):
            if time.monotonic() - self._last_line >= HEARTBEAT_S:
                self._line()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, ProgressColumn, SpinnerColumn, TextColumn
        from rich.progress import Progress as RichProgress
        from rich.table import Column
        from rich.text import Text

        outer = self

        class Clock(ProgressColumn):
            def render(self, task):  # elapsed < remaining
                return Text(f"{_clock(task.elapsed)}<{_clock(task.time_remaining)}", style="progress.elapsed")

        class Stats(ProgressColumn):
            def render(self, task):
                return Text("  ".join(outer._stats(time.monotonic())), no_wrap=True, overflow="ellipsis")

        console = self.terminal.console if self.terminal is not None else Console(file=self.stream, highlight=False)
        fixed = dict(no_wrap=True, overflow="crop")
        self._bar = RichProgress(
            SpinnerColumn(table_column=Column(**fixed)),
            TextColumn("{task.completed}/{task.total}", table_column=Column(**fixed)),
            BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=5, max_width=40, **fixed)),
            Clock(table_column=Column(**fixed)),
            Stats(table_column=Column(ratio=5, no_wrap=True, overflow="ellipsis")),
            console=console, refresh_per_second=4, transient=False, expand=True)
        self._task = self._bar.add_task("samples", total=self.total)
        self._bar.start()

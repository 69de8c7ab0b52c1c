"""The terminal display: one line at any width, log messages above it, run.log, the heartbeat."""
import io
import logging
import re
import time
import warnings

import pytest

from evosearch import progress as P


class Archipelago:
    def stats(self):
        return [{"elites": 3}, {"elites": 4}]


class Tty(io.StringIO):
    def isatty(self):
        return True


def row(i, **extra):
    return {"id": i, "status": "ok", "tokens_in": 1200, "tokens_out": 300, "cost": 0.002, "finished": time.time(),
            **extra}


def frames(text: str) -> list[str]:
    """What the terminal shows, redraw by redraw: escape codes out, split at carriage returns and newlines."""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return [f for f in re.split(r"[\r\n]", plain) if f.strip()]


@pytest.mark.parametrize("width", [40, 80, 160])
def test_the_bar_is_one_line_at_any_width_and_warnings_print_above_it(monkeypatch, width):
    monkeypatch.setenv("COLUMNS", str(width))
    stream = Tty()
    with P.Terminal(None, stream=stream):
        bar = P.Progress(500)
        for i in range(1, 200):
            bar.update(row(i), -419.4, Archipelago())
            if i == 100:
                logging.getLogger("evosearch.samplers.openai_api").warning("http://h/v1: retry 1 of 3 after 429")
                warnings.warn("a library warning")
        bar._bar.refresh()
    shown = frames(stream.getvalue())
    bars = [f for f in shown if "/500" in f]
    assert bars and all(len(f) <= width for f in bars)
    notes = [f for f in shown if "retry 1 of 3" in f or "a library warning" in f]
    assert len(notes) == 2 and not any("/500" in f for f in notes)  # lines of their own, never inside the bar
    assert shown.index(notes[0]) < len(shown) - 1 and "199/500" in shown[-1]  # the bar is redrawn below them
    if width >= 80:
        last = bars[-1]
        assert "best -419.4" in last and "valid 100%" in last and "<" in last  # elapsed<eta
    if width >= 160:
        assert "298.5k tok" in bars[-1] and "$0.3980" in bars[-1]


def test_run_log_holds_status_lines_warnings_and_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "LOG_EVERY_S", 0.0)
    stream = io.StringIO()
    with P.Terminal(tmp_path, stream=stream):
        bar = P.Progress(3)
        bar.update(row(0), 1.0, Archipelago())  # the seed program: not a sample
        bar.update(row(1), 1.0, Archipelago())
        logging.getLogger("evosearch.engine").warning("something to know")
        logging.getLogger("httpx").info("HTTP Request: POST ...")  # library chatter stays out
        bar.update(row(2, status="timeout"), 2.0, Archipelago())
        bar.phase("held-out evaluation")
        bar.close()
    log = (tmp_path / "run.log").read_text()
    assert "samples 1/3  best 1  valid 100%" in log and "samples 2/3  best 2  valid 50%" in log
    assert "WARNING evosearch.engine: something to know" in log and "HTTP Request" not in log
    assert "samples 2/3  held-out evaluation (0 s)" in log
    # Not a terminal: plain lines on the stream too, the warning among them.
    assert "samples 2/3  best 2" in stream.getvalue() and "something to know" in stream.getvalue()
    assert logging.getLogger().handlers == [h for h in logging.getLogger().handlers if not isinstance(h, P._ConsoleHandler)]


def test_a_heartbeat_while_nothing_commits(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "HEARTBEAT_S", 0.3)
    monkeypatch.setattr(P, "STALLED_S", 0.2)
    stream = io.StringIO()
    with P.Terminal(tmp_path, stream=stream):
        bar = P.Progress(10)
        bar.update(row(1), 1.0, Archipelago())
        time.sleep(1.5)  # a slow sample: lines keep coming and say what the run waits for
        bar.phase("held-out evaluation")
        time.sleep(1.5)
        bar.close()
    lines = stream.getvalue().splitlines()
    assert any("waiting" in line and "for sample 2" in line for line in lines)
    beats = [line for line in lines if "held-out evaluation (" in line]
    assert len(beats) >= 2 and beats[0] != beats[-1]  # its clock moves


def test_a_resumed_run_does_not_count_replayed_results_in_its_rate(monkeypatch):
    bar = P.Progress(100, stream=io.StringIO())
    for i in range(1, 51):
        bar.update(row(i, finished=time.time() - 3600), 1.0, Archipelago())  # committed an hour ago
    bar.update(row(51), 1.0, Archipelago())
    assert bar.seen == 51 and bar._replayed == 50
    bar.close()


def test_evaluations_count_what_reached_the_evaluator_as_the_summary_does():
    # An answer without code (status no_code) is a sample but no evaluation; a tuning trial is an evaluation.
    bar = P.Progress(3, stream=io.StringIO())
    bar.update(row(1, code="def f(): pass"), 1.0, Archipelago())
    bar.update(row(2, code=None, status="no_code"), 1.0, Archipelago())
    bar.update(row(3, code="def f(): pass", sampler="tune"), 1.0, Archipelago())
    assert "evals 2 (1 tuning)" in bar.status() and "samples 2/3" in bar.status()
    bar.close()

"""One progress line: samples, valid rate, best score, evaluations per second."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.tty = stream.isatty()
        self.every_s = 0.5 if self.tty else 10.0  # a log file gets a line now and then, not a flood
        self.start = time.monotonic()
        self.last = 0.0
        self.seen = self.valid = self.trials = 0  # samples (sampler calls), ok ones, tuning trials

    def update(self, row: dict, best: float, archipelago) -> None:
        if row["id"] == 0:
            return  # the seed program is not a sample
        if row.get("sampler") == "tune":  # an evaluation without a sample (evosearch/tuning.py)
            self.trials += 1
        else:
            self.seen += 1
            self.valid += row["status"] == "ok"
        now = time.monotonic()
        if now - self.last < self.every_s and self.seen < self.total:
            return
        self.last = now
        rate = (self.seen + self.trials) / max(now - self.start, 1e-9)
        cells = sum(s["elites"] for s in archipelago.stats())
        tuned = f" ({self.trials} tuning)" if self.trials else ""
        line = (f"samples {self.seen}/{self.total}  valid {100 * self.valid / max(self.seen, 1):.0f}%  "
                f"evals {self.seen + self.trials}{tuned}  best {best:.6g}  elites {cells}  {rate:.2f} evals/s")
        if self.tty:
            self.stream.write("\r" + line.ljust(100))
            if self.seen >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

"""A warm evaluation worker: ``python -m evaluators.worker`` (started by the pool).

Protocol, one JSON line each way over the worker's stdin/stdout:

1. config in: ``{"problem_folder", "data_dir", "seed", "options", "mantissa_bits",
   "isolate_network", "drop_privileges", "scratch_root"}`` (all but the first optional);
   reply: ``{"ready": true, "problem", "timeout_s", "memory_mb", "isolation", "pid"}``
   or ``{"ready": false, "error": "<one line>"}`` (then the worker exits).
2. jobs in: ``{"code", "split", "timeout_s", "memory_mb"}`` (limits may be null: the
   problem's defaults); reply: ``{"status", "reason", "score", "descriptors",
   "metrics", "functional_hash", "eval_s"}``.

The worker is trusted: it holds the problem and its instances, forks one
sandboxed child per job (see :mod:`evaluators.sandbox`), and scores the child's
raw outputs itself. Only the protocol descriptor (a private dup of the original
stdout) carries replies; fd 1 points at stderr so stray prints cannot forge one.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from evaluators import sandbox
from evaluators.hashing import DEFAULT_MANTISSA_BITS, functional_hash


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class Worker:
    def __init__(self, config: dict):
        import numpy  # noqa: F401  - warm: every forked child starts with numpy loaded

        from evosearch.problem import load_problem

        self.problem = load_problem(config["problem_folder"], data_dir=config.get("data_dir"),
                                    seed=int(config.get("seed", 0)), options=config.get("options") or {})
        self.mantissa_bits = int(config.get("mantissa_bits", DEFAULT_MANTISSA_BITS))
        self.requested = sandbox.Limits(timeout_s=self.problem.timeout_s, memory_mb=self.problem.memory_mb,
                                        isolate_network=bool(config.get("isolate_network", True)),
                                        drop_privileges=bool(config.get("drop_privileges", True)))
        available = sandbox.effective_limits(self.requested)
        self.isolate_network, self.drop_privileges = available.isolate_network, available.drop_privileges
        self._instances: dict[str, dict[str, Any]] = {}
        # Per-job scratch dirs live under one folder the pool removes with the worker.
        self.scratch_root = config.get("scratch_root") or tempfile.mkdtemp(prefix="evosearch-worker-")
        os.chmod(self.scratch_root, 0o711)  # a candidate under another uid may reach its own dir, not list others

    def limits(self, timeout_s: float | None = None, memory_mb: int | None = None) -> sandbox.Limits:
        return sandbox.Limits(timeout_s=float(timeout_s or self.problem.timeout_s),
                              memory_mb=int(memory_mb or self.problem.memory_mb),
                              isolate_network=self.isolate_network, drop_privileges=self.drop_privileges)

    def instances(self, split: str) -> dict[str, Any]:
        if split not in self._instances:
            found = self.problem.instances(split)
            if not found:
                raise ValueError(f"problem '{self.problem.name}' has no {split} instances")
            self._instances[split] = found
        return self._instances[split]

    def ready_message(self) -> dict:
        return {"ready": True, "problem": self.problem.name, "timeout_s": self.problem.timeout_s,
                "memory_mb": self.problem.memory_mb, "pid": os.getpid(),
                "isolation": sandbox.isolation_layers(self.requested)}

    def handle(self, job: dict) -> dict:
        split = job.get("split")
        if split not in ("probe", "train", "test"):
            raise ValueError(f"unknown split {split!r}")
        code = job.get("code")
        if not isinstance(code, str):
            raise ValueError("job has no code")
        instances = self.instances(split)
        call = self.problem.probe if split == "probe" else self.problem.run
        scratch = tempfile.mkdtemp(prefix="job-", dir=self.scratch_root)
        try:
            outcome = sandbox.run_child(code, call, instances, self.limits(job.get("timeout_s"), job.get("memory_mb")),
                                        scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        reply = {"status": outcome.status, "reason": outcome.reason, "score": None, "descriptors": {},
                 "metrics": {}, "functional_hash": None, "eval_s": outcome.wall_s}
        if outcome.status != "ok":
            return reply
        missing = sorted(set(instances) - set(outcome.outputs))
        if missing or len(outcome.outputs) != len(instances):
            return {**reply, "status": "invalid", "reason": f"outputs do not match the instances (missing {missing[:3]})"}
        if split == "probe":
            return {**reply, "functional_hash": functional_hash(outcome.outputs, self.mantissa_bits)}
        return {**reply, **self.score(instances, outcome.outputs)}

    def score(self, instances: dict[str, Any], outputs: dict[str, Any]) -> dict:
        """Trusted scoring of plain-data outputs; every failure becomes "invalid" with a reason."""
        from evosearch.problem import InvalidOutput

        invalid = {"status": "invalid"}
        per_instance = {}
        for name, instance in instances.items():
            try:
                metrics = self.problem.score(instance, outputs[name])
            except InvalidOutput as e:
                return {**invalid, "reason": sandbox._one_line(f"{name}: {e}")}
            except Exception as e:  # the scorer choked on strange output
                return {**invalid, "reason": sandbox._one_line(f"{name}: scorer raised {type(e).__name__}: {e}")}
            if not isinstance(metrics, dict) or "score" not in metrics:
                return {**invalid, "reason": f"{name}: scorer returned no 'score'"}
            bad = [k for k, v in metrics.items() if not _finite(v)]
            if bad:
                return {**invalid, "reason": f"{name}: non-finite {bad[0]} = {metrics[bad[0]]!r}"}
            per_instance[name] = {k: float(v) for k, v in metrics.items()}
        try:
            total = self.problem.aggregate(per_instance)
        except Exception as e:
            return {**invalid, "reason": sandbox._one_line(f"aggregate raised {type(e).__name__}: {e}")}
        values = {"score": total.score, **{f"descriptor {k}": v for k, v in total.descriptors.items()},
                  **{f"metric {k}": v for k, v in total.metrics.items()}}
        bad = [k for k, v in values.items() if not _finite(v)]
        if bad:
            return {**invalid, "reason": f"non-finite {bad[0]} = {values[bad[0]]!r}"}
        return {"status": "ok", "score": float(total.score),
                "descriptors": {k: float(v) for k, v in total.descriptors.items()},
                "metrics": {k: float(v) for k, v in total.metrics.items()}}


def _send(out, message: dict) -> None:
    out.write(json.dumps(message, allow_nan=False).encode() + b"\n")
    out.flush()


def _on_sigterm(signum, frame):  # the pool is closing: take the running candidate down too
    sandbox.kill_descendants()
    os._exit(0)


def main() -> None:
    # Private protocol descriptors; fds 0/1 then point away so nothing else reads jobs or writes replies.
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    signal.signal(signal.SIGTERM, _on_sigterm)
    sandbox.become_subreaper()

    line = proto_in.readline()
    try:
        worker = Worker(json.loads(line))
        ready = worker.ready_message()
    except Exception as e:
        _send(proto_out, {"ready": False, "error": sandbox._one_line(f"{type(e).__name__}: {e}")})
        return
    _send(proto_out, ready)

    for line in proto_in:  # EOF: the pool (or the driver) is gone
        start = time.monotonic()
        try:
            reply = worker.handle(json.loads(line))
        except Exception as e:  # a bad job or a problem bug: answer, stay alive
            reply = {"status": "crash", "reason": sandbox._one_line(f"worker error: {type(e).__name__}: {e}"),
                     "score": None, "descriptors": {}, "metrics": {}, "functional_hash": None,
                     "eval_s": time.monotonic() - start}
        sys.stdout.flush()
        _send(proto_out, reply)


if __name__ == "__main__":
    main()

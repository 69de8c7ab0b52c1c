"""A warm evaluation worker: ``python -m evaluators.worker`` (started by the pool).

Protocol, one JSON line each way over the worker's stdin/stdout:

1. config in: ``{"problem_folder", "data_dir", "seed", "options", "mantissa_bits",
   "uid", "drop_privileges", "isolate_network", "scratch_root", "sandbox", "bubblewrap", "scratch_mb"}``
   (all optional; without a problem folder the worker only reports its isolation);
   reply: ``{"ready": true, "problem", "timeout_s", "memory_mb", "isolation", "cascade",
   "noise_repeats", "pid"}`` or ``{"ready": false, "error": "<one line>"}`` (then it exits).
2. jobs in: ``{"code", "split", "timeout_s", "memory_mb"}`` (limits may be null: the
   problem's defaults); reply: ``{"status", "reason", "score", "descriptors",
   "metrics", "functional_hash", "eval_s", "cpu_s", "output"}`` (``cpu_s``: CPU time of
   the worker and the candidate for this job).

The worker is trusted: it holds the problem and its instances, forks one
sandboxed child per job (see :mod:`evaluators.sandbox`), and scores the child's
raw outputs itself. Only the protocol descriptor (a private dup of the original
stdout) carries replies; fd 1 points at stderr so stray prints cannot forge one.
"""
from __future__ import annotations

import gc
import json
import math
import os
import resource
import signal
import socket
import sys
import tempfile
import time
from typing import Any

from evaluators import sandbox
from evaluators.confine import KernelLayers
from evaluators.cascade import noise_repeats_of, stages_of
from evaluators.hashing import DEFAULT_MANTISSA_BITS, functional_hash
from evaluators.zygote import Zygote, run_episodes

# Imported before any fork: warm for every candidate, and importable even where the
# candidate's uid cannot read the Python installation (e.g. one under /root, no bubblewrap).
PRELOAD = ("numpy", "math", "cmath", "random", "statistics", "fractions", "decimal", "itertools", "functools",
           "operator", "collections", "heapq", "bisect", "copy", "re", "string", "dataclasses", "typing", "array",
           "numbers", "enum", "encodings.idna")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _mounts() -> dict[str, str]:
    """Mount point -> filesystem type, from /proc/self/mountinfo (last mount wins)."""
    found = {}
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                found[left.split()[4]] = right.split()[0]
    except OSError:
        pass
    return found


def _network_isolated() -> bool:
    """Observed, not assumed: only a loopback interface is visible."""
    try:
        return [name for _, name in socket.if_nameindex()] == ["lo"]
    except OSError:  # a seccomp filter around the worker itself (a container's) refuses the netlink socket
        return False


class Worker:
    def __init__(self, config: dict):
        self.config = config
        self.in_bubblewrap = config.get("sandbox") == "bubblewrap"
        self.network_note = None
        if config.get("isolate_network", True) and not self.in_bubblewrap:
            if os.geteuid() == 0:
                try:  # once per worker: every candidate child inherits the empty namespace
                    sandbox.unshare_network()
                except OSError as e:
                    self.network_note = f"unshare failed: {e}"
            else:
                self.network_note = "needs root or bubblewrap"
        uid = config.get("uid")
        self.uid_note = None
        if uid is not None:
            self.uid_note = sandbox.probe_in_child(lambda: sandbox.drop_to(int(uid)))
            if self.uid_note is not None:
                uid = None
        self.uid = uid
        for name in PRELOAD:
            __import__(name)
        self.problem = None
        self.zygote = None
        self.candidate_cpu_s = 0.0  # CPU of candidates reaped by the zygote (not this worker's children)
        self.stages, self.noise_repeats = stages_of(None), 1
        self.mantissa_bits = int(config.get("mantissa_bits") or DEFAULT_MANTISSA_BITS)
        # Per-job scratch dirs live under one folder (bubblewrap: the private /tmp).
        self.scratch_root = config.get("scratch_root") or tempfile.mkdtemp(prefix="evosearch-worker-")
        os.chmod(self.scratch_root, 0o711)  # a candidate may reach its own dir, not list the others
        # Landlock + seccomp, prepared once (before the zygote forks, which inherits them); each candidate applies them
        self.kernel = None
        if config.get("kernel") is not False:
            self.kernel = KernelLayers(config.get("allow_read") or [], [self.scratch_root],
                                       require=config.get("kernel") is True)
        if config.get("problem_folder"):
            from evosearch.problem import load_problem, problem_class

            cls = problem_class(config["problem_folder"])
            if cls.interactive():
                # Forked before the problem is built: candidate processes come from memory that
                # never held an instance, a counter or the episode (see evaluators.zygote).
                self.zygote = Zygote(preload=tuple(cls.preload), confine=self.kernel)
                # The episode's state will live in this process: a candidate of the same uid must not read
                # its memory (/proc/<pid>/mem, ptrace) even where no kernel layer or uid drop stops it.
                sandbox.undumpable()
            self.problem = load_problem(config["problem_folder"], data_dir=config.get("data_dir"),
                                        seed=int(config.get("seed", 0)), options=config.get("options") or {})
            self.stages, self.noise_repeats = stages_of(self.problem), noise_repeats_of(self.problem)
            if config.get("mantissa_bits") is None:
                self.mantissa_bits = int(getattr(self.problem, "mantissa_bits", DEFAULT_MANTISSA_BITS))
        self.splits = {"probe", "test"} | {s.split for s in self.stages}
        if getattr(self.problem, "validation", False):
            self.splits.add("valid")
        self._instances: dict[str, dict[str, Any]] = {}
        gc.freeze()  # forked children do not drag the worker's objects through their collections

    def limits(self, timeout_s: float | None = None, memory_mb: int | None = None,
               split: str = "train") -> sandbox.Limits:
        return sandbox.Limits(timeout_s=float(timeout_s or self.problem.timeout_for(split)),
                              memory_mb=int(memory_mb or self.problem.memory_mb), uid=self.uid,
                              confine=self.kernel)

    def instances(self, split: str) -> dict[str, Any]:
        if split not in self._instances:
            found = self.problem.instances(split)
            if not found:
                raise ValueError(f"problem '{self.problem.name}' has no {split} instances")
            self._instances[split] = found
        return self._instances[split]

    # ------------------------------------------------------------------ what is isolated, observed here

    def isolation(self) -> dict[str, str]:
        """Each layer, "active: how" or "missing: why", checked in this process where it can be."""
        limits = sandbox.Limits(timeout_s=self.problem.timeout_s if self.problem else 10.0,
                                memory_mb=self.problem.memory_mb if self.problem else 1024, uid=self.uid)
        mounts = _mounts()
        layers = {}
        if self.in_bubblewrap:
            confined = mounts.get("/") == "tmpfs" and mounts.get("/tmp") == "tmpfs"
            layers["bubblewrap"] = (f"active: the worker runs inside {self.config.get('bubblewrap') or 'bwrap'}"
                                    if confined else "missing: started under bwrap but the mounts are not its own")
        else:
            confined = False
            layers["bubblewrap"] = f"missing: {self.config.get('bubblewrap') or 'not requested'}"
        kernel = self.kernel.report() if self.kernel else {"landlock": "missing: disabled",
                                                           "seccomp": "missing: disabled"}
        layers.update(kernel)
        ruleset = self.kernel.ruleset if self.kernel else None
        if confined:
            layers["filesystem"] = (f"active: read-only view of the system, Python and the problem only; scratch "
                                    f"is a private {self.config.get('scratch_mb')} MiB tmpfs, the only writable place")
        elif ruleset is not None:
            layers["filesystem"] = ("active: Landlock: reads only the system, Python and the problem, writes only "
                                    "its scratch folder (host /tmp and home unreachable)")
        else:
            layers["filesystem"] = ("missing: no bubblewrap, no Landlock; the whole filesystem is visible and "
                                    "anything the candidate's uid may write (e.g. /tmp) is writable")
        if confined and os.getpid() == 1:
            layers["processes"] = "active: own PID namespace; candidates see no host process, and all die with the worker"
        elif ruleset is not None and ruleset.abi >= 6:
            layers["processes"] = "active: Landlock: no /proc (no host process's environment or command line), " \
                                  "signals only within the candidate's own processes"
        else:
            layers["processes"] = "missing: host processes are visible in /proc" + (
                " (Landlock hides /proc but cannot scope signals before ABI 6)" if ruleset is not None else "")
        how = []
        if _network_isolated():
            how.append("own network namespace, loopback only")
        if self.kernel and self.kernel.filter is not None:
            how.append("seccomp refuses socket()")
        if ruleset is not None and ruleset.abi >= 4:
            how.append("Landlock refuses TCP bind/connect")
        layers["network"] = f"active: {'; '.join(how)}" if how else f"missing: {self.network_note or 'disabled'}"
        if self.uid is not None:
            layers["privileges"] = (f"active: candidates run as uid {self.uid} (no account, one per worker), with "
                                    "no_new_privs: they cannot signal, trace or read the worker or other workers")
        else:
            why = self.uid_note or ("disabled" if self.config.get("drop_privileges") is False else "needs root")
            layers["privileges"] = f"missing: candidates keep the worker's uid ({why})"
        layers["rlimits"] = (f"active: address space {limits.memory_mb} MiB, CPU {limits.cpu_s} s, files "
                             f"{sandbox.FILE_SIZE_LIMIT >> 20} MiB each, {sandbox.OPEN_FILES_LIMIT} descriptors, "
                             "no core dumps" + (f", {sandbox.PROCESS_LIMIT} processes"
                                                if self.uid not in (None, 0) else ", no process-count limit (needs a uid of its own)"))
        layers["deadline"] = ("active: wall-clock deadline; the candidate's session, every descendant (subreaper)"
                              + (", every process of its uid" if self.uid is not None else "") + " SIGKILLed after each run")
        layers["environment"] = (f"active: clean environment, stdin /dev/null, stdout/stderr captured (first "
                                 f"{sandbox.OUTPUT_BYTES >> 10} KiB kept), no inherited descriptors")
        layers["results"] = "active: JSON data only, size-capped, non-finite numbers rejected, scored by the worker"
        return layers

    def ready_message(self) -> dict:
        return {"ready": True, "problem": self.problem.name if self.problem else None,
                "timeout_s": self.problem.timeout_s if self.problem else None,
                "splits": sorted(self.splits),
                "split_timeouts": {s: self.problem.timeout_for(s) for s in sorted(self.splits)} if self.problem else {},
                "interactive": self.zygote is not None,
                "memory_mb": self.problem.memory_mb if self.problem else None, "pid": os.getpid(),
                "isolation": self.isolation(), "cascade": [s.to_dict() for s in self.stages],
                "noise_repeats": self.noise_repeats, "mantissa_bits": self.mantissa_bits}

    # ------------------------------------------------------------------ jobs

    def handle(self, job: dict) -> dict:
        if self.problem is None:
            raise ValueError("this worker has no problem loaded")
        split = job.get("split")
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r} (this problem has {sorted(self.splits)})")
        code = job.get("code")
        if not isinstance(code, str):
            raise ValueError("job has no code")
        instances = self.instances(split)
        limits = self.limits(job.get("timeout_s"), job.get("memory_mb"), split)
        scratch = tempfile.mkdtemp(prefix="job-", dir=self.scratch_root)
        try:
            if self.uid is not None:
                os.chown(scratch, self.uid, self.uid)
            if self.zygote is not None:  # interactive: the episode runs here, the candidate answers calls
                episode = self.problem.probe_episode if split == "probe" else self.problem.episode
                outcome, cpu_s = run_episodes(self.zygote, code, episode, instances, limits, scratch)
                self.candidate_cpu_s += cpu_s
            else:  # construction: the candidate's process computes the whole output
                call = self.problem.probe if split == "probe" else self.problem.run
                outcome = sandbox.run_child(code, call, instances, limits, scratch)
        finally:  # the job's folder, and anything a candidate of the worker's own uid left beside it
            sandbox.empty_folder(self.scratch_root)
        output = outcome.output + (f"\n[{outcome.output_dropped} more bytes dropped]" if outcome.output_dropped else "")
        reply = {"status": outcome.status, "reason": outcome.reason, "score": None, "descriptors": {},
                 "metrics": {}, "functional_hash": None, "eval_s": outcome.wall_s, "output": output}
        if outcome.status != "ok":
            return reply
        missing = sorted(set(instances) - set(outcome.outputs))
        if missing or len(outcome.outputs) != len(instances):
            return {**reply, "status": "invalid", "reason": f"outputs do not match the instances (missing {missing[:3]})"}
        if split == "probe":
            try:
                return {**reply, "functional_hash": functional_hash(outcome.outputs, self.mantissa_bits)}
            except (TypeError, ValueError, RecursionError) as e:
                return {**reply, "status": "invalid", "reason": sandbox.one_line(f"probe output: {e}")}
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
                return {**invalid, "reason": sandbox.one_line(f"{name}: {e}")}
            except Exception as e:  # the scorer choked on strange output
                return {**invalid, "reason": sandbox.one_line(f"{name}: scorer raised {type(e).__name__}: {e}")}
            if not isinstance(metrics, dict) or "score" not in metrics:
                return {**invalid, "reason": f"{name}: scorer returned no 'score'"}
            bad = [k for k, v in metrics.items() if not _finite(v)]
            if bad:
                return {**invalid, "reason": f"{name}: non-finite {bad[0]} = {metrics[bad[0]]!r}"}
            per_instance[name] = {k: float(v) for k, v in metrics.items()}
        try:
            total = self.problem.aggregate(per_instance)
        except Exception as e:
            return {**invalid, "reason": sandbox.one_line(f"aggregate raised {type(e).__name__}: {e}")}
        missing = [d.name for d in self.problem.descriptors if d.name not in total.descriptors]
        if missing:
            return {**invalid, "reason": f"descriptor '{missing[0]}' is missing from the aggregated Score"}
        values = {"score": total.score, **{f"descriptor {k}": v for k, v in total.descriptors.items()},
                  **{f"metric {k}": v for k, v in total.metrics.items()}}
        bad = [k for k, v in values.items() if not _finite(v)]
        if bad:
            return {**invalid, "reason": f"non-finite {bad[0]} = {values[bad[0]]!r}"}
        return {"status": "ok", "score": float(total.score),
                "descriptors": {k: float(v) for k, v in total.descriptors.items()},
                "metrics": {k: float(v) for k, v in total.metrics.items()}}


def _cpu_s() -> float:
    """CPU seconds used so far by this worker and its reaped children (the candidates):
    what a job cost, whatever the load on the machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _send(out, message: dict) -> None:
    out.write(json.dumps(message, allow_nan=False).encode() + b"\n")
    out.flush()


def _on_sigterm(signum, frame):  # the pool is closing: take the running candidate down too
    sandbox.kill_descendants()
    os._exit(0)


def main() -> None:
    if "--reaper" in sys.argv[1:]:  # no PID namespace around this worker: leave a reaper behind it
        from evaluators import reaper
        reaper.split()
    # Private protocol descriptors; fds 0/1 then point away so nothing else reads jobs or writes replies.
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    signal.signal(signal.SIGTERM, _on_sigterm)
    sandbox.die_with_parent(signal.SIGTERM)  # the driver died: stop, and stop the candidate
    sandbox.become_subreaper()

    line = proto_in.readline()
    try:
        worker = Worker(json.loads(line))
        ready = worker.ready_message()
    except Exception as e:
        _send(proto_out, {"ready": False, "error": sandbox.one_line(f"{type(e).__name__}: {e}")})
        return
    _send(proto_out, ready)

    for line in proto_in:  # EOF: the pool (or the driver) is gone
        start, cpu = time.monotonic(), _cpu_s() + worker.candidate_cpu_s
        try:
            reply = worker.handle(json.loads(line))
        except Exception as e:  # a bad job or a problem bug: answer, stay alive
            reply = {"status": "crash", "reason": sandbox.one_line(f"worker error: {type(e).__name__}: {e}"),
                     "score": None, "descriptors": {}, "metrics": {}, "functional_hash": None,
                     "eval_s": time.monotonic() - start, "output": ""}
        reply["cpu_s"] = _cpu_s() + worker.candidate_cpu_s - cpu
        sys.stdout.flush()
        _send(proto_out, reply)


if __name__ == "__main__":
    main()

"""A real multi-node Ray cluster on loopback for tests: ``ray start --head`` plus a second
node joined with ``ray start --address`` and different resources.

Layout (both nodes on 127.0.0.1, one CPU each):
  head:   {"sandbox": 1}                    evaluator actors only
  node 2: {"sandbox": 1, "sampler_node": 1} evaluator actors and the sampler actor

Authentication follows RAY_AUTH_MODE / RAY_AUTH_TOKEN_PATH as tests/conftest.py set
them (token mode). The cluster is stopped by killing exactly the processes it
started (found by its private temp dir), never with ``ray stop``, which would stop
every Ray instance on the machine.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    def __init__(self):
        # Short path: Ray's unix sockets live under it (108-byte limit).
        self.temp_dir = Path(tempfile.mkdtemp(prefix="esray-", dir="/tmp"))
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        # Actors must import evosearch, islands and evaluators from this checkout.
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)

    def _ray(self, *args: str) -> None:
        # Each node's dashboard agent gets a free port of its own: Ray's default (52365) is fixed, and when another
        # node or cluster on this machine holds it, the head's agent is missing and jobs find "No available agent".
        out = subprocess.run(["ray", "start", *args, "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                              f"--dashboard-agent-listen-port={free_port()}"],
                             env=self.env, capture_output=True, text=True, timeout=180)
        if out.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")

    def start(self) -> "LoopbackCluster":
        try:
            self._ray("--head", f"--port={self.port}", "--num-cpus=1", '--resources={"sandbox": 1}',
                      f"--temp-dir={self.temp_dir}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                      f"--dashboard-port={self.dashboard_port}")
            # A temp dir of its own (inside the head's, so stop() finds and removes it): nodes sharing one unpack a
            # job's working_dir package over each other while the job runs.
            self._ray(f"--address={self.address}", "--num-cpus=1", '--resources={"sandbox": 1, "sampler_node": 1}',
                      f"--temp-dir={self.temp_dir / 'node2'}")
        except BaseException:
            self.stop()
            raise
        return self

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: those naming its temp dir, and their descendants."""
        mine = {}
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(str(self.temp_dir) in part for part in p.info["cmdline"] or ()):
                    mine[p.pid] = p
                    for child in p.children(recursive=True):
                        mine[child.pid] = child
            except psutil.Error:
                continue
        mine.pop(os.getpid(), None)
        return list(mine.values())

    def stop(self) -> None:
        for _ in range(3):
            procs = self.processes()
            if not procs:
                break
            for p in procs:
                try:
                    p.send_signal(signal.SIGKILL)
                except psutil.Error:
                    pass
            psutil.wait_procs(procs, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def wait_for_nodes(self, n: int = 2, timeout_s: float = 60) -> None:
        import ray
        deadline = time.monotonic() + timeout_s
        while sum(node["Alive"] for node in ray.nodes()) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {n} Ray nodes alive")
            time.sleep(0.5)

"""The Ray backend on a real two-node Ray cluster on loopback (the ``ray_cluster`` fixture
in conftest.py: ``ray start --head`` plus ``ray start --address`` with other resources).

Every Ray run here uses the same settings as one local reference run, so each test
also checks the backend invariant: same seed + mutate sampler = the same stored rows
(code, outcome, score, archive outcome), the same island events and the same final
island elites as the local backend, whatever was killed on the way.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from evosearch.config import make_config
from evosearch.engine import Engine
from evosearch.launch import run_search
from evosearch.problem import load_problem
from evosearch.store import Store
from test_openai_sampler import fake  # noqa: F401  (an OpenAI-compatible server on loopback that holds scripted requests)

REPO = Path(__file__).resolve().parents[1]
SAMPLES = 40
SETTINGS = dict(problem="bin_packing", sampler="mutate", samples=SAMPLES, islands=2, seed=3, workers=1,
                concurrency=4, migration_interval=10, reset_interval=20,
                explore="curiosity",  # curiosity scores move with every insert and failure: journaled, restored
                problem_options={"train_items": 200, "test_items": 300}, quiet=True)
COLUMNS = ("id", "island", "parents", "code", "status", "reason", "score", "archive", "functional_hash")


def config(**over):
    return make_config({**SETTINGS, **over})


def stored(db: Path) -> tuple[list[tuple], list[dict]]:
    store = Store(db)
    try:
        rows = [tuple(r[c] for c in COLUMNS) for r in store.programs()]
        return rows, store.events()
    finally:
        store.close()


def replayed_elites(db: Path) -> list[list[int]]:
    """The islands a run's store rebuilds (the engine's resume path), as program ids per island."""
    cfg = config()
    store = Store(db)
    try:
        engine = Engine(cfg, load_problem(cfg.problem, None, cfg.seed, cfg.problem_options), store, None, None)
        engine.replay()
        return [[e.program_id for e in isl.elites()] for isl in engine.archipelago.islands]
    finally:
        store.close()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("local")
    cfg = config(out=str(run_dir))
    asyncio.run(run_search(cfg, load_problem(cfg.problem, None, cfg.seed, cfg.problem_options), run_dir))
    return run_dir / "evosearch.db"


def finished(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM programs WHERE status != 'pending'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def assert_same_run(db: Path, reference: Path) -> None:
    rows, events = stored(db)
    want_rows, want_events = stored(reference)
    assert [r[0] for r in rows] == list(range(SAMPLES + 1)), "a sampled program is missing"
    assert all(r[4] != "pending" for r in rows), "a program was left unfinished"
    diff = [(got, want) for got, want in zip(rows, want_rows) if got != want]
    assert not diff, "rows differ from the local run's (first: ray, local):\n" + "\n".join(
        repr([(c, g, w) for c, g, w in zip(COLUMNS, got, want) if g != w]) for got, want in diff[:3])
    assert events == want_events
    assert any(e["event"] == "reset" for e in events)


def test_search_across_two_nodes_equals_local(ray_cluster, local_run, tmp_path):
    """Sampler on the node offering ``sampler_node``, one evaluator actor per node (one
    ``sandbox`` each), islands anywhere; an API key reaches only the sampler actor."""
    from evosearch.ray_backend import RayBackend

    os.environ["EVOSEARCH_TEST_KEY"] = "sk-only-for-samplers"
    facts = {}

    async def search():
        cfg = config(backend="ray", address=ray_cluster.address, evaluator_actors=2, sampler_resource="sampler_node",
                     api_key_env="EVOSEARCH_TEST_KEY", out=str(tmp_path))
        task = asyncio.create_task(run_search(cfg, load_problem(cfg.problem, None, cfg.seed, cfg.problem_options),
                                              tmp_path))
        while RayBackend.current is None or RayBackend.current.pool is None or not RayBackend.current.archipelagos:
            await asyncio.sleep(0.05)
        backend = RayBackend.current
        facts.update(await backend.facts())
        facts["nodes"] = {n["NodeID"]: n["Resources"] for n in __import__("ray").nodes() if n["Alive"]}
        return await task

    try:
        RayBackend.current = None
        summary = asyncio.run(search())
    finally:
        del os.environ["EVOSEARCH_TEST_KEY"]
    assert_same_run(tmp_path / "evosearch.db", local_run)
    assert summary["ray"]["island_elites"] == replayed_elites(local_run)
    assert summary["ray"]["migrations"] == SAMPLES // SETTINGS["migration_interval"]  # emigrants picked by the actors

    evaluator_nodes = {f["node_id"] for f in facts["evaluators"]}
    assert len(evaluator_nodes) == 2, "the two evaluator actors should sit on the two nodes"
    (sampler,) = facts["samplers"]
    assert "sampler_node" in facts["nodes"][sampler["node_id"]]
    assert "EVOSEARCH_TEST_KEY" in sampler["env"]
    assert all("EVOSEARCH_TEST_KEY" not in f["env"] for f in facts["evaluators"])
    # Candidates run in the actors' sandbox workers, which are other processes.
    assert all(f["worker_pids"] and f["pid"] not in f["worker_pids"] for f in facts["evaluators"])
    assert len({pid for pids in facts["islands"] for pid in pids}) == 2


def test_killed_actors_restart_and_the_run_goes_on(ray_cluster, local_run, tmp_path):
    """kill -9 an evaluator actor, then the sampler actor, then an island actor, mid-run."""
    from evosearch.ray_backend import RayBackend

    db = tmp_path / "evosearch.db"
    killed, restarted = [], []

    def first_pid(facts: dict, kind: str) -> int:
        return facts[kind][0][0] if kind == "islands" else facts[kind][0]["pid"]

    async def search():
        cfg = config(backend="ray", address=ray_cluster.address, evaluator_actors=2, out=str(tmp_path))
        task = asyncio.create_task(run_search(cfg, load_problem(cfg.problem, None, cfg.seed, cfg.problem_options),
                                              tmp_path))
        while RayBackend.current is None or not RayBackend.current.archipelagos:
            await asyncio.sleep(0.02)
        backend = RayBackend.current
        for at, kind in ((6, "evaluators"), (14, "samplers"), (22, "islands")):
            while finished(db) < at and not task.done():
                await asyncio.sleep(0.02)
            pid = first_pid(await backend.facts(), kind)
            os.kill(pid, signal.SIGKILL)
            killed.append((kind, finished(db)))
            restarted.append(first_pid(await backend.facts(), kind) != pid)  # facts() waits for the restart
        return await task

    RayBackend.current = None
    summary = asyncio.run(search())
    assert [k for k, _ in killed] == ["evaluators", "samplers", "islands"]
    assert all(n < SAMPLES + 1 for _, n in killed), f"a kill came after the run ended: {killed}"
    assert restarted == [True, True, True], "a killed actor was not restarted"
    faults = summary["ray"]
    # Evaluations are long, so the killed evaluator had one in flight; a mutate sample takes
    # microseconds, so whether the sampler died mid-call is chance (that path has its own test).
    assert faults["evaluator_actor_failures"] >= 1
    assert faults["island_restores"] >= 1
    assert_same_run(db, local_run)
    assert faults["island_elites"] == replayed_elites(local_run)


def evosearch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "evosearch", "run", *args]


def config_file(path: Path, **over) -> Path:
    path.write_text(yaml.safe_dump({**SETTINGS, **over}))
    return path


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_driver_killed_then_resume_continues(ray_cluster, local_run, tmp_path, sig):
    """SIGKILL: the driver dies at once. SIGTERM (`ray job stop`, a preempted node): it stops as on Ctrl-C and
    writes its summary so far (ray.init() installs a SIGTERM handler that exits at once; the backend restores
    the CLI's)."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    settings = config_file(tmp_path / "run.yaml", backend="ray", address=ray_cluster.address, out=str(out))
    driver = subprocess.Popen(evosearch_cmd("--config", str(settings)), cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    db = out / "evosearch.db"
    deadline = time.monotonic() + 120
    while finished(db) < 12 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert driver.poll() is None, f"the driver ended before it could be killed:\n{driver.stdout.read().decode()[-3000:]}"
    driver.send_signal(sig)
    stopped = driver.communicate(timeout=600)[0].decode()  # a hang guard
    if sig == signal.SIGTERM:
        assert driver.returncode == 128 + signal.SIGTERM, stopped[-3000:]
        assert stopped.strip().splitlines()[-1].startswith("evosearch: terminated (SIGTERM); summary so far in")
        assert json.loads((out / "summary.json").read_text())["stopped"].startswith("interrupted")
    at_kill = finished(db)
    assert at_kill < SAMPLES + 1
    resumed = subprocess.run(evosearch_cmd("--resume", str(out)), cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(db, local_run)


def test_job_submission_client(ray_cluster, local_run, tmp_path):
    """The CLI as a Ray job (what `ray job submit --working-dir . -- evosearch run ...` does)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    work = tmp_path / "job"
    work.mkdir()
    out = tmp_path / "out"
    config_file(work / "run.yaml", backend="ray", address="auto", sampler_resource="sampler_node", out=str(out))
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    deadline = time.monotonic() + 120
    while True:
        try:
            job = client.submit_job(entrypoint="python -m evosearch run --config run.yaml",
                                    runtime_env={"working_dir": str(work)})
            break
        except RuntimeError as e:
            # The dashboard answers before its per-node job agent has registered (seen on a loaded machine).
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(1)
    deadline = time.monotonic() + 300
    while not (status := client.get_job_status(job)).is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "best program" in logs
    assert_same_run(out / "evosearch.db", local_run)


def test_joining_without_the_token_is_one_line(ray_cluster, tmp_path):
    """A client that does not send the cluster's token gets a one-line error naming RAY_AUTH_MODE."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(RAY_AUTH_MODE="disabled", PYTHONPATH=str(REPO))
    proc = subprocess.run(evosearch_cmd("bin_packing", "--backend", "ray", "--address", ray_cluster.address,
                                        "--sampler", "mutate", "--samples", "3", "--out", str(tmp_path / "o")),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    # Ray 2.60 reports a refused token as a failed connection (the reason is only in its C++ log lines).
    assert last.startswith("evosearch: error: cannot join the Ray cluster at") and "RAY_AUTH_MODE=token" in last
    assert "Traceback" not in proc.stderr


PRIVATE = """
import json, sys
import ray
from evosearch.ray_backend import RayBackend, connect

connect(None, resources={"sandbox": 1.0}, quiet=True)
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "nodes": len(ray.nodes())}))
ray.shutdown()
"""


def test_a_private_instance_never_joins_the_machines_latest_cluster(ray_cluster, tmp_path):
    """Without --address the backend starts its own Ray instance, even where Ray's temp folder names a
    running cluster as the latest (what ``ray start`` leaves there, and a bare ``ray.init()`` joins)."""
    import tempfile

    temp = Path(tempfile.mkdtemp(prefix="esr-", dir="/tmp"))  # short: Ray's sockets live under it
    try:
        (temp / "ray").mkdir()
        (temp / "ray" / "ray_current_cluster").write_text(ray_cluster.address)
        env = {**os.environ, "RAY_TMPDIR": str(temp), "PYTHONPATH": str(REPO)}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run([sys.executable, "-c", PRIVATE], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = __import__("json").loads(proc.stdout.strip().splitlines()[-1])
        assert got["gcs"] != ray_cluster.address and got["nodes"] == 1
    finally:
        import shutil
        shutil.rmtree(temp, ignore_errors=True)


def test_actors_have_names(ray_cluster, tmp_path):
    """``ray list actors`` shows what each actor is: islands, sampler and evaluators of the run."""
    from evosearch.ray_backend import RayBackend

    async def go():
        from ray.util.state import list_actors

        from evosearch.engine import axes, island_kwargs

        cfg = config(backend="ray", address=ray_cluster.address, samples=3, evaluator_actors=2, out=str(tmp_path))
        problem = load_problem(cfg.problem, None, cfg.seed, cfg.problem_options)
        backend = await RayBackend(cfg, problem, tmp_path).start()
        try:
            islands = backend.make_archipelago(2, axes(problem, cfg), island_kwargs=island_kwargs(cfg))
            assert [len(isl) for isl in islands.islands] == [0, 0]  # up and answering
            return sorted(a.name for a in list_actors(address=ray_cluster.address, filters=[("state", "=", "ALIVE")],
                                                      limit=1000)
                          if a.name and tmp_path.name in a.name)
        finally:
            await backend.close()

    names = asyncio.run(go())
    prefix = f"evosearch-{tmp_path.name}-{os.getpid()}"
    assert names == sorted([f"{prefix}-evaluator-0", f"{prefix}-evaluator-1", f"{prefix}-island-0",
                            f"{prefix}-island-1", f"{prefix}-sampler-0"])


def test_cluster_configs_are_valid():
    """cluster/ray-up.yaml passes Ray's own schema; the KubeRay manifests ask for this Ray and token auth."""
    import copy

    import ray
    from ray.autoscaler._private.util import prepare_config, validate_config

    up = yaml.safe_load((REPO / "cluster" / "ray-up.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(up)))
    types = up["available_node_types"]
    assert types["cpu_evaluator"]["resources"]["sandbox"] >= 1
    assert types["gpu_sampler"]["resources"]["sampler_node"] == 1
    assert all("RAY_AUTH_MODE=token" in cmd for cmd in up["head_start_ray_commands"][1:] + up["worker_start_ray_commands"][1:])
    for name in ("kuberay-raycluster.yaml", "kuberay-rayjob.yaml"):
        docs = list(yaml.safe_load_all((REPO / "cluster" / name).read_text()))
        spec = next(d for d in docs if d["kind"] in ("RayCluster", "RayJob"))["spec"]
        spec = spec.get("rayClusterSpec", spec)
        assert spec["rayVersion"] == ray.__version__
        assert spec["authOptions"]["mode"] == "token"
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        assert any("sandbox" in g["rayStartParams"].get("resources", "") for g in spec["workerGroupSpecs"])


def test_a_restarted_evaluator_actor_gives_each_job_its_own_reply(ray_cluster):
    """Jobs that reach a fresh (e.g. restarted) evaluator actor all at once each get their own
    program's reply (the actor starts its sandbox pool once, not once per job)."""
    import ray

    from evaluators.actor import EvaluatorActor
    from evosearch.ray_backend import connect

    skeleton = (REPO / "problems" / "bin_packing" / "skeleton.py").read_text()
    bodies = ["-(bins - item)", "bins - item", "(bins - item) % 7", "np.sin(bins)", "-np.abs(bins - 2 * item)",
              "np.cos(bins * item)"]
    codes = [skeleton.replace("return -(bins - item)", f"return {b}") for b in bodies]
    kwargs = {"problem_folder": "bin_packing", "workers": 2, "options": SETTINGS["problem_options"]}
    connected = connect(ray_cluster.address, quiet=True)
    try:
        fresh = EvaluatorActor.options(resources={"sandbox": 1}).remote(kwargs)
        # Probe runs: each program's functional hash (how it ranks bins) names the program that ran.
        together = ray.get([fresh.run.remote(code, "probe") for code in codes])  # no start() first
        one_by_one = [ray.get(fresh.run.remote(code, "probe")) for code in codes]
        facts = ray.get(fresh.facts.remote())
        ray.kill(fresh)
    finally:
        if connected:
            ray.shutdown()
    # One pool start: as many worker processes as workers (concurrent starts spawned a set each and
    # put two jobs on one worker, whose replies could then cross).
    assert facts["children"] == kwargs["workers"]
    assert len({r["functional_hash"] for r in one_by_one}) == len(codes)  # the programs do differ
    assert [r["functional_hash"] for r in together] == [r["functional_hash"] for r in one_by_one]


def test_an_island_actor_killed_after_snapshots_is_restored_exactly(ray_cluster):
    """Restore = last snapshot + the journaled calls since, including a selection's rng draws."""
    import numpy as np
    import ray

    from evosearch.problem import Descriptor
    from evosearch.ray_backend import connect
    from islands.actor import IslandProxy
    from islands.archipelago import new_island

    axes = (Descriptor("x", 0.0, 1.0, 5), Descriptor("y", 0.0, 1.0, 5))
    connected = connect(ray_cluster.address, quiet=True)
    try:
        remote, local = IslandProxy(axes, snapshot_every=4), new_island(axes)
        rng_remote, rng_local = np.random.default_rng(7), np.random.default_rng(7)
        values = np.random.default_rng(1).random((30, 3))
        for n, (score, x, y) in enumerate(values):
            if n == 17:
                os.kill(remote.pid(), signal.SIGKILL)  # after 8 snapshots, with 2 calls journaled since
            assert remote.add(n, float(score), (float(x), float(y))) == local.add(n, float(score), (float(x), float(y)))
            assert remote.select_parents(rng_remote, 2) == local.select_parents(rng_local, 2)
        assert remote.restores == 1
        assert remote.elites() == local.elites()
        assert rng_remote.bit_generator.state == rng_local.bit_generator.state
        remote.kill()
    finally:
        if connected:
            ray.shutdown()


def test_pipelined_inserts_survive_a_killed_island_actor_without_being_applied_twice(ray_cluster):
    """Inserts are sent without waiting; the actor dies with some in flight; the restore (snapshot +
    journal, which holds every insert sent) and the calls arriving after it leave the island exactly
    as a local one, with every insert counted once (``offered``), and every insert's answer is the
    local one, those the dead actor never gave included (its replay's)."""
    import pickle

    import numpy as np
    import ray

    from evosearch.problem import Descriptor
    from evosearch.ray_backend import connect
    from islands.actor import IslandProxy
    from islands.archipelago import new_island

    axes = (Descriptor("x", 0.0, 1.0, 5),)
    connected = connect(ray_cluster.address, quiet=True)
    try:
        remote, local = IslandProxy(axes, snapshot_every=5), new_island(axes)
        values = np.random.default_rng(2).random((40, 2))
        pending, expected = [], []
        for n, (score, x) in enumerate(values):
            if n == 23:  # inserts 23 and 24 go to a dead actor; the snapshot after 24 restores it
                os.kill(remote.pid(), signal.SIGKILL)
            pending.append(remote.submit("add", n, float(score), (float(x),)))
            expected.append(local.add(n, float(score), (float(x),)))
        lost = []
        for p in pending:
            try:
                ray.get(p.ref)
            except Exception:
                lost.append(p.position)
        assert lost and all(p >= 23 for p in lost), lost
        assert [p.result() for p in pending] == expected
        assert remote.elites() == local.elites() and remote.restores >= 1
        held = pickle.loads(ray.get(remote.actor.snapshot.remote()))
        assert held.offered == local.offered == 40  # none applied twice
        remote.kill()
    finally:
        if connected:
            ray.shutdown()


def test_a_sampler_actor_lost_mid_sample_is_asked_again(ray_cluster, fake):
    """kill -9 the sampler actor while its request hangs on the server: the sample is asked
    once more of the restarted actor; a second loss is a SamplerError (recorded, not raised)."""
    import ray

    from evosearch.ray_backend import connect
    from evosearch.samplers.actor import RaySampler
    from evosearch.samplers.base import Sample, SamplerError
    from test_openai_sampler import prompt

    async def lose(times: int):
        route = f"lost{times}"
        url = fake.route(route, *[("slow", 60)] * times)  # each held request outlives the test's kill
        sampler = RaySampler("openai", kwargs=dict(base_url=url, model="fake", api_key_env="EVOSEARCH_TEST_KEY",
                                                   max_retries=0, timeout_s=120),
                             env_vars={"EVOSEARCH_TEST_KEY": "sk-test"})
        call = asyncio.ensure_future(sampler.sample(prompt()))
        try:
            for k in range(times):
                while len(fake.requests[route]) <= k:  # the request is in flight on the server
                    await asyncio.sleep(0.05)
                (facts,) = await sampler.facts()
                os.kill(facts["pid"], signal.SIGKILL)
            try:
                got = await call
            except SamplerError as e:
                got = e
            return got, sampler.actor_failures, len(fake.requests[route])
        finally:
            for actor in sampler.actors:
                ray.kill(actor)

    connected = connect(ray_cluster.address, quiet=True)
    try:
        once = asyncio.run(lose(1))
        twice = asyncio.run(lose(2))
    finally:
        if connected:
            ray.shutdown()
    got, failures, requests = once
    assert isinstance(got, Sample) and failures == 1 and requests == 2
    got, failures, requests = twice
    assert isinstance(got, SamplerError) and "lost twice" in str(got) and failures == 2 and requests == 2

import atexit
import os
import secrets
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Ray reads RAY_AUTH_MODE when it is imported, so it is set here, before any test imports Ray: the
# loopback test cluster runs with token authentication, as a real cluster should (tests/ray_cluster.py).
if "RAY_AUTH_TOKEN" not in os.environ and "RAY_AUTH_TOKEN_PATH" not in os.environ:
    _token = Path(tempfile.mkdtemp(prefix="evosearch-ray-auth-")) / "token"
    _token.write_text(secrets.token_hex(32))
    atexit.register(shutil.rmtree, _token.parent, True)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(_token)
os.environ.setdefault("RAY_AUTH_MODE", "token")


@pytest.fixture(scope="session")
def ray_cluster():
    """A two-node Ray cluster on loopback, shared by every Ray test (Ray takes seconds to start)."""
    from ray_cluster import LoopbackCluster
    cluster = LoopbackCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    # The public benchmark data sits beside the checkout (../shared/data), on every dev machine and in CI.
    assert (SHARED_DATA / "bin_packing" / "or3.json").is_file(), f"benchmark data missing at {SHARED_DATA}"
    return SHARED_DATA


def _gpu_missing() -> str | None:
    """Why the ``gpu`` tests cannot run here, or None where vLLM and a CUDA GPU are importable."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed"
    import torch

    return None if torch.cuda.is_available() else "no CUDA GPU"


def pytest_configure(config):
    config._gpu_missing = _gpu_missing()
    # A shell starts a background job (`pytest ... &`) with SIGINT ignored, and every run a test starts would
    # inherit that: the tests that stop a run with Ctrl-C need the default a terminal gives.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_report_header(config):
    if config._gpu_missing:
        return f"gpu tests (tests marked gpu, e.g. tests/test_vllm_gpu.py): deselected, {config._gpu_missing}"


def pytest_collection_modifyitems(config, items):
    # Deselected, not skipped: they need hardware this machine lacks, and the header says so.
    if config._gpu_missing:
        gpu = [item for item in items if item.get_closest_marker("gpu")]
        if gpu:
            items[:] = [item for item in items if not item.get_closest_marker("gpu")]
            config.hook.pytest_deselected(items=gpu)

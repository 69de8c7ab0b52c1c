from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    # The public benchmark data sits beside the checkout (../shared/data), on every dev machine and in CI.
    assert (SHARED_DATA / "bin_packing" / "or3.json").is_file(), f"benchmark data missing at {SHARED_DATA}"
    return SHARED_DATA

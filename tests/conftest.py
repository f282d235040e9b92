import os
from pathlib import Path

import numpy as np
import pytest

# The official fixtures live in ../shared beside the checkout (GTR_FIXTURES overrides).
FIXTURES = Path(os.environ.get("GTR_FIXTURES", Path(__file__).resolve().parents[1].parent / "shared/fixtures/official_mar"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not (FIXTURES / "mar_small.pth").is_file():
        pytest.skip(f"official MAR fixtures not found at {FIXTURES} (set GTR_FIXTURES)")
    return FIXTURES


@pytest.fixture(scope="session")
def mar_io(fixtures_dir):
    return dict(np.load(fixtures_dir / "mar_small_io.npz", allow_pickle=False))


@pytest.fixture(scope="session")
def mar_test_model(fixtures_dir):
    from gtr.models.checkpoint import load_mar
    return load_mar("mar-test", fixtures_dir / "mar_small.pth")

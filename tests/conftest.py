from pathlib import Path

import numpy as np
import pytest

# tests/skips.py: with GTR_STRICT_SKIPS=1 the session fails on a skip that is not about absent hardware or packages.
pytest_plugins = ["skips"]

# The official MAR fixtures (small random weights and the official code's outputs; see their README.md).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official_mar"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def mar_io(fixtures_dir):
    return dict(np.load(fixtures_dir / "mar_small_io.npz", allow_pickle=False))


@pytest.fixture(scope="session")
def mar_test_model(fixtures_dir):
    from gtr.models.checkpoint import load_mar
    return load_mar("mar-test", fixtures_dir / "mar_small.pth")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny graphs: one torch thread is faster than two contending ones on a shared 2-core machine."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def models():
    """MAR + VAE of tests/tiny_export_model.py (8x8 grid, realistic token magnitudes)."""
    from tiny_export_model import tiny_models
    return tiny_models()


@pytest.fixture(scope="session")
def plans():
    from gtr.plan import build_plan
    from tiny_export_model import TINY
    return [build_plan("gtr", TINY.grid, cfg=3.0), build_plan("mar-16", TINY.grid)]

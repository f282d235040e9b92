"""Where gtr keeps its files: $GTR_HOME (default ~/.cache/gtr), a leaf every layer may import."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "GTR_HOME"


def cache_dir() -> Path:
    """$GTR_HOME: downloaded weights (<model>/checkpoint-last.pth, kl16.ckpt) and TensorRT timing caches."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "gtr"))

"""Where gtr keeps its files: $GTR_HOME (default ~/.cache/gtr), a leaf every layer may import."""
from __future__ import annotations

import os
from pathlib import Path

from gtr.errors import PathError

CACHE_ENV = "GTR_HOME"


def cache_dir() -> Path:
    """$GTR_HOME: downloaded weights (<model>/checkpoint-last.pth, kl16.ckpt) and TensorRT timing caches.

    PathError when it is set but empty (it would mean the current folder) or names something that is
    not a folder; a folder that does not exist yet is fine (a download creates it)."""
    value = os.environ.get(CACHE_ENV)
    if value is None:
        return Path.home() / ".cache" / "gtr"
    if not value.strip():
        raise PathError(f"{CACHE_ENV} is set but empty: unset it (gtr then uses ~/.cache/gtr) or set it to a folder")
    home = Path(value).expanduser()
    if home.exists() and not home.is_dir():
        raise PathError(f"{CACHE_ENV}={value} is a file, not a folder: set {CACHE_ENV} to a folder (it holds the "
                        f"downloaded weights and caches) or unset it")
    return home

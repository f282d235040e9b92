"""Image post-processing and PNG output (numpy + pillow only: the runtime has no torch).

`to_uint8` is MAR's official post-processing: x in [-1, 1] -> round(clip((x+1)/2, 0, 1) * 255).
np.round rounds half to even, so 0.0 -> 127.5 -> 128 (and e.g. 126.5 -> 126).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from gtr.runtime.files import atomic_write


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float [B,3,H,W] in [-1,1] -> uint8 [B,H,W,3]."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected [B,3,H,W], got {x.shape}")
    x = np.clip((x + 1.0) / 2.0, 0.0, 1.0) * 255.0
    return np.round(x).astype(np.uint8).transpose(0, 2, 3, 1).copy()


def make_grid(images: np.ndarray, ncol: int, pad: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile uint8 [N,H,W,3] row-major into ncol columns with `pad` pixels around every cell."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected [N,H,W,3], got {images.shape}")
    n, h, w, _ = images.shape
    ncol = max(1, min(ncol, n)) if n else max(1, ncol)
    nrow = max(1, -(-n // ncol))
    grid = np.full((pad + nrow * (h + pad), pad + ncol * (w + pad), 3), pad_value, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    return grid


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write uint8 [H,W,3] as PNG atomically (see atomic_write)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected uint8 [H,W,3], got {image.dtype} {image.shape}")
    atomic_write(path, lambda f: Image.fromarray(image).save(f, format="PNG"))

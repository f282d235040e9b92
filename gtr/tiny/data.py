"""The mar-tiny data set: scikit-learn's bundled handwritten digits, upscaled to RGB.

sklearn.datasets.load_digits ships 1,797 8x8 grey images (values 0..16, 10 classes)
with the package, so nothing is downloaded. Each image is upscaled to size x size with
PIL's bicubic filter on float pixels (deterministic), clipped back to [0, 16], mapped to
[-1, 1] with ink bright on a dark background (0 -> -1, 16 -> 1), and replicated to 3
channels because the VAE is RGB.

Split: `train_heldout_split` is stratified by class and deterministic. For every class
it shuffles that class's indices with numpy's default_rng(seed) and holds out
round(heldout_fraction * count) of them; both index arrays are returned sorted. With
the defaults (0.2, seed 0) that is 1,438 train and 359 held-out images. The generator
and the classifier train on 'train'; quality metrics use 'heldout' as the reference.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

_MAX = 16.0  # load_digits pixel range is 0..16


def _upscale(img8: np.ndarray, size: int) -> np.ndarray:
    if size == img8.shape[0]:
        return img8.astype(np.float32)
    # a float32 array becomes a mode "F" image: full precision, no 8-bit quantisation
    im = Image.fromarray(img8.astype(np.float32))
    assert im.mode == "F"
    out = np.asarray(im.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(out, 0.0, _MAX)  # bicubic overshoots slightly at edges


def load_digits_images(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as (images float32 [N,3,size,size] in [-1,1], labels int64 [N])."""
    from sklearn.datasets import load_digits  # lazy: sklearn is slow to import

    d = load_digits()
    grey = np.stack([_upscale(x, size) for x in d.images.astype(np.float32)])
    grey = grey / _MAX * 2.0 - 1.0
    images = np.repeat(grey[:, None], 3, axis=1).astype(np.float32)
    return np.ascontiguousarray(images), d.target.astype(np.int64)


def train_heldout_split(labels: np.ndarray, heldout_fraction: float = 0.2,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified deterministic split -> (train_idx, heldout_idx), both sorted int64."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):  # sorted classes, so the rng stream is reproducible
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        held.append(idx[: int(round(heldout_fraction * len(idx)))])
    heldout = np.sort(np.concatenate(held)).astype(np.int64)
    train = np.setdiff1d(np.arange(len(labels)), heldout).astype(np.int64)
    return train, heldout


def load_split(split: str, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the 'train' or 'heldout' split (default split parameters)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    images, labels = load_digits_images(size)
    train, heldout = train_heldout_split(labels)
    idx = train if split == "train" else heldout
    return images[idx], labels[idx]

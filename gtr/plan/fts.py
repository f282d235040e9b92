"""FTS: frequency-weighted token selection (gtr-spec.md §4.5).

In a reconstruction step, the tokens whose condition vector z has the most high-frequency energy
along the feature axis get T_detail diffusion steps, the rest T_rec. The plan fixes how many
(the fts_top group size); this module decides which.
"""
from __future__ import annotations

import math

import numpy as np


def fts_scores(z: np.ndarray) -> np.ndarray:
    """Score of each vector z[..., :]: sum_{n=1..h} |DFT(z)[n]| * (1 + n/h), h = D // 2. float64.

    rfft returns bins 0..D//2, which is exactly 0..h for even and odd D. The DC bin is skipped; an
    unnormalised DFT is used (a constant factor would not change the ranking).
    """
    z = np.asarray(z, dtype=np.float64)
    h = z.shape[-1] // 2
    if h == 0:  # D = 1: no non-DC bin
        return np.zeros(z.shape[:-1])
    amp = np.abs(np.fft.rfft(z, axis=-1))[..., 1:h + 1]
    weights = 1.0 + np.arange(1, h + 1) / h
    return amp @ weights


def fts_top_k(n: int, beta: float) -> int:
    """Tokens that get detail steps among n: ceil(beta * n), robust to float error, clamped to [0, n].

    The 1e-9 guard makes e.g. 0.07 * 100 (= 7.000000000000001 in float) give 7, not 8.
    """
    return min(max(math.ceil(beta * n - 1e-9), 0), n)


def fts_split(z_cond: np.ndarray, k_top: int, select: str = "high",
              random_scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split the n predicted tokens of each sample into top (k_top selected) and rest.

    z_cond: [B, n, D], conditional-branch z with the n axis in ascending position order.
    select: "high" (GtR: the k_top highest FTS scores), "low" (the lowest) or "random" (the k_top
    highest of `random_scores` [B, n], drawn by the caller from the run's NoiseSource).
    Returns int64 index arrays into the n axis, top [B, k_top] and rest [B, n - k_top], each row
    sorted ascending (diffusion rows are processed in position order). Ties go to the lower index.
    """
    z_cond = np.asarray(z_cond)
    if z_cond.ndim != 3:
        raise ValueError(f"z_cond must be [B, n, D], got shape {z_cond.shape}")
    n = z_cond.shape[1]
    if not 0 <= k_top <= n:
        raise ValueError(f"k_top={k_top} outside 0..{n}")
    if select == "high":
        scores = fts_scores(z_cond)
    elif select == "low":
        scores = -fts_scores(z_cond)
    elif select == "random":
        if random_scores is None or random_scores.shape != z_cond.shape[:2]:
            raise ValueError(f"select='random' needs random_scores of shape {z_cond.shape[:2]}")
        scores = np.asarray(random_scores, dtype=np.float64)
    else:
        raise ValueError(f"unknown FTS selection {select!r}")
    # Stable sort of the negated scores: descending, equal scores keep ascending index order.
    ranked = np.argsort(-scores, axis=1, kind="stable")
    top = np.sort(ranked[:, :k_top], axis=1).astype(np.int64)
    rest = np.sort(ranked[:, k_top:], axis=1).astype(np.int64)
    return top, rest

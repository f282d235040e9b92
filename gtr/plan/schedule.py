"""Per-token diffusion schedules: cosine betas, respacing, derived coefficients (mar-spec.md §7).

Everything is float64, computed with the official formulas in the official order, so the arrays match
the official diffusion objects to rounding (the fixture check uses rtol 1e-12). The diffusion head step
consumes them through `step_table`, rounded to float32 as the official code does before multiplying.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

COEF_NAMES = (
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "log_betas",
    "posterior_log_variance_clipped",
)


def cosine_betas(num_timesteps: int = 1000) -> np.ndarray:
    """Base betas of the cosine schedule, clipped at 0.999 (mar-spec §7.1)."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    n = num_timesteps
    return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                    dtype=np.float64)


def respace_timesteps(T: int, num_timesteps: int = 1000) -> np.ndarray:
    """Original timesteps kept by a T-step respacing (mar-spec §7.2).

    The stride is accumulated in float64 and each value rounded half-to-even (Python's round); both
    details change some indices compared with round(k * stride).
    """
    if not 1 <= T <= num_timesteps:
        raise ValueError(f"diffusion steps T={T} must be in 1..{num_timesteps}")
    stride = (num_timesteps - 1) / (T - 1) if T > 1 else 1
    kept, acc = [], 0.0
    for _ in range(T):
        kept.append(round(acc))
        acc += stride
    return np.array(kept, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class SpacedSchedule:
    """The respaced process for T sampling steps; every array is indexed by the respaced index k."""

    T: int
    timesteps: np.ndarray  # int64 [T], original t fed to the MLP
    betas: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    posterior_variance: np.ndarray
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray
    sqrt_recipm1_alphas_cumprod: np.ndarray
    log_betas: np.ndarray


@lru_cache(maxsize=None)
def spaced_schedule(T: int, num_timesteps: int = 1000) -> SpacedSchedule:
    """Build (and cache) the respaced schedule. The arrays are read-only because they are shared."""
    timesteps = respace_timesteps(T, num_timesteps)
    base_cumprod = np.cumprod(1.0 - cosine_betas(num_timesteps))
    # Spaced betas chain the kept cumulative products: beta'_k = 1 - A[t_k] / A[t_{k-1}], A[t_{-1}] = 1.
    betas, last = [], 1.0
    for t in timesteps:
        betas.append(1 - base_cumprod[t] / last)
        last = base_cumprod[t]
    betas = np.array(betas, dtype=np.float64)

    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    if T > 1:
        # Entry 0 (variance 0) is replaced by entry 1, as in the official code.
        post_logvar = np.log(np.append(post_var[1], post_var[1:]))
    else:
        # The official code has no entry here. k = 0 never adds noise, so any finite value works;
        # log beta'_0 keeps the table free of -inf (which would turn 0 * noise into NaN).
        post_logvar = np.log(betas)
    arrays = dict(
        timesteps=timesteps,
        betas=betas,
        alphas_cumprod=ac,
        alphas_cumprod_prev=ac_prev,
        posterior_variance=post_var,
        posterior_log_variance_clipped=post_logvar,
        posterior_mean_coef1=betas * np.sqrt(ac_prev) / (1.0 - ac),
        posterior_mean_coef2=(1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ac),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ac - 1),
        log_betas=np.log(betas),
    )
    for a in arrays.values():
        a.setflags(write=False)
    return SpacedSchedule(T=T, **arrays)


def step_table(T: int, num_timesteps: int = 1000) -> np.ndarray:
    """float32 [T, 6] coefficient table, columns in COEF_NAMES order, row k = respaced index k.

    Each float64 coefficient is rounded to float32 on its own (the official code does the same).
    Returns a fresh writable array.
    """
    s = spaced_schedule(T, num_timesteps)
    return np.stack([getattr(s, name) for name in COEF_NAMES], axis=1).astype(np.float32)

"""The single seeded random source of a sampling run (gtr-spec.md §2 "Random draws").

Contract shared by the torch reference sampler and the runtime; both draw from numpy, so a seed gives
the same images in either, up to float error. One `NoiseSource(seed)` per sampling call, wrapping
`np.random.default_rng(seed)` (PCG64), drawn in exactly this order:

1. `orders(plan, B)`: for b = 0..B-1, for each stage k in order: `rng.permutation(stage_k)` (stage
   positions ascending). Concatenated per sample into order[b] of length L. Step s of sample b predicts
   positions `order[b, known_before : known_before + predict]`: each stage's permutation is consumed from
   the front.
2. Then, for each step in order and each group of the step in group order (zero-size groups draw
   nothing), `group_noise(B * size, T)`:
   a. x_T: `rng.standard_normal((rows, token_dim), dtype=float32)`; rows in (sample, position
      ascending) order. With CFG the same x_T serves both branches.
   b. then T-1 per-step normals, `[T-1, rows, token_dim]` float32, drawn in reverse-step order:
      index j is used at reverse step k = T-1-j. No draw for k = 0.

Drawing the T-1 normals as one [T-1, rows, D] array or as T-1 separate [rows, D] arrays gives the
same values: numpy's generator consumes its bit stream sequentially, carrying any buffered half-word
between calls (verified for PCG64 float32 normals; tests/test_plan_builders.py checks it).
`gtr.runtime.sampler.sample` is the only code that draws 2. and 3.; tests/test_sampler_contract.py
replays its draws by hand.
3. Only for plans with fts_select = "random" (an ablation): in a step with an fts_top group, before
   that step's group noise, `selection_scores(B, n)` = `rng.random((B, n))` (float64); the k_top
   highest of each row are the selected tokens. Other plans draw nothing here, so 1. and 2. are
   unchanged for them.
"""
from __future__ import annotations

import numpy as np

from .plan import SamplingPlan


class NoiseSource:
    def __init__(self, seed: int):
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def orders(self, plan: SamplingPlan, batch: int) -> np.ndarray:
        """int64 [B, L]: per sample, one random permutation of each stage, stages concatenated."""
        stages = [np.asarray(s, dtype=np.int64) for s in plan.stages]
        out = np.empty((batch, plan.seq_len), dtype=np.int64)
        for b in range(batch):
            out[b] = np.concatenate([self.rng.permutation(s) for s in stages])
        return out

    def group_noise(self, rows: int, T: int, token_dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(x_T float32 [rows, D], step noise float32 [T-1, rows, D]); noise[j] is for k = T-1-j."""
        x_T = self.rng.standard_normal((rows, token_dim), dtype=np.float32)
        noise = self.rng.standard_normal((T - 1, rows, token_dim), dtype=np.float32)
        return x_T, noise

    def selection_scores(self, batch: int, n: int) -> np.ndarray:
        """float64 [B, n] uniform scores for random FTS selection (draw 3 above)."""
        return self.rng.random((batch, n))

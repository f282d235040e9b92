"""The seeded random source of a sampling run: one stream per image (gtr-spec.md §2 "Random draws",
with one generator per image instead of one per call).

Contract shared by the torch reference sampler and the runtime; both draw from numpy, so a seed gives
the same images in either, up to float error. Image b of a sampling call has its own generator,
`np.random.default_rng(seeds[b])` (PCG64), and draws from it in exactly this order:

1. its token order: for each stage k in order, `rng.permutation(stage_k)` (stage positions ascending),
   concatenated into order[b] of length L. Step s predicts positions
   `order[b, known_before : known_before + predict]`: each stage's permutation is consumed from the front.
2. Then, for each step in order:
   a. only for plans with fts_select = "random" (an ablation), in a step with an fts_top group:
      `rng.random(n)` (float64), the selection scores of its n predicted tokens;
   b. for each group of the step in group order (zero-size groups draw nothing), with `size` its
      tokens per image: x_T = `rng.standard_normal((size, token_dim), dtype=float32)` (positions
      ascending; with CFG the same x_T serves both branches), then the T-1 per-step normals
      `[T-1, size, token_dim]` float32, in reverse-step order: index j is used at reverse step
      k = T-1-j. No draw for k = 0.

A call's rows are (image, position ascending), so the call's x_T is the images' x_T stacked, and its
step noise the images' stacked along the rows. Because no draw depends on the other images, an image
is the same whether it is sampled alone or batched with others (a server merging requests, --batch,
shards), up to float rounding of another batch shape. `image_seed` derives each image's seed from
(run seed, class, index). `gtr.runtime.sampler.sample` is the only code that draws 2.;
tests/test_sampler_contract.py replays its draws by hand.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .plan import SamplingPlan


def image_seed(seed: int, label: int | None, index: int) -> int:
    """The seed of image `index` of class `label` in a run with `seed`: the first 63 bits of
    sha256("seed/class/index"), class "uncond" when None. A hash (not seed + a counter) so that
    neighbouring seeds, classes and indices never share noise."""
    name = "uncond" if label is None else int(label)
    digest = hashlib.sha256(f"{int(seed)}/{name}/{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def image_seeds(seed: int, labels) -> list[int]:
    """Per-image seeds of one call over `labels` with run seed `seed`: the i-th occurrence of a class
    in `labels` is its image i (as gtr-run -c C -n N numbers them)."""
    seen: dict = {}
    out = []
    for label in labels:
        index = seen.get(label, 0)
        seen[label] = index + 1
        out.append(image_seed(seed, label, index))
    return out


class NoiseSource:
    """The generators of one sampling call's images; `seeds` holds one seed per image."""

    def __init__(self, seeds):
        self.seeds = [int(s) for s in seeds]
        self.rngs = [np.random.default_rng(s) for s in self.seeds]

    @property
    def batch(self) -> int:
        return len(self.rngs)

    def orders(self, plan: SamplingPlan) -> np.ndarray:
        """int64 [B, L]: per image, one random permutation of each stage, stages concatenated."""
        stages = [np.asarray(s, dtype=np.int64) for s in plan.stages]
        out = np.empty((self.batch, plan.seq_len), dtype=np.int64)
        for b, rng in enumerate(self.rngs):
            out[b] = np.concatenate([rng.permutation(s) for s in stages])
        return out

    def group_noise(self, size: int, T: int, token_dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(x_T float32 [B*size, D], step noise float32 [T-1, B*size, D]) for a group of `size` tokens
        per image; rows are (image, position ascending); noise[j] is for k = T-1-j."""
        xs, noises = [], []
        for rng in self.rngs:
            xs.append(rng.standard_normal((size, token_dim), dtype=np.float32))
            noises.append(rng.standard_normal((T - 1, size, token_dim), dtype=np.float32))
        return np.concatenate(xs), np.concatenate(noises, axis=1)

    def selection_scores(self, n: int) -> np.ndarray:
        """float64 [B, n] uniform scores for random FTS selection (draw 2a above)."""
        return np.stack([rng.random(n) for rng in self.rngs])

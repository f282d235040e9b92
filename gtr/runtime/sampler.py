"""The sampling loop: runs any `SamplingPlan` between calls to three components.

This loop is shared by every backend (the torch reference and onnxruntime), so they differ only in
how the components compute, never in what the plan does or which random numbers it uses. numpy only.

Components (duck-typed):
    backbone(tokens [B',K,c], positions [B',K] int64, class_ids [B'] int64, pred_positions [B',n] int64)
        -> z [B',n,D] float32; rows [cond; uncond] when the plan uses CFG.
    head_step(x [r,c], t [r] int64, z [r or 2r,D], coef [r,7], cfg_weight [r,1], noise [r,c]) -> x [r,c]
    decode(tokens [B,L,c]) -> images float32 [B,3,H,W] in about [-1, 1]
    optional diffuse(x [R,c], z [R or 2R,D], calls, cfg_weight, step_noise) -> x: a backend may run a
        step's whole head loop itself (e.g. keeping tensors on the GPU); `calls` is `step_calls(...).head`
        and `step_noise` the per-group noise arrays, as `run_head` takes them.

Every shape the loop calls the components with comes from `step_calls`, which the exporter also uses
to list a bundle's static shapes.

Condition cache (docs/lazy.md; a plan step's `cond`, in effect with CFG only): a refresh step also asks
the backbone (both CFG branches) for the positions the cached steps after it will predict ([its own;
theirs], known from the orders drawn up front) and stores d = z_cond - z_uncond per image and position;
a cached step calls the backbone with the conditional rows only and takes z_uncond = z_cond - d at its
predicted positions. No random draws are added.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from gtr.configs import check_classes
from gtr.plan import COEF_NAMES, SamplingPlan, fts_split, spaced_schedule, step_table
from gtr.plan.noise import NoiseSource, image_seeds

# Per-row coefficient columns of the head step: the schedule columns of plan.step_table, then the
# noise scale = temperature at k > 0 and 0 at the last step k = 0.
COEF_COLUMNS = COEF_NAMES + ("noise_scale",)


@dataclass(frozen=True)
class HeadCall:
    """One head-step call: the first `rows` rows of the merged group rows are active."""
    rows: int
    t: np.ndarray          # [rows] int64, original timesteps
    coef: np.ndarray       # [rows, len(COEF_COLUMNS)] float32
    noise_index: tuple     # per active group: index into that group's step noise, or -1 at k = 0


@functools.lru_cache(maxsize=256)
def head_calls(group_Ts: tuple[int, ...], group_rows: tuple[int, ...], temperature: float) -> tuple[HeadCall, ...]:
    """Schedule of head calls for groups (sorted by T descending) that all finish at k = 0 together.

    A group with T steps joins at call Tmax - T, so the active rows are always a prefix: the FTS groups
    of a reconstruction step (e.g. 7 rows at T=50 and 57 at T=20) share one call for their last 20 steps.
    """
    assert list(group_Ts) == sorted(group_Ts, reverse=True)
    t_max = group_Ts[0]
    tables = [step_table(T) for T in group_Ts]
    maps = [spaced_schedule(T).timesteps for T in group_Ts]
    calls = []
    for j in range(t_max):
        ts, coefs, noise_index = [], [], []
        for T, rows, table, tmap in zip(group_Ts, group_rows, tables, maps):
            k = T - 1 - (j - (t_max - T))  # this group's respaced index at call j
            if k > T - 1:
                break  # this group (and every later, shorter one) has not started yet
            row = np.empty(len(COEF_COLUMNS), np.float32)
            row[:-1] = table[k]
            row[-1] = temperature if k > 0 else 0.0
            ts.append(np.full(rows, tmap[k], np.int64))
            coefs.append(np.broadcast_to(row, (rows, len(row))))
            noise_index.append(T - 1 - k if k > 0 else -1)
        calls.append(HeadCall(sum(len(t) for t in ts), np.concatenate(ts), np.ascontiguousarray(np.concatenate(coefs)),
                              tuple(noise_index)))
    return tuple(calls)


@dataclass(frozen=True)
class StepCalls:
    """The component calls of one AR step for a batch: the one description of them that `sample` runs
    and the exporter lists static shapes from (so a bundle's manifest holds every shape it needs)."""
    backbone_rows: int          # B' of the backbone call: 2 * batch with CFG ([cond; uncond]) except on
                                # condition-cached steps, else batch
    known: int                  # K: visible tokens per row
    predict: int                # n of the backbone call: positions whose z it returns per row (the step's
                                # predicted ones; a refresh step adds those of the cached steps after it)
    groups: tuple               # the step's non-empty groups in execution order: T descending, ties in plan order
    head: tuple[HeadCall, ...]  # head calls over the groups' merged rows; z has 2 * rows rows with CFG
    cond: str = "full"          # the step's condition-cache mode in effect (plan.cond_mode)


def step_calls(plan: SamplingPlan, step_index: int, batch: int) -> StepCalls:
    step = plan.steps[step_index]
    groups = tuple(sorted((g for g in step.groups if g.size > 0), key=lambda g: -g.T))  # sorted() is stable
    calls = head_calls(tuple(g.T for g in groups), tuple(batch * g.size for g in groups), float(plan.temperature))
    cond = plan.cond_mode(step_index)
    branches = 2 if plan.uses_cfg and cond != "cached" else 1
    return StepCalls(branches * batch, step.known_before, step.predict + refresh_ahead(plan, step_index), groups,
                     calls, cond)


def refresh_ahead(plan: SamplingPlan, step_index: int) -> int:
    """Positions per image a refresh step asks the backbone for beyond its own: those of the cached steps
    that follow it (up to the next step that runs both branches), where they read the stored difference.
    0 for other steps."""
    if plan.cond_mode(step_index) != "refresh":
        return 0
    extra = 0
    for i in range(step_index + 1, plan.num_steps):
        if plan.cond_mode(i) != "cached":
            break
        extra += plan.steps[i].predict
    return extra


def run_head(components, x: np.ndarray, z: np.ndarray, calls, cfg_weight: float, step_noise: list[np.ndarray],
             token_dim: int) -> np.ndarray:
    """Run the head calls on merged rows x [R,c]; z is [R,D] or [2R,D] ([cond; uncond])."""
    R = x.shape[0]
    uses_cfg = z.shape[0] == 2 * R
    if hasattr(components, "diffuse"):
        return components.diffuse(x, z, calls, cfg_weight, step_noise)
    z_prefix = {}
    rows, t, coef, noise = call_arrays(calls, step_noise, R, token_dim)
    for j, r in enumerate(int(r) for r in rows):
        if r not in z_prefix:
            z_prefix[r] = np.ascontiguousarray(np.concatenate([z[:r], z[R:R + r]]) if uses_cfg else z[:r])
        w = np.full((r, 1), cfg_weight, np.float32)
        x[:r] = components.head_step(x[:r], t[j, :r], z_prefix[r], coef[j, :r], w, noise[j, :r])
    return x


def call_arrays(calls, step_noise: list[np.ndarray], R: int, token_dim: int):
    """Dense per-call inputs of a step's head calls over all R merged rows: rows [n] (active prefix of
    each call), t [n,R] int64, coef [n,R,7] float32, noise [n,R,c] float32 (zero where inactive or k = 0)."""
    n = len(calls)
    rows = np.array([call.rows for call in calls], np.int64)
    t = np.zeros((n, R), np.int64)
    coef = np.zeros((n, R, len(COEF_COLUMNS)), np.float32)
    noise = np.zeros((n, R, token_dim), np.float32)
    for j, call in enumerate(calls):
        t[j, :call.rows] = call.t
        coef[j, :call.rows] = call.coef
        start = 0
        for group_noise, i in zip(step_noise, call.noise_index):
            g = group_noise.shape[1]
            if i >= 0:
                noise[j, start:start + g] = group_noise[i]
            start += g
    return rows, t, coef, noise


def row_shards(group_rows: list[int], shards: int) -> list[np.ndarray]:
    """Split merged rows (groups in order, sizes `group_rows`) into at most `shards` sorted index arrays,
    each taking an even share of every group, so each shard's active rows at any head call are again
    a prefix of the shard (the groups' order is kept). Empty shards are dropped."""
    starts = np.cumsum([0] + list(group_rows))
    parts = [[] for _ in range(max(1, shards))]
    for g, size in enumerate(group_rows):
        for k, chunk in enumerate(np.array_split(np.arange(starts[g], starts[g + 1]), len(parts))):
            parts[k].append(chunk)
    out = [np.concatenate(p) for p in parts]
    return [p for p in out if p.size]


@dataclass
class SampleResult:
    tokens: np.ndarray   # [B, L, c] float32 (scaled-latent units)
    images: np.ndarray | None  # [B, 3, H, W] float32 in about [-1, 1], None when decode=False
    orders: np.ndarray   # [B, L] the positions in generation order


def sample(components, plan: SamplingPlan, labels, seed, *, token_dim: int = 16, num_classes: int,
           decode: bool = True, progress=None) -> SampleResult:
    """Generate len(labels) images with `plan`; labels may hold None for unconditional rows.

    seed: the run seed (image b is then image i of its class, i its occurrences before it in `labels`,
    seeded by gtr.plan.noise.image_seed), or one seed per image. All randomness comes from the images'
    own streams in the documented order (gtr.plan.noise), so an image does not depend on the others.
    `progress(step_index)` is called after every AR step.
    """
    labels = list(labels)
    B, L = len(labels), plan.seq_len
    check_classes(labels, num_classes)
    seeds = image_seeds(seed, labels) if isinstance(seed, (int, np.integer)) else list(seed)
    if len(seeds) != B:
        raise ValueError(f"{len(seeds)} image seeds for {B} labels")
    uncond = num_classes  # the class id that selects fake_latent
    class_ids = np.array([uncond if lab is None else int(lab) for lab in labels], np.int64)
    if plan.uses_cfg:
        class_ids = np.concatenate([class_ids, np.full(B, uncond, np.int64)])
    rng = NoiseSource(seeds)
    orders = rng.orders(plan)
    canvas = np.zeros((B, L, token_dim), np.float32)
    batch_idx = np.arange(B)[:, None]
    cond_diff = None  # [B, L, D]: z_cond - z_uncond of the latest refresh step, by position
    for s, step in enumerate(plan.steps):
        sc = step_calls(plan, s, B)
        K, n = sc.known, step.predict
        known = np.sort(orders[:, :K], axis=1)
        pred = np.sort(orders[:, K:K + n], axis=1)
        tokens = canvas[batch_idx, known]
        reps = sc.backbone_rows // B
        # A refresh step also asks for the positions of the cached steps after it (its own first).
        ask = np.concatenate([pred, np.sort(orders[:, K + n:K + sc.predict], axis=1)], axis=1) \
            if sc.cond == "refresh" else pred
        z = components.backbone(np.tile(tokens, (reps, 1, 1)), np.tile(known, (reps, 1)),
                                class_ids[:sc.backbone_rows], np.tile(ask, (reps, 1)))
        if sc.cond == "refresh":
            if cond_diff is None:
                cond_diff = np.zeros((B, L, z.shape[-1]), np.float32)
            cond_diff[batch_idx, ask] = z[:B] - z[B:]
            z = np.concatenate([z[:B, :n], z[B:, :n]])
        z_c = z[:B]
        if sc.cond == "cached":
            z_u = z_c - cond_diff[batch_idx, pred]
        else:
            z_u = z[B:] if plan.uses_cfg else None

        # Split the predicted positions into the step's groups; rows are (sample, position ascending).
        roles = [g.role for g in step.groups]
        if "fts_top" in roles:
            k_top = next(g.size for g in step.groups if g.role == "fts_top")
            scores = rng.selection_scores(n) if plan.fts_select == "random" else None
            top, rest = fts_split(z_c, k_top, plan.fts_select, scores)
            index_of = {"fts_top": top, "fts_rest": rest}
        else:  # one group of every predicted token: 'all', or an fts_rest group alone (nothing selected)
            every = np.broadcast_to(np.arange(n), (B, n))
            index_of = {"all": every, "fts_rest": every}
        groups = sc.groups

        # Random draws in plan group order (the documented contract), executed in T order.
        drawn = {id(g): rng.group_noise(g.size, g.T, token_dim) for g in step.groups if g.size > 0}
        idx = [index_of[g.role] for g in groups]
        positions = np.concatenate([np.take_along_axis(pred, i, 1).reshape(-1) for i in idx])
        samples = np.concatenate([np.repeat(np.arange(B), i.shape[1]) for i in idx])
        cols = np.concatenate([i.reshape(-1) for i in idx])
        zc_rows = z_c[samples, cols]
        z_rows = np.concatenate([zc_rows, z_u[samples, cols]]) if plan.uses_cfg else zc_rows
        x = np.concatenate([drawn[id(g)][0] for g in groups])
        x = run_head(components, x, np.ascontiguousarray(z_rows), sc.head, plan.cfg_weight(s),
                     [drawn[id(g)][1] for g in groups], token_dim)
        canvas[samples, positions] = x
        if progress is not None:
            progress(s)
    images = components.decode(canvas) if decode else None
    return SampleResult(canvas, images, orders)

"""Plan builders: the official MAR schedule (gtr-spec §3), GtR two-stage sampling (§4), presets."""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gtr.inputs import GRID_SIDE, read_json

from .fts import fts_top_k
from .plan import Group, PlanError, SamplingPlan, Step


def _grid(grid) -> tuple[int, int]:
    try:
        h, w = (int(g) for g in grid)
    except (TypeError, ValueError):
        raise PlanError(f"grid must be (height, width), got {grid!r}") from None
    if not (GRID_SIDE.holds(h) and GRID_SIDE.holds(w)):  # before a builder lays out the grid
        raise PlanError(f"each grid side must be {GRID_SIDE.describe()}, got {h}x{w}")
    return h, w


def _steps(stage_counts: list[tuple[int, list[int], list[tuple[Group, ...]]]], L: int, conds=None) -> list[Step]:
    """Lay out steps from (stage, counts, groups) per stage, filling known_before and cfg_count;
    `conds`: one condition-cache mode per step (default all "full")."""
    steps, known = [], 0
    for stage, counts, groups in stage_counts:
        for n, gs in zip(counts, groups):
            cond = conds[len(steps)] if conds is not None else "full"
            steps.append(Step(stage=stage, known_before=known, predict=n, groups=gs,
                              cfg_count=min(known + n, L - 1), cond=cond))
            known += n
    return steps


# ---------------------------------------------------------------------------- condition cache


def cond_cache_modes(step_stages: list[int], cache_every=None, cache_from=2, cache_stages=None,
                     what: str = "plan") -> list[str]:
    """Condition-cache mode per step (docs/lazy.md), from the stage (0-based) of every step.

    cache_every None: no cache (every step "full"). Otherwise, from step `cache_from` on, in the
    stages `cache_stages` (1-based; default all), steps cache_from - 1 + k * cache_every are refresh
    steps and the others cached (LazyMAR's periodic refresh; cache_every = 1 caches nothing). A cached
    step right after a full one (where a cache stage begins) turns that step into a refresh, and a
    refresh step with no cached step after it is a plain full step (it would store d for nothing).
    """
    N = len(step_stages)
    if cache_every is None:
        if cache_stages is not None:
            raise PlanError(f"{what} plan: cache_stages needs cache_every (the condition cache is off)")
        return ["full"] * N
    for name, v, lo in (("cache_every", cache_every, 1), ("cache_from", cache_from, 1)):
        if isinstance(v, bool) or int(v) != v or v < lo:
            raise PlanError(f"{what} plan: {name} must be an integer >= {lo}, got {v!r}")
    every, start = int(cache_every), int(cache_from)
    if start >= N:
        raise PlanError(f"{what} plan: cache_from = {start} leaves no step to cache (steps 0..{N - 1}; "
                        f"step 0 always runs both CFG branches)")
    K = max(step_stages) + 1
    stages = tuple(range(1, K + 1)) if cache_stages is None else tuple(int(k) for k in cache_stages)
    bad = [k for k in stages if not 1 <= k <= K]
    if not stages or bad:
        raise PlanError(f"{what} plan: cache_stages must name stages in 1..{K}, got {list(stages)}")
    modes = []
    for s, stage in enumerate(step_stages):
        on = s >= start and stage + 1 in stages
        modes.append("cached" if on and (s - start + 1) % every else ("refresh" if on else "full"))
    for s in range(1, N):
        if modes[s] == "cached" and modes[s - 1] == "full":
            modes[s - 1] = "refresh"
    for s in range(N):
        if modes[s] == "refresh" and (s + 1 == N or modes[s + 1] != "cached"):
            modes[s] = "full"
    return modes


def _cache_params(params: dict, cache_every, cache_from, cache_stages) -> dict:
    if cache_every is not None:
        params.update(cache_every=cache_every, cache_from=cache_from)
        if cache_stages is not None:
            params["cache_stages"] = [int(k) for k in cache_stages]
    return params


# ---------------------------------------------------------------------------- mar


def mask_schedule(L: int, num_steps: int) -> list[int]:
    """Tokens per step of the official cosine mask schedule with its clamps (mar-spec §8.1)."""
    if not 1 <= num_steps <= L:
        raise PlanError(f"mar plan: num_steps={num_steps} must be in 1..{L} (L = {L} tokens); "
                        f"more steps than tokens would leave steps with nothing to predict")
    counts, remaining = [], L
    for s in range(num_steps):
        if s == num_steps - 1:
            counts.append(remaining)  # the last step takes all that remain
            break
        # Same float64 evaluation order as the official code: (pi/2 * (s+1)) / N, then L * cos.
        raw = math.floor(L * np.cos(math.pi / 2.0 * (s + 1) / num_steps))
        after = max(1, min(remaining - 1, raw))
        counts.append(remaining - after)
        remaining = after
    return counts


def mar_plan(grid=(16, 16), num_steps=64, diffusion_steps=100, diffusion_steps_min=None, cfg=1.0,
             cfg_schedule="linear", temperature=1.0, cache_every=None, cache_from=2,
             cache_stages=None) -> SamplingPlan:
    """Official MAR sampling: one stage with every position, cosine mask schedule, one T.

    With `diffusion_steps_min`, T falls linearly from `diffusion_steps` at the first AR step to
    `diffusion_steps_min` at the last (step annealing in the style of DiSA, a training-free MAR
    accelerator; rounded as the GtR generation stage, gtr-spec §4.4).
    """
    h, w = _grid(grid)
    L = h * w
    counts = mask_schedule(L, int(num_steps))
    if diffusion_steps_min is None:
        Ts = [int(diffusion_steps)] * len(counts)
    else:
        for name, t in (("diffusion_steps", diffusion_steps), ("diffusion_steps_min", diffusion_steps_min)):
            if int(t) != t or t < 1:
                raise PlanError(f"mar plan: {name} must be an integer >= 1, got {t}")
        if diffusion_steps_min > diffusion_steps:
            raise PlanError(f"mar plan: diffusion_steps_min ({diffusion_steps_min}) must not exceed diffusion_steps "
                            f"({diffusion_steps}): the annealing runs from diffusion_steps down to it")
        Ts = generation_Ts(len(counts), int(diffusion_steps), int(diffusion_steps_min))
    groups = [(Group("all", n, T),) for n, T in zip(counts, Ts)]
    params = dict(builder="mar", grid=[h, w], num_steps=num_steps, diffusion_steps=diffusion_steps,
                  cfg=cfg, cfg_schedule=cfg_schedule, temperature=temperature)
    if diffusion_steps_min is not None:
        params["diffusion_steps_min"] = diffusion_steps_min
    conds = cond_cache_modes([0] * len(counts), cache_every, cache_from, cache_stages, "mar")
    _cache_params(params, cache_every, cache_from, cache_stages)
    return SamplingPlan(name=f"mar-{num_steps}", grid=(h, w), stages=(tuple(range(L)),),
                        steps=tuple(_steps([(0, counts, groups)], L, conds)), cfg=cfg,
                        cfg_schedule=cfg_schedule, temperature=temperature, params=params)


# ---------------------------------------------------------------------------- gtr


def _two_adic(a: int) -> int:
    return (a & -a).bit_length() - 1  # trailing zero bits, a > 0


def checkerboard_partition(grid, num_stages=3, swap_first_two=False) -> tuple[tuple[int, ...], ...]:
    """Checkerboard with recursive bisection (gtr-spec §4.1).

    Cell (i, j) with a = i + j goes to stage max(1, K - v(a)) (1-based), v the 2-adic valuation and
    v(0) = inf. The last stage is {a odd}: each of its cells has all 4-neighbours in earlier stages.
    """
    h, w = _grid(grid)
    K = int(num_stages)
    if K < 2:
        raise PlanError(f"checkerboard partition needs num_stages >= 2, got {K}")
    if swap_first_two and K < 3:
        raise PlanError("swap_first_two needs num_stages >= 3 (with 2 stages it would swap the "
                        "reconstruction stage to the front)")
    stages = [[] for _ in range(K)]
    for i in range(h):
        for j in range(w):
            a = i + j
            k = 1 if a == 0 else max(1, K - _two_adic(a))
            stages[k - 1].append(i * w + j)
    if swap_first_two:
        stages[0], stages[1] = stages[1], stages[0]
    return tuple(tuple(s) for s in stages)


def split_counts(n: int, m: int) -> list[int]:
    """n tokens over m steps: the last n % m steps get one token more (gtr-spec §4.3)."""
    q, r = divmod(n, m)
    return [q + 1 if j >= m - r else q for j in range(m)]


def generation_Ts(G: int, t_max: int, t_min: int) -> list[int]:
    """Linear t_max -> t_min over G generation steps, rounded half up in exact integers (§4.4)."""
    if G == 1:
        return [t_max]
    return [(2 * (t_max * (G - 1 - g) + t_min * g) + (G - 1)) // (2 * (G - 1)) for g in range(G)]


ORDERS = ("checkerboard", "random", "raster")


def gtr_plan(grid=(16, 16), num_stages=3, stage_steps=(8, 6, 2), t_gen_max=50, t_gen_min=20, t_rec=20,
             fts=True, fts_beta=0.10, t_detail=50, fts_select="high", order="checkerboard",
             swap_first_two=False, cfg=1.0, cfg_schedule="linear", temperature=1.0, cache_every=None,
             cache_from=2, cache_stages=None) -> SamplingPlan:
    """GtR two-stage sampling: generation stages with a falling T, then a fast reconstruction stage.

    Ablations (the paper's, at the same AR steps, token counts and diffusion steps per step):
    `fts_select` "low" / "random" fills the FTS groups with the lowest-scoring or random tokens;
    `order` "random" drops the stages (every step draws from all remaining positions), "raster"
    predicts positions in raster order (each step's positions form its own stage).
    `cache_every`, `cache_from`, `cache_stages`: the condition cache (`cond_cache_modes`); the stages
    are the GtR stages (1 .. num_stages) whatever the `order`.
    """
    if order not in ORDERS:
        raise PlanError(f"gtr plan: order must be one of {', '.join(ORDERS)}, got {order!r}")
    h, w = _grid(grid)
    L = h * w
    stages = checkerboard_partition((h, w), num_stages, swap_first_two)
    K = len(stages)
    m = tuple(int(x) for x in stage_steps)
    if len(m) != K:
        raise PlanError(f"gtr plan: stage_steps {m} has {len(m)} entries, num_stages is {K}")
    for k, (mk, st) in enumerate(zip(m, stages)):
        if not 1 <= mk <= len(st):
            raise PlanError(f"gtr plan: stage {k + 1} has {len(st)} positions on the {h}x{w} grid, "
                            f"so its step count must be in 1..{len(st)}; stage_steps[{k}] = {mk}")
    for name, t in (("t_gen_max", t_gen_max), ("t_gen_min", t_gen_min), ("t_rec", t_rec),
                    ("t_detail", t_detail)):
        if int(t) != t or t < 1:
            raise PlanError(f"gtr plan: {name} must be an integer >= 1, got {t}")
    if not 0.0 <= fts_beta <= 1.0:
        raise PlanError(f"gtr plan: fts_beta must be in [0, 1], got {fts_beta}")

    layout = []
    Ts = iter(generation_Ts(sum(m[:-1]), int(t_gen_max), int(t_gen_min)))
    for k in range(K - 1):
        counts = split_counts(len(stages[k]), m[k])
        layout.append((k, counts, [(Group("all", n, next(Ts)),) for n in counts]))
    counts = split_counts(len(stages[-1]), m[-1])
    rec = []
    for n in counts:
        k_top = fts_top_k(n, fts_beta) if fts else 0
        if k_top == 0:
            rec.append((Group("all", n, int(t_rec)),))
        elif k_top == n:
            rec.append((Group("fts_top", n, int(t_detail)),))
        else:
            rec.append((Group("fts_top", k_top, int(t_detail)), Group("fts_rest", n - k_top, int(t_rec))))
    layout.append((K - 1, counts, rec))
    conds = cond_cache_modes([k for k, cs, _ in layout for _ in cs], cache_every, cache_from, cache_stages, "gtr")

    if order != "checkerboard":  # same steps, counts and groups; only the positions change
        counts = [n for _, cs, _ in layout for n in cs]
        groups = [g for _, _, gs in layout for g in gs]
        if order == "random":
            stages, layout = (tuple(range(L)),), [(0, counts, groups)]
        else:
            starts = np.cumsum([0] + counts)
            stages = tuple(tuple(range(a, b)) for a, b in zip(starts[:-1], starts[1:]))
            layout = [(i, [n], [g]) for i, (n, g) in enumerate(zip(counts, groups))]

    params = dict(builder="gtr", grid=[h, w], num_stages=K, stage_steps=list(m), t_gen_max=t_gen_max,
                  t_gen_min=t_gen_min, t_rec=t_rec, fts=bool(fts), fts_beta=fts_beta, t_detail=t_detail,
                  swap_first_two=bool(swap_first_two), cfg=cfg, cfg_schedule=cfg_schedule,
                  temperature=temperature)
    if fts_select != "high":
        params["fts_select"] = fts_select
    if order != "checkerboard":
        params["order"] = order
    _cache_params(params, cache_every, cache_from, cache_stages)
    return SamplingPlan(name="gtr", grid=(h, w), stages=stages, steps=tuple(_steps(layout, L, conds)), cfg=cfg,
                        cfg_schedule=cfg_schedule, temperature=temperature,
                        fts_beta=fts_beta if fts else 0.0, fts_select=fts_select, params=params)


# ---------------------------------------------------------------------------- presets


BUILDERS: dict[str, Callable[..., SamplingPlan]] = {"mar": mar_plan, "gtr": gtr_plan}
# Builder kwargs a caller may override (everything except grid, which build_plan takes separately).
OVERRIDES = {
    "mar": ("diffusion_steps", "diffusion_steps_min", "cfg", "cfg_schedule", "temperature",  # N in the name
            "cache_every", "cache_from", "cache_stages"),
    "gtr": ("num_stages", "stage_steps", "t_gen_max", "t_gen_min", "t_rec", "fts", "fts_beta", "t_detail",
            "fts_select", "order", "swap_first_two", "cfg", "cfg_schedule", "temperature",
            "cache_every", "cache_from", "cache_stages"),
}
FILE_OVERRIDES = ("cfg", "cfg_schedule", "temperature")  # what a plan loaded from JSON may change


@dataclass(frozen=True)
class Preset:
    builder: str  # key of BUILDERS
    kwargs: dict
    help: str


PRESETS: dict[str, Preset] = {
    "mar-64": Preset("mar", dict(num_steps=64, diffusion_steps=100), "official MAR, 64 AR steps (baseline)"),
    "mar-256": Preset("mar", dict(num_steps=256, diffusion_steps=100), "official MAR, 256 AR steps"),
    "mar-16": Preset("mar", dict(num_steps=16, diffusion_steps=100), "official MAR, 16 AR steps"),
    "mar-32": Preset("mar", dict(num_steps=32, diffusion_steps=100), "official MAR, 32 AR steps"),
    "gtr": Preset("gtr", dict(stage_steps=(8, 6, 2)), "GtR, K=3, steps 8/6/2, FTS on (16 AR steps)"),
    "gtr-32": Preset("gtr", dict(stage_steps=(24, 6, 2)), "GtR, K=3, steps 24/6/2 (32 AR steps)"),
    "gtr-lazy": Preset("gtr", dict(stage_steps=(8, 6, 2), cache_every=3, cache_from=2),
                       "GtR + condition cache: refresh every 3rd step from step 1, 10 of 16 steps cached"),
}


# The GtR paper's baselines and ablations and the quality-vs-FLOPs sweep (gtr-eval --suite paper / sweep),
# by the names their tables use; each is a preset with options changed. mar-4, mar-8 are mar-N plans.
_GTR = dict(stage_steps=(8, 6, 2))
VARIANTS: dict[str, Preset] = {
    "mar-64-T20": Preset("mar", dict(num_steps=64, diffusion_steps=20), "mar-64 with 20 diffusion steps"),
    "mar-64-anneal": Preset("mar", dict(num_steps=64, diffusion_steps=50, diffusion_steps_min=5),
                            "mar-64, diffusion steps annealed 50 -> 5 over the AR steps (DiSA-style)"),
    "mar-16-anneal": Preset("mar", dict(num_steps=16, diffusion_steps=50, diffusion_steps_min=5),
                            "mar-16, diffusion steps annealed 50 -> 5"),
    "mar-64-lazy": Preset("mar", dict(num_steps=64, diffusion_steps=100, cache_every=9, cache_from=6),
                          "mar-64 + condition cache (LazyMAR's setting: 52 of 64 steps cached)"),
    "gtr-no-fts": Preset("gtr", dict(_GTR, fts=False), "gtr without FTS (every reconstruction token at T=20)"),
    "gtr-fts-random": Preset("gtr", dict(_GTR, fts_select="random"), "gtr, FTS enhances random tokens"),
    "gtr-fts-low": Preset("gtr", dict(_GTR, fts_select="low"), "gtr, FTS enhances the lowest-scoring tokens"),
    "gtr-fts-all": Preset("gtr", dict(_GTR, fts=False, t_rec=50), "gtr, every reconstruction token at T=50"),
    "gtr-uniform-T": Preset("gtr", dict(_GTR, fts=False, t_gen_max=100, t_gen_min=100, t_rec=100),
                            "gtr with 100 diffusion steps everywhere (no stage-aware T)"),
    "gtr-order-random": Preset("gtr", dict(_GTR, order="random"), "gtr's steps, random token order"),
    "gtr-order-raster": Preset("gtr", dict(_GTR, order="raster"), "gtr's steps, raster token order"),
    "gtr-4": Preset("gtr", dict(stage_steps=(2, 1, 1)), "GtR, steps 2/1/1 (4 AR steps)"),
    "gtr-8": Preset("gtr", dict(stage_steps=(4, 3, 1)), "GtR, steps 4/3/1 (8 AR steps)"),
    "gtr-24": Preset("gtr", dict(stage_steps=(16, 6, 2)), "GtR, steps 16/6/2 (24 AR steps)"),
    "gtr-24-lazy": Preset("gtr", dict(stage_steps=(16, 6, 2), cache_every=3),
                          "gtr-24 + condition cache (refresh every 3rd step)"),
}
NAMED = {**PRESETS, **VARIANTS}  # every plan name build_plan accepts besides mar-N and files


def preset_names() -> list[str]:
    return list(PRESETS)


def _looks_like_path(name: str) -> bool:
    return name.endswith(".json") or os.sep in name or os.path.isfile(name)


def build_plan(name_or_path: str, grid=(16, 16), **overrides) -> SamplingPlan:
    """A plan from a preset or variant name, 'mar-N' for any N, or a plan JSON file.

    Overrides are builder kwargs (cfg, temperature, stage_steps, ...); None values are ignored so a
    command line can pass unset options straight through. A JSON plan accepts only cfg,
    cfg_schedule and temperature. The plan's params record the builder and every kwarg used.
    """
    grid = _grid(grid)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    name = str(name_or_path)

    if name in NAMED or re.fullmatch(r"mar-\d+", name):
        preset = NAMED.get(name) or Preset("mar", dict(num_steps=int(name[4:]), diffusion_steps=100), "")
        allowed = OVERRIDES[preset.builder]
        bad = sorted(set(overrides) - set(allowed))
        if bad:
            raise PlanError(f"plan {name!r}: unknown option(s) {', '.join(bad)}; "
                            f"allowed: {', '.join(allowed)}")
        plan = BUILDERS[preset.builder](grid=grid, **{**preset.kwargs, **overrides})
        return plan.replace(name=name)

    if _looks_like_path(name):
        plan = SamplingPlan.from_dict(read_json(name, "write one with gtr-plan show --json", PlanError,
                                                label="plan file"))
        if plan.grid != grid:
            raise PlanError(f"plan file {name} is for a {plan.grid[0]}x{plan.grid[1]} grid, "
                            f"the model has {grid[0]}x{grid[1]} (write one with gtr-plan show --model MODEL --json)")
        bad = sorted(set(overrides) - set(FILE_OVERRIDES))
        if bad:
            raise PlanError(f"plan file {name}: cannot override {', '.join(bad)}; "
                            f"allowed: {', '.join(FILE_OVERRIDES)}")
        return plan.replace(**overrides) if overrides else plan

    raise PlanError(f"unknown plan {name!r}: use a preset ({', '.join(PRESETS)}), 'mar-N', a variant "
                    f"(`gtr-plan list`), or a path to a plan .json file")

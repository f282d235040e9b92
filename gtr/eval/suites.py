"""Named sets of plans for gtr-eval: the GtR paper's comparisons and a quality-vs-FLOPs sweep.

Each entry is (row name, preset, builder options, family). The row name becomes the plan's name, so
rows stay distinct in tables, JSON and grids; the family groups points into one line on the plot
(None: a lone point, e.g. an ablation, which is no point on a curve).
The comparisons follow the paper's tables (gtr-spec §1.2-1.3) at this project's defaults.
"""
from __future__ import annotations

# The baselines and every ablation of the paper, at equal AR steps where the paper compares them.
PAPER = (
    ("mar-64", "mar-64", {}, "mar"),
    ("mar-32", "mar-32", {}, "mar"),
    ("mar-16", "mar-16", {}, "mar"),
    ("mar-64-T20", "mar-64", {"diffusion_steps": 20}, None),
    ("mar-64-anneal", "mar-64", {"diffusion_steps": 50, "diffusion_steps_min": 5}, None),
    ("gtr", "gtr", {}, None),
    ("gtr-no-fts", "gtr", {"fts": False}, None),
    ("gtr-fts-random", "gtr", {"fts_select": "random"}, None),
    ("gtr-fts-low", "gtr", {"fts_select": "low"}, None),
    ("gtr-fts-all", "gtr", {"fts": False, "t_rec": 50}, None),
    ("gtr-uniform-T", "gtr", {"fts": False, "t_gen_max": 100, "t_gen_min": 100, "t_rec": 100}, None),
    ("gtr-order-random", "gtr", {"order": "random"}, None),
    ("gtr-order-raster", "gtr", {"order": "raster"}, None),
    # The condition cache (docs/lazy.md): GtR + cache, and LazyMAR's own setting on MAR (refresh at step
    # 5 and every 9th step after it, the cached steps between).
    ("gtr-lazy", "gtr-lazy", {}, None),
    ("mar-64-lazy", "mar-64", {"cache_every": 9, "cache_from": 6}, None),
)

# Quality against FLOPs: MAR at fewer AR steps, GtR at fewer and more AR steps.
SWEEP = (
    ("mar-64", "mar-64", {}, "mar"),
    ("mar-32", "mar-32", {}, "mar"),
    ("mar-16", "mar-16", {}, "mar"),
    ("mar-8", "mar-8", {}, "mar"),
    ("mar-4", "mar-4", {}, "mar"),
    ("mar-64-anneal", "mar-64", {"diffusion_steps": 50, "diffusion_steps_min": 5}, "step annealing 50->5"),
    ("mar-16-anneal", "mar-16", {"diffusion_steps": 50, "diffusion_steps_min": 5}, "step annealing 50->5"),
    ("gtr-4", "gtr", {"stage_steps": (2, 1, 1)}, "gtr"),
    ("gtr-8", "gtr", {"stage_steps": (4, 3, 1)}, "gtr"),
    ("gtr", "gtr", {}, "gtr"),
    ("gtr-24", "gtr", {"stage_steps": (16, 6, 2)}, "gtr"),
    ("gtr-lazy", "gtr-lazy", {}, "gtr + condition cache"),
    ("gtr-24-lazy", "gtr", {"stage_steps": (16, 6, 2), "cache_every": 3}, "gtr + condition cache"),
)

SUITES = {"paper": PAPER, "sweep": SWEEP}


def suite_plans(name: str, grid, cfg: float, temperature: float | None = None):
    """[(plan, family)] for a named suite, every plan at the same cfg (and temperature if given)."""
    from gtr.plan import build_plan

    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}: use one of {', '.join(SUITES)}")
    out = []
    for row, preset, options, family in SUITES[name]:
        plan = build_plan(preset, grid=grid, cfg=cfg, temperature=temperature, **options)
        out.append((plan.replace(name=row), family))
    return out

"""Named sets of plans for gtr-eval: the GtR paper's comparisons and a quality-vs-FLOPs sweep.

Each entry is (plan name, family): every row is a named plan (gtr-plan list), so gtr-plan show,
gtr-export --plan and gtr-eval --plan take the names the tables print. The family groups points into
one line on the plot (None: a lone point, e.g. an ablation, which is no point on a curve).
The comparisons follow the paper's tables (gtr-spec §1.2-1.3) at this project's defaults.
"""
from __future__ import annotations

# The baselines and every ablation of the paper, at equal AR steps where the paper compares them, and
# the condition cache (docs/lazy.md): GtR + cache, and LazyMAR's own setting on MAR (mar-64-lazy).
PAPER = (
    ("mar-64", "mar"), ("mar-32", "mar"), ("mar-16", "mar"), ("mar-64-T20", None), ("mar-64-anneal", None),
    ("gtr", None), ("gtr-no-fts", None), ("gtr-fts-random", None), ("gtr-fts-low", None), ("gtr-fts-all", None),
    ("gtr-uniform-T", None), ("gtr-order-random", None), ("gtr-order-raster", None),
    ("gtr-lazy", None), ("mar-64-lazy", None),
)

# Quality against FLOPs: MAR at fewer AR steps, GtR at fewer and more AR steps.
SWEEP = (
    ("mar-64", "mar"), ("mar-32", "mar"), ("mar-16", "mar"), ("mar-8", "mar"), ("mar-4", "mar"),
    ("mar-64-anneal", "step annealing 50->5"), ("mar-16-anneal", "step annealing 50->5"),
    ("gtr-4", "gtr"), ("gtr-8", "gtr"), ("gtr", "gtr"), ("gtr-24", "gtr"),
    ("gtr-lazy", "gtr + condition cache"), ("gtr-24-lazy", "gtr + condition cache"),
)

SUITES = {"paper": PAPER, "sweep": SWEEP}


def suite_plans(name: str, grid, cfg: float, temperature: float | None = None):
    """[(plan, family)] for a named suite, every plan at the same cfg (and temperature if given)."""
    from gtr.plan import build_plan

    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}: use one of {', '.join(SUITES)}")
    out = []
    return [(build_plan(plan, grid=grid, cfg=cfg, temperature=temperature), family)
            for plan, family in SUITES[name]]

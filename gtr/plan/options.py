"""Plans by name for a model, with the plan options every command shares (numpy + stdlib only).

    plans = make_plans(["gtr", "mar-64"], config, {"t_rec": 10, "cfg": 3.0})

The options are the builders' keyword arguments by their Python names; `t_gen` is (max, min). An
option that a plan's builder does not take is skipped for that plan, so `t_rec` changes only GtR plans.
"""
from __future__ import annotations

from .builders import NAMED, OVERRIDES, build_plan
from .plan import PlanError

# Every plan option of gtr-plan, gtr-export and gtr-eval, by its Python name.
PLAN_OPTION_NAMES = ("stage_steps", "num_stages", "t_gen", "t_rec", "fts", "fts_beta", "t_detail", "fts_select",
                     "order", "diffusion_steps", "diffusion_steps_min", "cfg", "cfg_schedule", "temperature",
                     "cache_every", "cache_from", "cache_stages")

# Plans exported when none are named; the first is gtr-run's default.
DEFAULT_PLANS = ("gtr", "mar-64")

# Options every plan takes (a plan .json file has no builder).
_ANY_PLAN = ("cfg", "cfg_schedule", "temperature")


def make_plans(names, config, options: dict, default_cfg: bool = True) -> list:
    """Build plans by name (preset, variant, mar-N or a plan .json) for `config` (its grid and default CFG).

    options: {PLAN_OPTION_NAMES: value or None}; cfg None means the model's official scale when
    `default_cfg`. Raises PlanError for unknown options, a bad t_gen, or two plans with one name."""
    unknown = sorted(set(options) - set(PLAN_OPTION_NAMES))
    if unknown:
        raise PlanError(f"unknown plan option(s) {', '.join(unknown)}; known: {', '.join(PLAN_OPTION_NAMES)}")
    opts = {k: options.get(k) for k in PLAN_OPTION_NAMES}
    t_gen = opts.pop("t_gen")
    if t_gen is not None:
        try:
            opts["t_gen_max"], opts["t_gen_min"] = (int(t) for t in t_gen)
        except (TypeError, ValueError):
            raise PlanError(f"t_gen takes two numbers (max, min), got {t_gen!r}") from None
    if opts["cfg"] is None and default_cfg:
        opts["cfg"] = config.default_cfg
    opts = {k: v for k, v in opts.items() if v is not None}
    plans = []
    for name in names:
        builder = NAMED[name].builder if name in NAMED else ("mar" if str(name).startswith("mar-") else None)
        allowed = OVERRIDES[builder] if builder else _ANY_PLAN
        plans.append(build_plan(name, grid=config.grid, **{k: v for k, v in opts.items() if k in allowed}))
    seen = [p.name for p in plans]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice:
        raise PlanError(f"each plan must have a different name; {', '.join(twice)} is given more than once")
    return plans

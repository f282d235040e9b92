"""The plan options shared by gtr-plan, gtr-export and gtr-eval (click only; plans are built by
gtr.plan.options.make_plans from these values, by the same Python names)."""
from __future__ import annotations

import click


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected comma-separated integers, e.g. 8,6,2") from None


def _max_min(ctx, param, value):
    pair = _int_list(ctx, param, value)
    if pair is not None and len(pair) != 2:
        raise click.BadParameter("--t-gen takes MAX,MIN")
    return pair


def plan_options(fn):
    options = [
        click.option("--gtr-steps", "stage_steps", callback=_int_list, metavar="M1,M2,..",
                     help="GtR: AR steps per stage (default 8,6,2; one number per stage)."),
        click.option("--stages", "num_stages", type=int, help="GtR: number of stages K (default 3)."),
        click.option("--t-gen", "t_gen", callback=_max_min, metavar="MAX,MIN",
                     help="GtR: diffusion steps over the generation stage, linear from MAX to MIN (default 50,20)."),
        click.option("--t-rec", type=int, help="GtR: diffusion steps in the reconstruction stage (default 20)."),
        click.option("--fts/--no-fts", default=None, help="GtR: frequency-weighted token selection (default on)."),
        click.option("--fts-beta", type=float, help="GtR: fraction of reconstruction tokens given detail steps (0.10)."),
        click.option("--t-detail", type=int, help="GtR: diffusion steps of the FTS-selected tokens (default 50)."),
        click.option("--fts-select", type=click.Choice(["high", "low", "random"]),
                     help="GtR: which tokens FTS enhances: highest score (default), lowest, or random (ablations)."),
        click.option("--order", type=click.Choice(["checkerboard", "random", "raster"]),
                     help="GtR: token order at the same steps: checkerboard stages (default), random, raster (ablations)."),
        click.option("--diffusion-steps", type=int, help="mar-N plans: diffusion steps per token (default 100)."),
        click.option("--diffusion-steps-min", type=int, metavar="T",
                     help="mar-N plans: anneal diffusion steps linearly from --diffusion-steps down to T (DiSA-style)."),
        click.option("--cfg", type=float, help="CFG scale (default: the model's official value; 1 = no CFG)."),
        click.option("--cfg-schedule", type=click.Choice(["linear", "constant"]), help="CFG schedule (default linear)."),
        click.option("--temperature", type=float, help="Diffusion noise temperature (default 1.0)."),
        click.option("--cache-every", type=int, metavar="R",
                     help="Condition cache (with CFG): one refresh step every R steps, the others run the "
                          "backbone's conditional branch only (gtr-lazy: 3; 1 = no cached steps; docs/lazy.md)."),
        click.option("--cache-from", type=int, metavar="S",
                     help="Condition cache: first cached AR step (0-based; step S-1 refreshes; default 2)."),
        click.option("--cache-stages", callback=_int_list, metavar="K1,K2,..",
                     help="Condition cache: the stages (1-based) whose steps may be cached (default all)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn

"""The plan options shared by gtr-plan, gtr-export and gtr-eval (click only; plans are built by
gtr.plan.options.make_plans from these values, by the same Python names). Every number has its range
(gtr.inputs); the plan builders then check what depends on the model's grid."""
from __future__ import annotations

import click

from gtr import inputs
from gtr.commands.numbers import Float, Int, Ints


def plan_options(fn):
    options = [
        click.option("--gtr-steps", "stage_steps", type=Ints(inputs.AR_STEPS), metavar="M1,M2,..",
                     help="GtR: AR steps per stage (default 8,6,2; one number per stage)."),
        click.option("--stages", "num_stages", type=Int(inputs.STAGES), help="GtR: number of stages K (default 3)."),
        click.option("--t-gen", "t_gen", type=Ints(inputs.DIFFUSION_STEPS, length=2), metavar="MAX,MIN",
                     help="GtR: diffusion steps over the generation stage, linear from MAX to MIN (default 50,20)."),
        click.option("--t-rec", type=Int(inputs.DIFFUSION_STEPS),
                     help="GtR: diffusion steps in the reconstruction stage (default 20)."),
        click.option("--fts/--no-fts", default=None, help="GtR: frequency-weighted token selection (default on)."),
        click.option("--fts-beta", type=Float(inputs.FTS_BETA),
                     help="GtR: fraction of reconstruction tokens given detail steps (0.10)."),
        click.option("--t-detail", type=Int(inputs.DIFFUSION_STEPS),
                     help="GtR: diffusion steps of the FTS-selected tokens (default 50)."),
        click.option("--fts-select", type=click.Choice(["high", "low", "random"]),
                     help="GtR: which tokens FTS enhances: highest score (default), lowest, or random (ablations)."),
        click.option("--order", type=click.Choice(["checkerboard", "random", "raster"]),
                     help="GtR: token order at the same steps: checkerboard stages (default), random, raster (ablations)."),
        click.option("--diffusion-steps", type=Int(inputs.DIFFUSION_STEPS),
                     help="mar-N plans: diffusion steps per token (default 100)."),
        click.option("--diffusion-steps-min", type=Int(inputs.DIFFUSION_STEPS), metavar="T",
                     help="mar-N plans: anneal diffusion steps linearly from --diffusion-steps down to T (DiSA-style)."),
        click.option("--cfg", type=Float(inputs.CFG), help="CFG scale (default: the model's official value; 1 = no CFG)."),
        click.option("--cfg-schedule", type=click.Choice(["linear", "constant"]), help="CFG schedule (default linear)."),
        click.option("--temperature", type=Float(inputs.TEMPERATURE), help="Diffusion noise temperature (default 1.0)."),
        click.option("--cache-every", type=Int(inputs.AR_STEPS), metavar="R",
                     help="Condition cache (with CFG): one refresh step every R steps, the others run the "
                          "backbone's conditional branch only (gtr-lazy: 3; 1 = no cached steps; docs/lazy.md)."),
        click.option("--cache-from", type=Int(inputs.AR_STEPS), metavar="S",
                     help="Condition cache: first cached AR step (0-based; step S-1 refreshes; default 2)."),
        click.option("--cache-stages", type=Ints(inputs.AR_STEPS), metavar="K1,K2,..",
                     help="Condition cache: the stages (1-based) whose steps may be cached (default all)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn

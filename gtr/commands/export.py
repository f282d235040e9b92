"""gtr-export: a model into one .plan bundle (the weights it needs, where they come from)."""
from __future__ import annotations

import click

from gtr import inputs
from gtr.commands.errors import friendly_errors
from gtr.commands.numbers import ClassList, Int
from gtr.commands.plan_options import plan_options


@click.command("export", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "-m", required=True,
              help="Model config: mar-b, mar-l, mar-h, mar-tiny, mar-test (the official-fixture layout).")
@click.option("--precision", "-p", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="Precision carried in the graphs (int8: Q/DQ graphs calibrated by sampling along the plans).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="MAR checkpoint (.pth official layout, or .safetensors).")
@click.option("--weights", type=click.Choice(["ema", "model"]), default="ema", show_default=True,
              help="Which weights of an official checkpoint to export.")
@click.option("--vae", type=click.Path(dir_okay=False), help="VAE checkpoint (official kl16.ckpt layout, or .safetensors).")
@click.option("--random-weights", is_flag=True, help="Export an untrained model (testing and benchmarking only).")
@click.option("--plan", "plans", multiple=True, metavar="PLAN",
              help="Plan(s) to support: preset, mar-N or plan.json; repeatable; the first is the default "
                   "for gtr-run. Default: gtr and mar-64 (gtr first).")
@plan_options
@click.option("--batch", type=Int(inputs.BATCH), default=1, show_default=True, help="Images per engine call (static shapes are listed for it).")
@click.option("--seed", type=Int(inputs.SEED), default=0, show_default=True, help="Seed of --random-weights.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Bundle path (default <model>-<precision>.plan).")
@click.option("--download", is_flag=True,
              help="Fetch the official weights into $GTR_HOME first (as `gtr download MODEL`; verified if there).")
@click.option("--calib-classes", type=ClassList(), metavar="LIST",
              help="int8: calibration classes, e.g. 0-9 or 1,207,360 (default: 10 evenly spaced classes).")
@click.option("--calib-seeds", type=Int(inputs.CALIB_SEEDS), help="int8: calibration images per class (seeds 10000, 10001, ...; default 1).")
@click.option("--calib-other", type=Int(inputs.CALIB_OTHER), metavar="N",
              help="int8: calibration images of each plan after the first (default 2, one sampling call, which "
                   "visits every static shape of the plan; the first plan gets every class and seed; 0 = every "
                   "plan gets the whole set, several times slower with mar-64).")
@click.option("--check", "verify", type=click.Choice(["spread", "all", "none"]), default="spread", show_default=True,
              help="Check each graph against torch on ONNX Runtime at a spread of its static shapes (at most 8 "
                   "evenly spaced plus the largest), at all of them (one run per AR step: most of an hour for "
                   "MAR-H), or not at all (gtr-check compares the whole bundle afterwards).")
@click.option("--no-check", "no_check", is_flag=True, help="The same as --check none.")
@click.option("--calib-method", type=click.Choice(["max", "percentile", "entropy"]),
              help="int8: activation range method (default max, chosen by measured quality).")
@friendly_errors
def export_cmd(model, precision, checkpoint, weights, vae, random_weights, plans, batch, seed, output, download,
               calib_classes, calib_seeds, calib_other, verify, no_check, calib_method, **options):
    """Export a MAR model into one .plan bundle (ONNX graphs + manifest) for gtr-run.

    Without --checkpoint the official files are looked up in $GTR_HOME (default ~/.cache/gtr):
    <model>/checkpoint-last.pth and kl16.ckpt; --download fetches them there first.

    \b
    Examples:
      gtr-export --model mar-test --random-weights
      gtr-export --model mar-b --random-weights --precision fp16
      gtr-export --model mar-l --precision fp16 --plan gtr --plan mar-64 --batch 4
      gtr-export --model mar-b --download                 # fetch the official weights first
      gtr-export --model mar-tiny --precision int8 --calib-classes 0-9 --calib-seeds 2
    """
    if no_check and verify != "spread":
        raise click.BadParameter(f"--no-check and --check {verify} ask for different checks: give one")
    verify = "none" if no_check else verify
    if random_weights and (checkpoint or vae):
        raise click.BadParameter("--random-weights exports untrained weights: give it or --checkpoint/--vae, not both")
    from gtr.extras import require
    require("gtr-export", "export", "runtime")  # before anything is fetched or written
    from gtr.export.api import export  # the same code path as gtr.export(...) in Python
    calibration = None
    if (calib_classes, calib_seeds, calib_method, calib_other) != (None, None, None, None):
        from gtr.calibration import DEFAULT_METHOD, DEFAULT_SEEDS, CalibrationSpec
        from gtr.calibration.spec import DEFAULT_OTHER_IMAGES
        calibration = CalibrationSpec(calib_classes, DEFAULT_SEEDS if calib_seeds is None else calib_seeds,
                                      calib_method or DEFAULT_METHOD,
                                      DEFAULT_OTHER_IMAGES if calib_other is None else calib_other)
    export(model, output, precision=precision, plans=plans, checkpoint=checkpoint, vae=vae, weights=weights,
           random_weights=random_weights, download=download, batch=batch, seed=seed, log=click.echo,
           calibration=calibration, verify=verify, **options)

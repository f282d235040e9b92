"""gtr-eval: sample quality against cost for digit models."""
from __future__ import annotations

from pathlib import Path

import click

from gtr import inputs
from gtr.commands.errors import friendly_errors
from gtr.commands.numbers import Int, Ints
from gtr.commands.threads import threads_option
from gtr.commands.plan_options import plan_options
from gtr.configs import get_config
from gtr.plan.options import PLAN_OPTION_NAMES, make_plans


@click.command("eval", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bundle", type=click.Path(dir_okay=False), help="Evaluate a .plan bundle (onnxruntime) instead of the torch reference.")
@click.option("--model", "-m", default="mar-tiny", show_default=True,
              help="Model for the torch reference: mar-tiny (digits) or mar-glyphs (letters).")
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="MAR checkpoint for the torch reference (default: the shipped weights of --model).")
@click.option("--vae", type=click.Path(dir_okay=False), help="VAE checkpoint for the torch reference.")
@click.option("--plan", "plans", multiple=True, metavar="PLAN",
              help="Plan(s) to compare (repeatable). Default: the bundle's plans, or mar-64 and gtr.")
@click.option("--suite", type=click.Choice(["paper", "sweep"]),
              help="Evaluate a named set of plans instead of --plan: 'paper' = the GtR paper's baselines and "
                   "ablations, 'sweep' = MAR and GtR at several AR-step counts (the quality-vs-FLOPs frontier).")
@plan_options
@click.option("--per-class", type=Int(inputs.PER_CLASS), default=20, show_default=True, help="Images per class.")
@click.option("--seed", type=Int(inputs.SEED), default=0, show_default=True,
              help="Base seed: batch i of a plan uses seed + i.")
@click.option("--seeds", type=Ints(inputs.SEED, most=16), default=None, metavar="S1,S2,...",
              help="Several base seeds (e.g. 0,1000,2000): each plan is sampled once per seed and the report "
                   "gives the means with their range over the seeds. Replaces --seed.")
@click.option("--batch", type=Int(inputs.BATCH), default=10, show_default=True, help="Images per sampling call.")
@click.option("--outdir", type=click.Path(file_okay=False), default="eval-out", show_default=True,
              help="Where results.json, grid-<plan>.png and quality_vs_cost.png go.")
@threads_option
@friendly_errors
def eval_cmd(bundle, model, checkpoint, vae, plans, suite, per_class, seed, seeds, batch, outdir, threads, **options):
    """Measure sample quality against cost for one or more plans (the small models: mar-tiny, mar-glyphs).

    Reports class accuracy under the model's shipped classifier, the Frechet distance of its features to
    held-out real images (held-out digits; glyphs of held-out font faces: an FID-style number, not
    ImageNet FID; compare only at equal --per-class), FLOPs per image from the plan's cost model, and
    measured seconds per image.

    \b
    Examples:
      gtr-eval --plan mar-64 --plan gtr --per-class 20 --outdir eval-out
      gtr-eval --suite paper --per-class 20 --outdir eval-paper     # baselines + ablations
      gtr-eval --suite sweep --per-class 20 --outdir eval-sweep     # quality-vs-FLOPs frontier
      gtr-eval --bundle mar-tiny-fp32.plan --suite paper           # the same plans on onnxruntime
      gtr-eval -m mar-glyphs --plan mar-64 --plan gtr --per-class 40 --seeds 0,1000,2000 --batch 52 --outdir eval-glyphs
    """
    from gtr.extras import require
    require("gtr-eval" + (" --bundle" if bundle else ""), "eval", *(("runtime",) if bundle else ()))
    from gtr.eval.report import format_table, quality_cost_plot, write_json
    from gtr.eval.run import evaluate_plans
    from gtr.runtime.files import check_writable
    check_writable(outdir, folder=True)  # before minutes of sampling
    if suite and plans:
        raise click.BadParameter("use either --suite or --plan, not both")
    families = {}
    if bundle:
        from gtr.runtime.bundle import read_bundle
        from gtr.runtime.onnx_backend import OnnxComponents
        b = read_bundle(bundle)
        config = b.config
        if suite:
            plan_objs, families = _suite(suite, config, options)  # onnxruntime graphs take any shape
        else:
            plan_objs = [b.plan(name, options.get("cfg"), options.get("temperature"))
                         for name in (plans or list(b.plans()))]
        comps, backend = OnnxComponents(b, threads=threads), f"bundle {bundle}"
    else:
        from gtr.export.weights import build_models
        from gtr.models.reference import TorchComponents
        config = get_config(model)
        if suite:
            plan_objs, families = _suite(suite, config, options)
        else:
            plan_objs = make_plans(plans or ("mar-64", "gtr"), config, options)
        mar, vae_model, _ = build_models(config, checkpoint=checkpoint, vae=vae)
        comps, backend = TorchComponents(mar, vae_model), "torch reference (CPU)"
    seed_text = f"seeds {', '.join(map(str, seeds))}" if seeds else f"seed {seed}"
    click.echo(f"evaluating {config.name} with {backend}: {per_class} images per class, {seed_text}")
    from tqdm import tqdm
    from gtr.runtime.progress import progress_bar  # a bar on a terminal, one line per batch elsewhere
    bars = {}

    def progress(name, done, total):
        if name not in bars:
            bars[name] = progress_bar(total, name, "img")
        bars[name].update(done - bars[name].n)

    rows = evaluate_plans(comps, plan_objs, config, per_class, seed=seed, batch=batch, outdir=outdir,
                          log=lambda s: tqdm.write(s), progress=progress, seeds=seeds)
    base = next((r for r in rows if r["plan"] == "mar-64"), None)
    for row in rows:
        if base is not None:
            row["flops_vs_mar64"] = base["gflops"] / row["gflops"]  # x fewer FLOPs than mar-64
        if families.get(row["plan"]):
            row["family"] = families[row["plan"]]
    for bar in bars.values():
        bar.close()
    click.echo(format_table(rows))
    write_json(Path(outdir) / "results.json", dict(model=config.name, backend=backend, per_class=per_class,
                                                    seed=seed, seeds=list(seeds or [seed]), suite=suite,
                                                    plans=[p.to_dict() for p in plan_objs], rows=rows))
    quality_cost_plot(rows, Path(outdir) / "quality_vs_cost.png", title=f"{config.name}: quality vs cost")
    click.echo(f"wrote {outdir}/results.json, {outdir}/quality_vs_cost.png and one grid-<plan>.png per plan")


def _suite(name, config, options):
    """A suite's plans at the model's (or --cfg) guidance scale; other plan options do not apply."""
    from gtr.eval.suites import suite_plans
    ignored = [k for k in PLAN_OPTION_NAMES if k not in ("cfg", "temperature") and options.get(k) is not None]
    if ignored:
        raise click.BadParameter(f"--suite fixes every plan option except --cfg and --temperature "
                                 f"(got {', '.join('--' + k.replace('_', '-') for k in ignored)})")
    cfg = options.get("cfg") if options.get("cfg") is not None else config.default_cfg
    pairs = suite_plans(name, config.grid, cfg, options.get("temperature"))
    return [p for p, _ in pairs], {p.name: f for p, f in pairs}

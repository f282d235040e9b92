"""gtr-run: images from a bundle (built on gtr.pipeline)."""
from __future__ import annotations

import time

import click

from gtr import inputs
from gtr.commands.errors import friendly_errors
from gtr.commands.numbers import Float, Int, Shard
from gtr.commands.threads import threads_option
from gtr.runtime.backends import BACKENDS
from gtr.runtime.providers import DEVICES


MAX_GRID = 4096  # images in one grid PNG (held in memory while it is drawn)


@click.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--class", "-c", "classes", type=Int(inputs.CLASS), multiple=True,
              help="Class id to generate (repeatable). None: unconditional.")
@click.option("--all-classes", is_flag=True, help="Every class of the model (ImageNet: 0..999), e.g. for FID runs.")
@click.option("--num-images", "-n", type=Int(inputs.NUM_IMAGES), default=1, show_default=True,
              help="Images per class.")
@click.option("--seed", "-s", type=Int(inputs.SEED), default=0, show_default=True,
              help="Run seed; each image's noise is seeded from it, its class and its index.")
@click.option("--plan", "plan_name", help="Which of the bundle's plans to run (default: the first).")
@click.option("--cfg", type=Float(inputs.CFG), help="Override the plan's CFG scale (1 = no guidance).")
@click.option("--temperature", type=Float(inputs.TEMPERATURE), help="Override the plan's diffusion temperature.")
@click.option("--batch", type=Int(inputs.BATCH), help="Images per sampling call (default: the bundle's export batch); "
                                                     "changes only speed.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output PNG (one image, or the grid with --grid; default: out.png in the current folder, "
                   "when --outdir is not given).")
@click.option("--outdir", type=click.Path(file_okay=False),
              help="Write one PNG per image into this folder (class0088_00012.png); images already there are kept (resume).")
@click.option("--shard", type=Shard(), metavar="I/N",
              help="With --outdir: make only shard I of N (0 <= I < N); the N shards together make the whole run.")
@click.option("--npz", type=click.Path(dir_okay=False),
              help="With --outdir: then pack the run's images into this .npz (uint8 arr_0 [N,H,W,3], for FID evaluators).")
@click.option("--grid", "as_grid", is_flag=True, help="Write all images as one grid PNG (one row per class).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="onnxruntime execution provider.")
@click.option("--backend", type=click.Choice(("auto",) + BACKENDS), default="auto", show_default=True,
              help="auto: the bundle's TensorRT engines when they match this GPU and TensorRT (gtr-build), "
                   "else onnxruntime.")
@click.option("--rebuild", is_flag=True,
              help="Build the TensorRT engines this machine lacks into the bundle first (as gtr-build BUNDLE).")
@threads_option
@friendly_errors
def run_cmd(bundle, classes, all_classes, num_images, seed, plan_name, cfg, temperature, batch, output, outdir, shard,
            npz, as_grid, device, backend, rebuild, threads):
    """Generate images from a .plan bundle (numpy + onnxruntime; no PyTorch needed).

    An image depends on (--seed, class, index) only: with --outdir, runs resume (files that exist and
    decode are skipped) and --shard I/N splits a run over N workers that together write the same
    files, byte for byte, as one unsharded run, whatever each worker's --threads or core count.

    \b
    Examples:
      gtr-run mar-tiny-fp32.plan --class 3 -o three.png
      gtr-run mar-tiny-fp32.plan -c 0 -c 1 -c 2 -n 4 --grid -o grid.png
      gtr-run mar-l-fp16.plan --class 88 --plan mar-64 -n 8 --outdir class88/
      gtr-run mar-l-fp16.plan --all-classes -n 50 --outdir mar-l-50k/ --shard 0/4    # worker 0 of 4
      gtr-run mar-l-fp16.plan --all-classes -n 50 --outdir mar-l-50k/ --npz mar-l-50k.npz
    """
    from gtr.pipeline import Pipeline, PipelineError
    from gtr.runtime.images import make_grid, save_png

    if outdir and output:
        raise click.BadParameter("give -o/--output or --outdir, not both")
    if all_classes and classes:
        raise click.BadParameter("give --class or --all-classes, not both")
    if (shard or npz) and not outdir:
        raise click.BadParameter("--shard and --npz work with --outdir")
    if shard and npz:
        raise click.BadParameter("--npz packs the whole run: run it once after the shards, without --shard")
    if as_grid and outdir:
        raise click.BadParameter("--grid writes one PNG with -o; --outdir writes one PNG per image: give one")
    if output is None and outdir is None:
        output = "out.png"
    from gtr.runtime.files import check_writable
    for path, folder in ((output, False), (outdir, True), (npz, False)):  # before any work is done
        if path:
            check_writable(path, folder=folder)
    try:
        pipe = Pipeline(bundle, device=device, backend=backend, rebuild=rebuild, threads=threads)  # = gtr.load(...)
        classes = tuple(range(pipe.config.num_classes)) if all_classes else classes
        total = max(len(classes), 1) * num_images
        if output and total > 1 and not as_grid:
            raise click.BadParameter(f"{total} images: use --grid for one PNG, or --outdir for one file each")
        if output and total > MAX_GRID:
            raise click.BadParameter(f"a grid of {total:,} images is too big for one PNG (at most {MAX_GRID:,}); "
                                     f"use --outdir for one file each")
        request = dict(classes=classes or None, seed=seed, num_images=num_images, plan=plan_name, cfg=cfg,
                       temperature=temperature, batch=batch)
        plan = pipe.plan(plan_name, cfg, temperature)
        if pipe.random_weights:
            click.echo("note: this bundle holds RANDOM (untrained) weights; images are noise", err=True)
        t0 = time.perf_counter()
        if outdir:
            result = pipe.save(outdir, shard=shard, **request)
            made = result.written
            where = (f"{made} PNG(s) to {outdir} ({result.skipped} already there"
                     + (f", shard {shard[0]}/{shard[1]}" if shard else "") + ")")
            seconds = time.perf_counter() - t0
            if npz:
                where += f"; packed {pipe.pack(result.paths, npz)} images into {npz}"
        else:
            pixels = pipe.generate(**request)
            made, seconds = len(pixels), time.perf_counter() - t0
            save_png(make_grid(pixels, ncol=num_images if classes else min(made, 8)) if as_grid else pixels[0], output)
            where = f"{output}: {made} image(s)"
    except PipelineError as e:
        raise click.ClickException(str(e)) from None
    speed = f", {seconds / made:.3f} s/image" if made else ""
    click.echo(f"wrote {where}, plan {plan.name}{speed} ({pipe.device_name})")


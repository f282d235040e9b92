"""gtr-bench: backends and plans side by side in one process, with where the time goes."""
from __future__ import annotations

import os
import platform
import tempfile

import click

from gtr import inputs
from gtr.commands.errors import friendly_errors
from gtr.commands.numbers import Float, Int, Ints
from gtr.runtime.backends import BACKENDS
from gtr.runtime.cpus import usable_cpus

# The bundle backends and the PyTorch reference on the same weights.
BENCH_BACKENDS = (BACKENDS[0], "torch", *BACKENDS[1:])


@click.command("bench", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundles", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--model", help="Export this model (mar-test, mar-tiny, mar-b, ...) into temporary bundles instead "
                              "of timing BUNDLES; weights as gtr-export (--checkpoint/--vae/--random-weights).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="With --model: MAR checkpoint.")
@click.option("--vae", type=click.Path(dir_okay=False), help="With --model: VAE checkpoint.")
@click.option("--random-weights", is_flag=True, help="With --model: untrained weights (speed does not depend on them).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="With --model: a bundle per precision (repeatable; default fp32).")
@click.option("--plan", "plan_names", multiple=True,
              help="Plans to time (repeatable; default: every plan of the first bundle, with --model gtr and mar-64).")
@click.option("--cfg", type=Float(inputs.CFG), help="CFG scale of every plan (default: the bundle's plans as exported; "
                                        "with --model the model's official scale).")
@click.option("--backend", "backends", multiple=True, type=click.Choice(BENCH_BACKENDS),
              help="Backends to time (repeatable). Default: onnxruntime, plus torch (the PyTorch reference on the "
                   "same weights) when torch is installed, plus tensorrt when TensorRT is installed.")
@click.option("--official", type=click.Path(file_okay=False, exists=True),
              help="Also time the official MAR code in this checkout of LTH14/mar (e.g. $GTR_OFFICIAL_MAR) on the "
                   "same weights, for each mar-N plan; needs torch and timm 0.9.12.")
@click.option("--batch", "batches", type=Ints(inputs.BATCH), default="1,4,16,64", show_default=True,
              help="Batch sizes of the sweep (comma-separated); throughput is reported for each.")
@click.option("--rounds", type=Int(inputs.ROUNDS), default=3, show_default=True,
              help="Timed rounds per batch size; each round runs every entry once, in turn (interleaved); "
                   "figures are medians over the rounds.")
@click.option("--warmup", type=Int(inputs.WARMUP), default=1, show_default=True,
              help="Untimed runs per entry before each batch size's rounds.")
@click.option("--threads", type=Int(inputs.THREADS), default=min(usable_cpus(), int(inputs.THREADS.hi)), show_default="the CPUs this process may use",
              help="CPU threads for every backend (onnxruntime sessions, torch) and the matmul probe.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where onnxruntime and torch run.")
@click.option("--tokens-only", is_flag=True, help="Do not decode images (the official sampler never does).")
@click.option("--class", "-c", "classes", type=Int(inputs.CLASS), multiple=True,
              help="Class ids, cycled over the batch (default 207, modulo the model's classes).")
@click.option("--seed", type=Int(inputs.SEED), default=0, show_default=True, help="Round r samples with seed + r on every entry.")
@click.option("-o", "--outdir", type=click.Path(file_okay=False), default="bench", show_default=True,
              help="Writes bench.json and bench.png (time split and throughput plot) here.")
@friendly_errors
def bench_cmd(bundles, model, checkpoint, vae, random_weights, precisions, plan_names, cfg, backends, official,
              batches, rounds, warmup, threads, device, tokens_only, classes, seed, outdir):
    """Time plans on several backends side by side, in one process, with interleaved rounds.

    For every backend, precision and plan, at every batch size: seconds per image split into backbone,
    head (the diffusion MLP loop), decode (VAE) and the Python loop around them; achieved GFLOP/s of
    backbone and head (FLOPs of the plan's cost model, gtr-plan show) against a matmul probe measured
    in the same run; images/s; and the speedup (tokens only) over the official sampler's first mar-N
    plan, else over torch's, when timed. Prints a table per batch size, writes JSON and a plot.

    Compare ratios measured in one run, never absolute times across runs or machines.

    \b
    Examples:
      gtr-bench --model mar-test --checkpoint mar_small.pth --vae kl16_small.ckpt --cfg 3 \\
          --official "$GTR_OFFICIAL_MAR" --batch 1 --threads 2 --tokens-only
      gtr-bench --model mar-b --random-weights --precision fp32 --precision int8 --plan gtr --plan mar-64
      gtr-bench mar-tiny-fp32.plan --backend onnxruntime --batch 1,8
    """
    from gtr.bench.session import BenchSession
    if bool(model) == bool(bundles):
        raise click.UsageError("give either BUNDLE paths or --model")
    if not model and (checkpoint or vae or random_weights or precisions):
        raise click.UsageError("--checkpoint, --vae, --random-weights and --precision go with --model")
    from gtr.runtime.files import check_writable
    check_writable(outdir, folder=True)  # before minutes of timing
    with tempfile.TemporaryDirectory(prefix="gtr-bench-") as tmp:
        session = BenchSession(threads=threads, device=device, decode=not tokens_only, echo=click.echo)
        if model:
            session.export(model, tmp, precisions or ("fp32",), plan_names or ("gtr", "mar-64"), checkpoint, vae,
                           random_weights, cfg)
        else:
            session.open_bundles(bundles, plan_names, cfg)
        session.add_entries(backends or None, official)
        record = session.run(batches, rounds, warmup, list(classes) or [207], seed)
    record["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                         "usable_cpus": usable_cpus(),
                         "python": platform.python_version()}
    os.makedirs(outdir, exist_ok=True)
    session.write(record, outdir)

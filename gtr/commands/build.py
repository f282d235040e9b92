"""gtr-build: TensorRT engines for a bundle."""
from __future__ import annotations


import click

from gtr import inputs
from gtr.commands.errors import friendly_errors
from gtr.commands.numbers import Int
from gtr.paths import cache_dir


@click.command("build", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the bundle with its engines here (default: BUNDLE itself, replaced atomically).")
@click.option("--dry-run", is_flag=True, help="Print each component's profiles and engine cache key; build nothing "
                                              "(needs no TensorRT).")
@click.option("--workspace", type=Int(inputs.WORKSPACE_MB), metavar="MB", help="TensorRT workspace limit (default: TensorRT's, the GPU's memory).")
@click.option("--timing-cache", type=click.Path(dir_okay=False),
              help="Timing cache file, read and updated (default: $GTR_HOME/tensorrt/<TensorRT-GPU>.timing-cache).")
@click.option("--device", type=Int(inputs.DEVICE_INDEX), default=0, show_default=True, help="CUDA device to build for.")
@click.option("--max-profiles", type=Int(inputs.PROFILES), default=None, metavar="N",
              help="Profiles per engine before static shapes are grouped (default 16).")
@click.option("--force", is_flag=True, help="Rebuild engines the bundle already holds for this GPU and TensorRT.")
@friendly_errors
def build_cmd(bundle, output, dry_run, workspace, timing_cache, device, max_profiles, force):
    """Build TensorRT engines for a bundle's graphs and store them in the bundle (one .plan file).

    One engine per component (backbone, head, head_nocfg, vae_decoder), strongly typed (the precision
    is the graphs'), with one optimization profile per static shape of the bundle's plans (grouped
    when a component has more than --max-profiles). Engines are keyed by graph, TensorRT version and
    GPU: gtr-run uses them where they match.

    \b
    Examples:
      gtr-build mar-l-fp16.plan --dry-run        # the profiles a build makes; no TensorRT needed
      gtr-build mar-l-fp16.plan                   # engines for this GPU, into the bundle
      gtr-build mar-l-fp16.plan -o mar-l-orin.plan --workspace 2048
    """
    from gtr.engines.build import build_engines, describe
    from gtr.runtime.trt.profiles import MAX_PROFILES
    max_profiles = MAX_PROFILES if max_profiles is None else max_profiles
    if max_profiles < 1 or (workspace is not None and workspace < 1):
        raise click.BadParameter("--max-profiles and --workspace must be >= 1")
    if dry_run:
        from gtr.runtime.bundle import read_bundle
        with read_bundle(bundle) as b:
            describe(b, max_profiles, device=device, echo=click.echo)
        return
    build_engines(bundle, output, workspace_mb=workspace, timing_cache=timing_cache, cache_dir=cache_dir() / "tensorrt",
                  device=device, max_profiles=max_profiles, force=force, log=click.echo)

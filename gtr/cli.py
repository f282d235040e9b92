"""Command line: gtr-export, gtr-run, gtr-plan, gtr-inspect, gtr-check, gtr-eval (also `gtr <cmd>`).

Only click, numpy and the torch-free parts of gtr are imported at module level, so `gtr-run`,
`gtr-plan` and `gtr-inspect` work where torch is not installed. Every expected failure (bad input,
missing or damaged file) ends in a one-line error and exit status 1, never a traceback.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

from gtr import __version__
from gtr.configs import get_config
from gtr.plan import PlanError, build_plan, format_flops, plan_cost, preset_names

CACHE_ENV = "GTR_HOME"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "gtr"))


# ---------------------------------------------------------------------------------------------------
# Errors. Expected failures (bad input; a missing, unwritable or damaged file) end in one line on
# stderr and exit status 1. Anything else is a bug in gtr: one line that says so and names the file
# holding the full traceback (exit status 70), or, with --debug or GTR_DEBUG=1, the traceback itself.

DEBUG_ENV = "GTR_DEBUG"
INTERNAL_ERROR_EXIT = 70  # EX_SOFTWARE (sysexits.h): tells scripts "bug", not "bad input"

# The project's own error types, looked up by module: only a module already imported can have raised
# one, and looking them up this way keeps torch-free commands torch-free.
PROJECT_ERRORS = (("gtr.plan.plan", "PlanError"), ("gtr.configs", "ConfigError"),
                  ("gtr.runtime.bundle", "BundleError"), ("gtr.models.checkpoint", "CheckpointError"),
                  ("gtr.export.onnx_export", "ExportError"), ("gtr.eval.metrics", "EvalError"),
                  ("gtr.download", "DownloadError"), ("gtr.pipeline", "PipelineError"),
                  ("gtr.runtime.engine_store", "EngineError"), ("gtr.runtime.cuda", "CudaError"),
                  ("gtr.calibration.spec", "CalibrationError"))


class InternalError(click.ClickException):
    exit_code = INTERNAL_ERROR_EXIT


def _project_errors() -> tuple[type[BaseException], ...]:
    found = (getattr(sys.modules.get(module), name, None) for module, name in PROJECT_ERRORS)
    return tuple(t for t in found if isinstance(t, type))


def _first_line(e: BaseException) -> str:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)  # KeyError's str() adds quotes
    lines = text.strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _user_os_error(e: BaseException, args: dict) -> bool:
    """An OSError about a path argument of the command (or a folder above or inside one), or a full disk."""
    import errno
    if not isinstance(e, OSError):
        return False
    names = [n for n in (e.filename, e.filename2) if isinstance(n, (str, bytes, os.PathLike))]
    if not names:
        return e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    ctx = click.get_current_context(silent=True)
    path_params = {p.name for p in (ctx.command.params if ctx else []) if isinstance(p.type, click.Path)}
    given = [Path(os.path.abspath(v)) for key, value in args.items() if key in path_params
             for v in (value if isinstance(value, (list, tuple)) else (value,)) if isinstance(v, (str, os.PathLike))]
    for name in names:
        p = Path(os.path.abspath(os.fsdecode(name)))
        if any(p == g or g in p.parents or p in g.parents for g in given):
            return True
    return False


def _save_traceback(command: str) -> Path | None:
    """Write the traceback being handled to a new file in the temp folder; None if that fails too."""
    import platform
    import tempfile
    import traceback

    import gtr
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(tempfile.gettempdir()) / f"gtr-{command}-{stamp}-{os.getpid()}.log"
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(f"gtr {gtr.__version__}, python {platform.python_version()}\n"
                    f"command: {' '.join(sys.argv)}\n\n{traceback.format_exc()}")
    except OSError:
        return None
    return path


def _set_debug(ctx, param, value):
    if value:
        ctx.meta["gtr.debug"] = True


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get("gtr.debug")) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def friendly_errors(fn):
    """Turn the command's expected failures into one-line errors and report anything else as a bug.

    Also gives the command a --debug flag (same as GTR_DEBUG=1): errors then show their traceback.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            raise click.ClickException("interrupted") from None
        except Exception as e:  # noqa: BLE001 - sorted into expected failures and bugs below
            if _debug():
                raise
            if isinstance(e, _project_errors()):
                raise click.ClickException(_first_line(e)) from None
            if _user_os_error(e, kwargs):
                name = f"{os.fsdecode(e.filename)}: " if isinstance(e.filename, (str, bytes, os.PathLike)) else ""
                raise click.ClickException(f"{name}{e.strerror or e}") from None
            saved = _save_traceback(fn.__name__.removesuffix("_cmd"))
            if saved is None:  # nowhere to save it: show it rather than lose it
                import traceback
                traceback.print_exc()
            where = f"full traceback in {saved}" if saved else "traceback above"
            raise InternalError(f"internal error (a bug in gtr, please report it): {type(e).__name__}: "
                                f"{_first_line(e)} [{where}; rerun with --debug to show it]") from None

    return click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug, is_eager=True,
                        help="On an error, show the full Python traceback (also: GTR_DEBUG=1).")(wrapper)


# ---------------------------------------------------------------------------------------------------
# Plan options, shared by gtr-plan, gtr-export and gtr-eval.

def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected comma-separated integers, e.g. 8,6,2") from None


def plan_options(fn):
    options = [
        click.option("--gtr-steps", "stage_steps", callback=_int_list, metavar="M1,M2,..",
                     help="GtR: AR steps per stage (default 8,6,2; one number per stage)."),
        click.option("--stages", "num_stages", type=int, help="GtR: number of stages K (default 3)."),
        click.option("--t-gen", "t_gen", callback=_int_list, metavar="MAX,MIN",
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
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


PLAN_OPTION_NAMES = ("stage_steps", "num_stages", "t_gen", "t_rec", "fts", "fts_beta", "t_detail", "fts_select",
                     "order", "diffusion_steps", "diffusion_steps_min", "cfg", "cfg_schedule", "temperature")


def make_plans(names, config, options: dict, default_cfg: bool = True):
    """Build plans by name for a model config; builder options that a plan does not take are skipped
    for that plan (so `--plan gtr --plan mar-64 --t-rec 10` changes only the GtR plan)."""
    from gtr.plan.builders import OVERRIDES, PRESETS
    opts = {k: options.get(k) for k in PLAN_OPTION_NAMES}
    t_gen = opts.pop("t_gen")
    if t_gen is not None:
        if len(t_gen) != 2:
            raise click.BadParameter("--t-gen takes MAX,MIN")
        opts["t_gen_max"], opts["t_gen_min"] = t_gen
    if opts["cfg"] is None and default_cfg:
        opts["cfg"] = config.default_cfg
    opts = {k: v for k, v in opts.items() if v is not None}
    plans = []
    for name in names:
        builder = PRESETS[name].builder if name in PRESETS else ("mar" if name.startswith("mar-") else None)
        allowed = OVERRIDES[builder] if builder else ("cfg", "cfg_schedule", "temperature")
        plans.append(build_plan(name, grid=config.grid, **{k: v for k, v in opts.items() if k in allowed}))
    if len({p.name for p in plans}) != len(plans):
        raise click.BadParameter("each --plan must have a different name")
    return plans


def echo_plan(plan, config=None, baseline: str | None = "mar-64") -> None:
    """Print a plan's step table and (with a model config) its cost, and the ratio to the baseline."""
    click.echo(f"plan {plan.name}: {plan.grid[0]}x{plan.grid[1]} grid, {plan.num_steps} AR steps, "
               f"cfg {plan.cfg:g} ({plan.cfg_schedule}), temperature {plan.temperature:g}")
    click.echo(f"{'step':>4} {'stage':>5} {'known':>5} {'predict':>7}  {'groups (tokens@T)':<22} {'cfg w':>7}")
    for row in plan.table():
        click.echo(f"{row['step']:>4} {row['stage']:>5} {row['known']:>5} {row['predict']:>7}  "
                   f"{row['groups']:<22} {row['cfg_weight']:>7.4f}")
    click.echo(f"diffusion token-steps per image and branch: {plan.token_steps():,}")
    if config is None:
        return
    cost = plan_cost(plan, config)
    click.echo(f"cost on {config.name} (per image{', CFG doubles both parts' if plan.uses_cfg else ''}): "
               f"backbone {format_flops(cost.backbone_flops)} + diffusion MLP {format_flops(cost.head_flops)} "
               f"= {format_flops(cost.total_flops)}")
    if baseline and plan.name != baseline:
        base = build_plan(baseline, grid=config.grid, cfg=plan.cfg, cfg_schedule=plan.cfg_schedule)
        base_cost = plan_cost(base, config)
        click.echo(f"vs {baseline} ({format_flops(base_cost.total_flops)}): "
                   f"{base_cost.total_flops / cost.total_flops:.2f}x fewer FLOPs, "
                   f"{base_cost.backbone_passes / cost.backbone_passes:.2f}x fewer backbone passes, "
                   f"{base_cost.head_token_steps / cost.head_token_steps:.2f}x fewer diffusion token-steps")


@click.group("plan", context_settings={"help_option_names": ["-h", "--help"]})
def plan_cmd():
    """Sampling plans: show a plan's steps and cost, list the presets."""


@plan_cmd.command("list")
def plan_list_cmd():
    """List the preset plans."""
    from gtr.plan.builders import PRESETS
    for name, preset in PRESETS.items():
        click.echo(f"{name:<8} {preset.help}")
    click.echo("mar-N    official MAR with N AR steps, 100 diffusion steps")


@plan_cmd.command("show")
@click.argument("plan", default="gtr")
@click.option("--model", "-m", default=None, help="Model whose grid and cost to use (default: mar-b's 16x16 grid, no cost).")
@click.option("--grid", default=None, metavar="HxW", help="Token grid when no --model is given (default 16x16).")
@plan_options
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the plan as JSON to this file.")
@click.option("--name", help="Rename the plan (the name other commands select it by, e.g. in a bundle).")
@friendly_errors
def plan_show_cmd(plan, model, grid, json_out, name, **options):
    """Show a sampling plan: its step table and, with --model, its cost.

    PLAN is a preset (gtr, gtr-32, mar-64, mar-256, ...), mar-N for any N, or a plan .json file.

    \b
    Examples:
      gtr-plan show gtr --model mar-h          # GtR table, FLOPs, ratio to mar-64
      gtr-plan show mar-64 --model mar-h
      gtr-plan show gtr --gtr-steps 6,8,2 --t-rec 10 --json my-plan.json
    """
    if model is not None:
        config = get_config(model)
    else:
        config = None
        h, w = _parse_grid(grid or "16x16")
    if config is not None and grid is not None:
        raise click.BadParameter("give --model or --grid, not both")
    if config is None:
        from types import SimpleNamespace
        [p] = make_plans([plan], SimpleNamespace(grid=(h, w), default_cfg=1.0), options)
    else:
        [p] = make_plans([plan], config, options)
    if name:
        p = p.replace(name=name)
    echo_plan(p, config)
    if json_out:
        from gtr.runtime.files import atomic_write_text
        atomic_write_text(json_out, p.to_json())
        click.echo(f"wrote {json_out}")


def _parse_grid(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w
    except ValueError:
        raise click.BadParameter(f"grid must look like 16x16, got {text!r}") from None


# ---------------------------------------------------------------------------------------------------
# gtr-export

# Plans exported when no --plan is given; the first is gtr-run's default.
DEFAULT_PLANS = {}


def find_weights(model: str, checkpoint: str | None, vae: str | None) -> tuple[Path, Path]:
    """Explicit paths, else the cache: $GTR_HOME/<model>/checkpoint-last.pth and $GTR_HOME/kl16.ckpt."""
    ckpt = Path(checkpoint) if checkpoint else cache_dir() / model / "checkpoint-last.pth"
    vae_path = Path(vae) if vae else cache_dir() / "kl16.ckpt"
    missing = [p for p in (ckpt, vae_path) if not p.is_file()]
    if missing:
        from gtr.download import OFFICIAL  # the official URLs live with the downloader
        how = (f"fetch them with `gtr download {model}` or --download (`gtr download {model} --dry-run` shows "
               f"the official URLs), " if model in OFFICIAL else "")
        raise click.ClickException(f"missing weights: {', '.join(map(str, missing))} ({how}pass "
                                   f"--checkpoint/--vae, or export an untrained model with --random-weights)")
    return ckpt, vae_path


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
                   "for gtr-run. Default: gtr and mar-64 (mar-tiny: mar-64 first).")
@plan_options
@click.option("--batch", type=int, default=1, show_default=True, help="Images per engine call (static shapes are listed for it).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --random-weights.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Bundle path (default <model>-<precision>.plan).")
@click.option("--download", is_flag=True,
              help="Fetch the official weights into $GTR_HOME first (as `gtr download MODEL`; verified if there).")
@click.option("--calib-classes", metavar="LIST",
              help="int8: calibration classes, e.g. 0-9 or 1,207,360 (default: 10 evenly spaced classes).")
@click.option("--calib-seeds", type=int, help="int8: calibration images per class (seeds 10000, 10001, ...; default 2).")
@click.option("--calib-method", type=click.Choice(["max", "percentile", "entropy"]),
              help="int8: activation range method (default max, chosen by measured quality).")
@friendly_errors
def export_cmd(model, precision, checkpoint, weights, vae, random_weights, plans, batch, seed, output, download,
               calib_classes, calib_seeds, calib_method, **options):
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
    from gtr.download import DownloadError
    from gtr.export.api import export  # the same code path as gtr.export(...) in Python
    calibration = None
    if (calib_classes, calib_seeds, calib_method) != (None, None, None):
        from gtr.calibration import DEFAULT_METHOD, DEFAULT_SEEDS, CalibrationSpec, parse_classes
        calibration = CalibrationSpec(parse_classes(calib_classes), DEFAULT_SEEDS if calib_seeds is None else calib_seeds,
                                      calib_method or DEFAULT_METHOD)
    try:
        export(model, output, precision=precision, plans=plans, checkpoint=checkpoint, vae=vae, weights=weights,
               random_weights=random_weights, download=download, batch=batch, seed=seed, log=click.echo,
               calibration=calibration, **options)
    except DownloadError as e:
        raise click.ClickException(str(e)) from None


# ---------------------------------------------------------------------------------------------------
# gtr download

@click.command("download", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("models", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True, help="Print what would be fetched from where to where; fetch nothing.")
@friendly_errors
def download_cmd(models, dry_run):
    """Fetch the official weights of MODELS (mar-b, mar-l, mar-h, kl16) into $GTR_HOME.

    Each MAR model brings the KL-16 VAE. Partial files resume, sizes are checked, files appear only
    when complete, and the sha256 recorded at download (<file>.sha256) is verified on every later run.
    $GTR_MIRROR replaces the official URLs with a mirror of the same layout.

    \b
    Examples:
      gtr download mar-b --dry-run
      gtr download mar-l mar-h
    """
    from gtr.download import DownloadError, downloads, fetch, state
    try:
        for d in downloads(models, cache_dir()):
            if dry_run:
                click.echo(f"{d.name}: {d.url}\n  -> {d.dest} [{state(d)}]")
            else:
                click.echo(f"{d.name}: {fetch(d)} ({d.dest})")
    except DownloadError as e:
        raise click.ClickException(str(e)) from None


# ---------------------------------------------------------------------------------------------------
# gtr-run

def _labels(classes, num_images, num_classes):
    for c in classes:
        if not 0 <= c < num_classes:
            raise click.BadParameter(f"class {c} is out of range: the model has {num_classes} classes (0..{num_classes - 1})",
                                     param_hint="--class")
    if num_images < 1:
        raise click.BadParameter("--num-images must be >= 1")
    return [c for c in classes for _ in range(num_images)] if classes else [None] * num_images


def _shard(ctx, param, value):
    if value is None:
        return None
    from gtr.runtime.shards import parse_shard
    try:
        return parse_shard(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command("run", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--class", "-c", "classes", type=int, multiple=True, help="Class id to generate (repeatable). None: unconditional.")
@click.option("--all-classes", is_flag=True, help="Every class of the model (ImageNet: 0..999), e.g. for FID runs.")
@click.option("--num-images", "-n", type=int, default=1, show_default=True, help="Images per class.")
@click.option("--seed", "-s", type=int, default=0, show_default=True,
              help="Run seed; each sampling call's seed is derived from it, the class and the first image index.")
@click.option("--plan", "plan_name", help="Which of the bundle's plans to run (default: the first).")
@click.option("--cfg", type=float, help="Override the plan's CFG scale (1 = no guidance).")
@click.option("--temperature", type=float, help="Override the plan's diffusion temperature.")
@click.option("--batch", type=int, help="Images per sampling call (default: the bundle's export batch).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output PNG (one image, or the grid with --grid).")
@click.option("--outdir", type=click.Path(file_okay=False),
              help="Write one PNG per image into this folder (class0088_00012.png); images already there are kept (resume).")
@click.option("--shard", callback=_shard, metavar="I/N",
              help="With --outdir: make only shard I of N (0 <= I < N); the N shards together make the whole run.")
@click.option("--npz", type=click.Path(dir_okay=False),
              help="With --outdir: then pack the run's images into this .npz (uint8 arr_0 [N,H,W,3], for FID evaluators).")
@click.option("--grid", "as_grid", is_flag=True, help="Write all images as one grid PNG (one row per class).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="onnxruntime execution provider.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "tensorrt"]), default="auto", show_default=True,
              help="auto: the bundle's TensorRT engines when they match this GPU and TensorRT (gtr-build), "
                   "else onnxruntime.")
@click.option("--rebuild", is_flag=True,
              help="Build the TensorRT engines this machine lacks into the bundle first (as gtr-build BUNDLE).")
@friendly_errors
def run_cmd(bundle, classes, all_classes, num_images, seed, plan_name, cfg, temperature, batch, output, outdir, shard,
            npz, as_grid, device, backend, rebuild):
    """Generate images from a .plan bundle (numpy + onnxruntime; no PyTorch needed).

    An image depends on (--seed, class, index, --batch, -n) only: with --outdir, runs resume (files that
    exist and decode are skipped) and --shard I/N splits a run over N workers that together write the
    same files, byte for byte, as one unsharded run.

    \b
    Examples:
      gtr-run mar-tiny-fp32.plan --class 3 -o three.png
      gtr-run mar-tiny-fp32.plan -c 0 -c 1 -c 2 -n 4 --grid -o grid.png
      gtr-run mar-l-fp16.plan --class 88 --plan mar-64 -n 8 --outdir samples/
      gtr-run mar-l-fp16.plan --all-classes -n 50 --outdir samples/ --shard 0/4    # worker 0 of 4
      gtr-run mar-l-fp16.plan --all-classes -n 50 --outdir samples/ --npz samples.npz
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
    if output is None and outdir is None:
        output = "out.png"
    try:
        pipe = Pipeline(bundle, device=device, backend=backend, rebuild=rebuild)  # the code path of gtr.load(...)
        classes = tuple(range(pipe.config.num_classes)) if all_classes else classes
        if output and max(len(classes), 1) * num_images > 1 and not as_grid:
            raise click.BadParameter(f"{max(len(classes), 1) * num_images} images: use --grid for one PNG, "
                                     f"or --outdir for one file each")
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


def select_plan(b, plan_name, cfg=None, temperature=None):
    plans = b.plans()
    name = plan_name or next(iter(plans))
    if name not in plans:
        raise click.BadParameter(f"the bundle has no plan {name!r}; it has: {', '.join(plans)}", param_hint="--plan")
    plan = plans[name]
    if cfg is not None:
        plan = plan.replace(cfg=cfg)  # the CFG head graph is always exported
    if temperature is not None:
        plan = plan.replace(temperature=temperature)
    return plan


# ---------------------------------------------------------------------------------------------------
# gtr-inspect

@click.command("inspect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--plans/--no-plans", "show_plans", default=True, help="Print each plan's step table.")
@friendly_errors
def inspect_cmd(bundle, show_plans):
    """Print a bundle's manifest: model, precision, plans, graphs, sizes, tool versions."""
    from gtr.runtime.bundle import read_bundle
    b = read_bundle(bundle)
    m, config = b.manifest, b.config
    click.echo(f"{bundle}: gtr bundle format {m['format_version']}, written {m.get('created', '?')} by gtr {m.get('gtr_version', '?')}")
    click.echo(f"model {config.name}: {config.img_size}px, grid {config.grid[0]}x{config.grid[1]}, "
               f"D {config.encoder_embed_dim}/{config.decoder_embed_dim}, depth {config.encoder_depth}/{config.decoder_depth}, "
               f"head {config.diffloss_d}x{config.diffloss_w}, {config.num_classes} classes"
               + ("  [RANDOM WEIGHTS]" if m.get("random_weights") else ""))
    click.echo(f"precision {m['precision']}, backend {m.get('backend', '?')}, batch {m.get('batch', '?')}")
    cal = m.get("calibration")
    if cal:
        click.echo(f"calibration: {cal.get('method')} ranges, plans {', '.join(cal.get('plans', []))}, classes "
                   f"{cal.get('classes')}, seeds {cal.get('seeds')}, {cal.get('library')} {cal.get('library_version')}"
                   + ("  [RANDOM WEIGHTS]" if cal.get("random_weights") else ""))
    for name, src in (m.get("sources") or {}).items():
        click.echo(f"source {name}: {src}")
    click.echo("graphs:")
    for name, g in m["graphs"].items():
        shapes = g.get("static_shapes", [])
        ins = ", ".join(f"{i['name']}{list(i['shape'])}" for i in g.get("inputs", []))
        click.echo(f"  {name}: {len(shapes)} static shape(s); inputs {ins}")
    click.echo("members:")
    for name, mem in m["members"].items():
        click.echo(f"  {name}: {mem['length'] / 2**20:.2f} MiB sha256 {mem['sha256'][:16]}…")
    for e in m.get("engines") or []:
        key = e.get("key") or {}
        click.echo(f"engine {e.get('component')}: TensorRT {key.get('tensorrt')}, {key.get('gpu')} "
                   f"(sm {key.get('compute_capability')}), {len(e.get('profiles') or [])} profile(s), member {e.get('member')}")
    click.echo("tools: " + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()))
    for i, plan in enumerate(b.plans().values()):
        click.echo("")
        if show_plans:
            echo_plan(plan, config, baseline=None)
        else:
            cost = plan_cost(plan, config)
            click.echo(f"plan {plan.name}{' (default)' if i == 0 else ''}: {plan.num_steps} AR steps, "
                       f"{format_flops(cost.total_flops)} per image")


# ---------------------------------------------------------------------------------------------------
# gtr-check

@click.command("check", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="MAR checkpoint (default: the one recorded at export).")
@click.option("--vae", type=click.Path(dir_okay=False), help="VAE checkpoint (default: the one recorded at export).")
@click.option("--plan", "plan_name", help="Plan to check (default: every plan in the bundle).")
@click.option("--class", "-c", "classes", type=int, multiple=True, help="Class ids (default: 0 and 1).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime", show_default=True,
              help="tensorrt: compare the bundle's TensorRT engines with onnxruntime and the reference (Polygraphy).")
@friendly_errors
def check_cmd(bundle, checkpoint, vae, plan_name, classes, seed, backend):
    """Run the bundle and the PyTorch reference on the same seed and compare (needs torch).

    Prints the max token error (relative to the token scale), the image PSNR, and pass/fail against the
    tolerances of the bundle's precision (fp32: tokens <= 1e-3 relative and PSNR >= 40 dB; fp16: PSNR >= 30 dB;
    int8: PSNR >= 25 dB).
    """
    from gtr.export.weights import build_models
    from gtr.runtime.bundle import read_bundle
    from gtr.runtime.onnx_backend import OnnxComponents
    from gtr.models.reference import TorchComponents
    from gtr.runtime.sampler import sample

    b = read_bundle(bundle)
    m, config = b.manifest, b.config
    src = m.get("sources") or {}
    mar, vae_model, _ = build_models(config, checkpoint=checkpoint or src.get("checkpoint"), vae=vae or src.get("vae"),
                                     weights=src.get("weights", "ema"), random_weights=bool(m.get("random_weights")),
                                     seed=int(src.get("random_seed", 0)), find_weights=find_weights)
    labels = list(classes) or [c % config.num_classes for c in (0, 1)]
    _labels(labels, 1, config.num_classes)
    plans = b.plans()
    names = [plan_name] if plan_name else list(plans)
    ort_comps, torch_comps = OnnxComponents(b), TorchComponents(mar, vae_model)
    if backend == "tensorrt":  # engines vs onnxruntime and torch, with Polygraphy's comparator
        from gtr.backends import make_components
        from gtr.engines.check import compare_backends
        trt_comps, _ = make_components(b, "tensorrt")
        runners = {"tensorrt": trt_comps, "onnxruntime": ort_comps, "torch": torch_comps}
        if not compare_backends(runners, [select_plan(b, n) for n in names], labels, seed, config, m["precision"],
                                echo=click.echo):
            raise click.ClickException("the TensorRT engines do not match onnxruntime and the reference within tolerance")
        return
    failed = False
    for name in names:
        plan = select_plan(b, name)
        kw = dict(token_dim=config.token_dim, num_classes=config.num_classes)
        got = sample(ort_comps, plan, labels, seed, **kw)
        ref = sample(torch_comps, plan, labels, seed, **kw)
        token_err = float(np.abs(got.tokens - ref.tokens).max() / max(np.abs(ref.tokens).max(), 1e-12))
        psnr = image_psnr(got.images, ref.images)
        # int8: no token bound (rounding moves tokens, and the AR loop carries that into later steps);
        # on mar-tiny int8 gives 31-43 dB, a broken int8 graph well under 20 dB (README, INT8).
        min_psnr = {"fp16": 30.0, "int8": 25.0}.get(m["precision"], 40.0)
        ok = psnr >= min_psnr and (m["precision"] in ("fp16", "int8") or token_err <= 1e-3)
        failed |= not ok
        click.echo(f"{name}: token max error {token_err:.2e} (relative), image PSNR {psnr:.1f} dB -> "
                   f"{'PASS' if ok else 'FAIL'}")
    if failed:
        raise click.ClickException("the bundle does not match the reference within tolerance")


def image_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two image batches in [-1, 1] (peak-to-peak 2), after clipping as the PNG output does."""
    a, b = np.clip(a, -1, 1), np.clip(b, -1, 1)
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)


# ---------------------------------------------------------------------------------------------------

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gtr")  # the distribution is gtr-mar; the commands stay gtr
def main():
    """gtr: deploy MAR image generators with GtR two-stage sampling.

    Export once with `gtr export`, generate anywhere with `gtr run`.
    """


for _cmd in (export_cmd, download_cmd, run_cmd, plan_cmd, inspect_cmd, check_cmd):
    main.add_command(_cmd)


# ---------------------------------------------------------------------------------------------------
# gtr-eval

@click.command("eval", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bundle", type=click.Path(dir_okay=False), help="Evaluate a .plan bundle (onnxruntime) instead of the torch reference.")
@click.option("--model", "-m", default="mar-tiny", show_default=True, help="Model for the torch reference.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="MAR checkpoint for the torch reference (default: shipped mar-tiny).")
@click.option("--vae", type=click.Path(dir_okay=False), help="VAE checkpoint for the torch reference.")
@click.option("--plan", "plans", multiple=True, metavar="PLAN",
              help="Plan(s) to compare (repeatable). Default: the bundle's plans, or mar-64 and gtr.")
@click.option("--suite", type=click.Choice(["paper", "sweep"]),
              help="Evaluate a named set of plans instead of --plan: 'paper' = the GtR paper's baselines and "
                   "ablations, 'sweep' = MAR and GtR at several AR-step counts (the quality-vs-FLOPs frontier).")
@plan_options
@click.option("--per-class", type=int, default=20, show_default=True, help="Images per class.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch", type=int, default=10, show_default=True, help="Images per sampling call.")
@click.option("--outdir", type=click.Path(file_okay=False), default="eval-out", show_default=True,
              help="Where results.json, grid-<plan>.png and quality_vs_cost.png go.")
@friendly_errors
def eval_cmd(bundle, model, checkpoint, vae, plans, suite, per_class, seed, batch, outdir, **options):
    """Measure sample quality against cost for one or more plans (digit models: mar-tiny).

    Reports class accuracy under the shipped digit classifier, the Frechet distance of its features to
    held-out real digits (an FID-style number on digits, not ImageNet FID; compare only at equal
    --per-class), FLOPs per image from the plan's cost model, and measured seconds per image.

    \b
    Examples:
      gtr-eval --plan mar-64 --plan gtr --per-class 20 --outdir eval-out
      gtr-eval --suite paper --per-class 20 --outdir eval-paper     # baselines + ablations
      gtr-eval --suite sweep --per-class 20 --outdir eval-sweep     # quality-vs-FLOPs frontier
      gtr-eval --bundle mar-tiny-fp32.plan --suite paper           # the same plans on onnxruntime
    """
    from gtr.eval.report import format_table, quality_cost_plot, write_json
    from gtr.eval.run import evaluate_plans
    if per_class < 2 or batch < 1:
        raise click.BadParameter("--per-class must be >= 2 and --batch >= 1")
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
            plan_objs = [select_plan(b, name, options.get("cfg"), options.get("temperature"))
                         for name in (plans or list(b.plans()))]
        comps, backend = OnnxComponents(b), f"bundle {bundle}"
    else:
        from gtr.export.weights import build_models
        from gtr.models.reference import TorchComponents
        config = get_config(model)
        if suite:
            plan_objs, families = _suite(suite, config, options)
        else:
            plan_objs = make_plans(plans or ("mar-64", "gtr"), config, options)
        mar, vae_model, _ = build_models(config, checkpoint=checkpoint, vae=vae, find_weights=find_weights)
        comps, backend = TorchComponents(mar, vae_model), "torch reference (CPU)"
    click.echo(f"evaluating {config.name} with {backend}: {per_class} images per class, seed {seed}")
    from tqdm import tqdm
    bars = {}

    def progress(name, done, total):
        bar = bars.setdefault(name, tqdm(total=total, desc=name, unit="img", leave=False, disable=None))
        bar.update(done - bar.n)

    rows = evaluate_plans(comps, plan_objs, config, per_class, seed=seed, batch=batch, outdir=outdir,
                          log=lambda s: tqdm.write(s), progress=progress)
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
                                                    seed=seed, suite=suite, plans=[p.to_dict() for p in plan_objs], rows=rows))
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


main.add_command(eval_cmd)


# ---------------------------------------------------------------------------------------------------
# gtr-build

@click.command("build", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the bundle with its engines here (default: BUNDLE itself, replaced atomically).")
@click.option("--dry-run", is_flag=True, help="Print each component's profiles and engine cache key; build nothing "
                                              "(needs no TensorRT).")
@click.option("--workspace", type=int, metavar="MB", help="TensorRT workspace limit (default: TensorRT's, the GPU's memory).")
@click.option("--timing-cache", type=click.Path(dir_okay=False),
              help="Timing cache file, read and updated (default: $GTR_HOME/tensorrt/<TensorRT-GPU>.timing-cache).")
@click.option("--device", type=int, default=0, show_default=True, help="CUDA device to build for.")
@click.option("--max-profiles", type=int, default=None, metavar="N",
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
    from gtr.runtime.profiles import MAX_PROFILES
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


main.add_command(build_cmd)

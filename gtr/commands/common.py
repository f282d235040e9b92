"""Shared by every command: $GTR_HOME, one-line errors (friendly_errors), plan options."""
from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import click

from gtr.plan import build_plan, format_flops, plan_cost


CACHE_ENV = "GTR_HOME"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "gtr"))


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
                  ("gtr.calibration.spec", "CalibrationError"), ("gtr.extras", "MissingExtra"))


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

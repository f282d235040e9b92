"""gtr-plan: show a plan's steps and cost, list the presets."""
from __future__ import annotations


import click

from gtr.commands.errors import debug_option, friendly_errors
from gtr.commands.numbers import Grid
from gtr.commands.plan_options import plan_options
from gtr.configs import get_config
from gtr.plan import build_plan, format_flops, plan_cost
from gtr.plan.options import make_plans


@click.group("plan", context_settings={"help_option_names": ["-h", "--help"]})
@debug_option
def plan_cmd():
    """Sampling plans: show a plan's steps and cost, list the presets."""


@plan_cmd.command("list")
@friendly_errors
def plan_list_cmd():
    """List the plans by name: the presets, mar-N, and the variants of the paper's tables."""
    from gtr.plan.builders import PRESETS, VARIANTS
    width = max(map(len, [*PRESETS, *VARIANTS]))
    for name, preset in PRESETS.items():
        click.echo(f"{name:<{width}}  {preset.help}")
    click.echo(f"{'mar-N':<{width}}  official MAR with N AR steps, 100 diffusion steps")
    click.echo("variants (gtr-eval --suite paper / sweep):")
    for name, preset in VARIANTS.items():
        click.echo(f"{name:<{width}}  {preset.help}")


@plan_cmd.command("show")
@click.argument("plan", default="gtr")
@click.option("--model", "-m", default=None,
              help="Model whose grid, CFG scale and cost to use (without it: a 16x16 grid, cfg 1, no cost).")
@click.option("--grid", type=Grid(), default=None, metavar="HxW", help="Token grid when no --model is given (default 16x16).")
@plan_options
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Also write the plan as JSON to this file (for the --model's grid: a plan file fits one grid).")
@click.option("--name", help="Rename the plan (the name other commands select it by, e.g. in a bundle).")
@friendly_errors
def plan_show_cmd(plan, model, grid, json_out, name, **options):
    """Show a sampling plan: its step table and, with --model, its cost.

    PLAN is a preset (gtr, gtr-32, mar-64, mar-256, ...), mar-N for any N, a variant of the paper's
    tables (gtr-no-fts, gtr-8, mar-64-anneal, ...; see gtr-plan list), or a plan .json file.
    Without --model (or --grid) the plan is laid out on a 16x16 grid (mar-b, mar-l, mar-h) with cfg 1,
    and the first line says so.

    \b
    Examples:
      gtr-plan show gtr --model mar-h          # GtR table, FLOPs, ratio to mar-64
      gtr-plan show mar-64 --model mar-h
      gtr-plan show gtr --model mar-tiny --gtr-steps 6,8,2 --t-rec 10 --json my-plan.json
      gtr-export --model mar-tiny --plan my-plan.json   # a bundle with that plan
    """
    if json_out:
        from gtr.runtime.files import check_writable
        check_writable(json_out)
    if model is not None and grid is not None:
        raise click.BadParameter("give --model or --grid, not both")
    if model is not None:
        config = get_config(model)
        [p] = make_plans([plan], config, options)
    else:
        from types import SimpleNamespace
        config, (h, w) = None, _parse_grid(grid or "16x16")
        [p] = make_plans([plan], SimpleNamespace(grid=(h, w), default_cfg=1.0), options)
        if grid is None:
            cfg = "" if options.get("cfg") is not None else " and cfg 1 (no CFG)"
            click.echo(f"no --model: assuming a {h}x{w} grid (mar-b, mar-l, mar-h){cfg}; "
                       f"give --model M for M's grid, CFG scale and cost")
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


def echo_plan(plan, config=None, baseline: str | None = "mar-64") -> None:
    """Print a plan's step table and (with a model config) its cost, and the ratio to the baseline."""
    click.echo(f"plan {plan.name}: {plan.grid[0]}x{plan.grid[1]} grid, {plan.num_steps} AR steps, "
               f"cfg {plan.cfg:g} ({plan.cfg_schedule}), temperature {plan.temperature:g}")
    cache = any(s.cond != "full" for s in plan.steps)
    click.echo(f"{'step':>4} {'stage':>5} {'known':>5} {'predict':>7}  {'groups (tokens@T)':<22} {'cfg w':>7}"
               + ("  cond" if cache else ""))
    for row in plan.table():
        click.echo(f"{row['step']:>4} {row['stage']:>5} {row['known']:>5} {row['predict']:>7}  "
                   f"{row['groups']:<22} {row['cfg_weight']:>7.4f}" + (f"  {row['cond']}" if cache else ""))
    click.echo(f"diffusion token-steps per image and branch: {plan.token_steps():,}")
    if cache:
        modes = [plan.cond_mode(i) for i in range(plan.num_steps)]
        click.echo(f"condition cache: {modes.count('cached')} of {plan.num_steps} steps cached (backbone on the "
                   f"conditional rows only), {modes.count('refresh')} refresh steps"
                   + ("" if plan.uses_cfg else " (no effect: the plan has no CFG)"))
    if config is None:
        return
    cost = plan_cost(plan, config)
    cfg_note = ""
    if plan.uses_cfg:
        cfg_note = ", CFG doubles both parts" + (" except cached steps' backbone" if cost.cached_steps else "")
    click.echo(f"cost on {config.name} (per image{cfg_note}): "
               f"backbone {format_flops(cost.backbone_flops)} + diffusion MLP {format_flops(cost.head_flops)} "
               f"= {format_flops(cost.total_flops)}")
    if baseline and plan.name != baseline:
        base = build_plan(baseline, grid=config.grid, cfg=plan.cfg, cfg_schedule=plan.cfg_schedule)
        base_cost = plan_cost(base, config)
        click.echo(f"vs {baseline} ({format_flops(base_cost.total_flops)}): "
                   f"{base_cost.total_flops / cost.total_flops:.2f}x fewer FLOPs, "
                   f"{base_cost.backbone_passes / cost.backbone_passes:.2f}x fewer backbone passes, "
                   f"{base_cost.head_token_steps / cost.head_token_steps:.2f}x fewer diffusion token-steps")

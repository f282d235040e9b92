"""gtr-inspect: a bundle's manifest."""
from __future__ import annotations


import click

from gtr.plan import format_flops, plan_cost
from gtr.commands.errors import friendly_errors
from gtr.commands.plan import echo_plan


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

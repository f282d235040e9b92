"""Command line: the `gtr` group and the gtr-* scripts; each command lives in gtr/commands/<name>.py.

Only click, numpy and the torch-free parts of gtr are imported at module level, so `gtr-run`,
`gtr-plan` and `gtr-inspect` work where torch is not installed. Every expected failure (bad input,
missing or damaged file) ends in a one-line error and exit status 1, never a traceback.
"""
from __future__ import annotations

import click

from gtr import __version__
from gtr.commands.bench import bench_cmd
from gtr.commands.build import build_cmd
from gtr.commands.check import check_cmd, image_psnr
from gtr.commands.common import PLAN_OPTION_NAMES, cache_dir, echo_plan, friendly_errors, make_plans, plan_options
from gtr.commands.download import download_cmd
from gtr.commands.eval import eval_cmd
from gtr.commands.export import DEFAULT_PLANS, export_cmd, find_weights
from gtr.commands.inspect import inspect_cmd
from gtr.commands.plan import plan_cmd
from gtr.commands.run import run_cmd, select_plan

# What other modules and the gtr-* scripts import from here.
__all__ = ["main", "bench_cmd", "build_cmd", "check_cmd", "download_cmd", "eval_cmd", "export_cmd", "inspect_cmd", "plan_cmd",
           "run_cmd", "image_psnr", "PLAN_OPTION_NAMES", "cache_dir", "echo_plan", "friendly_errors", "make_plans",
           "plan_options", "DEFAULT_PLANS", "find_weights", "select_plan"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gtr")  # the distribution is gtr-mar; the commands stay gtr
def main():
    """gtr: deploy MAR image generators with GtR two-stage sampling.

    Export once with `gtr export`, generate anywhere with `gtr run`.
    """


for _cmd in (export_cmd, download_cmd, run_cmd, plan_cmd, inspect_cmd, check_cmd, eval_cmd, build_cmd, bench_cmd):
    main.add_command(_cmd)

"""Command line: the `gtr` group; each command lives in gtr/commands/<name>.py (the gtr-* scripts
point there directly). This module assembles the group and exports nothing else.

Only click, numpy and the torch-free parts of gtr are imported at module level, so `gtr-run`,
`gtr-plan` and `gtr-inspect` work where torch is not installed. Every expected failure (bad input,
missing or damaged file) ends in a one-line error and exit status 1, never a traceback.
"""
from __future__ import annotations

import click

from gtr._version import __version__
from gtr.commands.bench import bench_cmd
from gtr.commands.build import build_cmd
from gtr.commands.check import check_cmd
from gtr.commands.download import download_cmd
from gtr.commands.errors import debug_option
from gtr.commands.eval import eval_cmd
from gtr.commands.export import export_cmd
from gtr.commands.inspect import inspect_cmd
from gtr.commands.plan import plan_cmd
from gtr.commands.run import run_cmd
from gtr.commands.serve import serve_cmd

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gtr")  # the distribution is gtr-mar; the commands stay gtr
@debug_option
def main():
    """gtr: deploy MAR image generators with GtR two-stage sampling.

    Export once with `gtr export`, generate anywhere with `gtr run`.
    """


for _cmd in (export_cmd, download_cmd, run_cmd, plan_cmd, inspect_cmd, check_cmd, eval_cmd, build_cmd, bench_cmd,
             serve_cmd):
    main.add_command(_cmd)

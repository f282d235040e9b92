"""The --threads option of every command that samples (gtr-run, gtr-check, gtr-eval --bundle, gtr serve)."""
from __future__ import annotations

import click

from gtr.commands.numbers import Int
from gtr.inputs import THREADS


def threads_option(fn):
    return click.option("--threads", type=Int(THREADS), default=None,
                        help="CPU threads for the graph calls (default: the CPUs this process may use: its "
                             "affinity and cgroup quota). Changes only speed, never the images.")(fn)

"""The --threads option of every command that samples (gtr-run, gtr-check, gtr-eval --bundle, gtr serve)."""
from __future__ import annotations

import click


def threads_option(fn):
    return click.option("--threads", type=click.IntRange(1), default=None,
                        help="CPU threads for the graph calls (default: the CPUs this process may use: its "
                             "affinity and cgroup quota). Changes only speed, never the images.")(fn)

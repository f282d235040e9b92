"""Helpers for tests that run the CLI in-process."""
from click.testing import CliRunner

from gtr.cli import main


def run(*args):
    """`gtr ARGS...` in-process; returns click's Result."""
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r):
    """Assert an expected failure (exit 1 or 2, exactly one `Error` line, no traceback); return that line."""
    assert r.exit_code in (1, 2), (r.exit_code, r.output)  # an expected failure, not an internal error
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, r.output
    return errors[0]

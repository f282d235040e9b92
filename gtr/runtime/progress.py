"""Progress of long steps: a tqdm bar on a terminal, one plain line per step anywhere else.

    with progress_bar(total=8, desc="gtr", unit="img") as bar:
        for batch in batches:
            ...
            bar.update(len(batch))        # not a terminal: "gtr: 4/8 img (2.1 s)"

A bar redrawn with carriage returns is noise in a log, a pipe or CI, and tqdm's own answer there
(disable=None) is to print nothing at all, so a slow export or download looks hung. Where stderr is
not a terminal each update is one line instead (at most one per `every` seconds, and always the last).
A status (set_postfix_str, e.g. the AR step) shows in the next line, or alone after `quiet` seconds
without one: a slow model still says where it is.
"""
from __future__ import annotations

import sys
import time


def progress_bar(total: int | None, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0,
                 every: float = 0.0, quiet: float = 10.0, file=None):
    """A tqdm bar (terminal), LineProgress (anything else) or a disabled tqdm (enabled False). unit "B"
    counts bytes (shown in MiB)."""
    from tqdm import tqdm
    file = sys.stderr if file is None else file
    if not enabled:
        return tqdm(total=total, disable=True)
    isatty = getattr(file, "isatty", None)
    if isatty is not None and isatty():
        scale = dict(unit_scale=True, unit_divisor=1024) if unit == "B" else {}
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, file=file, **scale)
    return LineProgress(total, desc, unit, initial, every, quiet, file)


class LineProgress:
    """The part of tqdm's interface the commands use (update, n, set_postfix_str, close, with), as
    lines: `desc: n/total unit (elapsed s, status)`."""

    def __init__(self, total, desc, unit="it", initial=0, every=0.0, quiet=10.0, file=None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every, self.quiet, self.file = every, quiet, sys.stderr if file is None else file
        self.t0 = self._last = time.monotonic()
        self._shown = (initial, "")  # (n, status) of the last line
        self._status = ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def update(self, n: int = 1) -> None:
        self.n += n
        done = self.total is not None and self.n >= self.total
        if done or time.monotonic() - self._last >= self.every:
            self._line()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._status = s
        if time.monotonic() - self._last >= self.quiet:
            self._line()

    def close(self) -> None:
        if self._shown[0] != self.n:
            self._line()  # the last count, when `every` held it back

    def _count(self) -> str:
        if self.unit == "B":
            of = f"/{self.total / 2**20:.1f}" if self.total is not None else ""
            return f"{self.n / 2**20:.1f}{of} MiB"
        return f"{self.n}/{self.total} {self.unit}" if self.total is not None else f"{self.n} {self.unit}"

    def _line(self) -> None:
        now = time.monotonic()
        status = f", {self._status}" if self._status else ""
        try:
            print(f"{self.desc}: {self._count()} ({now - self.t0:.1f} s{status})", file=self.file, flush=True)
        except (OSError, ValueError):  # a closed pipe or file: progress is not worth failing for
            pass
        self._last, self._shown = now, (self.n, self._status)

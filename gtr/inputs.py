"""What a user hands gtr, checked one way (stdlib only; every layer may import it).

Numbers: every number from a flag, a request, a plan or run file has a `Range`; `Range.check` accepts it
only if it is a real number (not NaN, not infinite, not a bool), integral where it must be, and inside
the range, before any work or allocation depends on it. The ranges are listed once here (docs/reliability.md
prints them) and shared by the command line (gtr.commands.numbers), the server and the file readers.

Files read back (run records, plan files): `parse_json` takes bytes, never text, so a damaged file is a
one-line error that names the file and what to do, whatever its bytes are.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass

from gtr.errors import GtrError


class InputError(GtrError, ValueError):
    """A number out of its range, or a file read back that is damaged or foreign."""


@dataclass(frozen=True)
class Range:
    """lo..hi (inclusive; `lo_open`: lo itself excluded); integer: whole numbers only."""
    lo: float
    hi: float
    integer: bool = True
    lo_open: bool = False

    def describe(self) -> str:
        if self.integer:
            return f"an integer in {self.lo}..{self.hi}"
        return f"a number in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]"

    def holds(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars are Real too
            return False
        if not isinstance(value, numbers.Integral):
            value = float(value)
            if not math.isfinite(value) or (self.integer and not value.is_integer()):
                return False
        return (self.lo < value if self.lo_open else self.lo <= value) and value <= self.hi

    def check(self, value, name: str):
        """value as an int (integer ranges) or float; InputError naming `name` and the range otherwise."""
        if not self.holds(value):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise InputError(f"{name} must be {self.describe()}, got {shown}")
        return int(value) if self.integer else float(value)


# Every range, by what it counts. The model narrows some at run time (classes: its class count).
MAX_SEED = 2 ** 63 - 1
SEED = Range(0, MAX_SEED)
CLASS = Range(0, 2 ** 31 - 1)                # then: below the model's class count
NUM_IMAGES = Range(1, 10 ** 9)               # images per class of one run
BATCH = Range(1, 4096)                       # images per sampling call
THREADS = Range(1, 1024)                     # CPU threads of the graph calls
SHARD_COUNT = Range(1, 1_000_000)            # N of --shard I/N (I in 0..N-1)
CFG = Range(1, 100, integer=False)           # CFG scale (1: no guidance)
TEMPERATURE = Range(0, 10, integer=False, lo_open=True)
FTS_BETA = Range(0, 1, integer=False)
DIFFUSION_STEPS = Range(1, 1000)             # T of a diffusion chain (the base process has 1000)
AR_STEPS = Range(1, 65_536)                  # AR steps or stages (then: at most the grid's tokens)
GRID_SIDE = Range(1, 256)                    # tokens along one side of a plan's grid
STAGES = Range(2, 65_536)                    # GtR stages (then: at most the grid's tokens)
CALIB_SEEDS = Range(1, 1000)                 # calibration images per class
CALIB_OTHER = Range(0, 100_000)              # calibration images of each plan after the first (0: all)
MAX_WAIT_MS = Range(0, 60_000, integer=False)
TIMEOUT_S = Range(0, 86_400, integer=False, lo_open=True)
READ_TIMEOUT_S = Range(0, 3600, integer=False, lo_open=True)
PORT = Range(0, 65_535)
QUEUE = Range(1, 1_000_000)
ROUNDS = Range(1, 1000)
WARMUP = Range(0, 1000)
PER_CLASS = Range(2, 100_000)
WORKSPACE_MB = Range(1, 2 ** 24)
DEVICE_INDEX = Range(0, 63)
PROFILES = Range(1, 1024)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes, where: str, fix: str, error=InputError):
    """The JSON value in `data` (bytes of the file `where`); `error` (one line: the file, what is
    wrong, `fix`) if the bytes are not UTF-8 JSON. NaN and Infinity are refused (not JSON numbers)."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where}: not a text file (byte {e.start} is not UTF-8); {fix}") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply; {fix}") from None
    except ValueError as e:
        raise error(f"{where}: not valid JSON ({str(e).splitlines()[0]}); {fix}") from None


def read_json(path, fix: str, error=InputError, limit: int = 64 * 2 ** 20, label: str = "file"):
    """parse_json of the file at `path` (a `label`), read as bytes (at most `limit` of them)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise error(f"cannot read {label} {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise error(f"{label} {path}: larger than {limit // 2 ** 20} MiB; {fix}")
    return parse_json(data, f"{label} {path}", fix, error)

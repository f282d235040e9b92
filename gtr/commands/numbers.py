"""Click types for every number a command takes: one rule (gtr.inputs.Range) for all of them.

`Int(r)` / `Float(r)` are click's IntRange / FloatRange (so --help shows the range) that also refuse
NaN and infinity; `Ints(r)` is a comma-separated list, `Shard()` is I/N, `ClassList()` is 0-9,17 (checked
by its bounds, never expanded first). A bad value is click's one-line usage error naming the flag the
user typed and the range (exit status 2), before the command starts any work.

Each type has `range` (the documented bounds) and `example(v)` (the option's text for one number v):
the generated test (tests/test_numeric_options.py) walks every command's options through them.
"""
from __future__ import annotations

import click

from gtr import inputs
from gtr.inputs import Range


class _Bounded:
    range: Range
    parse: click.ParamType  # click.INT or click.FLOAT: the text to a number (click's range check skipped)

    def convert(self, value, param, ctx):
        number = self.parse.convert(value, param, ctx)
        if not self.range.holds(number):
            self.fail(f"{value!r} is not {self.range.describe()}", param, ctx)
        return number

    @staticmethod
    def example(v) -> str:
        return str(v)


class Int(_Bounded, click.IntRange):
    def __init__(self, r: Range):
        super().__init__(int(r.lo), int(r.hi))
        self.range, self.parse = r, click.INT


class Float(_Bounded, click.FloatRange):
    def __init__(self, r: Range):
        super().__init__(r.lo, r.hi, min_open=r.lo_open)
        self.range, self.parse = r, click.FLOAT


class Ints(click.ParamType):
    """'8,6,2' -> (8, 6, 2), each number in `r`; `length`: exactly that many numbers."""
    name = "integers"

    def __init__(self, r: Range, length: int | None = None, most: int = 4096):
        self.range, self.length, self.most = r, length, most

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        if self.length is not None and len(parts) != self.length:
            self.fail(f"{value!r}: expected {self.length} comma-separated integers", param, ctx)
        if not 1 <= len(parts) <= self.most:
            self.fail(f"{value!r}: expected 1 to {self.most} comma-separated integers", param, ctx)
        out = []
        for part in parts:
            try:
                out.append(self.range.check(int(part), "each"))
            except ValueError:
                self.fail(f"{part!r} in {value!r} is not {self.range.describe()}", param, ctx)
        return tuple(out)

    def example(self, v) -> str:
        return ",".join([str(v)] * (self.length or 1))


class Shard(click.ParamType):
    """'I/N' -> (I, N): shard I of N, 0 <= I < N, N in inputs.SHARD_COUNT."""
    name = "I/N"
    range = inputs.SHARD_COUNT

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from gtr.runtime.shards import parse_shard
        try:
            return parse_shard(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)

    @staticmethod
    def example(v) -> str:
        return f"0/{v}"


class ClassList(click.ParamType):
    """'0-9' or '1,207,360' -> a tuple of class ids (counted and checked by bounds before expanding)."""
    name = "LIST"
    range = inputs.CLASS

    def convert(self, value, param, ctx):
        if isinstance(value, tuple) or value is None:
            return value
        from gtr.calibration.spec import parse_classes
        from gtr.errors import GtrError
        try:
            return parse_classes(value)
        except GtrError as e:
            self.fail(str(e).removeprefix("--calib-classes: "), param, ctx)

    @staticmethod
    def example(v) -> str:
        return str(v)


class Grid(click.ParamType):
    """'HxW' token grid, each side in inputs.GRID_SIDE; returned as the text 'HxW' (normalised)."""
    name = "HxW"
    range = inputs.GRID_SIDE

    def convert(self, value, param, ctx):
        try:
            h, w = (self.range.check(int(v), "each side") for v in str(value).lower().split("x"))
        except ValueError:
            self.fail(f"{value!r}: expected HxW, two integers in {self.range.lo}..{self.range.hi}, e.g. 16x16",
                      param, ctx)
        return f"{h}x{w}"

    @staticmethod
    def example(v) -> str:
        return f"{v}x{v}"

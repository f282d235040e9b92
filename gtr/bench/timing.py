"""Where a sampling call's time goes: components wrapped with timers.

The sampler (gtr.runtime.sampler) calls backbone, head_step or diffuse, and decode; everything else
in `sample` (orders, gathers, FTS, noise, the canvas) is the Python loop around them: total minus
the timed components.
"""
from __future__ import annotations

import time
from collections import Counter

from gtr.runtime.sampler import sample

PARTS = ("backbone", "head", "decode", "loop")
_TIMED = {"backbone": "backbone", "head_step": "head", "diffuse": "head", "decode": "decode"}


def timed(fn, seconds: Counter, part: str):
    """fn, adding the seconds of each call to seconds[part]."""
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[part] += time.perf_counter() - t0
    return wrapper


class TimedComponents:
    """Forwards to `components`, adding the seconds of each call to `self.seconds[part]`."""

    def __init__(self, components):
        self._components = components
        self.seconds = Counter()

    def __getattr__(self, name):
        attr = getattr(self._components, name)  # AttributeError for a missing diffuse, as the sampler expects
        part = _TIMED.get(name)
        return attr if part is None else timed(attr, self.seconds, part)


def timed_sample(components, plan, labels, seed: int, config, decode: bool) -> dict:
    """One `sample` call; returns seconds {'total', 'backbone', 'head', 'decode', 'loop'} for the batch."""
    timed = TimedComponents(components)
    t0 = time.perf_counter()
    sample(timed, plan, labels, seed, token_dim=config.token_dim, num_classes=config.num_classes, decode=decode)
    total = time.perf_counter() - t0
    split = {part: timed.seconds[part] for part in ("backbone", "head", "decode")}
    split["loop"] = max(0.0, total - sum(split.values()))
    return {"total": total, **split}

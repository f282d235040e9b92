"""How a run of images is cut into sampling calls ("chunks"), seeded, and split across workers.

A run is classes x num_images, class-major. Each class's images are cut into chunks of `batch`
consecutive indices; one chunk is one sampling call. Every image has its own noise stream, seeded from
(seed, class, index) (gtr.plan.noise.image_seed), so an image is the same whatever it is batched with,
up to float rounding of another batch shape; with the same chunking (batch and num_images) it is the
same bits, never depending on which other classes are in the run, on the order they are given in, or
on how the chunks are spread over workers: a shard runs the very calls an unsharded run makes.
Standard library only (and gtr.inputs, its ranges).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

from gtr.inputs import SHARD_COUNT


@dataclass(frozen=True)
class Chunk:
    label: int | None  # class id; None = unconditional
    start: int         # index of its first image within its class
    count: int

    @property
    def indices(self) -> range:
        return range(self.start, self.start + self.count)


def chunks(labels, num_images: int, batch: int) -> Iterator[Chunk]:
    """The run's chunks in class-major order (the order images are returned in), made as they are
    needed: a run of 10^12 images costs no memory before it starts."""
    return (Chunk(label, start, min(batch, num_images - start))
            for label in labels for start in range(0, num_images, batch))


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N <= SHARD_COUNT.hi; ValueError with a one-line reason otherwise."""
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not SHARD_COUNT.holds(n):
        raise ValueError(f"shard {text!r}: N must be {SHARD_COUNT.describe()}")
    if not 0 <= i < n:
        raise ValueError(f"shard {text!r}: need 0 <= I < N (shards are numbered from 0), e.g. 0/{n}")
    return i, n


def canonical(labels) -> list:
    """Labels in the canonical order of shards: unconditional first, then by class id."""
    return sorted(labels, key=lambda c: -1 if c is None else c)


def shard(labels, num_images: int, batch: int, index: int, count: int) -> Iterator[Chunk]:
    """Shard `index` of `count`: every count-th chunk of the run in a canonical order (by class, then
    start), so the shards are disjoint, cover the run, stay balanced across classes, and do not
    depend on the order classes were given in. Lazy, like `chunks`."""
    return itertools.islice(chunks(canonical(labels), num_images, batch), index, None, count)


def shard_images(labels, num_images: int, batch: int, index: int, count: int) -> int:
    """How many images shard `index` of `count` makes: arithmetic on the bounds, so it costs the same
    for a run of 10^20 images as for one (nothing is listed or counted one by one)."""
    per_class = -(-num_images // batch)  # chunks per class; the last of each may be short
    short = batch - (num_images - (per_class - 1) * batch)  # images the last chunk lacks
    total = len(labels) * per_class  # chunks of the run; the shard takes every count-th from index
    mine = max(0, -(-(total - index) // count))
    # class k's last chunk, number k * per_class + per_class - 1, is the shard's when it is index mod count
    lasts = sum(1 for k in range(len(labels)) if (k * per_class + per_class - 1) % count == index)
    return mine * batch - lasts * short

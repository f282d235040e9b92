"""How a run of images is cut into sampling calls ("chunks"), seeded, and split across workers.

A run is classes x num_images, class-major. Each class's images are cut into chunks of `batch`
consecutive indices; one chunk is one sampling call. Every image has its own noise stream, seeded from
(seed, class, index) (gtr.plan.noise.image_seed), so an image is the same whatever it is batched with,
up to float rounding of another batch shape; with the same chunking (batch and num_images) it is the
same bits, never depending on which other classes are in the run, on the order they are given in, or
on how the chunks are spread over workers: a shard runs the very calls an unsharded run makes.
Standard library only.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    label: int | None  # class id; None = unconditional
    start: int         # index of its first image within its class
    count: int

    @property
    def indices(self) -> range:
        return range(self.start, self.start + self.count)


def chunks(labels, num_images: int, batch: int) -> list[Chunk]:
    """The run's chunks in class-major order (the order images are returned in)."""
    return [Chunk(label, start, min(batch, num_images - start))
            for label in labels for start in range(0, num_images, batch)]


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N; ValueError with a one-line reason otherwise."""
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {text!r}: need 0 <= I < N (shards are numbered from 0), e.g. 0/{max(n, 1)}")
    return i, n


def shard(all_chunks: list[Chunk], index: int, count: int) -> list[Chunk]:
    """Shard `index` of `count`: every count-th chunk of the run in a canonical order (by class, then
    start), so the shards are disjoint, cover the run, stay balanced across classes, and do not
    depend on the order classes were given in."""
    ordered = sorted(all_chunks, key=lambda c: (-1 if c.label is None else c.label, c.start))
    return ordered[index::count]

"""How a run of images is cut into sampling calls ("chunks"), seeded, and split across workers.

A run is classes x num_images, class-major. Each class's images are cut into chunks of `batch`
consecutive indices; one chunk is one sampling call with its own seed, derived from (seed, class,
first index). So an image's pixels depend on (seed, class, index) and the chunking (batch and
num_images), never on which other classes are in the run, on the order they are given in, or on how
the chunks are spread over workers: a shard runs the very calls an unsharded run makes.
Standard library only.
"""
from __future__ import annotations

import hashlib
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


def chunk_seed(seed: int, chunk: Chunk) -> int:
    """The sampling seed of a chunk: the first 63 bits of sha256("seed/class/start"), class "uncond" when None.

    A hash (not seed + a counter) so that neighbouring seeds and classes never share noise.
    """
    label = "uncond" if chunk.label is None else int(chunk.label)
    digest = hashlib.sha256(f"{int(seed)}/{label}/{chunk.start}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


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

"""The pipeline: one object over a bundle that turns classes and a seed into images (what gtr-run runs).

    import gtr
    pipe = gtr.load("mar-tiny-fp32.plan")      # numpy + onnxruntime, no torch
    images = pipe([3, 5], seed=0, num_images=2)  # 4 PIL images, class-major: 3, 3, 5, 5
    pipe.save("samples/", range(10), num_images=50, shard=(0, 4))  # long runs: resumable, sharded

Seeding (gtr.plan.noise): every image has its own noise stream, seeded from (seed, class, index), so an
image depends on those three and on nothing else: not on the other classes, on --batch, on sharding,
or on what a server batched it with (up to float rounding of another batch shape: tokens within 1e-4
of their scale; bit-identical for the same batch shape, as in a resumed or sharded run).
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gtr import inputs
from gtr.configs import check_classes
from gtr.errors import EngineError, PipelineError  # noqa: F401  (PipelineError: re-exported)
from gtr.plan.noise import image_seed
from gtr.runtime import outdir, shards
from gtr.runtime.notes import stderr_line
from gtr.runtime.bundle import Bundle, read_bundle
from gtr.runtime.images import save_png, to_uint8

MAX_IN_MEMORY = 10_000  # images generate() returns at once; longer runs go to a folder (save)


class RunPaths(Sequence):
    """Every image path of a run (all shards), class-major, computed on demand: a run's list of paths
    is never held in memory."""

    def __init__(self, folder, labels, num_images: int):
        self.folder, self.labels, self.num_images = Path(folder), list(labels), int(num_images)

    def __len__(self):
        return len(self.labels) * self.num_images

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if not -len(self) <= k < len(self):
            raise IndexError(k)
        label, index = divmod(k % len(self), self.num_images)
        return self.folder / outdir.image_name(self.labels[label], index)


@dataclass
class SaveResult:
    written: int                 # PNGs written by this call
    skipped: int                 # PNGs of this shard already there (complete), left untouched
    paths: Sequence = ()         # every image of the run (all shards), class-major (RunPaths)
    seconds: float = 0.0


class Pipeline:
    """Images from a .plan bundle. `plans` {name: SamplingPlan} (the first is the default), `config`
    the model (MARConfig), `batch` the default images per sampling call (the export batch)."""

    def __init__(self, bundle, device: str = "auto", backend: str = "auto", threads: int | None = None,
                 rebuild: bool = False, log=stderr_line):
        from gtr.runtime.backends import check_choice, make_components
        check_choice(device, backend)
        if threads is not None:  # the same bound as --threads, before any session is made
            threads = inputs.THREADS.check(threads, "threads")
        self.bundle = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
        if rebuild and backend != "onnxruntime" and device != "cpu":
            self.bundle = _rebuild_engines(self.bundle, backend, log)
        self.components = make_components(self.bundle, backend, device, threads, log=log)
        self.config = self.bundle.config
        self.plans = self.bundle.plans()
        self.batch = int(self.bundle.manifest.get("batch", 1))
        self.random_weights = bool(self.bundle.manifest.get("random_weights"))

    def __repr__(self):
        return f"Pipeline({str(self.bundle.path)!r}, model={self.config.name}, plans={list(self.plans)})"

    @property
    def device_name(self) -> str:
        return self.components.device_name

    # ---- requests

    def plan(self, name: str | None = None, cfg: float | None = None, temperature: float | None = None):
        """A plan of the bundle by name (default: the first), with cfg / temperature overridden if given."""
        return self.bundle.plan(name, cfg, temperature)

    # ---- lifetime

    def close(self) -> None:
        """Free the backend's sessions, engines and device memory, and let go of the bundle file."""
        close = getattr(self.components, "close", None)
        if close is not None:
            close()
        self.bundle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _request(self, classes, num_images, batch, plan, cfg, temperature):
        """(labels, num_images, batch, plan) checked; classes None = unconditional."""
        if classes is None:
            labels = [None]
        elif isinstance(classes, (int, np.integer)):
            labels = [int(classes)]
        else:
            labels = [None if c is None else int(c) for c in classes]
        check_classes(labels, self.config.num_classes)
        repeated = sorted({str(c) for c in labels if labels.count(c) > 1})
        if repeated:  # the same (class, index) is the same image: ask for more with num_images
            raise PipelineError(f"class {', '.join(repeated)} is given more than once; use num_images for more images")
        if not labels or num_images < 1:
            raise PipelineError("nothing to generate: give at least one class and num_images >= 1")
        batch = self.batch if batch is None else int(batch)
        if batch < 1:
            raise PipelineError("batch must be >= 1")
        return labels, int(num_images), batch, self.plan(plan, cfg, temperature)

    # ---- generation

    def _sample(self, plan, chunk: shards.Chunk, seed: int, bar) -> np.ndarray:
        """One sampling call: the chunk's images as uint8 [count, H, W, 3]."""
        from gtr.runtime.sampler import sample
        steps = plan.num_steps
        seeds = [image_seed(seed, chunk.label, i) for i in chunk.indices]
        result = sample(self.components, plan, [chunk.label] * chunk.count, seeds,
                        token_dim=self.config.token_dim, num_classes=self.config.num_classes,
                        progress=lambda s: bar.set_postfix_str(f"step {s + 1}/{steps}", refresh=False))
        bar.update(chunk.count)
        return to_uint8(result.images)

    @staticmethod
    def _bar(total: int, desc: str, progress: bool):
        from gtr.runtime.progress import progress_bar  # a bar on a terminal, one line per call elsewhere
        return progress_bar(total, desc, "img", enabled=progress)

    def generate_items(self, items, plan: str | None = None, cfg: float | None = None,
                       temperature: float | None = None, progress=None) -> np.ndarray:
        """uint8 pixels [len(items), H, W, 3] for `items` [(class or None, seed, index), ...] in one
        sampling call: image k is image `index` of `class` in a run with `seed`, the same as
        `generate([class], seed, num_images=index + 1)[index]` (what a server merging requests runs).
        progress(step, steps): called after each AR step (step 1..steps); it only observes, the images
        are the same bits with or without it."""
        from gtr.runtime.sampler import sample
        items = [(None if c is None else int(c), int(s), int(i)) for c, s, i in items]
        if not items:
            raise PipelineError("nothing to generate: no items")
        if any(i < 0 for _, _, i in items):
            raise PipelineError("image indices must be >= 0")
        labels = [c for c, _, _ in items]
        check_classes(labels, self.config.num_classes)
        plan_obj = self.plan(plan, cfg, temperature)
        seeds = [image_seed(s, c, i) for c, s, i in items]
        steps = plan_obj.num_steps
        result = sample(self.components, plan_obj, labels, seeds, token_dim=self.config.token_dim,
                        num_classes=self.config.num_classes,
                        progress=None if progress is None else lambda step: progress(step + 1, steps))
        return to_uint8(result.images)

    def generate(self, classes=None, seed: int = 0, num_images: int = 1, plan: str | None = None,
                 cfg: float | None = None, temperature: float | None = None, batch: int | None = None,
                 progress: bool = True) -> np.ndarray:
        """Like calling the pipeline, but returns uint8 pixels [N, H, W, 3]."""
        labels, num_images, batch, plan_obj = self._request(classes, num_images, batch, plan, cfg, temperature)
        if len(labels) * num_images > MAX_IN_MEMORY:
            raise PipelineError(f"{len(labels) * num_images:,} images do not fit in memory at once (at most "
                                f"{MAX_IN_MEMORY:,}); write them to a folder with save() (gtr-run --outdir)")
        todo = shards.chunks(labels, num_images, batch)
        with self._bar(len(labels) * num_images, plan_obj.name, progress) as bar:
            return np.concatenate([self._sample(plan_obj, c, seed, bar) for c in todo])

    def __call__(self, classes=None, seed: int = 0, num_images: int = 1, plan: str | None = None,
                 cfg: float | None = None, temperature: float | None = None, batch: int | None = None,
                 progress: bool = True) -> list:
        """Generate num_images per class (classes: ids, one id, or None = unconditional); returns a list
        of PIL images, class-major. plan: one of `plans` (default: the first); cfg / temperature
        override the plan's; batch: images per sampling call (default: the export batch)."""
        from PIL import Image
        pixels = self.generate(classes, seed, num_images, plan, cfg, temperature, batch, progress)
        return [Image.fromarray(p) for p in pixels]

    def save(self, folder, classes=None, seed: int = 0, num_images: int = 1, plan: str | None = None,
             cfg: float | None = None, temperature: float | None = None, batch: int | None = None,
             shard: tuple[int, int] | str | None = None, progress: bool = True) -> SaveResult:
        """Write one PNG per image into folder (gtr.runtime.outdir names), for long runs.

        Resumes: a chunk whose files all exist and decode is skipped, and only missing files are
        written (atomically). shard (I, N) or "I/N": make only shard I of N (gtr.runtime.shards), the
        same images, byte for byte, that an unsharded run writes there. A folder made with other
        settings (bundle, plan, seed, batch, num_images) is refused.
        """
        labels, num_images, batch, plan_obj = self._request(classes, num_images, batch, plan, cfg, temperature)
        try:
            index, count = shards.parse_shard(shard if isinstance(shard, str) else "/".join(map(str, shard or (0, 1))))
        except ValueError as e:
            raise PipelineError(str(e)) from None
        folder = Path(folder)
        record = dict(bundle=self.fingerprint(), plan=plan_obj.to_dict(), seed=int(seed), batch=batch,
                      num_images=num_images)
        try:
            with outdir.claim(folder, record):
                return self._save(folder, labels, seed, num_images, batch, plan_obj, index, count, progress)
        except outdir.FolderTaken as e:
            what = "is being written by a run" if e.live else "holds images made"
            raise PipelineError(f"{folder} {what} with other settings ({', '.join(e.differ)} differ, see "
                                f"{outdir.RECORD}); use another folder or the same settings") from None

    def _save(self, folder, labels, seed, num_images, batch, plan_obj, index, count, progress) -> SaveResult:
        size = self.config.img_size

        def path(label, i):
            return folder / outdir.image_name(label, i)

        mine = shards.shard(labels, num_images, batch, index, count)
        written = skipped = 0
        t0 = time.perf_counter()
        total = shards.shard_images(labels, num_images, batch, index, count)
        with self._bar(total, f"{plan_obj.name} {index}/{count}", progress) as bar:
            for chunk in mine:
                missing = [i for i in chunk.indices if not outdir.is_complete(path(chunk.label, i), size)]
                if not missing:
                    skipped += chunk.count
                    bar.update(chunk.count)
                    continue
                pixels = self._sample(plan_obj, chunk, seed, bar)
                for i in missing:
                    save_png(pixels[i - chunk.start], path(chunk.label, i))
                written += len(missing)
                skipped += chunk.count - len(missing)
        return SaveResult(written, skipped, RunPaths(folder, labels, num_images), time.perf_counter() - t0)

    def fingerprint(self) -> str:
        """The bundle's identity for run records: a digest of its members' sha256s. TensorRT engines are
        left out: adding them (gtr-build) does not change the images a run makes."""
        engines = {e.get("member") for e in self.bundle.manifest.get("engines") or []}
        members = {k: v for k, v in self.bundle.manifest.get("members", {}).items() if k not in engines}
        text = ",".join(f"{name}:{m.get('sha256')}" for name, m in sorted(members.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def pack(self, paths, out) -> int:
        """Pack images written by `save` into out (.npz, uint8 arr_0 [N, H, W, 3]); returns N."""
        try:
            return outdir.pack_npz(paths, out, self.config.img_size)
        except FileNotFoundError as e:
            raise PipelineError(str(e)) from None


def load(path: str | os.PathLike, device: str = "auto", backend: str = "auto", threads: int | None = None,
         rebuild: bool = False) -> Pipeline:
    """Open a .plan bundle as a pipeline (numpy + onnxruntime or TensorRT; torch is not needed).
    backend: auto | onnxruntime | tensorrt (gtr.runtime.backends); rebuild: build missing TensorRT engines
    first. Use it in a `with` block (or call close()) to free device memory when done."""
    return Pipeline(path, device=device, backend=backend, threads=threads, rebuild=rebuild)


def _rebuild_engines(bundle: Bundle, backend: str, log) -> Bundle:
    """Build the TensorRT engines this machine lacks into the bundle file (gtr-build), then reopen it.
    Where TensorRT cannot build (not installed, no GPU): an error for backend tensorrt, else a note."""
    from gtr.engines.build import build_engines
    path = bundle.path
    try:
        build_engines(path, path, log=lambda line: log(f"  {line}"))
    except EngineError as e:
        if backend == "tensorrt":
            raise
        log(f"note: not building TensorRT engines: {e}")
        return bundle
    bundle.close()
    return read_bundle(path)

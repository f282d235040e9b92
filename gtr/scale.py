"""Scale-out: one long run's shards as Ray tasks (a laptop's cores, or a cluster with a shared folder).

    from gtr.scale import run_on_ray
    ray.init()                                            # or ray.init(address="auto") on a cluster
    run_on_ray("mar-h-fp16.plan", "/shared/fid50k", range(1000), num_images=50, shards=8,
               num_gpus=1, npz="fid50k.npz")

Each task opens the bundle (a path every worker can read) and makes one shard with Pipeline.save, the
same code as `gtr-run --outdir DIR --shard I/N`. A task that fails is retried and resumes (finished
images are kept). Because an image's bits depend only on the bundle, its seed, class and index (never
on a worker's threads or cores), the shards write the same files, byte for byte, as one unsharded run.
Ray is imported here only (the `scale` extra).
"""
from __future__ import annotations

from gtr.errors import MissingExtra, PipelineError


def _make_shard(bundle, outdir, classes, num_images, seed, plan, batch, device, threads, index, count):
    from gtr.pipeline import Pipeline
    with Pipeline(bundle, device=device, threads=threads) as pipe:
        result = pipe.save(outdir, classes, seed=seed, num_images=num_images, plan=plan, batch=batch,
                           shard=(index, count), progress=False)
    return result.written


def run_on_ray(bundle, outdir, classes, num_images: int, shards: int, *, seed: int = 0, plan: str | None = None,
               batch: int | None = None, device: str = "auto", threads=None, num_cpus: float = 1,
               num_gpus: float = 0, retries: int = 3, npz=None) -> dict:
    """Make the run (classes x num_images into outdir) as `shards` Ray tasks; then, with npz, pack it.

    threads: per task, one number for all or a list with one per shard (only speed changes).
    Returns {"written": images written by the tasks, "packed": images in npz or None}."""
    try:
        import ray
    except ImportError:
        raise MissingExtra("run_on_ray needs Ray: pip install 'gtr-mar[scale]'") from None
    if not isinstance(shards, int) or shards < 1:
        raise PipelineError(f"shards must be an integer >= 1, got {shards!r}")
    per_shard = list(threads) if isinstance(threads, (list, tuple)) else [threads] * shards
    if len(per_shard) != shards:
        raise PipelineError(f"threads: {len(per_shard)} values for {shards} shards")
    classes = None if classes is None else [None if c is None else int(c) for c in classes]
    task = ray.remote(_make_shard).options(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=retries)
    written = sum(ray.get([task.remote(str(bundle), str(outdir), classes, num_images, seed, plan, batch, device,
                                       per_shard[i], i, shards) for i in range(shards)]))
    packed = None
    if npz is not None:  # one final pass: makes any image a failed task left out, then packs the run
        from gtr.pipeline import Pipeline
        with Pipeline(bundle, device=device) as pipe:
            result = pipe.save(outdir, classes, seed=seed, num_images=num_images, plan=plan, batch=batch,
                               progress=False)
            written += result.written
            packed = pipe.pack(result.paths, npz)
    return {"written": written, "packed": packed}

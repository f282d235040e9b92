"""gtr-eval's work: sample N images per class with each plan, score them, write the report.

The quality numbers come from the project's digit classifier (accuracy, and a Frechet distance between
its features of generated and held-out real digits: FID-style, NOT ImageNet FID), so they apply to
digit models (mar-tiny). Cost comes from the plan's FLOP model, time from the run itself.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from gtr.plan import plan_cost
from gtr.runtime.images import to_uint8
from gtr.runtime.sampler import sample


def evaluate_plans(components, plans, config, per_class: int, seed: int = 0, batch: int = 10, outdir=None,
                   log=print, progress=None) -> list[dict]:
    """One row per plan: accuracy, frechet, FLOPs, seconds per image. Images of class c, in batches of
    `batch`; batch i of a plan uses seed + i, so every plan sees the same seeds."""
    from gtr.eval import metrics
    from gtr.eval.classifier import load_classifier
    from gtr.eval.report import class_grid_png

    if (config.num_classes, config.img_size) != (10, 32):
        raise metrics.EvalError(f"gtr-eval scores digits (10 classes, 32 px) with the shipped classifier; "
                                f"{config.name} has {config.num_classes} classes at {config.img_size} px")
    classifier = load_classifier()
    reference = metrics.reference_stats(classifier)
    labels = [c for c in range(config.num_classes) for _ in range(per_class)]
    rows = []
    for plan in plans:
        images, t0 = [], time.perf_counter()
        for i in range(0, len(labels), batch):
            result = sample(components, plan, labels[i:i + batch], seed + i // batch, token_dim=config.token_dim,
                            num_classes=config.num_classes)
            images.append(result.images)
            if progress:
                progress(plan.name, min(i + batch, len(labels)), len(labels))
        seconds = (time.perf_counter() - t0) / len(labels)
        images = np.concatenate(images)
        quality = metrics.evaluate_images(images, np.array(labels), classifier, reference)  # the tested metric
        cost = plan_cost(plan, config)
        row = dict(plan=plan.name, gflops=cost.total_flops / 1e9, accuracy=quality["accuracy"],
                   frechet=quality["frechet"], n=len(labels),
                   ar_steps=plan.num_steps, token_steps=plan.token_steps(), s_per_image=seconds)
        rows.append(row)
        log(f"{plan.name}: accuracy {row['accuracy']:.3f}, Frechet {row['frechet']:.1f}, "
            f"{row['gflops']:.3f} GFLOP, {seconds:.3f} s/image")
        if outdir is not None:
            class_grid_png(to_uint8(images), labels, Path(outdir) / f"grid-{plan.name}.png", per_class=min(per_class, 10))
    return rows

"""gtr-eval's work: sample N images per class with each plan, score them, write the report.

The quality numbers come from the project's classifiers (accuracy, and a Frechet distance between
their features of generated and held-out real images: FID-style, NOT ImageNet FID), so they apply to
the small models: mar-tiny (digits) and mar-glyphs (letters), gtr.eval.datasets. Cost comes from the
plan's FLOP model, time from the run itself.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from gtr.plan import plan_cost
from gtr.runtime.images import to_uint8
from gtr.runtime.sampler import sample


def evaluate_plans(components, plans, config, per_class: int, seed: int = 0, batch: int = 10, outdir=None,
                   log=print, progress=None, seeds=None) -> list[dict]:
    """One row per plan: accuracy, frechet, FLOPs, seconds per image. Images of class c, in batches of
    `batch`; batch i of a plan uses seed + i, so every plan sees the same seeds. With `seeds` (several
    base seeds), each plan is sampled once per seed: accuracy and frechet are the means over the seeds,
    with their ranges in accuracy_min/max and frechet_min/max and the per-seed values in per_seed;
    frechet_pooled scores all seeds' images as one set (n_pooled images: the Frechet distance is biased
    upward at small n, so the pooled figure is the one to compare with a floor)."""
    from gtr.eval import metrics
    from gtr.eval.classifier import load_classifier
    from gtr.eval.datasets import for_config
    from gtr.eval.report import class_grid_png

    data = for_config(config)
    if not data.classifier.is_file():
        raise metrics.EvalError(f"the {data.name} classifier is not in this installation ({data.classifier})")
    classifier = load_classifier(data.classifier)
    reference = metrics.reference_stats(classifier, data)
    labels = [c for c in range(config.num_classes) for _ in range(per_class)]
    seeds = list(seeds) if seeds else [seed]
    rows = []
    for plan in plans:
        per_seed, seconds, outputs, first_images = [], 0.0, [], None
        for k, s in enumerate(seeds):
            images, t0 = [], time.perf_counter()
            for i in range(0, len(labels), batch):
                result = sample(components, plan, labels[i:i + batch], s + i // batch, token_dim=config.token_dim,
                                num_classes=config.num_classes)
                images.append(result.images)
                if progress:
                    progress(plan.name, k * len(labels) + min(i + batch, len(labels)), len(labels) * len(seeds))
            seconds += time.perf_counter() - t0
            images = np.concatenate(images)
            first_images = images if first_images is None else first_images
            quality = metrics.evaluate_images(images, np.array(labels), classifier, reference)  # the tested metric
            outputs.append((quality["logits"], quality["features"]))
            per_seed.append(dict(seed=s, accuracy=quality["accuracy"], frechet=quality["frechet"]))
        cost = plan_cost(plan, config)
        acc, fre = [q["accuracy"] for q in per_seed], [q["frechet"] for q in per_seed]
        row = dict(plan=plan.name, gflops=cost.total_flops / 1e9, accuracy=float(np.mean(acc)),
                   frechet=float(np.mean(fre)), n=len(labels),
                   ar_steps=plan.num_steps, token_steps=plan.token_steps(), s_per_image=seconds / len(labels) / len(seeds))
        if len(seeds) > 1:
            row.update(accuracy_min=min(acc), accuracy_max=max(acc), frechet_min=min(fre), frechet_max=max(fre),
                       seeds=len(seeds), per_seed=per_seed)
            logits, features = (np.concatenate(parts) for parts in zip(*outputs))  # all seeds, as one set
            pooled = metrics.score_features(logits, features, np.array(labels * len(seeds)), reference)
            row.update(frechet_pooled=pooled["frechet"], n_pooled=pooled["n"])
        rows.append(row)
        spread = (f" (seeds {min(acc):.3f}-{max(acc):.3f}, {min(fre):.1f}-{max(fre):.1f}; "
                  f"all {row['n_pooled']} images: {row['frechet_pooled']:.1f})" if len(seeds) > 1 else "")
        log(f"{plan.name}: accuracy {row['accuracy']:.3f}, Frechet {row['frechet']:.1f}{spread}, "
            f"{row['gflops']:.3f} GFLOP, {row['s_per_image']:.3f} s/image")
        if outdir is not None:
            class_grid_png(to_uint8(first_images), labels, Path(outdir) / f"grid-{plan.name}.png",
                           per_class=min(per_class, 10))
    return rows

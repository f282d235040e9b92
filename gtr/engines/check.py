"""gtr-check --backend tensorrt: the engines' images against ONNX Runtime and the torch reference.

Every backend samples the same plan, labels and seed (the noise is the same numpy stream), and
Polygraphy's comparator checks the first backend's images against each other's: the mean absolute
difference of the images (in [-1, 1], clipped as the PNGs are) must stay within the precision's
tolerance, about the same bar as gtr-check's PSNR (fp32 >= 40 dB, fp16 >= 30 dB). The PSNR is
printed beside it.
"""
from __future__ import annotations

import numpy as np

# Mean |difference| of images in [-1, 1]; PSNR 40 dB is an RMS of 0.02, 30 dB of 0.063.
IMAGE_TOLERANCE = {"fp32": 0.01, "fp16": 0.05}


def _compare_func(atol: float):
    from polygraphy import comparator
    func = getattr(comparator, "SimpleCompareFunc", None)  # Polygraphy >= 0.53; CompareFunc.simple before
    if func is None:
        func = comparator.CompareFunc.simple
    return func(check_error_stat="mean", atol=atol, rtol=0.0)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)


def compare_backends(runners: dict, plans, labels, seed: int, config, precision: str, echo=print) -> bool:
    """Sample every plan on each of `runners` {name: components}; compare the first with the others.
    Prints one line per plan and pair; returns True when all pass."""
    from polygraphy.comparator import Comparator, RunResults
    from polygraphy.logger import G_LOGGER

    from gtr.runtime.sampler import sample
    tol = IMAGE_TOLERANCE.get(precision, IMAGE_TOLERANCE["fp16"])
    names = list(runners)
    passed = True
    for plan in plans:
        images = {}
        for name, comps in runners.items():
            result = sample(comps, plan, labels, seed, token_dim=config.token_dim, num_classes=config.num_classes)
            images[name] = np.clip(result.images, -1, 1).astype(np.float32)
        for other in names[1:]:
            results = RunResults()
            for name in (names[0], other):
                results.add([{"images": images[name]}], runner_name=name)
            with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # one line per pair below instead of its report
                ok = bool(Comparator.compare_accuracy(results, compare_func=_compare_func(tol)))
            diff = float(np.abs(images[names[0]] - images[other]).mean())
            passed &= ok
            echo(f"{plan.name}: {names[0]} vs {other}: image mean |diff| {diff:.2e} (tolerance {tol:g}), "
                 f"PSNR {_psnr(images[names[0]], images[other]):.1f} dB -> {'PASS' if ok else 'FAIL'}")
    return passed

"""gtr-check --backend tensorrt: the engines' images against ONNX Runtime and the torch reference.

Every backend samples the same plan, labels and seed (the noise is the same numpy stream), and the
first backend's images are checked against each other's by the rule gtr-check applies to a bundle on
ONNX Runtime (gtr.runtime.fidelity: image PSNR >= the precision's bar, and for fp32 the token error
too), so an int8 bundle's engines are judged by the int8 rule, an fp16 bundle's by the fp16 rule.
"""
from __future__ import annotations

import numpy as np

from gtr.runtime.fidelity import image_psnr, sample_passes, token_error, tolerance


def compare_backends(runners: dict, plans, labels, seed: int, config, precision: str, echo=print) -> bool:
    """Sample every plan on each of `runners` {name: components}; compare the first with the others.
    Prints one line per plan and pair; returns True when all pass."""
    from gtr.runtime.sampler import sample
    tol = tolerance(precision)
    names = list(runners)
    passed = True
    for plan in plans:
        results = {name: sample(comps, plan, labels, seed, token_dim=config.token_dim,
                                num_classes=config.num_classes) for name, comps in runners.items()}
        first = results[names[0]]
        for other in names[1:]:
            psnr = image_psnr(first.images, results[other].images)
            err = token_error(first.tokens, results[other].tokens)
            ok = sample_passes(precision, psnr, err)
            passed &= ok
            bound = f", token error {err:.1e} (<= {tol.token_rel:g})" if tol.token_rel is not None else ""
            diff = float(np.abs(np.clip(first.images, -1, 1) - np.clip(results[other].images, -1, 1)).mean())
            echo(f"{plan.name}: {names[0]} vs {other}: PSNR {psnr:.1f} dB (>= {tol.min_psnr:g} dB for "
                 f"{precision}){bound}, image mean |diff| {diff:.2e} -> {'PASS' if ok else 'FAIL'}")
    return passed

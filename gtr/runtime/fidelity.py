"""How close a bundle must be to the PyTorch reference, per precision: the one table of tolerances.

Three checks read it (numpy only, so the runtime, the exporter and the engine check share it):

* the export check (gtr.export.exporter): each graph on ONNX Runtime against its torch module on the
  same random inputs, max |diff| relative to the output scale <= `graph[component]`;
* gtr-check: the bundle's images against the reference's on the same seed, PSNR >= `min_psnr`, and
  for fp32 the tokens too, max |diff| / token scale <= `token_rel`;
* gtr-check --backend tensorrt: the engines' images against ONNX Runtime and the reference by the same
  rule (PSNR >= `min_psnr`), so a bundle that passes on ONNX Runtime is judged the same on TensorRT.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    graph: dict            # export check: {component: max relative error on random inputs}
    min_psnr: float        # sampled images vs the reference (dB, images in [-1, 1], peak-to-peak 2)
    token_rel: float | None  # sampled tokens vs the reference, relative to the token scale; None: not bounded


# fp16 bounds are looser by the fp16 rounding of weights and matmul inputs/outputs (unit roundoff 4.9e-4)
# through the depth of each network. int8: no token bound (rounding moves tokens, and the AR loop carries
# that into later steps); on mar-tiny int8 gives 31-43 dB, a broken int8 graph well under 20 dB. The int8
# export check runs on random inputs (not the calibration data): 0.25 catches a broken graph (errors of
# order 1) with room for int8 rounding of out-of-distribution inputs.
TOLERANCES = {
    "fp32": Tolerance({"backbone": 1e-4, "head": 1e-4, "head_nocfg": 1e-4, "vae_decoder": 1e-3}, 40.0, 1e-3),
    "fp16": Tolerance({"backbone": 3e-2, "head": 3e-2, "head_nocfg": 3e-2, "vae_decoder": 5e-2}, 30.0, None),
    "int8": Tolerance({"backbone": 0.25, "head": 0.25, "head_nocfg": 0.25, "vae_decoder": 0.25}, 25.0, None),
}


def tolerance(precision: str) -> Tolerance:
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise ValueError(f"no tolerances for precision {precision!r}; known: {', '.join(TOLERANCES)}") from None


def image_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two image batches in [-1, 1] (peak-to-peak 2), after clipping as the PNG output does."""
    a, b = np.clip(a, -1, 1).astype(np.float64), np.clip(b, -1, 1).astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)


def token_error(got: np.ndarray, ref: np.ndarray) -> float:
    """Max |got - ref| relative to the reference's token scale (max |ref|)."""
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12))


def sample_passes(precision: str, psnr: float, token_err: float | None = None) -> bool:
    """The rule of gtr-check (every backend): PSNR, and for fp32 the token error too."""
    tol = tolerance(precision)
    return psnr >= tol.min_psnr and (tol.token_rel is None or token_err is None or token_err <= tol.token_rel)

"""INT8 calibration along the sampling plans (see gtr.calibration.collect and gtr.calibration.quantize).

    graphs, record = calibrate_graphs(graphs, config, plans, batch, CalibrationSpec(seeds=2), shapes,
                                      random_weights=False, workdir=d)

`graphs` are the exported fp32 OnnxGraphs; they sample every plan (fp32, onnxruntime CPU) for the
calibration classes x seeds while their inputs are recorded, then each graph is quantized to int8 Q/DQ
by onnxruntime.quantization. `record` goes into the bundle manifest as "calibration".
"""
from __future__ import annotations

import time

from gtr.calibration.spec import (DEFAULT_METHOD, DEFAULT_SEEDS, METHODS, CalibrationError, CalibrationSpec,
                                  parse_classes)

__all__ = ["CalibrationError", "CalibrationSpec", "DEFAULT_METHOD", "DEFAULT_SEEDS", "METHODS", "calibrate_graphs",
           "parse_classes"]


def fp32_sessions(graphs: dict, workdir: str) -> dict:
    """onnxruntime CPU sessions for the fp32 graphs (weights packed as in the bundle)."""
    from gtr.export.onnx_export import pack_component
    from gtr.runtime.onnx_backend import make_session
    sessions = {}
    for name, g in graphs.items():
        location = f"{g.component}.calib.weights"
        protos, blob, _ = pack_component([g], location)
        sessions[name] = make_session(protos[name], {location: blob}, ["CPUExecutionProvider"])
    return sessions


def calibrate_graphs(graphs: dict, config, plans, batch: int, spec: CalibrationSpec, shapes: dict,
                     random_weights: bool, workdir: str, say=lambda s: None) -> tuple[dict, dict]:
    """Quantize fp32 `graphs` {name: OnnxGraph} to int8 with data sampled along `plans`.

    shapes: the bundle's static shapes (exporter.static_shapes), every one of which calibration must visit.
    Returns ({name: OnnxGraph int8}, calibration record for the manifest).
    """
    import onnxruntime

    from gtr.calibration.collect import check_coverage, pack, record
    from gtr.calibration.quantize import EXCLUDE, PERCENTILE, VAE_INT8, int8_nodes, quantize_graph
    spec = spec.resolve(config.num_classes)
    t0 = time.perf_counter()
    rec = record(fp32_sessions(graphs, workdir), plans, spec, config.num_classes, config.token_dim)
    check_coverage(rec, {k: v for k, v in shapes.items() if k in graphs}, batch)
    say(f"  calibration: sampled {rec.images} image(s) along {', '.join(p.name for p in plans)} "
        f"({time.perf_counter() - t0:.1f} s)")
    out, quantized = {}, {}
    for name, g in graphs.items():
        t = time.perf_counter()
        feeds = pack(name, rec.feeds.get(name, []))
        out[name] = quantize_graph(g, feeds, spec.method, workdir)
        quantized[name] = len(int8_nodes(g))
        say(f"  {name}: int8 Q/DQ on {quantized[name]} node(s), {spec.method} ranges from {len(feeds)} feed(s) "
            f"({time.perf_counter() - t:.1f} s)")
    record_ = {
        "method": spec.method,
        "percentile": PERCENTILE if spec.method == "percentile" else None,
        "plans": [p.name for p in plans],
        "classes": list(spec.classes),
        "seeds": spec.seed_values,
        "images_per_plan": len(spec.classes) * spec.seeds,
        "random_weights": bool(random_weights),
        "library": "onnxruntime.quantization",
        "library_version": onnxruntime.__version__,
        "scheme": "int8 QDQ, symmetric (zero point 0), activations per tensor, weights per output channel",
        "quantized_nodes": quantized,
        "float_kept": (f"layers matching {', '.join(EXCLUDE)} (timestep embedding, head input projection "
                       "and final linear), attention products, norms, softmax, activations, residuals, "
                       "the diffusion update"
                       + ("" if VAE_INT8 else ", the VAE decoder")),
    }
    return out, record_

"""INT8 calibration along the sampling plans (see gtr.calibration.collect and gtr.calibration.quantize).

    graphs, record = calibrate_graphs(graphs, config, plans, batch, CalibrationSpec(seeds=1), shapes,
                                      random_weights=False, workdir=d, write_model=...)

`graphs` are the exported fp32 OnnxGraphs to quantize. Each gets a range collector (onnxruntime's
calibrator on its augmented graph), and the collectors themselves sample every plan for the
calibration classes x seeds: each call runs once, giving the sampler its output and merging the
ranges of that call's tensors (bounded memory: nothing is kept per image). Then each graph is quantized to int8 Q/DQ
by onnxruntime.quantization with those ranges. `record` goes into the bundle manifest as
"calibration".

This package does not import gtr.export (the exporter calls it, one way): the exporter passes what
calibration needs of it, `write_model(graph, folder)` -> the path of the graph written there with its
weights as external data.
"""
from __future__ import annotations

import dataclasses
import os
import time

from gtr.calibration.spec import (DEFAULT_METHOD, DEFAULT_SEEDS, METHODS, CalibrationError, CalibrationSpec,
                                  parse_classes)
from gtr.calibration.spec import rss_note as _rss

__all__ = ["CalibrationError", "CalibrationSpec", "DEFAULT_METHOD", "DEFAULT_SEEDS", "METHODS", "calibrate_graphs",
           "parse_classes"]


def calibrate_graphs(graphs: dict, config, plans, batch: int, spec: CalibrationSpec, shapes: dict,
                     random_weights: bool, workdir: str, say=lambda s: None, *, write_model,
                     release=lambda: None) -> tuple[dict, dict]:
    """Quantize fp32 `graphs` {name: OnnxGraph} to int8 with ranges gathered while sampling along `plans`.

    shapes: the bundle's static shapes (exporter.static_shapes); calibration must visit every one of
    the quantized graphs'. Sampling needs the backbone and a head graph, all with int8 nodes; nothing is
    decoded (the VAE decoder is not quantized). write_model(graph, folder) -> path (see the module docstring).
    `graphs` is consumed: once a graph is written for calibration its entry loses its weights.
    release(): called after each large free (the exporter gives freed heap memory back to the system).
    Returns ({name: int8 OnnxGraph} for the graphs that have int8 nodes, calibration record).
    """
    import onnxruntime

    from gtr.calibration.collect import check_coverage, record
    from gtr.calibration.quantize import (EXCLUDE, PERCENTILE, VAE_INT8, RangeCollector, int8_nodes, prepared_graph,
                                          quantize_prepared)
    spec = spec.resolve(config.num_classes)
    t0 = time.perf_counter()
    nodes = {name: int8_nodes(g) for name, g in graphs.items()}
    paths, collectors = {}, {}
    out, quantized = {}, {}
    for name in list(graphs):
        if not nodes[name]:
            out[name], quantized[name] = graphs[name], 0  # nothing to quantize (the VAE decoder)
            continue
        g = graphs[name]
        t = time.perf_counter()
        paths[name] = write_model(prepared_graph(g, nodes[name]), os.path.join(workdir, f"calib-{name}"))
        graphs[name] = dataclasses.replace(g, weights={})  # on disk from here on
        del g
        collectors[name] = RangeCollector(paths[name], [i["name"] for i in graphs[name].inputs], spec.method)
        release()  # the model proto onnxruntime.quantization loaded to build the collector
        say(f"  {name}: {spec.method} range collector on {len(nodes[name])} int8 node(s) "
            f"({time.perf_counter() - t:.1f} s{_rss()})")
    missing = [g for g in ("backbone", "head") if g not in collectors]
    if missing:
        raise CalibrationError(f"calibration samples with the graphs it quantizes: {', '.join(missing)} "
                               "has no int8 node")
    rec = record(collectors, plans, spec, config.num_classes, config.token_dim, say=say)
    release()
    check_coverage(rec, {k: v for k, v in shapes.items() if k in collectors}, batch)
    say(f"  calibration: sampled {rec.images} image(s) along {', '.join(p.name for p in plans)} "
        f"({time.perf_counter() - t0:.1f} s{_rss()})")
    # Every collector's session is closed before the first graph is quantized: the quantizer loads a
    # whole fp32 graph (all its weights), and the head's session (weights and all) need not sit beside it.
    ranges, feeds = {}, {}
    for name in list(collectors):
        collector = collectors.pop(name)
        feeds[name], ranges[name] = collector.feeds, collector.ranges()
        collector.close()
        del collector
    release()
    for name in list(ranges):
        t = time.perf_counter()
        out[name] = quantize_prepared(graphs[name], paths[name], ranges.pop(name), os.path.dirname(paths[name]),
                                      nodes[name])
        quantized[name] = len(nodes[name])
        release()
        say(f"  {name}: int8 Q/DQ on {quantized[name]} node(s), {spec.method} ranges from {feeds[name]} feed(s) "
            f"({time.perf_counter() - t:.1f} s{_rss()})")
    record_ = {
        "method": spec.method,
        "percentile": PERCENTILE if spec.method == "percentile" else None,
        "plans": [p.name for p in plans],
        "classes": list(spec.classes),
        "seeds": spec.seed_values,
        "images_per_plan": {p.name: len(spec.images(i)) for i, p in enumerate(plans)},
        "random_weights": bool(random_weights),
        "library": "onnxruntime.quantization",
        "library_version": onnxruntime.__version__,
        "scheme": "int8 QDQ, symmetric (zero point 0), activations per tensor, weights per output channel",
        "quantized_nodes": quantized,
        "float_kept": (f"layers matching {', '.join(EXCLUDE)} (head input projection and final linear), "
                       "the timestep embedding lookup, attention products, norms, softmax, activations, residuals, "
                       "the diffusion update"
                       + ("" if VAE_INT8 else ", the VAE decoder (weights stored fp16)")),
    }
    return out, record_

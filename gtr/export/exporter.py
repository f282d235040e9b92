"""Export a model into ONE bundle file: graphs per component, precision, checks, manifest.

    summary = export_bundle(config, mar, vae, [build_plan("gtr", config.grid, cfg=3.0)], batch=1,
                            precision="fp16", out_path="mar-b-fp16.plan", random_weights=False,
                            sources={"checkpoint": "...", "vae": "..."})

Steps: export each graph once with symbolic axes (one graph serves every step of every plan), apply
the precision, pack each component's weights into one blob shared by its graphs, run the ONNX checker
(full check), run every graph on onnxruntime CPU against the torch module for every static shape the
plans need, then write the bundle atomically. The manifest lists, per graph, every static shape
(symbol -> value) the plans use, for engine builders that need one optimization profile per shape.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from gtr.export.onnx_export import (OPSET, ExportError, check_graph, export_graph, graph_modules, pack_component,
                                    reference_module, verify_graph)
from gtr.export.precision import PRECISION_NOTES, TOLERANCES, apply_precision, check_precision

WEIGHTS_MEMBER = "{component}.weights"
GRAPH_MEMBER = "{name}.onnx"


def static_shapes(plans, batch: int) -> dict[str, list[dict]]:
    """Every static shape each graph runs at for these plans, batch images per call, in first-use order.

    backbone {B, K, n} (B = 2*batch with CFG), head {r, r2} (r2 = 2r) for CFG plans, head_nocfg {r}
    for cfg == 1 plans, vae_decoder {B}. When no plan uses CFG, `head` lists the row counts of all
    plans (it is exported anyway, for runtime CFG overrides). The shapes come from
    `gtr.runtime.sampler.step_calls`, the same description of each step that the sampler runs.
    """
    from gtr.runtime.sampler import step_calls
    backbone, head, nocfg = [], [], []

    def add(lst, item):
        if item not in lst:
            lst.append(item)

    for plan in plans:
        for s in range(plan.num_steps):
            sc = step_calls(plan, s, batch)
            add(backbone, {"B": sc.backbone_rows, "K": sc.known, "n": sc.predict})
            for r in sorted({c.rows for c in sc.head}):
                add(head if plan.uses_cfg else nocfg, r)
    rows_for_head = head or nocfg
    shapes = {"backbone": backbone, "head": [{"r": r, "r2": 2 * r} for r in rows_for_head]}
    if nocfg:
        shapes["head_nocfg"] = [{"r": r} for r in nocfg]
    shapes["vae_decoder"] = [{"B": batch}]
    return shapes


def tool_versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    from gtr._version import __version__
    return {"gtr": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _file_digest(path) -> dict | None:
    p = Path(path)
    if not p.is_file():
        return None
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"file": p.name, "bytes": p.stat().st_size, "sha256": h.hexdigest()}


def _check_inputs(config, model, vae, plans, batch, precision):
    check_precision(precision)
    if not plans:
        raise ExportError("no plans given: a bundle needs at least one sampling plan")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ExportError(f"batch must be an integer >= 1, got {batch!r}")
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise ExportError(f"plan names must be unique, got {names}")
    for p in plans:
        if tuple(p.grid) != tuple(config.grid):
            raise ExportError(f"plan {p.name!r} is for a {p.grid[0]}x{p.grid[1]} grid, the model "
                              f"{config.name} has {config.grid[0]}x{config.grid[1]}")
    if getattr(model, "config", config) != config:
        raise ExportError(f"the MAR module was built for config {model.config.name!r}, not {config.name!r}")
    if vae is not None and vae.config != config.vae:
        raise ExportError("the VAE module's config differs from the model config's VAE")
    if vae is not None and vae.config.embed_dim != config.token_dim:
        raise ExportError(f"VAE latent channels ({vae.config.embed_dim}) != model token dim ({config.token_dim})")


def export_bundle(config, model, vae, plans, batch: int, precision: str, out_path, random_weights: bool,
                  sources: dict | None = None, progress=None, log=None, verify: bool = True,
                  calibration=None) -> dict:
    """Export `model` (MAR) and `vae` (AutoencoderKL, decoder side) for `plans` into one bundle file.

    progress / log: optional callables taking one line of text. Returns a summary dict: path, size,
    errors {graph: max error relative to scale}, seconds, members {name: bytes}, graphs.
    calibration: int8 only, a gtr.calibration.CalibrationSpec (default: its defaults).
    Raises ExportError (one-line message) when the export cannot be done or fails its checks.
    """
    say = progress or log or (lambda s: None)
    t0 = time.perf_counter()
    plans = list(plans)
    _check_inputs(config, model, vae, plans, batch, precision)
    if precision == "int8":  # a bad calibration request fails here, before any work
        from gtr.calibration import CalibrationSpec
        calibration = (calibration or CalibrationSpec()).resolve(config.num_classes)
    shapes = static_shapes(plans, batch)
    model, vae = model.eval(), (vae.eval() if vae is not None else None)
    modules = graph_modules(model, vae, config.grid)
    names = [n for n in ("backbone", "head", "head_nocfg", "vae_decoder") if n in shapes and n in modules]
    from gtr.runtime.onnx_backend import make_session

    members, graphs_manifest, errors = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="gtr-export-") as workdir:
        exported = {}
        for name in names:
            t = time.perf_counter()
            g = export_graph(name, modules[name], config, workdir)
            exported[name] = apply_precision(g, precision)
            say(f"  {name}: exported ({time.perf_counter() - t:.1f} s, {len(g.model.graph.node)} nodes"
                f"{', ' + precision if precision != 'fp32' else ''})")
        calibration_record = None
        if precision == "int8":
            from gtr.calibration import calibrate_graphs
            exported, calibration_record = calibrate_graphs(exported, config, plans, batch, calibration, shapes,
                                                            random_weights, workdir, say)
        by_component = {}
        for name in names:
            by_component.setdefault(exported[name].component, []).append(exported[name])
        for component, graphs in by_component.items():
            location = WEIGHTS_MEMBER.format(component=component)
            protos, blob, stats = pack_component(graphs, location)
            members[location] = blob
            for g in graphs:
                check_graph(g.name, protos[g.name], location, blob, workdir)
                member = GRAPH_MEMBER.format(name=g.name)
                members[member] = protos[g.name]
                entry = {"member": member, "weights": location, "component": component, "opset": OPSET,
                         "precision": precision, **g.io_spec(), "static_shapes": shapes[g.name]}
                if verify:
                    t = time.perf_counter()
                    session = make_session(protos[g.name], {location: blob}, ["CPUExecutionProvider"])
                    err = verify_graph(g.name, session, reference_module(modules[g.name]), shapes[g.name], config, plans,
                                       TOLERANCES[precision][g.name])
                    del session
                    errors[g.name] = err
                    entry["max_error"] = err
                    say(f"  {g.name}: checked {len(shapes[g.name])} shape(s) on onnxruntime CPU, max error "
                        f"{err:.2e} (tolerance {TOLERANCES[precision][g.name]:g}, "
                        f"{time.perf_counter() - t:.1f} s)")
                graphs_manifest[g.name] = entry
            say(f"  {component}.weights: {len(blob) / 2**20:.2f} MiB for {len(graphs)} graph(s)")

    sources = dict(sources or {})
    checkpoints = {}
    for key in ("checkpoint", "vae"):
        if sources.get(key):
            digest = _file_digest(sources[key])
            if digest:
                checkpoints[key] = digest
    versions = tool_versions()
    manifest = {
        "gtr_version": versions["gtr"],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "random_weights": bool(random_weights),
        "sources": {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in sources.items()},
        "checkpoints": checkpoints,
        "plans": {p.name: p.to_dict() for p in plans},
        "default_plan": plans[0].name,
        "batch": batch,
        "precision": precision,
        "precision_notes": PRECISION_NOTES[precision],
        "backend": "onnxruntime",
        "graphs": graphs_manifest,
        **({"calibration": calibration_record} if calibration_record else {}),
        "versions": versions,
        "export_seconds": None,
    }
    manifest["export_seconds"] = round(time.perf_counter() - t0, 3)
    from gtr.runtime.bundle import write_bundle
    size = write_bundle(out_path, manifest, members)
    seconds = time.perf_counter() - t0
    return {"path": str(out_path), "size": size, "errors": errors, "seconds": seconds,
            "members": {k: len(v) for k, v in members.items()}, "graphs": list(graphs_manifest)}

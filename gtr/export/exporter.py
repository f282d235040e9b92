"""Export a model into ONE bundle file: graphs per component, precision, checks, manifest.

    summary = export_bundle(config, mar, vae, [build_plan("gtr", config.grid, cfg=3.0)], batch=1,
                            precision="fp16", out_path="mar-b-fp16.plan", random_weights=False,
                            sources={"checkpoint": "...", "vae": "..."})

Steps: export each graph once with symbolic axes (one graph serves every step of every plan), apply
the precision, pack each component's weights into one blob shared by its graphs, run the ONNX checker
(full check), run every graph on onnxruntime CPU against the torch module at the static shapes the
plans need (a spread of them by default, gtr.export.verify.check_shapes), add the head graphs' chain
graphs where they pay (`wants_chain`: fp32 bundles with small heads; gtr.export.head_chain), checked
against the step graph, then write the bundle atomically.

Memory (docs/full-size.md): a component's blob is written to a file in the export's temporary folder
as it is packed and its in-memory arrays are dropped right after, so fp32 / fp16 exports hold the torch
model, at most one component's arrays, and one onnxruntime session at a time; sessions read graphs from
those files. int8 keeps the fp32 arrays until the calibration graphs are written (gtr.calibration).
Every step prints a line with its time; out of memory in a step, or a killed export, ends with one
line naming the step (gtr.export.progress), and leaves no temporary file or partial bundle. The manifest lists, per graph, every static shape
(symbol -> value) the plans use, for engine builders that need one optimization profile per shape.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import platform
import time
from pathlib import Path

import numpy as np

from gtr.errors import ExportError
from gtr.export.checker import check_graph, write_graph
from gtr.export.graphs import OPSET, export_graph, graph_modules, reference_module
from gtr.export.packing import pack_component
from gtr.export.precision import PRECISION_NOTES, apply_precision, check_precision, store_fp16
from gtr.export.progress import ExportGuard, peak_rss, release_memory
from gtr.export.verify import check_mode, check_shapes, verify_graph
from gtr.runtime.fidelity import tolerance

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


def _module_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for b in module.buffers())


def open_session(path: str):
    """onnxruntime CPU session for a graph file whose weights lie next to it (external data).

    No memory arena: the export runs each graph at many shapes (every AR step's K and n), and the
    arena keeps the largest blocks of every shape it has seen (measured: MAR-B int8 calibration grew
    by 4 GiB during 2 images of sampling); without it freed activations go back to the system."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.enable_cpu_mem_arena = False
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def write_model(graph, folder: str) -> str:
    """One graph written to `folder` as <name>.onnx + its weights (external data); returns its path."""
    location = f"{graph.name}.weights"
    os.makedirs(folder, exist_ok=True)
    protos, blob, _ = pack_component([graph], location, os.path.join(folder, location))
    del blob
    return write_graph(folder, graph.name, protos[graph.name], location)


def fp32_sessions(graphs: dict, workdir: str) -> dict:
    """onnxruntime CPU sessions for OnnxGraphs (each written to workdir with its weights)."""
    return {name: open_session(write_model(g, os.path.join(workdir, f"fp32-{name}"))) for name, g in graphs.items()}


COMPONENTS = (("backbone", ("backbone",)), ("head", ("head", "head_nocfg")), ("vae_decoder", ("vae_decoder",)))
CHAIN_PRECISIONS = ("fp32",)  # fp16 and int8 chains measured slower than step calls (docs/speed.md)


def wants_chain(precision: str, head_bytes: int) -> bool:
    """Whether a bundle gets head chain graphs: where the runtime runs the head as row shards (small
    weights: calls are short, so their per-call cost counts) and the chain measured faster."""
    from gtr.runtime.onnx_backend import SHARD_MAX_BYTES
    return precision in CHAIN_PRECISIONS and head_bytes <= SHARD_MAX_BYTES


def add_chain(g, step_proto: bytes, location: str, folder: str, step_path: str, members: dict, shapes, verify,
              config, plans, tolerance: float, say) -> dict:
    """The chain graph of head graph `g` (gtr.export.head_chain): checked by the ONNX checker, against the
    step graph at the largest static shape (unless verify is "none"), stored as a member that reads the
    step graph's weight blob. Returns its manifest entry (kept under the step graph's)."""
    from gtr.export.head_chain import CHAIN_STEPS, chain_inputs, chain_outputs, chain_proto
    from gtr.export.verify import verify_chain
    name = f"{g.name}_chain"
    proto = chain_proto(step_proto)
    path = check_graph(name, proto, location, None, folder)
    member = GRAPH_MEMBER.format(name=name)
    members[member] = proto
    entry = {"member": member, "steps": CHAIN_STEPS, "inputs": chain_inputs(g.inputs),
             "outputs": chain_outputs(g.outputs)}
    t = time.perf_counter()
    if verify != "none" and shapes:
        shape = max(shapes, key=lambda s: s["r"])
        err = verify_chain(g.name, open_session(step_path), open_session(path), CHAIN_STEPS, shape, config, plans,
                           tolerance)
        entry["max_error"] = err
        say(f"  {name}: {CHAIN_STEPS} steps per call, checked against {CHAIN_STEPS} step calls at r = {shape['r']}, "
            f"max error {err:.2e} ({time.perf_counter() - t:.1f} s, peak RSS {peak_rss() / 2**30:.1f} GiB)")
    return entry


def export_bundle(config, model, vae, plans, batch: int, precision: str, out_path, random_weights: bool,
                  sources: dict | None = None, progress=None, log=None, verify="spread",
                  calibration=None) -> dict:
    """Export `model` (MAR) and `vae` (AutoencoderKL, decoder side) for `plans` into one bundle file.

    progress / log: optional callables taking one line of text. Returns a summary dict: path, size,
    errors {graph: max error relative to scale}, seconds, members {name: bytes}, graphs.
    calibration: int8 only, a gtr.calibration.CalibrationSpec (default: its defaults).
    verify: which static shapes each graph is checked at against torch: "spread" (default), "all",
    "none" (gtr.export.verify.check_shapes; True = "spread", False = "none").
    Raises ExportError (one-line message) when the export cannot be done or fails its checks.
    """
    say = progress or log or (lambda s: None)
    t0 = time.perf_counter()
    plans = list(plans)
    _check_inputs(config, model, vae, plans, batch, precision)
    verify = check_mode(verify)
    if precision == "int8":  # a bad calibration request fails here, before any work
        from gtr.calibration import CalibrationSpec
        calibration = (calibration or CalibrationSpec()).resolve(config.num_classes)
    shapes = static_shapes(plans, batch)
    model, vae = model.eval(), (vae.eval() if vae is not None else None)
    modules = graph_modules(model, vae, config.grid)
    names = [n for n in ("backbone", "head", "head_nocfg", "vae_decoder") if n in shapes and n in modules]
    tol = tolerance(precision).graph
    components = [(c, [n for n in gs if n in names]) for c, gs in COMPONENTS]
    components = [(c, gs) for c, gs in components if gs]

    members, graphs_manifest, errors = {}, {}, {}
    with ExportGuard(out_path, say) as guard:
        workdir = guard.workdir
        packed = {}  # component -> (folder, location, protos, blob, graphs without weights)

        def pack(component, graphs):
            location = WEIGHTS_MEMBER.format(component=component)
            folder = os.path.join(workdir, component)
            os.makedirs(folder, exist_ok=True)
            t = time.perf_counter()
            with guard.step(f"{component}: weight packing"):
                protos, blob, stats = pack_component(graphs, location, os.path.join(folder, location))
            say(f"  {component}.weights: packed {stats['blob_bytes'] / 2**20:.1f} MiB for {len(graphs)} graph(s) "
                f"({time.perf_counter() - t:.1f} s, {guard.elapsed():.0f} s in all, peak RSS {peak_rss() / 2**30:.1f} GiB)")
            packed[component] = (folder, location, protos, blob, [dataclasses.replace(g, weights={}) for g in graphs])

        fp32 = {}  # int8: the fp32 graphs calibration samples with
        for component, gnames in components:
            graphs = []
            for name in gnames:
                t = time.perf_counter()
                with guard.step(f"{name}: export", need=int(1.2 * _module_bytes(modules[name]))):
                    g = export_graph(name, modules[name], config, workdir)
                    n_nodes = len(g.model.graph.node)
                    g = apply_precision(g, precision)
                    if precision == "int8" and name == "vae_decoder":
                        g = store_fp16(g)  # not quantized: stored fp16, computed in fp32
                graphs.append(g)
                say(f"  {name}: exported ({time.perf_counter() - t:.1f} s, {n_nodes} nodes"
                    f"{', ' + precision if precision != 'fp32' else ''}{', weights fp16' if precision == 'int8' and name == 'vae_decoder' else ''}, "
                    f"peak RSS {peak_rss() / 2**30:.1f} GiB)")
                del g
            if precision == "int8" and component != "vae_decoder":
                fp32.update((g.name, g) for g in graphs)
            else:
                pack(component, graphs)
            del graphs

        calibration_record = None
        if precision == "int8":
            from gtr.calibration import calibrate_graphs
            with guard.step("calibration"):
                quantized, calibration_record = calibrate_graphs(
                    fp32, config, plans, batch, calibration, shapes, random_weights, workdir, say,
                    write_model=write_model, release=release_memory)
            fp32.clear()
            for component, gnames in components:
                if component != "vae_decoder":  # float tensors left by quantization: stored fp16 too
                    pack(component, [store_fp16(quantized.pop(n)) for n in gnames])
            del quantized
        for component, gnames in components:
            folder, location, protos, blob, graphs = packed[component]
            members[location] = Path(folder, location) if len(blob) else blob  # streamed from its file
            for g in graphs:
                with guard.step(f"{g.name}: onnx checker"):
                    path = check_graph(g.name, protos[g.name], location, None, folder)
                member = GRAPH_MEMBER.format(name=g.name)
                members[member] = protos[g.name]
                entry = {"member": member, "weights": location, "component": component, "opset": OPSET,
                         "precision": precision, **g.io_spec(), "static_shapes": shapes[g.name]}
                checked = check_shapes(shapes[g.name], verify)
                if checked:
                    t = time.perf_counter()
                    with guard.step(f"{g.name}: shape check"):
                        session = open_session(path)
                        err = verify_graph(g.name, session, reference_module(modules[g.name]), checked, config,
                                           plans, tol[g.name], say=say)
                        del session
                    errors[g.name] = err
                    entry["max_error"] = err
                    entry["checked_shapes"] = len(checked)
                    say(f"  {g.name}: checked {len(checked)} of {len(shapes[g.name])} shape(s) on onnxruntime CPU, max error "
                        f"{err:.2e} (tolerance {tol[g.name]:g}, {time.perf_counter() - t:.1f} s, "
                        f"{guard.elapsed():.0f} s in all, peak RSS {peak_rss() / 2**30:.1f} GiB)")
                if component == "head" and wants_chain(precision, len(blob)):
                    with guard.step(f"{g.name}: chain graph"):
                        entry["chain"] = add_chain(g, protos[g.name], location, folder, path, members, shapes[g.name],
                                                   verify, config, plans, tol[g.name], say)
                graphs_manifest[g.name] = entry

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
        t = time.perf_counter()
        with guard.step("writing the bundle"):
            size = write_bundle(out_path, manifest, members)
        say(f"  wrote the bundle: {size / 2**20:.1f} MiB ({time.perf_counter() - t:.1f} s, peak RSS "
            f"{peak_rss() / 2**30:.1f} GiB)")
        members = {k: (v.stat().st_size if isinstance(v, Path) else len(v)) for k, v in members.items()}
        packed.clear()
    seconds = time.perf_counter() - t0
    return {"path": str(out_path), "size": size, "errors": errors, "seconds": seconds,
            "members": members, "graphs": list(graphs_manifest)}

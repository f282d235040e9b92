"""torch -> ONNX, one graph per component, and the checks that run right after export.

Graphs (opset 17; symbolic axes so ONE graph serves every plan step; all inputs/outputs float32/int64
whatever the precision inside):

    backbone     tokens [B,K,c] f32, positions [B,K] i64, class_ids [B] i64, pred_positions [B,n] i64
                 -> z [B,n,D] f32. Runs with K = 0 (the first AR step): the visible-token branch then
                 works on empty tensors, which onnxruntime supports (checked for every plan's step 0).
    head         HeadStep(cfg=True) (exported as gtr.export.head_graph.HeadGraph): x [r,c], t [r] i64, z [r2,D] (r2 = 2r: cond rows then uncond),
                 coef [r,7], cfg_weight [r,1], noise [r,c] -> x_prev [r,c]
    head_nocfg   HeadStep(cfg=False): x, t, z [r,D], coef, noise -> x_prev (the exporter drops the
                 unused cfg_weight input; the manifest lists each graph's real inputs)
    vae_decoder  tokens [B,L,c] -> images [B,3,H,W] (AutoencoderKL.tokens_to_image: the token layout
                 and the scale factor are inside the graph)

The graphs come from the TorchScript exporter (`dynamo=False`): it keeps the symbolic K, n and r axes
of the plain gathers in gtr.models.mar and exports in a fraction of a second; no scatters, no
data-dependent shapes.

Weights are held apart from the graph protos (`OnnxGraph.weights`) and packed per component into one
blob that every graph of the component references as ONNX external data (`pack_component`), so the
head and head_nocfg graphs share one copy of the MLP weights (deduplicated by content).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from gtr.errors import ExportError  # noqa: F401  (re-exported: defined with the other error types)

OPSET = 17
EMBED_BELOW = 1024  # tensors smaller than this many bytes stay inside the graph proto (shape constants etc.)


@dataclass
class OnnxGraph:
    """One exported graph: the proto without initializers, plus its initializers as numpy arrays."""
    name: str
    component: str  # weights group: graphs of one component share one weight blob
    model: object  # onnx.ModelProto, graph.initializer empty
    weights: dict = field(default_factory=dict)  # initializer name -> np.ndarray
    inputs: list = field(default_factory=list)  # [{"name", "dtype", "shape"}], symbolic dims as str
    outputs: list = field(default_factory=list)

    def io_spec(self) -> dict:
        return {"inputs": self.inputs, "outputs": self.outputs}


# --------------------------------------------------------------------------------------------------
# torch modules with the graph signatures


def _modules():
    import torch

    class Backbone(torch.nn.Module):
        def __init__(self, mar):
            super().__init__()
            self.mar = mar

        def forward(self, tokens, positions, class_ids, pred_positions):
            return self.mar(tokens, positions, class_ids, pred_positions).float()

    class VaeDecoder(torch.nn.Module):
        def __init__(self, vae, grid):
            super().__init__()
            self.vae, self.grid = vae, tuple(grid)

        def forward(self, tokens):
            return self.vae.tokens_to_image(tokens, self.grid).float()

    return Backbone, VaeDecoder


def graph_modules(mar, vae, grid) -> dict:
    """The torch modules each graph is exported from; `reference_module` gives the one it is checked against."""
    from gtr.export.head_graph import HeadGraph
    Backbone, VaeDecoder = _modules()
    T = mar.config.num_timesteps
    mods = {"backbone": Backbone(mar).eval(), "head": HeadGraph(mar.diffloss.net, True, T).eval(),
            "head_nocfg": HeadGraph(mar.diffloss.net, False, T).eval()}
    if vae is not None:
        mods["vae_decoder"] = VaeDecoder(vae, grid).eval()
    return mods


def reference_module(module):
    """What an exported graph is checked against: HeadGraph's HeadStep (the reference math), else the module."""
    return getattr(module, "reference", module)


COMPONENT = {"backbone": "backbone", "head": "head", "head_nocfg": "head", "vae_decoder": "vae_decoder"}


def io_specs(config) -> dict:
    """Graph inputs/outputs: (name, dtype, shape) with symbolic dims as strings."""
    from gtr.runtime.sampler import COEF_COLUMNS
    c, D = config.token_dim, config.decoder_embed_dim
    L = config.seq_len
    H = W = config.img_size
    ncoef = len(COEF_COLUMNS)
    head = [("x", "float32", ["r", c]), ("t", "int64", ["r"]), ("z", "float32", ["r2", D]),
            ("coef", "float32", ["r", ncoef]), ("cfg_weight", "float32", ["r", 1]), ("noise", "float32", ["r", c])]
    nocfg = [("x", "float32", ["r", c]), ("t", "int64", ["r"]), ("z", "float32", ["r", D]),
             ("coef", "float32", ["r", ncoef]), ("cfg_weight", "float32", ["r", 1]), ("noise", "float32", ["r", c])]
    return {
        "backbone": ([("tokens", "float32", ["B", "K", c]), ("positions", "int64", ["B", "K"]),
                      ("class_ids", "int64", ["B"]), ("pred_positions", "int64", ["B", "n"])],
                     [("z", "float32", ["B", "n", D])]),
        "head": (head, [("x_prev", "float32", ["r", c])]),
        "head_nocfg": (nocfg, [("x_prev", "float32", ["r", c])]),
        "vae_decoder": ([("tokens", "float32", ["B", L, c])],
                        [("images", "float32", ["B", config.vae.out_channels, H, W])]),
    }


def trace_args(name: str, config):
    """Small example inputs for tracing (K > 0 so the visible-token branch is in the graph)."""
    import torch
    g = torch.Generator().manual_seed(0)
    c, D, L = config.token_dim, config.decoder_embed_dim, config.seq_len
    if name == "backbone":
        B, K, n = 2, min(3, L - 1), 1
        perm = torch.randperm(L, generator=g)
        pos = perm[:K].sort().values[None].repeat(B, 1)
        pred = perm[K:K + n].sort().values[None].repeat(B, 1)
        return (torch.randn(B, K, c, generator=g), pos, torch.tensor([0, config.num_classes]), pred)
    if name in ("head", "head_nocfg"):
        r = 3
        rz = 2 * r if name == "head" else r
        return (torch.randn(r, c, generator=g), torch.randint(0, config.num_timesteps, (r,), generator=g),
                torch.randn(rz, D, generator=g), torch.rand(r, 7, generator=g), torch.ones(r, 1),
                torch.randn(r, c, generator=g))
    if name == "vae_decoder":
        return (torch.randn(1, L, c, generator=g),)
    raise KeyError(name)


# --------------------------------------------------------------------------------------------------
# export


def _set_shape(value_info, shape):
    dims = value_info.type.tensor_type.shape.dim
    del dims[:]
    for d in shape:
        dim = dims.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = int(d)


def export_graph(name: str, module, config, workdir: str) -> OnnxGraph:
    """Export one module to ONNX (opset 17, symbolic batch/length axes) and split off its weights."""
    import onnx
    import torch
    from onnx import numpy_helper

    inputs, outputs = io_specs(config)[name]
    args = trace_args(name, config)
    dynamic_axes = {n: {i: d for i, d in enumerate(shape) if isinstance(d, str)} for n, _, shape in inputs + outputs}
    path = os.path.join(workdir, f"{name}.fp32.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, path, dynamo=False, input_names=[n for n, _, _ in inputs],
                              output_names=[n for n, _, _ in outputs], opset_version=OPSET,
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
        except Exception as e:  # noqa: BLE001 - any exporter failure is an export error
            raise ExportError(f"torch.onnx.export of {name} failed: {str(e).strip().splitlines()[0]}") from e
    model = onnx.load(path, load_external_data=False)
    weights = {}
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init, base_dir=workdir)
        weights[init.name] = np.ascontiguousarray(arr)
    del model.graph.initializer[:]
    del model.graph.value_info[:]
    present = {i.name for i in model.graph.input}
    spec_in = [(n, dt, s) for n, dt, s in inputs if n in present]  # unused inputs are dropped by the exporter
    for vi, (n, _, shape) in zip(model.graph.input, spec_in):
        assert vi.name == n, (vi.name, n)
        _set_shape(vi, shape)
    for vi, (n, _, shape) in zip(model.graph.output, outputs):
        _set_shape(vi, shape)
    for node in model.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ExportError(f"{name}: the graph has control flow ({node.op_type}); static graphs only")
        if node.op_type in ("ScatterND", "ScatterElements", "Scatter", "NonZero"):
            raise ExportError(f"{name}: the graph has a {node.op_type} node (gathers only, no data-dependent shapes)")
    model.producer_name, model.doc_string = "gtr", f"gtr {name} graph"
    as_dict = lambda spec: [{"name": n, "dtype": dt, "shape": list(s)} for n, dt, s in spec]  # noqa: E731
    return OnnxGraph(name=name, component=COMPONENT[name], model=model, weights=weights,
                     inputs=as_dict(spec_in), outputs=as_dict(outputs))


def pack_component(graphs: list[OnnxGraph], location: str) -> tuple[dict, bytes, dict]:
    """Serialize graphs of ONE component against one shared weight blob.

    Every initializer of EMBED_BELOW bytes or more goes into the blob once per distinct content
    (dtype, shape, bytes), 64-byte aligned, and is referenced from each graph as ONNX external data
    with `location` (the bundle member name). Returns ({graph: proto bytes}, blob, stats).
    """
    import onnx
    from onnx import helper

    chunks, index, size = [], {}, 0
    protos, referenced = {}, 0
    for g in graphs:
        m = onnx.ModelProto()
        m.CopyFrom(g.model)
        for name, arr in g.weights.items():
            arr = np.ascontiguousarray(arr)
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            t = m.graph.initializer.add()
            t.name = name
            t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
            t.dims.extend(arr.shape)
            raw = arr.tobytes()
            if len(raw) < EMBED_BELOW:
                t.raw_data = raw
                continue
            referenced += len(raw)
            key = (t.data_type, arr.shape, hashlib.sha256(raw).digest())
            if key not in index:
                pad = -size % 64
                if pad:
                    chunks.append(b"\0" * pad)
                index[key] = size + pad
                chunks.append(raw)
                size += pad + len(raw)
            t.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", location), ("offset", str(index[key])), ("length", str(len(raw)))):
                e = t.external_data.add()
                e.key, e.value = k, v
        protos[g.name] = m.SerializeToString()
    blob = b"".join(chunks)
    return protos, blob, {"blob_bytes": len(blob), "referenced_bytes": referenced}


def check_graph(name: str, proto: bytes, location: str, blob: bytes, workdir: str) -> None:
    """onnx.checker full check (with strict shape inference) on the graph as written, external data included."""
    import onnx
    d = os.path.join(workdir, f"check-{name}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, location), "wb") as f:
        f.write(blob)
    path = os.path.join(d, f"{name}.onnx")
    with open(path, "wb") as f:
        f.write(proto)
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{name}: onnx checker failed: {str(e).strip().splitlines()[0]}") from e


# --------------------------------------------------------------------------------------------------
# verification on onnxruntime CPU against the torch module


def verify_inputs(name: str, shape: dict, config, plans, rng: np.random.Generator) -> dict:
    """Random but realistic inputs for one static shape of a graph (numpy, keyed by input name)."""
    c, D, L = config.token_dim, config.decoder_embed_dim, config.seq_len
    if name == "backbone":
        B, K, n = shape["B"], shape["K"], shape["n"]
        perms = np.stack([rng.permutation(L) for _ in range(B)])
        return {"tokens": rng.standard_normal((B, K, c), dtype=np.float32),
                "positions": np.sort(perms[:, :K], axis=1).astype(np.int64),
                "class_ids": rng.integers(0, config.num_classes + 1, B).astype(np.int64),
                "pred_positions": np.sort(perms[:, K:K + n], axis=1).astype(np.int64)}
    if name in ("head", "head_nocfg"):
        from gtr.plan import spaced_schedule, step_table
        from gtr.runtime.sampler import COEF_COLUMNS
        r = shape["r"]
        Ts = sorted({T for p in plans for T in p.diffusion_Ts()}) or [100]
        T = Ts[int(rng.integers(len(Ts)))]
        k = rng.integers(0, T, r)
        k[0] = T - 1  # always include the first reverse step (t = 999: the largest coefficients)
        coef = np.empty((r, len(COEF_COLUMNS)), np.float32)
        coef[:, :-1] = step_table(T)[k]
        coef[:, -1] = np.where(k > 0, 1.0, 0.0)  # noise_scale
        cfgs = [p.cfg for p in plans] or [1.0]
        return {"x": rng.standard_normal((r, c), dtype=np.float32),
                "t": spaced_schedule(T).timesteps[k].astype(np.int64),
                "z": rng.standard_normal((2 * r if name == "head" else r, D), dtype=np.float32),
                "coef": coef,
                "cfg_weight": rng.uniform(1.0, max(cfgs), (r, 1)).astype(np.float32),
                "noise": rng.standard_normal((r, c), dtype=np.float32)}
    if name == "vae_decoder":
        return {"tokens": rng.standard_normal((shape["B"], L, c), dtype=np.float32)}
    raise KeyError(name)


def max_error(got: np.ndarray, ref: np.ndarray, row_gain: np.ndarray | None = None) -> float:
    """max |got - ref| relative to the output scale max(1, max |ref|); inf on a shape mismatch or NaN.

    row_gain (head graphs): per-row amplification of an eps error by the update, 1 + c1 * r2. The
    first reverse step multiplies eps by r2 ~ 2e4 and then by c1, so c1 * r2 reaches ~300-1700 at
    t = 999: fp32 rounding of eps (~1e-7) alone moves x_prev by ~1e-4 there, in torch as in any
    engine. Dividing by the gain measures head errors in eps units, where one tolerance fits every row.
    """
    if got.shape != ref.shape or not np.isfinite(got).all():
        return float("inf")
    diff = np.abs(got.astype(np.float64) - ref)
    if row_gain is not None:
        diff = diff / row_gain.reshape(-1, *([1] * (diff.ndim - 1)))
    return float(diff.max(initial=0.0) / max(1.0, float(np.abs(ref).max(initial=0.0))))


def verify_graph(name: str, session, module, shapes: list[dict], config, plans, tolerance: float,
                 seed: int = 0) -> float:
    """Run the graph (an onnxruntime session) and the torch module on random inputs for every static
    shape; return the largest error (see `max_error`), raise ExportError above `tolerance`."""
    import torch
    rng = np.random.default_rng(seed)
    in_names = [i.name for i in session.get_inputs()]
    worst, worst_shape = 0.0, None
    for shape in shapes:
        feeds = verify_inputs(name, shape, config, plans, rng)
        with torch.no_grad():
            ref = module(*[torch.from_numpy(v) for v in feeds.values()])  # feeds are in forward() order
        ref = ref.float().numpy()
        got = session.run(None, {k: feeds[k] for k in in_names})[0]
        gain = 1.0 + feeds["coef"][:, 2].astype(np.float64) * feeds["coef"][:, 1] if "coef" in feeds else None
        err = max_error(got, ref, gain)
        if err >= worst:
            worst, worst_shape = err, shape
    if not worst <= tolerance:
        raise ExportError(f"{name}: onnxruntime output differs from torch by {worst:.3g} (relative to scale) at "
                          f"shape {worst_shape}, above the tolerance {tolerance:g}")
    return worst

"""torch -> ONNX, one graph per component (graph export only; weight packing is gtr.export.packing,
the checker gtr.export.checker, the comparison with torch gtr.export.verify).

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

Weights are held apart from the graph protos (`OnnxGraph.weights`, numpy arrays) and packed per
component by gtr.export.packing.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from gtr.errors import ExportError

OPSET = 17


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
    """Export one module to ONNX (opset 17, symbolic batch/length axes) and split off its weights.

    Memory: the exporter gets the graph only (`export_params=False`, no constant folding), so it never
    copies a weight; the weights are the module's own tensors, as numpy views (`fold_weights` applies
    the weight-only nodes torch's folding would have: transposes as views, the few small others
    computed). The graph is the one torch's folding makes: the same non-Constant nodes, under the same
    names. Before this, the exporter's folded copies, its proto and the serialized proto made a
    fp32 MAR-B/L export peak at 3.7-3.9x the weights (docs/full-size.md)."""
    import onnx
    import torch

    inputs, outputs = io_specs(config)[name]
    args = trace_args(name, config)
    dynamic_axes = {n: {i: d for i, d in enumerate(shape) if isinstance(d, str)} for n, _, shape in inputs + outputs}
    path = os.path.join(workdir, f"{name}.fp32.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, path, dynamo=False, input_names=[n for n, _, _ in inputs],
                              output_names=[n for n, _, _ in outputs], opset_version=OPSET,
                              dynamic_axes=dynamic_axes, do_constant_folding=False, export_params=False)
        except Exception as e:  # noqa: BLE001 - any exporter failure is an export error
            raise ExportError(f"torch.onnx.export of {name} failed: {str(e).strip().splitlines()[0]}") from e
    model = onnx.load(path)
    os.remove(path)
    state = {**dict(module.named_parameters(remove_duplicate=False)), **dict(module.named_buffers(remove_duplicate=False))}
    real = {n for n, _, _ in inputs}
    params, kept = {}, []
    for vi in model.graph.input:  # the weights arrive as extra graph inputs, named as in the module
        if vi.name in real:
            kept.append(vi)
        elif vi.name in state:
            params[vi.name] = arr = state[vi.name].detach().numpy()  # a view of the module's tensor: no copy
            arr.flags.writeable = False  # nothing downstream may write into the torch model
        else:
            raise ExportError(f"{name}: the exported graph reads {vi.name!r}, which is not a weight of the module")
    del model.graph.input[:]
    model.graph.input.extend(kept)
    weights = fold_weights(model, params)
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


def fold_weights(model, params: dict) -> dict:
    """Fold the nodes of `model` whose inputs are all constant (weights, Constant nodes, folded outputs)
    into weights, as torch's constant folding does; returns {name: np.ndarray} of the weights the
    remaining nodes read. Transposes (of linear weights) become views of their input, no copy;
    anything else is computed by onnx's reference evaluator (small: shape constants, a concat of
    embeddings). Constant nodes stay nodes (as torch leaves them), unless nothing reads them any more."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    values = dict(params)  # every constant value known so far
    folded = dict.fromkeys(params)  # the ones that become weights, in a fixed order (bundles are deterministic)
    nodes = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            attr = node.attribute[0]
            if attr.name == "value":
                values[node.output[0]] = numpy_helper.to_array(attr.t)
            nodes.append(node)
            continue
        if node.input and all(x in values for x in node.input if x):
            if node.op_type == "Transpose":
                perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
                arr = values[node.input[0]]
                values[node.output[0]] = arr.transpose(perm[0]) if perm else arr.T
            else:
                outs = ReferenceEvaluator(node).run(None, {x: values[x] for x in node.input if x})
                values.update((o, np.asarray(v)) for o, v in zip(node.output, outs))
            folded.update(dict.fromkeys(node.output))
            continue
        nodes.append(node)
    used = {x for n in nodes for x in n.input} | {o.name for o in model.graph.output}
    nodes = [n for n in nodes if n.op_type != "Constant" or n.output[0] in used]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return {k: values[k] for k in folded if k in used}

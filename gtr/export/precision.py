"""Graph precision: fp32 (as exported) or fp16 (FP16 weights and casts in the graph itself).

TensorRT 11 has no builder precision flags, so precision must live in the ONNX graph. The fp16 pass
rewrites the exported fp32 graph:

* Compute in fp16: the matrix ops only, MatMul, Gemm and Conv (`FP16_OPS`): their weights become
  fp16 initializers, activation inputs get a Cast to fp16, outputs a Cast back to fp32. These are the
  ops that run on tensor cores and whose weights dominate the bytes read (the head loop is
  memory-bound on its weights).
* Everything else computes in fp32, which covers what must not run in fp16: LayerNorm, GroupNorm
  (InstanceNormalization + affine in the export), softmax, GELU/SiLU, residual adds, the timestep
  embedding lookup, and the diffusion update (r1*x - r2*eps reaches ~1e5 at t = 999, beyond the
  fp16 maximum 65504; mar-spec.md §11).
* Storage: every float initializer feeding a fp16 op, and every other float initializer of
  `STORE_FP16_MIN` elements or more (position embeddings, the class table, the head's timestep
  embedding table: T x width values, precomputed at export by gtr.export.head_graph), is stored in
  fp16; the latter get a Cast to fp32 in the graph (constant-folded by onnxruntime and TensorRT), so
  the timestep table is looked up from fp16-rounded values and used in fp32. Small
  fp32-only tensors (norm scales, bias vectors of 3-D linears) stay fp32. A fp16 bundle is therefore
  about half the fp32 size.
* Graph inputs and outputs stay fp32 (and int64), so the runtime is precision-agnostic.

onnxruntime CPU: the fp16 graph runs on the CPU provider. Where the CPU provider has no fp16 kernel for
an op (on x86 this includes MatMul, Gemm and Conv), onnxruntime's InsertCastTransformer computes that
op in fp32 from the fp16-rounded inputs and weights, so CPU results carry the fp16 rounding of weights
and matmul inputs with fp32 accumulation, like tensor-core fp16 with fp32 accumulation. The casts it
inserts are then merged with the graph's own, so a matmul output is not limited to the fp16 range on
the CPU: a value beyond 65504 that would be inf on a GPU stays finite. The range is therefore checked
on onnx's reference evaluator, which computes fp16 ops in fp16 (tests/test_fp16_attention.py); that is
why attention scales q and k before QK^T. fp16 is slower than fp32 on CPU: it is for GPUs, the CPU run
is the check.

int8: explicit symmetric Q/DQ graphs made from calibration data sampled along the plans, by
gtr.calibration (which needs the data, so export_bundle calls it; `apply_precision` leaves the
graph fp32 for it). What stays float is listed in gtr.calibration.quantize. The VAE decoder is not
quantized; in int8 bundles its weights are stored fp16 and cast to fp32 in the graph (`store_fp16`),
so it computes in fp32 from fp16-rounded weights and takes half the bytes. The same storage applies
to the float tensors of STORE_FP16_MIN elements or more that quantization leaves in the backbone and
head graphs (position embeddings, class table, timestep table, large biases), as in fp16 bundles;
Q/DQ scales stay fp32.

The export check's tolerances per precision are gtr.runtime.fidelity's (one table for every check).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from gtr.errors import ExportError
from gtr.export.graphs import OnnxGraph

PRECISIONS = ("fp32", "fp16", "int8")
FP16_OPS = ("MatMul", "Gemm", "Conv")
STORE_FP16_MIN = 4096  # float initializers used only in fp32 ops are stored fp16 from this many elements

PRECISION_NOTES = {
    "fp32": "fp32 everywhere",
    "fp16": ("fp16 weights and compute for MatMul/Gemm/Conv (Cast in, Cast out); LayerNorm, GroupNorm, "
             "softmax, activations, residuals, the timestep embedding lookup and the diffusion update in fp32; "
             f"other float initializers of >= {STORE_FP16_MIN} elements (the timestep embedding table among "
             "them) stored fp16 and cast to fp32; graph inputs/outputs fp32"),
    "int8": ("int8 QDQ (symmetric, zero point 0; activations per tensor, weights per output channel) on the "
             "inputs of constant-weight MatMul/Gemm/Conv from calibration along the plans (see 'calibration'); "
             "timestep embedding lookup, attention products, norms, softmax, activations, residuals and the "
             "diffusion update in fp32; VAE decoder in fp32 with its weights stored fp16; other float initializers "
             f"of >= {STORE_FP16_MIN} elements (not Q/DQ scales) stored fp16 and cast to fp32; graph inputs/outputs fp32"),
}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return precision


def apply_precision(graph: OnnxGraph, precision: str) -> OnnxGraph:
    check_precision(precision)
    return to_fp16(graph) if precision == "fp16" else graph  # int8: quantized after calibration


def to_fp16(graph: OnnxGraph) -> OnnxGraph:
    """The fp16 rewrite described in the module docstring; returns a new OnnxGraph."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    nodes = list(model.graph.node)
    weights = dict(graph.weights)
    graph_outputs = {o.name for o in model.graph.output}

    consumers = defaultdict(list)
    for ni, node in enumerate(nodes):
        for name in node.input:
            if name:
                consumers[name].append(ni)
    is16 = [node.op_type in FP16_OPS for node in nodes]

    to_half, cast_back = set(), set()  # weights stored fp16; of those, the ones fp32 ops also read
    for name, arr in weights.items():
        if arr.dtype != np.float32:
            continue
        uses = consumers.get(name, [])
        n16 = sum(is16[ni] for ni in uses)
        if n16 or arr.size >= STORE_FP16_MIN:
            to_half.add(name)
            if n16 < len(uses):
                cast_back.add(name)
    for name in to_half:
        a = weights[name]
        if np.abs(a).max(initial=0.0) > 65504.0:
            raise ExportError(f"{graph.name}: weight {name} has values beyond the fp16 range")
        weights[name] = a.astype(np.float16)

    def fp32_name(name):
        return f"{name}__fp32"

    out = [helper.make_node("Cast", [n], [fp32_name(n)], to=TensorProto.FLOAT, name=f"{n}__cast_fp32")
           for n in sorted(cast_back)]
    cast16, from16 = {}, {}  # fp32 tensor -> its fp16 cast; fp32 tensor made by Cast(fp16 X) -> X
    for ni, node in enumerate(nodes):
        if not is16[ni]:
            for i, name in enumerate(node.input):
                if name in cast_back:
                    node.input[i] = fp32_name(name)
            out.append(node)
            continue
        for i, name in enumerate(node.input):
            if not name or name in to_half:
                continue  # absent optional input, or a weight already stored in fp16
            if name in weights:
                raise ExportError(f"{graph.name}: {node.op_type} input {name} is {weights[name].dtype}, "
                                  f"expected float32")
            if name in from16:
                node.input[i] = from16[name]
                continue
            if name not in cast16:
                cast16[name] = f"{name}__fp16"
                out.append(helper.make_node("Cast", [name], [cast16[name]], to=TensorProto.FLOAT16,
                                            name=f"{name}__cast_fp16"))
            node.input[i] = cast16[name]
        originals = list(node.output)
        for i, o in enumerate(originals):
            node.output[i] = f"{o}__fp16"
        out.append(node)
        for o in originals:
            out.append(helper.make_node("Cast", [f"{o}__fp16"], [o], to=TensorProto.FLOAT, name=f"{o}__cast_fp32"))
            from16[o] = f"{o}__fp16"

    # Drop casts back to fp32 that nobody reads (fp16 op feeding a fp16 op directly).
    used = {name for node in out for name in node.input} | graph_outputs
    out = [n for n in out if not (n.op_type == "Cast" and n.output[0] not in used and n.name.endswith("__cast_fp32"))]
    del model.graph.node[:]
    model.graph.node.extend(out)
    del model.graph.value_info[:]
    return OnnxGraph(name=graph.name, component=graph.component, model=model, weights=weights,
                     inputs=graph.inputs, outputs=graph.outputs)


def store_fp16(graph: OnnxGraph) -> OnnxGraph:
    """Weights stored fp16, compute unchanged: every float32 initializer of STORE_FP16_MIN elements or
    more becomes fp16 with one Cast back to fp32 in front of its readers (constant-folded by
    onnxruntime and TensorRT). Initializers that a QuantizeLinear / DequantizeLinear reads (scales)
    stay as they are. Used in int8 bundles: for the VAE decoder (all of its weights) and for the float
    tensors left in the quantized graphs (position embeddings, the class table, the timestep table,
    large biases)."""
    import onnx
    from onnx import TensorProto, helper

    weights = dict(graph.weights)
    qdq = {i for n in graph.model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") for i in n.input}
    big = sorted(n for n, a in weights.items()
                 if a.dtype == np.float32 and a.size >= STORE_FP16_MIN and n not in qdq)
    for name in big:
        if np.abs(weights[name]).max(initial=0.0) > 65504.0:
            raise ExportError(f"{graph.name}: weight {name} has values beyond the fp16 range")
        weights[name] = weights[name].astype(np.float16)
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    nodes = list(model.graph.node)
    renamed = {n: f"{n}__fp32" for n in big}
    for node in nodes:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    casts = [helper.make_node("Cast", [n], [renamed[n]], to=TensorProto.FLOAT, name=f"{n}__cast_fp32") for n in big]
    del model.graph.node[:]
    model.graph.node.extend(casts + nodes)
    del model.graph.value_info[:]
    return OnnxGraph(name=graph.name, component=graph.component, model=model, weights=weights,
                     inputs=graph.inputs, outputs=graph.outputs)

"""Whether an ONNX graph is one TensorRT's ONNX parser accepts, by onnx-tensorrt's operator support table
(tests/data/onnx_tensorrt_10.1_operators.tsv, TensorRT 10.1: the oldest gtr supports).

`problems(model, external)` lists, one line each: an opset outside the parser's range, an operator it
does not support, a tensor type it does not take for that operator, and any broken restriction of the
table. Every restriction the table states for an operator the graph uses must have a check here
(RESTRICTIONS), or that is a problem too, so a new operator in the exporter cannot slip through.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

TABLE_FILE = Path(__file__).resolve().parent / "data" / "onnx_tensorrt_10.1_operators.tsv"
OPSETS = (9, 20)  # the table's "opset 9 to opset 20"
TYPES = {"FLOAT": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16", "INT32": "INT32", "INT64": "INT64", "INT8": "INT8",
         "UINT8": "UINT8", "BOOL": "BOOL", "FLOAT8E4M3FN": "FP8", "INT4": "INT4"}  # DOUBLE: cast down, not wanted
TYPED_INPUT = {"Where": 1}  # which input carries the operator's type (default: the first)
TYPED_OUTPUT = {"Constant", "ConstantOfShape"}  # typed by their output
RESIZE = {"coordinate_transformation_mode": {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                             "align_corners"},
          "mode": {"nearest", "linear"}, "nearest_mode": {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"},
          "keep_aspect_ratio_policy": {"stretch"}}


def table() -> dict[str, tuple[set, str]]:
    rows = {}
    for line in TABLE_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            op, types, restriction = (line.split("\t") + ["", ""])[:3]
            rows[op] = (set(filter(None, types.split(","))), restriction)
    return rows


class Graph:
    """A model with its types inferred, its constants (initializers and Constant outputs) and their values."""

    def __init__(self, model: onnx.ModelProto, external: dict | None = None):
        self.model = onnx.shape_inference.infer_shapes(model)
        g = self.model.graph
        self.types = {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.input, *g.output)}
        self.types.update({i.name: i.data_type for i in g.initializer})
        self.inits = {i.name: i for i in g.initializer}
        self.constants = set(self.inits) | {o for n in g.node if n.op_type == "Constant" for o in n.output}
        self.external = external or {}

    def type_name(self, tensor: str) -> str:
        return onnx.TensorProto.DataType.Name(self.types.get(tensor, 0))

    def value(self, tensor: str) -> np.ndarray | None:
        init = self.inits.get(tensor)
        if init is None:
            return None
        if init.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in init.external_data}
            blob = self.external[info["location"]]
            start = int(info.get("offset", 0))
            raw = bytes(blob[start:start + int(info["length"])])
            dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
            return np.frombuffer(raw, dtype).reshape(tuple(init.dims))
        return numpy_helper.to_array(init)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _constant_input(index: int, what: str):
    def check(node, g: Graph):
        if len(node.input) > index and node.input[index] and node.input[index] not in g.constants:
            return f"{what} ({node.input[index]}) is not an initializer or constant"
    return check


def _zero_point(index: int, name: str):
    def check(node, g: Graph):
        if len(node.input) <= index or not node.input[index]:
            return None  # absent: zero
        zp = g.value(node.input[index])
        if zp is None:
            return f"{name} is not an initializer"
        if g.type_name(node.input[index]) != "INT8":
            return f"{name} is {g.type_name(node.input[index])}, not INT8"
        if np.any(zp != 0):
            return f"{name} is not zero"
        axis = _attr(node, "axis")
        rank = len(g.inits[node.input[0]].dims) if node.input[0] in g.inits else None
        scale = g.inits.get(node.input[1])
        if scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1 and rank is not None:
            if axis is None or not -rank <= axis < rank:
                return f"per-channel scale with axis {axis} for a rank-{rank} tensor"
    return check


def _resize(node, g: Graph):
    for name, allowed in RESIZE.items():
        value = _attr(node, name)
        value = value.decode() if isinstance(value, bytes) else value
        if value is not None and value not in allowed:
            return f"{name} {value!r} is not one of {sorted(allowed)}"
    if _attr(node, "antialias", 0):
        return "antialiasing is not supported"
    return None


def _layer_norm(node, g: Graph):
    if any(node.output[1:]):
        return "only the first output Y is supported"


def _constant(node, g: Graph):
    if {a.name for a in node.attribute} & {"sparse_value", "value_string", "value_strings"}:
        return "sparse or string values are unsupported"


REDUCE_AXES = _constant_input(1, "axes")
RESTRICTIONS = {
    "Slice": _constant_input(3, "axes"), "Squeeze": _constant_input(1, "axes"),
    "Unsqueeze": _constant_input(1, "axes"), "ReduceSum": REDUCE_AXES, "ReduceMean": REDUCE_AXES,
    "ReduceMax": REDUCE_AXES, "Pad": _constant_input(3, "axes"), "CumSum": _constant_input(1, "axis"),
    "QuantizeLinear": _zero_point(2, "y_zero_point"), "DequantizeLinear": _zero_point(2, "x_zero_point"),
    "Resize": _resize, "LayerNormalization": _layer_norm, "Constant": _constant,
}


def problems(model: onnx.ModelProto, external: dict | None = None, where: str = "") -> list[str]:
    """Everything in `model` that TensorRT's ONNX parser (10.1) does not accept, one line each."""
    ops, out = table(), []
    g = Graph(model, external)
    for opset in g.model.opset_import:
        if opset.domain in ("", "ai.onnx") and not OPSETS[0] <= opset.version <= OPSETS[1]:
            out.append(f"{where}: opset {opset.version} is outside {OPSETS}")
    for node in g.model.graph.node:
        at = f"{where}: {node.op_type} {node.name or node.output[0]}"
        if node.op_type not in ops:
            out.append(f"{at}: not supported by TensorRT's ONNX parser")
            continue
        allowed, restriction = ops[node.op_type]
        tensors = node.output[:1] if node.op_type in TYPED_OUTPUT else node.input[TYPED_INPUT.get(node.op_type, 0):][:1]
        for t in tensors:
            kind = TYPES.get(g.type_name(t))
            if kind not in allowed:
                out.append(f"{at}: type {g.type_name(t)} of {t} is not one of {sorted(allowed)}")
        if node.op_type == "Cast":
            kind = TYPES.get(onnx.TensorProto.DataType.Name(_attr(node, "to")))
            if kind not in allowed:
                out.append(f"{at}: cast to {kind} is not supported")
        if restriction:
            check = RESTRICTIONS.get(node.op_type)
            if check is None:
                out.append(f"{at}: its restriction is not checked here: {restriction}")
            elif (problem := check(node, g)) is not None:
                out.append(f"{at}: {problem} ({restriction})")
    return out

"""INT8 Q/DQ graphs through onnxruntime.quantization (static quantization, QDQ format).

What is quantized (`int8_nodes`), chosen by measurement (README, INT8 section):

* backbone: every MatMul with a constant weight, i.e. the attention projections (qkv, proj), the MLPs
  (fc1, fc2) and the token / decoder embedding projections. The attention products QK^T and AV
  (activation x activation) stay float, as do LayerNorm, softmax and the residual adds.
* head: the condition embedding, the adaLN modulations and the residual MLPs (every Gemm but those in
  `EXCLUDE`). Float: the timestep embedding (a table lookup in the exported graph, gtr.export.head_graph: no
  Gemm), the input projection (reads x_t), the final
  linear layer (writes eps), SiLU, LayerNorm and the whole diffusion update (CFG mix, learned variance,
  r1*x - r2*eps, noise). Measured on mar-tiny (gtr plan, only the head in int8): with input_proj or
  the final linear in int8 the samples collapse (class accuracy 15 % and 60 %, tokens off by 1e2-1e6),
  because their rounding reaches eps directly and the first reverse step multiplies an eps error by
  ~2e4; every other layer in int8 keeps 100 %. Both are tiny (c x w and w x 2c weights).
* vae_decoder: float (`VAE_INT8` = False; with it, every Conv). Runs once per image; see VAE_INT8.
* head Gemms get their bias as a separate Add first (`_split_bias`), so that onnxruntime runs them in int8.

Scheme (what TensorRT's explicit quantization expects): int8, symmetric (zero point 0), activations per
tensor, weights per output channel, Q/DQ on the inputs of a quantized op only (its output stays float:
no requantization between ops), biases float. Weights are stored once, as int8 initializers with their
per-channel scales behind a DequantizeLinear.

The Q/DQ insertion, per-channel weight quantization and the range computation (MinMax, Percentile,
Entropy) are onnxruntime's. Hand-written, each where onnxruntime lacks it: the calibration data
(gtr.calibration.collect), the node selection above (`nodes_to_quantize`), a private input edge per
quantized node (`prepared`: the update must read the float x_t) and the head's bias split
(`_split_bias`: otherwise no int8 kernel on the CPU).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os

import numpy as np

from gtr.calibration.spec import METHODS, CalibrationError

OPS = ("MatMul", "Gemm", "Conv")
# Node-name fragments that stay float: the head's first and last layer.
# (No timestep-embedding entry: the head graph looks its embedding up in a table, see
# gtr.export.head_graph, so it has no Gemm to exclude.)
EXCLUDE = ("/input_proj/", "/final_layer/linear/")
# VAE decoder Conv layers stay float: onnxruntime's CPU int8 conv (QLinearConv) needs Q/DQ on the conv
# output and an int32 bias; with input-only Q/DQ the conv runs as dequantize + fp32 conv (README, INT8).
VAE_INT8 = False
PERCENTILE = 99.999


def int8_nodes(graph) -> list[str]:
    """Names of the nodes of an exported fp32 OnnxGraph that get int8 Q/DQ (see module docstring)."""
    ops = ("Conv",) if graph.name == "vae_decoder" else ("MatMul", "Gemm")
    if graph.name == "vae_decoder" and not VAE_INT8:
        return []
    return [n.name for n in graph.model.graph.node
            if n.op_type in ops and len(n.input) > 1 and n.input[1] in graph.weights
            and not any(x in n.name for x in EXCLUDE)]


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs advice on the root logger and prints histogram progress to stdout;
    keep the CLI's output to gtr's own lines."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _reader(feeds, input_names):
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        """Feeds one at a time; len/set_range are what onnxruntime's strided calibration uses, so that
        only one feed's intermediate tensors are held in memory."""

        def __init__(self):
            names = set(input_names)
            self.feeds = [{k: v for k, v in f.items() if k in names} for f in feeds]
            self.start, self.end = 0, len(self.feeds)

        def __len__(self):
            return len(self.feeds)

        def set_range(self, start_index, end_index):
            self.start, self.end = start_index, end_index

        def get_next(self):
            if self.start >= self.end:
                return None
            self.start += 1
            return self.feeds[self.start - 1]

    return FeedReader()


def prepared_graph(graph, nodes):
    """A copy of the OnnxGraph (same weight arrays, not copied) in which each of `nodes` reads its
    activation through its own Identity (and head Gemms have their bias split off). `prepared` puts
    the initializers back into one ModelProto, which is what onnxruntime.quantization reads.

    Why the Identity: when only one quantized node reads a tensor, onnxruntime's QDQ quantizer rewires
    every reader of that tensor to the dequantized copy (DedicatedQDQPair only applies to several
    quantized readers), so float readers would get the rounded copy: the diffusion update reads the
    head's x_t (r1 * x at t = 999), Shape nodes read the backbone's LayerNorm outputs. A private
    Identity keeps the quantization on the edge into the quantized node; onnxruntime and TensorRT
    remove Identities.
    """
    import onnx
    from onnx import helper
    m = onnx.ModelProto()
    m.CopyFrom(graph.model)
    wanted, out = set(nodes), []
    for node in m.graph.node:
        if node.name in wanted:
            private = f"{node.input[0]}__to_{node.name}"
            out.append(helper.make_node("Identity", [node.input[0]], [private], name=f"{private}__identity"))
            node.input[0] = private
        if node.name in wanted and node.op_type == "Gemm":
            out.extend(_split_bias(node))
        else:
            out.append(node)
    del m.graph.node[:]
    m.graph.node.extend(out)
    import dataclasses
    return dataclasses.replace(graph, model=m)


def prepared(graph, nodes):
    """The prepared graph (`prepared_graph`) as one ModelProto with its initializers put back."""
    from onnx import numpy_helper
    g = prepared_graph(graph, nodes)
    g.model.graph.initializer.extend(numpy_helper.from_array(np.asarray(a), name) for name, a in g.weights.items())
    return g.model


def _split_bias(node) -> list:
    """Gemm(x, W, b) of a linear layer -> Gemm(x, W) + Add(b), keeping the node's name.

    Why: onnxruntime's CPU provider fuses a Q/DQ Gemm without bias into its int8 QGemm kernel (float
    output), but a Q/DQ Gemm with a float bias is not fused and runs as dequantize-every-call + fp32
    Gemm (slower than fp32); quantizing the bias to int32 instead would put it in the Q/DQ scheme,
    which TensorRT does not want. TensorRT takes either form.
    """
    from onnx import helper
    if len(node.input) < 3 or not node.input[2]:
        return [node]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        raise CalibrationError(f"{node.name}: Gemm with alpha/beta is not a plain linear layer")
    y, bias = node.output[0], node.input[2]
    del node.input[2]
    node.output[0] = f"{y}__nobias"
    return [node, helper.make_node("Add", [f"{y}__nobias", bias], [y], name=f"{node.name}__bias")]


def _calib_options() -> dict:
    """quantize_static's extra options that gtr sets (shared by the range collection and the quantizer)."""
    return {
        "ActivationSymmetric": True, "WeightSymmetric": True,  # zero point 0 everywhere (TensorRT)
        "CalibTensorRangeSymmetric": True,
        "MatMulConstBOnly": True,  # QK^T and AV stay float
        "QuantizeBias": False,  # float bias: TensorRT fuses it, onnxruntime adds it after the int8 GEMM
        "OpTypesToExcludeOutputQuantization": list(OPS),  # Q/DQ on inputs only, outputs stay float
        "DedicatedQDQPair": True,  # other readers of a quantized input (the update reads x) keep float
        "CalibPercentile": PERCENTILE,
    }


class RangeCollector:
    """onnxruntime.quantization's calibrator for one prepared graph (`prepared`, written to
    `model_path`), fed one feed at a time as sampling makes them (gtr.calibration.collect.FeedStream).

    The calibrator is the one quantize_static builds for the same options (its augmented model and
    session, MinMax / Percentile / Entropy), and `add` calls its collect_data on one feed, as
    quantize_static's strided collection (CalibStridedMinMax = 1) did over a list held in memory:
    MinMax merges each feed's range into a running one, the histogram methods add each feed to their
    histograms, so memory does not depend on the number of feeds. `ranges()` -> TensorsData.
    """

    def __init__(self, model_path: str, input_names, method: str):
        from pathlib import Path

        from onnxruntime.quantization import CalibrationMethod
        from onnxruntime.quantization.calibrate import create_calibrator
        folder = os.path.dirname(os.path.abspath(model_path))
        extra = _calib_options()
        calib_extra = {"symmetric": extra["CalibTensorRangeSymmetric"], "percentile": extra["CalibPercentile"]}
        with _quiet():
            self.calibrator = create_calibrator(Path(model_path), list(OPS),
                                                augmented_model_path=os.path.join(folder, "augmented_model.onnx"),
                                                calibrate_method=getattr(CalibrationMethod, METHODS[method]),
                                                use_external_data_format=True, extra_options=calib_extra)
        # The augmented model lives in its session now; the calibrator's copy of the model proto (all
        # weights, loaded by onnx) is not read again by collect_data / compute_data.
        self.calibrator.model = None
        # Its session again, with the same options (no graph optimization, as onnxruntime's calibrators
        # run) but no memory arena: feeds come at many shapes, and the arena would keep the largest
        # blocks of each (gtr.export.exporter.open_session). Same kernels, same numbers.
        import onnxruntime
        so = onnxruntime.SessionOptions()
        so.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.enable_cpu_mem_arena = False
        self.calibrator.infer_session = None
        self.calibrator.infer_session = onnxruntime.InferenceSession(
            self.calibrator.augmented_model_path, sess_options=so, providers=self.calibrator.execution_providers)
        self.names = set(input_names)
        self.feeds = 0

    def add(self, feed: dict) -> None:
        with _quiet():
            self.calibrator.collect_data(_reader([feed], self.names))
        self.feeds += 1

    def ranges(self):
        if not self.feeds:
            raise CalibrationError("no calibration data was collected")
        with _quiet():
            return self.calibrator.compute_data()

    def close(self) -> None:
        self.calibrator = None


def quantize_prepared(graph, model_path: str, ranges, workdir: str, nodes: list[str]):
    """Static int8 QDQ quantization of the prepared graph at `model_path` with precomputed `ranges`
    (RangeCollector.ranges(), passed to quantize_static as its calibration cache) on `nodes`
    (`int8_nodes` of the fp32 graph); returns a new OnnxGraph (`graph`, the fp32 one, gives the name,
    component and io spec; its weights are not read)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    if not nodes:
        raise CalibrationError(f"{graph.name}: no int8 nodes given (onnxruntime would quantize every node)")
    cache = os.path.join(workdir, f"{graph.name}.ranges.json")
    save_tensors_data(ranges, cache)
    path = os.path.join(workdir, f"{graph.name}.int8.onnx")
    with _quiet():
        quantize_static(
            model_path, path, None, calibration_cache_path=cache,
            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(OPS), nodes_to_quantize=list(nodes),
            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=ranges.calibration_method, use_external_data_format=True,
            extra_options=_calib_options())
    return _quantized_graph(graph, path)


def quantize_graph(graph, feeds: list[dict], method: str, workdir: str):
    """Static int8 QDQ quantization of one fp32 OnnxGraph calibrated on `feeds` held in memory (the
    unbounded way, kept as the tests' reference for `RangeCollector` + `quantize_prepared`); returns a new
    OnnxGraph."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    nodes = int8_nodes(graph)
    if not nodes:
        return graph
    if not feeds:
        raise CalibrationError(f"no calibration data for the {graph.name} graph")
    path = os.path.join(workdir, f"{graph.name}.int8.onnx")
    with _quiet():
        quantize_static(
            prepared(graph, nodes), path, _reader(feeds, [i["name"] for i in graph.inputs]),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(OPS), nodes_to_quantize=nodes, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, METHODS[method]), use_external_data_format=True,
            extra_options={**_calib_options(), "CalibStridedMinMax": 1})
    return _quantized_graph(graph, path)


def _quantized_graph(graph, path: str):
    """The quantized model written at `path` as an OnnxGraph like `graph`: its weights taken out of the
    proto (only those the quantized graph reads), so packing stores them once."""
    import dataclasses

    import onnx
    from onnx import numpy_helper
    model = onnx.load(path)  # external data from workdir
    used = {i for n in model.graph.node for i in n.input}
    weights = {t.name: np.ascontiguousarray(numpy_helper.to_array(t)) for t in model.graph.initializer
               if t.name in used}
    del model.graph.initializer[:]
    del model.graph.value_info[:]
    model.producer_name, model.doc_string = graph.model.producer_name, graph.model.doc_string
    return dataclasses.replace(graph, model=model, weights=weights)

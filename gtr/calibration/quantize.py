"""INT8 Q/DQ graphs through onnxruntime.quantization (static quantization, QDQ format).

What is quantized (`int8_nodes`), chosen by measurement (docs/int8.md):

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
# output and an int32 bias; with input-only Q/DQ the conv runs as dequantize + fp32 conv (docs/int8.md).
VAE_INT8 = False
PERCENTILE = 99.999
# What the range collectors take ranges of: the outputs of the private Identity in front of each int8
# node (`prepared_graph`), i.e. exactly the int8 nodes' activation inputs (`_private_edges`). Why not
# onnxruntime's default (every input and output of every MatMul/Gemm/Conv, attention scores
# included): its augmented graph keeps every such tensor alive until its reductions at the end of the
# run, which at MAR-L with 4 rows per call took the calibration 4 GiB over its weights. Why not the
# Identities' inputs too (onnxruntime's choice for op type Identity; the same values): twice the
# reductions for nothing, and slower sampling (benchmarks/calib_speed.py).
CALIBRATED = ("Identity",)


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


class _FeedList:
    """What onnxruntime's calibrators read feeds from (get_next until None), over a list.

    A module-level class on purpose: a class made per call inside a function keeps the feeds it
    closes over alive until the cyclic garbage collector runs (classes are cycles), and calibration
    makes one per graph call."""

    def __init__(self, feeds, input_names):
        names = set(input_names)
        self.feeds = [{k: v for k, v in f.items() if k in names} for f in feeds]
        self.next = 0

    def get_next(self):
        if self.next >= len(self.feeds):
            return None
        self.next += 1
        return self.feeds[self.next - 1]


def _reader(feeds, input_names) -> _FeedList:
    return _FeedList(feeds, input_names)


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
    `model_path`), used as that graph's session while calibration samples (gtr.calibration.collect).

    The calibrator is onnxruntime's class for the method (MinMax / Percentile / Entropy) with the
    options quantize_static would give it, taking ranges of the private edges only (`_private_edges`);
    its augmented model is the graph's own output plus a reduction (or, for histograms, a copy) of
    every tensor a range is taken of.
    `run(None, feed)` runs the augmented model once, hands those outputs to the calibrator's
    collect_data for this one feed (as quantize_static's strided collection, CalibStridedMinMax = 1,
    did over a list held in memory) and returns the graph's own output: sampling and range collection
    are one run. MinMax merges each feed's range into a running one, the histogram methods add each
    feed to their histograms, so memory does not depend on the number of feeds. A feed with an empty
    input (K = 0) is run but left out of the ranges (collect.has_data). `ranges()` -> TensorsData.
    """

    def __init__(self, model_path: str, input_names, method: str):
        from pathlib import Path

        import onnxruntime

        from gtr.runtime.cpus import usable_cpus
        self.model_path = str(model_path)
        folder = os.path.dirname(os.path.abspath(model_path))
        extra = _calib_options()
        options = {"symmetric": extra["CalibTensorRangeSymmetric"]}
        if method == "percentile":
            options["percentile"] = extra["CalibPercentile"]
        with _quiet():  # what onnxruntime's create_calibrator does, with the class of `_private_edges`
            self.calibrator = _private_edges(METHODS[method])(
                Path(model_path), list(CALIBRATED), augmented_model_path=os.path.join(folder, "augmented_model.onnx"),
                use_external_data_format=True, **options)
            self.calibrator.augment_graph()
        # The augmented model is on disk now; the calibrator's copy of the model proto (all weights,
        # loaded by onnx) is not read again by collect_data / compute_data.
        self.calibrator.model = None
        # Its session, with onnxruntime's default graph optimizations instead of none (the
        # calibrators' choice): the fused graph samples faster (with the selection above, MAR-B's
        # calibration sampling 1.10x, within 3 % of plain sessions: benchmarks/calib_speed.py), and the
        # tensors the ranges are taken of stay, since the reductions read them. One intra-op thread
        # per usable CPU (onnxruntime's default counts the machine's cores), and no memory arena: feeds
        # come at many shapes, and the arena would keep the largest blocks of each
        # (gtr.export.exporter.open_session).
        # Priority-based order (ready nodes by node index) runs each reduction as soon as its tensor
        # exists: onnxruntime.quantization inserts it before the tensor's first reader. In the default
        # order the calibrated tensors stayed alive far longer (measured: MAR-B's export peak 2.80 ->
        # 2.38 GiB with 2 images per call, MAR-H's 10.0 -> 8.5 GiB).
        so = onnxruntime.SessionOptions()
        so.execution_order = onnxruntime.ExecutionOrder.PRIORITY_BASED
        so.enable_cpu_mem_arena = False
        so.intra_op_num_threads = usable_cpus()
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            self.calibrator.augmented_model_path, sess_options=so, providers=self.calibrator.execution_providers)
        self.calibrator.infer_session = self.session
        original = sorted(self.calibrator.model_original_outputs)
        self.output_args = self.session.get_outputs()
        out_names = [o.name for o in self.output_args]
        self.output = next(i for i, n in enumerate(out_names) if n in original)  # the graph's own (first) output
        self.names = set(input_names)
        self.feeds = 0

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, output_names, feed: dict) -> list:
        """The graph's output for `feed` (as a one-element list, like a session's run); the feed's ranges
        are merged in on the way. output_names: ignored (the graph has one output)."""
        from gtr.calibration.collect import has_data
        feed = {k: v for k, v in feed.items() if k in self.names}
        outputs = self.session.run(None, feed)
        if has_data(feed):
            if getattr(self.calibrator, "collector", None) is not None:  # histogram methods
                _bound_histograms(self.calibrator.collector, self.output_args, outputs)
            self.calibrator.infer_session = _Replay(self.session, outputs)
            try:
                with _quiet():
                    self.calibrator.collect_data(_reader([feed], self.names))
            finally:
                self.calibrator.infer_session = self.session
            self.feeds += 1
        return [outputs[self.output]]

    def add(self, feed: dict) -> None:
        """Merge one feed's ranges (its output is not needed)."""
        self.run(None, feed)

    def ranges(self):
        if not self.feeds:
            raise CalibrationError("no calibration data was collected")
        with _quiet():
            return self.calibrator.compute_data()

    def close(self) -> None:
        self.calibrator = self.session = None


BIN_GROWTH = 16  # a tensor's histogram may grow to this many times the collector's initial bins


def _bound_histograms(collector, output_args, outputs) -> None:
    """Coarsen each tensor's histogram (merging groups of 2 or 3 bins) until this call's largest |value| fits in
    BIN_GROWTH x the collector's initial bin count.

    Why: onnxruntime's histogram collector fixes a tensor's bin width at its first feed (its range /
    num_bins) and adds bins of that width for every larger value after: when the first feed's range is
    small (the first reverse step, an untrained model whose x_t grows along the chain), the bin count
    grows without bound and collection stalls (measured: 16 million bins after 29 head calls of
    mar-test). Merging bins keeps the same histogram at a coarser resolution. Entries are
    (hist, edges, min, max) for percentile (absolute values, edges from the first |x|) and
    (hist, edges, min, max, threshold) for entropy (edges over [-threshold, threshold])."""
    limit = BIN_GROWTH * collector.num_bins
    histograms = collector.histogram_dict
    for arg, value in zip(output_args, outputs):
        entry = histograms.get(arg.name)
        if entry is None or not np.size(value):
            continue
        hist, edges = entry[0], entry[1]
        width = float(edges[1] - edges[0])
        amax = float(np.nanmax(np.abs(value)))
        if not np.isfinite(amax) or width <= 0:
            continue
        symmetric = len(entry) == 5
        threshold = float(entry[4]) if symmetric else None
        # bins the collector would have after this feed
        needed = lambda w: 2 * max(amax, threshold) / w if symmetric else (amax - float(edges[0])) / w  # noqa: E731
        while needed(width) > limit and len(hist) >= 4:
            # merge groups of 2 bins (3 for an odd count of entropy's symmetric bins, padded by the same
            # number of empty bins on both ends, so that the bins stay symmetric about 0)
            factor = 2 if len(hist) % 2 == 0 else 3
            pad_hi = (len(hist) % 3 if factor == 3 else 0) if symmetric else -len(hist) % factor
            pad_lo = pad_hi if symmetric else 0
            step = edges.dtype.type(width)
            if pad_lo or pad_hi:
                hist = np.concatenate([np.zeros(pad_lo, hist.dtype), hist, np.zeros(pad_hi, hist.dtype)])
                edges = np.concatenate([edges[0] - step * np.arange(pad_lo, 0, -1, dtype=edges.dtype), edges,
                                        edges[-1] + step * np.arange(1, pad_hi + 1, dtype=edges.dtype)])
                if symmetric:
                    threshold += pad_hi * width
            hist = hist.reshape(-1, factor).sum(axis=1)
            edges = edges[::factor]
            width *= factor
        if symmetric:
            entry = (*entry[:4], np.array(threshold, dtype=np.asarray(entry[4]).dtype))
        histograms[arg.name] = (hist, edges, *entry[2:])


def _private_edges(method: str):
    """onnxruntime's calibrator class for `method` (MinMax, Percentile, Entropy), taking ranges of the
    Identity nodes' outputs only (see CALIBRATED)."""
    from onnxruntime.quantization import calibrate
    base = getattr(calibrate, f"{method}Calibrater")

    class PrivateEdges(base):
        def select_tensors_to_calibrate(self, model):
            tensors, value_infos = super().select_tensors_to_calibrate(model)
            outputs = {n.output[0] for n in model.graph.node if n.op_type in CALIBRATED}
            return tensors & outputs, value_infos

    return PrivateEdges


class _Replay:
    """The augmented session as the calibrator sees it during one collect_data: its run answers with
    the outputs `RangeCollector.run` already computed for that feed (no second run)."""

    def __init__(self, session, outputs):
        self.session, self.outputs = session, outputs

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, output_names, feed):
        return self.outputs


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

"""Every graph gtr exports is one TensorRT's ONNX parser accepts: the fp32, fp16 and int8 graphs of
mar-tiny and of the official fixtures' config (mar-test), node by node (operator, opset, types, Q/DQ axis
and zero points, constant axes, Resize modes, LayerNormalization's outputs) against onnx-tensorrt's
support table for TensorRT 10.1 (tests/onnx_trt_support.py, tests/data/)."""
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_trt_support import problems, table

pytest.importorskip("torch")

EXPORTS = [("mar-tiny", "fp32"), ("mar-tiny", "fp16"), ("mar-tiny", "int8"), ("mar-test", "fp32"),
           ("mar-test", "fp16"), ("mar-test", "int8")]


@pytest.fixture(scope="module", params=EXPORTS, ids=["-".join(e) for e in EXPORTS])
def bundle(request, tmp_path_factory):
    import gtr
    from gtr.runtime.bundle import read_bundle
    from gtr.calibration import CalibrationSpec
    model, precision = request.param
    path = tmp_path_factory.mktemp("onnx-trt") / f"{model}-{precision}.plan"
    little = CalibrationSpec(classes=(1,), seeds=1) if precision == "int8" else None  # the graph, not its ranges
    gtr.export(model, path, precision=precision, plans=["mar-4"], log=None, verify=False,
               random_weights=model == "mar-test", calibration=little)
    return read_bundle(path)


def test_every_exported_graph_parses_on_tensorrt(bundle):
    found = []
    for name, g in bundle.graphs.items():
        model = onnx.ModelProto()
        model.ParseFromString(bytes(bundle.member(g["member"])))
        external = {g["weights"]: bundle.member(g["weights"])} if g.get("weights") else {}
        assert len(model.graph.node) > 50
        found += problems(model, external, f"{bundle.path.name} {name}")
    assert found == []


def _model(nodes, inits=(), inputs=(("x", TensorProto.FLOAT, [2, 4]),), outputs=(("y", TensorProto.FLOAT, None),),
           opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(*o) for o in outputs], initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_the_check_finds_what_tensorrt_refuses():
    """Not vacuous: an unsupported operator, an opset past the table, a double tensor, Slice axes computed
    at run time, a DequantizeLinear with a non-zero (and non-int8) zero point, a Resize mode TensorRT
    lacks, and a LayerNormalization asking for its mean output are all found."""
    import numpy as np
    assert "Unique" not in table() and "Einsum" in table()
    found = problems(_model([helper.make_node("Unique", ["x"], ["y"])]), where="m")
    assert found == ["m: Unique y: not supported by TensorRT's ONNX parser"]
    assert problems(_model([helper.make_node("Relu", ["x"], ["y"])], opset=21)) == [": opset 21 is outside (9, 20)"]
    found = problems(_model([helper.make_node("Relu", ["x"], ["y"])], inputs=[("x", TensorProto.DOUBLE, [2])],
                            outputs=[("y", TensorProto.DOUBLE, None)]))
    assert len(found) == 1 and "type DOUBLE" in found[0]
    starts = numpy_helper.from_array(np.array([0], np.int64), "s")
    found = problems(_model([helper.make_node("Shape", ["x"], ["ax"]), helper.make_node("Slice", ["x", "s", "s", "ax"], ["y"])],
                            [starts]))
    assert len(found) == 1 and "axes (ax) is not an initializer or constant" in found[0]
    w = numpy_helper.from_array(np.ones((4, 4), np.int8), "w")
    scale = numpy_helper.from_array(np.ones(4, np.float32), "sc")
    for zp, message in ((np.full(4, 3, np.int8), "x_zero_point is not zero"),
                        (np.zeros(4, np.uint8), "x_zero_point is UINT8, not INT8")):
        found = problems(_model([helper.make_node("DequantizeLinear", ["w", "sc", "zp"], ["y"], axis=0)],
                                [w, scale, numpy_helper.from_array(zp, "zp")], inputs=()))
        assert len(found) == 1 and message in found[0], found
    found = problems(_model([helper.make_node("DequantizeLinear", ["w", "sc", "zp"], ["y"], axis=2)],
                            [w, scale, numpy_helper.from_array(np.zeros(4, np.int8), "zp")], inputs=()))
    assert len(found) == 1 and "per-channel scale with axis 2 for a rank-2 tensor" in found[0]
    sizes = numpy_helper.from_array(np.array([4, 8], np.int64), "sz")
    found = problems(_model([helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="cubic")], [sizes]))
    assert len(found) == 1 and "mode 'cubic'" in found[0]
    gamma = numpy_helper.from_array(np.ones(4, np.float32), "g")
    found = problems(_model([helper.make_node("LayerNormalization", ["x", "g", "g"], ["y", "mean"])], [gamma]))
    assert len(found) == 1 and "only the first output Y" in found[0]

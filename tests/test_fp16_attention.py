"""fp16 attention range: QK^T is a fp16 MatMul in fp16 graphs, so q and k are scaled before the product.

Inputs where q.k of a token with itself is ~1e5 (beyond fp16's 65504 before the 1/sqrt(d) scale) must
give finite outputs that match the fp32 torch module, for the MAR attention (head dim 64) and the
VAE's single-head attention over 512 channels. onnxruntime's CPU provider computes fp16 MatMuls in
fp32 and so never overflows; the graphs are therefore also run on onnx's reference evaluator, which
computes fp16 ops in fp16 as a GPU does.
"""
import warnings

import numpy as np
import pytest
import torch

from gtr.export.onnx_export import OPSET, OnnxGraph, pack_component
from gtr.export.precision import to_fp16
from gtr.models.mar import Attention
from gtr.models.vae import AttnBlock
from gtr.runtime.onnx_backend import make_session

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fp16_graph(module, x, tmp_path) -> OnnxGraph:
    """The module exported as the exporter does, rewritten to fp16."""
    import onnx
    from onnx import numpy_helper
    path = tmp_path / "m.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes, as in the exporter
        torch.onnx.export(module, (torch.from_numpy(x),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], opset_version=OPSET)
    model = onnx.load(str(path))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    del model.graph.initializer[:]
    graph = to_fp16(OnnxGraph("m", "m", model, weights))
    softmax_inputs = [n.input[0] for n in graph.model.graph.node if n.op_type == "Softmax"]
    assert softmax_inputs and not any(name.endswith("__fp16") for name in softmax_inputs)  # softmax in fp32
    return graph


def run_fp16(graph, x) -> dict:
    """The fp16 graph on onnxruntime CPU and on onnx's reference evaluator (true fp16 arithmetic)."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator
    protos, blob, _ = pack_component([graph], "m.weights")
    ort_out = make_session(protos["m"], {"m.weights": blob}, ["CPUExecutionProvider"]).run(None, {"x": x})[0]
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    model.graph.initializer.extend(numpy_helper.from_array(a, name) for name, a in graph.weights.items())
    with np.errstate(all="ignore"):  # an overflow should show as a failed check, not a warning
        ref_out = ReferenceEvaluator(model).run(None, {"x": x})[0]
    return {"onnxruntime": ort_out, "fp16 reference": ref_out}


def check(module, x, tmp_path):
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    for engine, got in run_fp16(fp16_graph(module, x, tmp_path), x).items():
        assert np.isfinite(got).all(), engine
        err = np.abs(got - ref).max() / np.abs(ref).max()
        assert err < 3e-2, (engine, err)  # the exporter's fp16 tolerance


def test_mar_attention_large_logits(tmp_path):
    dim, heads, a = 128, 2, 40.0  # head dim 64: q.k of a token with itself ~ a^2 * 64 = 1e5
    attn = Attention(dim, heads).eval()
    with torch.no_grad():
        eye = torch.eye(dim)
        attn.qkv.weight.copy_(torch.cat([a * eye, a * eye, eye]))  # q = k = a x, v = x
        attn.qkv.bias.zero_()
    x = np.random.default_rng(0).standard_normal((2, 10, dim)).astype(np.float32)
    check(attn, x, tmp_path)


def test_vae_attention_512_channels(tmp_path):
    channels, a = 512, 16.0  # q.k of a position with itself ~ a^2 * 512 = 1.3e5
    block = AttnBlock(channels).eval()
    with torch.no_grad():
        eye = torch.eye(channels)[:, :, None, None]
        for conv, gain in ((block.q, a), (block.k, a), (block.v, 1.0), (block.proj_out, 1.0)):
            conv.weight.copy_(gain * eye)
            conv.bias.zero_()
    x = np.random.default_rng(1).standard_normal((1, channels, 4, 4)).astype(np.float32)
    check(block, x, tmp_path)

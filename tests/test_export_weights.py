"""Export memory (issue 19): the exporter gets the graph only, the weights stay the module's own tensors
(numpy views, no copy), and the graph is the one torch's constant folding makes."""
import collections
import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from gtr.export.graphs import OPSET, io_specs, trace_args
from tiny_export_model import TINY, tiny_graphs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAMES = ("backbone", "head", "vae_decoder")


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    return (*tiny_graphs(models, d, NAMES), d)


def _torch_folded(name, module, folder):
    """The same module through torch's own constant folding (the exporter's copies included)."""
    inputs, outputs = io_specs(TINY)[name]
    path = os.path.join(folder, f"{name}-folded.onnx")
    dyn = {n: {i: x for i, x in enumerate(s) if isinstance(x, str)} for n, _, s in inputs + outputs}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, trace_args(name, TINY), path, dynamo=False, input_names=[n for n, _, _ in inputs],
                          output_names=[n for n, _, _ in outputs], opset_version=OPSET, dynamic_axes=dyn,
                          do_constant_folding=True)
    return path


def test_weights_are_views_of_the_module_tensors(exported):
    mods, graphs, _ = exported
    for name in NAMES:
        tensors = [t.detach().numpy() for t in list(mods[name].parameters()) + list(mods[name].buffers())]
        weights = graphs[name].weights
        # Every weight matrix (transposed ones too) is a view; what is computed instead is small (shape
        # constants, a gathered positional table: at MAR-L 1.3 MB of 1.9 GB).
        big = {k: a for k, a in weights.items() if a.nbytes >= 16 * 1024}
        assert big and all(any(np.shares_memory(a, t) for t in tensors) for a in big.values()), name
        assert not any(a.flags.writeable for a in big.values()), name  # nothing may write into the model


def test_graph_is_the_torch_folded_graph(exported, tmp_path):
    mods, graphs, _ = exported
    for name in NAMES:
        ref = onnx.load(_torch_folded(name, mods[name], str(tmp_path)))
        g = graphs[name]
        ops = lambda nodes: collections.Counter(n.op_type for n in nodes if n.op_type != "Constant")  # noqa: E731
        assert ops(g.model.graph.node) == ops(ref.graph.node), name
        quantizable = lambda m, w: {n.name for n in m.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")  # noqa: E731
                                    and len(n.input) > 1 and n.input[1] in w}
        ref_inits = {t.name for t in ref.graph.initializer}
        assert quantizable(g.model, g.weights) == quantizable(ref, ref_inits), name  # same int8 candidates
        # Same numbers: our graph with its weights put back, against torch's folded graph.
        m = onnx.ModelProto()
        m.CopyFrom(g.model)
        m.graph.initializer.extend(onnx.numpy_helper.from_array(np.ascontiguousarray(a), k) for k, a in g.weights.items())
        feeds = {n: v.numpy() for (n, _, _), v in zip(io_specs(TINY)[name][0], trace_args(name, TINY))}
        a, b = ort.InferenceSession(m.SerializeToString()), ort.InferenceSession(ref.SerializeToString())
        feed = {i.name: feeds[i.name] for i in a.get_inputs()}
        assert np.array_equal(a.run(None, feed)[0], b.run(None, feed)[0]), name

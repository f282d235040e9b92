"""torch -> ONNX export: graphs, K = 0, fp16 rewrite, shared weights, bundle sizes, export errors."""
import numpy as np
import onnx
import pytest
import torch

from gtr.export.exporter import export_bundle, static_shapes
from gtr.export.onnx_export import ExportError
from gtr.plan import build_plan
from gtr.runtime.bundle import read_bundle
from gtr.runtime.onnx_backend import make_session
from tiny_export_model import TINY, tiny_models

pytestmark = pytest.mark.usefixtures("one_torch_thread")

@pytest.fixture(scope="module")
def fp32_bundle(models, plans, tmp_path_factory):
    path = tmp_path_factory.mktemp("exp") / "fp32.plan"
    lines = []
    summary = export_bundle(TINY, *models, plans, batch=1, precision="fp32", out_path=path, random_weights=True,
                            sources={"random_seed": 0}, progress=lines.append)
    return path, summary, lines


@pytest.fixture(scope="module")
def fp16_bundle(models, plans, tmp_path_factory):
    path = tmp_path_factory.mktemp("exp") / "fp16.plan"
    summary = export_bundle(TINY, *models, plans, batch=1, precision="fp16", out_path=path, random_weights=True,
                            sources={"random_seed": 0})
    return path, summary


def _graph_model(b, name):
    """The graph proto as stored (weights stay external)."""
    return onnx.load_from_string(bytes(b.member(b.graphs[name]["member"])))


def test_summary_and_manifest(fp32_bundle, plans):
    path, summary, lines = fp32_bundle
    assert summary["path"] == str(path) and summary["size"] == path.stat().st_size
    assert set(summary["errors"]) == {"backbone", "head", "head_nocfg", "vae_decoder"}
    assert summary["errors"]["backbone"] <= 1e-4 and summary["errors"]["head"] <= 1e-4
    assert summary["errors"]["vae_decoder"] <= 1e-3
    assert any("max error" in line for line in lines)
    b = read_bundle(path)
    m = b.manifest
    assert m["precision"] == "fp32" and m["backend"] == "onnxruntime" and m["batch"] == 1
    assert m["random_weights"] is True and m["sources"] == {"random_seed": 0}
    assert list(b.plans().values()) == plans and b.config == TINY
    assert {"torch", "onnx", "onnxruntime", "numpy", "python", "gtr"} <= set(m["versions"])
    assert m["created"].endswith("+00:00")
    # Graph I/O as documented, symbolic axes by name.
    g = m["graphs"]
    assert [(i["name"], i["shape"]) for i in g["backbone"]["inputs"]] == [
        ("tokens", ["B", "K", 4]), ("positions", ["B", "K"]), ("class_ids", ["B"]), ("pred_positions", ["B", "n"])]
    assert g["backbone"]["outputs"] == [{"name": "z", "dtype": "float32", "shape": ["B", "n", 32]}]
    assert [i["name"] for i in g["head"]["inputs"]] == ["x", "t", "z", "coef", "cfg_weight", "noise"]
    assert g["head"]["inputs"][2]["shape"] == ["r2", 32]
    assert [i["name"] for i in g["head_nocfg"]["inputs"]] == ["x", "t", "z", "coef", "noise"]
    assert g["vae_decoder"]["outputs"][0]["shape"] == ["B", 3, 32, 32]
    # Static shapes: every step of every plan, CFG doubling the backbone batch.
    shapes = static_shapes(plans, 1)
    assert g["backbone"]["static_shapes"] == shapes["backbone"]
    assert {"B": 2, "K": 0, "n": plans[0].steps[0].predict} == shapes["backbone"][0]
    assert {"B": 1, "K": 0, "n": plans[1].steps[0].predict} in shapes["backbone"]
    assert len(shapes["backbone"]) == len({(s.known_before, s.predict, p.uses_cfg) for p in plans for s in p.steps})
    assert all(s["r2"] == 2 * s["r"] for s in shapes["head"])
    assert shapes["vae_decoder"] == [{"B": 1}]


def test_graphs_pass_the_full_checker_and_are_plain(fp32_bundle, tmp_path):
    b = read_bundle(fp32_bundle[0])
    for name, g in b.graphs.items():
        d = tmp_path / name
        d.mkdir()
        (d / g["weights"]).write_bytes(bytes(b.member(g["weights"])))
        (d / "g.onnx").write_bytes(bytes(b.member(g["member"])))
        onnx.checker.check_model(str(d / "g.onnx"), full_check=True)
        m = onnx.load(str(d / "g.onnx"), load_external_data=False)
        assert m.opset_import[0].version == 17
        ops = {n.op_type for n in m.graph.node}
        assert not ops & {"ScatterND", "ScatterElements", "NonZero", "If", "Loop"}, (name, ops)


def test_backbone_runs_with_no_visible_tokens(fp32_bundle, models):
    """K = 0 (the first AR step) on the one symbolic-K graph, CFG and no-CFG batches."""
    b = read_bundle(fp32_bundle[0])
    g = b.graphs["backbone"]
    s = make_session(b.member(g["member"]), {g["weights"]: b.member(g["weights"])}, ["CPUExecutionProvider"])
    mar = models[0]
    rng = np.random.default_rng(0)
    for B, K, n in [(1, 0, 5), (4, 0, 64), (2, 0, 1), (2, 63, 1)]:
        feeds = {"tokens": rng.standard_normal((B, K, 4), dtype=np.float32),
                 "positions": np.sort(np.stack([rng.permutation(64)[:K] for _ in range(B)]), 1).astype(np.int64),
                 "class_ids": np.array([3, 10, 1, 10][:B], np.int64),
                 "pred_positions": np.stack([rng.permutation(64)[:n] for _ in range(B)]).astype(np.int64)}
        z = s.run(None, feeds)[0]
        with torch.no_grad():
            ref = mar(*[torch.from_numpy(v) for v in feeds.values()]).numpy()
        assert z.shape == (B, n, 32)
        np.testing.assert_allclose(z, ref, atol=1e-5, rtol=0)


def test_head_weights_stored_once(fp32_bundle):
    """head and head_nocfg reference the same external tensors (same location, offsets) in one blob."""
    b = read_bundle(fp32_bundle[0])
    refs = {}
    for name in ("head", "head_nocfg"):
        m = _graph_model(b, name)
        assert b.graphs[name]["weights"] == "head.weights"
        refs[name] = {t.name: tuple((e.key, e.value) for e in t.external_data)
                      for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
        assert all(dict(v)["location"] == "head.weights" for v in refs[name].values())
    shared = set(refs["head"]) & set(refs["head_nocfg"])
    assert len(shared) >= 10 and all(refs["head"][k] == refs["head_nocfg"][k] for k in shared)
    blob = b.manifest["members"]["head.weights"]["length"]
    mar = tiny_models()[0]
    # The exported head holds the MLP without its timestep MLP, plus the timestep table (HeadGraph).
    params = sum(p.numel() for n, p in mar.diffloss.named_parameters() if "time_embed" not in n) * 4
    params += mar.config.num_timesteps * mar.config.diffloss_w * 4
    assert params * 0.9 < blob < params * 1.1  # one copy of the MLP, not two
    assert "head_nocfg.weights" not in b.member_names


def test_fp16_graph_types(fp16_bundle):
    """fp16: matrix ops and their weights in fp16; norms, softmax, activations, update in fp32; fp32 I/O."""
    b = read_bundle(fp16_bundle[0])
    assert b.manifest["precision"] == "fp16" and "fp32" in b.manifest["precision_notes"]
    F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    for name in ("backbone", "head", "vae_decoder"):
        m = onnx.shape_inference.infer_shapes(_graph_model(b, name), strict_mode=True)
        types = {v.name: v.type.tensor_type.elem_type for v in [*m.graph.value_info, *m.graph.input, *m.graph.output]}
        types.update({t.name: t.data_type for t in m.graph.initializer})
        assert all(v.type.tensor_type.elem_type in (F32, onnx.TensorProto.INT64) for v in m.graph.input)
        assert all(v.type.tensor_type.elem_type == F32 for v in m.graph.output)
        seen = set()
        for node in m.graph.node:
            t0 = types.get(node.input[0]) if node.input else None
            if node.op_type in ("MatMul", "Gemm", "Conv"):
                assert t0 == F16 and all(types[i] == F16 for i in node.input if i), (name, node.name)
            if node.op_type in ("LayerNormalization", "InstanceNormalization", "Softmax", "Exp", "Sin", "Cos",
                                "Sigmoid", "Erf"):
                assert t0 == F32, (name, node.op_type, node.name)
                seen.add(node.op_type)
        big = [t for t in m.graph.initializer if np.prod(t.dims) >= 4096]
        assert big and all(t.data_type == F16 for t in big)
        assert {"head": {"LayerNormalization", "Sigmoid", "Exp"}, "backbone": {"LayerNormalization", "Softmax"},
                "vae_decoder": {"InstanceNormalization", "Softmax"}}[name] <= seen


def test_fp16_is_half_the_size(fp32_bundle, fp16_bundle):
    s32, s16 = fp32_bundle[1]["size"], fp16_bundle[1]["size"]
    w32 = sum(v for k, v in fp32_bundle[1]["members"].items() if k.endswith(".weights"))
    w16 = sum(v for k, v in fp16_bundle[1]["members"].items() if k.endswith(".weights"))
    assert 0.49 < w16 / w32 < 0.56, (w16, w32)
    assert s16 / s32 < 0.6
    assert max(fp16_bundle[1]["errors"].values()) < 1e-2


def test_more_plans_do_not_grow_the_bundle(models, plans, fp32_bundle, tmp_path):
    """Weights once per component: 1 plan vs 2 plans differ only by the manifest."""
    one = export_bundle(TINY, *models, plans[:1], batch=1, precision="fp32", out_path=tmp_path / "one.plan",
                        random_weights=True, sources={}, verify=False)
    two = fp32_bundle[1]
    weights = sum(v for k, v in one["members"].items() if k.endswith(".weights"))
    params = sum(p.numel() for m in models for p in m.parameters()) * 4
    table = TINY.num_timesteps * TINY.diffloss_w * 4  # the head's timestep table (gtr.export.head_graph)
    assert weights <= params + table  # the VAE encoder is not there; nothing stored twice
    assert abs(two["size"] - one["size"]) < 0.05 * one["size"], (one["size"], two["size"])


def test_export_errors(models, plans, tmp_path):
    kw = dict(batch=1, out_path=tmp_path / "x.plan", random_weights=True, sources={})
    from gtr.calibration import CalibrationError, CalibrationSpec
    with pytest.raises(CalibrationError, match="calibration set is empty"):  # int8: tests/test_calibration.py
        export_bundle(TINY, *models, plans, precision="int8", calibration=CalibrationSpec(classes=()), **kw)
    with pytest.raises(ExportError, match="unknown precision"):
        export_bundle(TINY, *models, plans, precision="bf16", **kw)
    with pytest.raises(ExportError, match="16x16 grid, the model export-test has 8x8"):
        export_bundle(TINY, *models, [build_plan("gtr", (16, 16))], precision="fp32", **kw)
    with pytest.raises(ExportError, match="batch must be"):
        export_bundle(TINY, *models, plans, precision="fp32", **{**kw, "batch": 0})
    with pytest.raises(ExportError, match="at least one sampling plan"):
        export_bundle(TINY, *models, [], precision="fp32", **kw)
    assert not (tmp_path / "x.plan").exists()


def test_export_check_catches_a_wrong_graph(models, plans, tmp_path, monkeypatch):
    """A graph that does not match its torch module fails the export instead of writing a bundle."""
    import gtr.export.exporter as exporter
    real = exporter.verify_graph

    class Off(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *a):
            return self.m(*a) + 0.01

    def skewed(name, session, module, *a, **k):
        return real(name, session, Off(module) if name == "head" else module, *a, **k)

    monkeypatch.setattr(exporter, "verify_graph", skewed)
    with pytest.raises(ExportError, match="head: onnxruntime output differs from torch"):
        export_bundle(TINY, *models, plans[:1], batch=1, precision="fp32", out_path=tmp_path / "bad.plan",
                      random_weights=True, sources={})
    assert not (tmp_path / "bad.plan").exists()

"""INT8 along the plan (gtr.calibration): coverage, Q/DQ placement, torch-free runtime, determinism,
accuracy against fp32 and the bad-input errors. Test model: tests/tiny_export_model.py."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from gtr.calibration import CalibrationError, CalibrationSpec, parse_classes
from gtr.calibration.collect import check_coverage, has_data, record
from gtr.calibration.quantize import int8_nodes
from gtr.export.exporter import export_bundle, fp32_sessions, static_shapes
from gtr.runtime.bundle import read_bundle
from gtr.runtime.onnx_backend import OnnxComponents
from gtr.runtime.sampler import sample

from tiny_export_model import TINY, tiny_graphs  # noqa: E402  (tests/ is on sys.path under pytest)
from torch_free import run_without_torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = CalibrationSpec(classes=(0, 3), seeds=1)
KW = dict(token_dim=TINY.token_dim, num_classes=TINY.num_classes)
LABELS = [1, 7]
# Documented bound (README, INT8): int8 graph outputs against fp32 on sampled inputs, relative to the
# output scale; head outputs in eps units (as the export check measures them). Measured: backbone
# 5e-5, head 0.043 (median 0.003).
GRAPH_BOUND = {"backbone": 0.01, "head": 0.1, "head_nocfg": 0.1}


def _export(models, plans, path, precision="int8", spec=SPEC):
    return export_bundle(TINY, *models, plans, batch=1, precision=precision, out_path=path, random_weights=True,
                         sources={"random_seed": 0}, calibration=spec if precision == "int8" else None)


@pytest.fixture(scope="module")
def bundles(models, plans, tmp_path_factory):
    d = tmp_path_factory.mktemp("int8")
    _export(models, plans, d / "fp32.plan", "fp32")
    _export(models, plans, d / "int8.plan")
    _export(models, plans, d / "int8-again.plan")
    return {"fp32": d / "fp32.plan", "int8": d / "int8.plan", "again": d / "int8-again.plan"}


@pytest.fixture(scope="module")
def fp32_graphs(models, tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    return tiny_graphs(models, d, ("backbone", "head", "head_nocfg", "vae_decoder"))[1], d


def test_calibration_visits_every_static_shape_and_timestep(fp32_graphs, plans):
    graphs, d = fp32_graphs
    spec = SPEC.resolve(TINY.num_classes)
    rec = record(fp32_sessions(graphs, str(d)), plans, spec, TINY.num_classes, TINY.token_dim, keep=True)
    shapes = static_shapes(plans, 1)
    check_coverage(rec, shapes, 1)  # raises if a listed shape was never run
    assert len(rec.shapes["backbone"]) == len({(s["K"], s["n"]) for s in shapes["backbone"]})
    ts = np.concatenate([f["t"] for f in rec.feeds["head"]])
    assert ts.max() == 999 and ts.min() == 0  # the first and last reverse step of every chain
    assert all(f["z"].shape[0] == 2 * f["x"].shape[0] for f in rec.feeds["head"])  # no-CFG calls too, z doubled
    assert any(not has_data(f) for f in rec.feeds["backbone"])  # the K = 0 steps (run, left out of the ranges)
    # A plan the calibration did not sample is refused.
    only_mar = record(fp32_sessions(graphs, str(d)), plans[1:], spec, TINY.num_classes, TINY.token_dim)
    with pytest.raises(CalibrationError, match="does not cover"):
        check_coverage(only_mar, shapes, 1)


def test_plans_after_the_first_sample_a_subset_that_still_covers_them(fp32_graphs, plans):
    """The default plan gets every class x seed; each later plan the first `other_images` of that set, one
    sampling call, which still visits every static shape; other_images=0 gives every plan the whole set."""
    graphs, d = fp32_graphs
    shapes = static_shapes(plans, 1)
    spec = CalibrationSpec(classes=(0, 3, 5, 7), seeds=2).resolve(TINY.num_classes)
    assert spec.other_images == 2 and len(spec.images(0)) == 8
    assert spec.images(1) == [(10000, 0), (10000, 3)]
    rec = record(fp32_sessions(graphs, str(d)), plans, spec, TINY.num_classes, TINY.token_dim)
    assert rec.images == 8 + 2 * (len(plans) - 1)
    check_coverage(rec, shapes, 1)
    whole = CalibrationSpec(classes=(0, 3, 5, 7), seeds=2, other_images=0).resolve(TINY.num_classes)
    assert all(len(whole.images(i)) == 8 for i in range(len(plans)))
    with pytest.raises(CalibrationError, match="calib-other"):
        CalibrationSpec(other_images=-1).resolve(TINY.num_classes)


def _graph_proto(bundle, name, tmp_path):
    import onnx
    b = read_bundle(bundle)
    g = b.graphs[name]
    (tmp_path / g["weights"]).write_bytes(bytes(b.member(g["weights"])))
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(bytes(b.member(g["member"])))
    onnx.checker.check_model(str(path), full_check=True)
    return onnx.load(str(path))  # external data from beside the file


def test_int8_graphs_hold_symmetric_qdq_where_documented(bundles, fp32_graphs, tmp_path):
    from onnx import numpy_helper
    graphs, _ = fp32_graphs
    for name in ("backbone", "head", "head_nocfg", "vae_decoder"):
        m = _graph_proto(bundles["int8"], name, tmp_path)
        inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        produced_by = {o: n for n in m.graph.node for o in n.output}
        qdq = [n for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        assert bool(qdq) == bool(int8_nodes(graphs[name])), name  # the VAE decoder stays float
        for n in qdq:  # symmetric int8: every zero point is an int8 zero
            zp = inits[n.input[2]]
            assert zp.dtype == np.int8 and not zp.any(), (name, n.name)
        # Q/DQ feeds exactly the documented nodes, nothing else (norms, softmax, the update stay float).
        consumers = {n.name for n in m.graph.node for i in n.input if n.op_type != "Shape"  # shape only
                     and i in produced_by and produced_by[i].op_type == "DequantizeLinear"}
        assert consumers == set(int8_nodes(graphs[name])), name
        assert not any(x in c for c in consumers for x in ("time_embed", "input_proj", "final_layer/linear"))
        for n in m.graph.node:
            if n.name in consumers:  # weight: int8 initializer, one scale per output channel
                dq = produced_by[n.input[1]]
                w, scale = inits[dq.input[0]], inits[dq.input[1]]
                axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
                out_axis = {"Conv": 0, "Gemm": 0, "MatMul": 1}[n.op_type]  # Gemm: transB, W is [out, in]
                assert w.dtype == np.int8 and axis == out_axis and scale.shape == (w.shape[axis],), (name, n.name)
    b = read_bundle(bundles["int8"])
    assert b.manifest["graphs"]["head"]["weights"] == b.manifest["graphs"]["head_nocfg"]["weights"]


def test_int8_bundle_is_smaller_records_calibration_and_is_deterministic(bundles, plans, tmp_path):
    from onnx import numpy_helper
    a, f = read_bundle(bundles["int8"]), read_bundle(bundles["fp32"])
    weights = lambda b: sum(b.manifest["members"][f"{c}.weights"]["length"] for c in ("backbone", "head"))  # noqa: E731
    int8_elements = sum(numpy_helper.to_array(t).size for g in ("backbone", "head")
                        for t in _graph_proto(bundles["int8"], g, tmp_path).graph.initializer if t.data_type == 3)
    # Quantized weights went from 4 bytes to 1, once (head and head_nocfg share them); the rest stays fp32.
    assert int8_elements > 0 and weights(f) - weights(a) >= 0.9 * 3 * int8_elements
    cal = a.manifest["calibration"]
    assert cal["method"] == "max" and cal["classes"] == [0, 3] and cal["seeds"] == [10000]
    assert cal["plans"] == [p.name for p in plans] and cal["random_weights"] is True
    assert cal["images_per_plan"] == {p.name: 2 for p in plans}  # 2 classes x 1 seed; the others' default is 2
    assert cal["library"] == "onnxruntime.quantization" and cal["library_version"]
    assert a.manifest["precision"] == "int8" and "calibration" not in f.manifest
    again = read_bundle(bundles["again"])
    assert a.manifest["members"] == again.manifest["members"]  # same inputs, same bytes
    strip = lambda m: {k: v for k, v in m.items() if k not in ("created", "export_seconds")}  # noqa: E731
    assert json.dumps(strip(a.manifest)) == json.dumps(strip(again.manifest))


def test_int8_within_documented_bound_of_fp32(bundles, fp32_graphs, plans):
    """Each int8 graph against the fp32 bundle on the inputs sampling really feeds it (every AR step and
    reverse step of both plans). Full sampling is not compared here: this fixture's head is a synthetic
    near-exact denoiser that amplifies any eps error through the whole chain; sample quality is measured
    on mar-tiny with gtr-eval (README, INT8)."""
    graphs, d = fp32_graphs
    rec = record(fp32_sessions(graphs, str(d)), plans, CalibrationSpec((1, 7), 1).resolve(10), 10, TINY.token_dim,
                 keep=True)
    c8, c32 = OnnxComponents(bundles["int8"], threads=1), OnnxComponents(bundles["fp32"], threads=1)
    for name in ("backbone", "head", "head_nocfg"):
        worst = 0.0
        for f in rec.feeds[name][::3]:
            feed = {i.name: f[i.name] for i in c8.session(name).get_inputs()}
            got, ref = c8.session(name).run(None, feed)[0], c32.session(name).run(None, feed)[0]
            gain = 1 + f["coef"][:, 2:3].astype(np.float64) * f["coef"][:, 1:2] if "coef" in f else 1.0
            worst = max(worst, float((np.abs(got - ref) / gain).max() / max(1.0, np.abs(ref).max())))
        assert worst <= GRAPH_BOUND[name], (name, worst)


def test_int8_runs_on_onnxruntime_cpu_without_torch(bundles, plans, tmp_path):
    out = tmp_path / "tokens.npy"
    run_without_torch(f"""
        import numpy as np
        import gtr.runtime as rt
        b = rt.load_bundle({str(bundles["int8"])!r})
        res = rt.sample(rt.OnnxComponents(b, threads=1, providers=["CPUExecutionProvider"]), b.plans()["gtr"],
                        {LABELS!r}, 0, token_dim=b.config.token_dim, num_classes=b.config.num_classes)
        np.save({str(out)!r}, res.tokens)
    """)
    same = sample(OnnxComponents(bundles["int8"], threads=1), plans[0], LABELS, 0, **KW)
    assert np.array_equal(np.load(out), same.tokens)


def test_bad_calibration_requests(models, plans, tmp_path):
    out = tmp_path / "x.plan"
    for spec, msg in [(CalibrationSpec(classes=()), "calibration set is empty"),
                      (CalibrationSpec(method="mse"), "unknown calibration method"),
                      (CalibrationSpec(classes=(3, 10)), r"out of range"),
                      (CalibrationSpec(seeds=0), "calib-seeds")]:
        with pytest.raises(CalibrationError, match=msg):
            _export(models, plans, out, spec=spec)
        assert not out.exists()
    assert parse_classes("0-2,7") == (0, 1, 2, 7) and parse_classes(None) is None and parse_classes("") == ()
    with pytest.raises(CalibrationError, match="cannot read"):
        parse_classes("a-b")


def test_cli_int8_errors_and_inspect(bundles, tmp_path):
    from gtr.cli import main
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a])  # noqa: E731
    for args, msg in [(["--calib-classes", ""], "calibration set is empty"),
                      (["--calib-classes", "0,99"], "out of range"),
                      (["--calib-seeds", "0"], "calib-seeds")]:
        r = run("export", "--model", "mar-tiny", "--precision", "int8", "-o", tmp_path / "x.plan", *args)
        lines = [x for x in r.output.splitlines() if x.startswith("Error")]
        assert r.exit_code in (1, 2) and len(lines) == 1 and msg in lines[0] and "Traceback" not in r.output, r.output
    r = run("export", "--model", "mar-tiny", "--precision", "int8", "--calib-method", "mse", "-o", tmp_path / "x.plan")
    assert r.exit_code == 2 and "mse" in r.output
    assert not (tmp_path / "x.plan").exists()
    r = run("inspect", bundles["int8"], "--no-plans")
    assert r.exit_code == 0, r.output
    assert "calibration: max ranges, plans gtr, mar-16, classes [0, 3], seeds [10000]" in r.output
    assert "onnxruntime.quantization" in r.output and "[RANDOM WEIGHTS]" in r.output


def test_int8_vae_decoder_weights_stored_fp16(bundles, tmp_path):
    """The VAE decoder is not quantized; in int8 bundles its weights are stored fp16 (compute stays fp32)."""
    a, f = read_bundle(bundles["int8"]), read_bundle(bundles["fp32"])
    size = lambda b: b.manifest["members"]["vae_decoder.weights"]["length"]  # noqa: E731
    assert 0.45 * size(f) <= size(a) <= 0.55 * size(f)
    m = _graph_proto(bundles["int8"], "vae_decoder", tmp_path)
    big = [t for t in m.graph.initializer if np.prod(t.dims) >= 4096]
    assert big and all(t.data_type == 10 for t in big)  # FLOAT16
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    produced_by = {o: n for n in m.graph.node for o in n.output}
    small = {t.name for t in m.graph.initializer if np.prod(t.dims) < 4096}  # stay fp32 (a few bytes)
    assert convs and all(n.input[1] in small or produced_by[n.input[1]].op_type == "Cast" for n in convs)

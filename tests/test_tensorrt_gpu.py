"""TensorRT engines built and run for real: gtr-build, the TensorRT backend, gtr-run and gtr-check with it.

Needs TensorRT >= 10.1, cuda-python and an NVIDIA GPU; every test here is skipped otherwise, with the
reason. Nothing stands in for TensorRT. What it checks, on your machine:

- mar-test (the official layout, random weights, fp16, plan gtr): gtr-build makes one engine per
  component; each engine matches the same graph on ONNX Runtime at every static shape of the bundle.
- mar-tiny (shipped weights, fp16, plans gtr and mar-16): images sampled on TensorRT match ONNX Runtime
  (PSNR >= 30 dB, the fp16 bar of gtr-check); the device-resident head loop replays its CUDA graphs
  exactly; gtr-run and gtr-check --backend tensorrt work; engines for another GPU, a damaged engine and
  a batch without profiles give their one-line messages or fall back as documented.
"""
import numpy as np
import pytest

pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'gtr-mar[tensorrt]')")

from gtr.runtime.trt import cuda  # noqa: E402
from gtr.runtime.bundle import read_bundle, write_bundle  # noqa: E402
from gtr.runtime.trt.engine_store import (EngineError, current_target, find_engines, import_tensorrt,  # noqa: E402
                                      write_with_engines)

from cli_helpers import run  # noqa: E402

try:
    import_tensorrt()  # the version gtr needs (>= 10.1)
    cuda.runtime()
except (EngineError, cuda.CudaError) as e:
    pytest.skip(f"{e}", allow_module_level=True)
if cuda.device_count() == 0:
    pytest.skip("no NVIDIA GPU (CUDA device) here", allow_module_level=True)

FP16_PSNR = 30.0  # gtr-check's fp16 bar
FP16_REL = 3e-2   # one engine call against onnxruntime, max |diff| relative to the output's max |value|


def build(path, tmp_path):
    r = run("build", path, "--timing-cache", tmp_path / "timing.cache")
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def mar_test(tmp_path_factory):
    import gtr
    d = tmp_path_factory.mktemp("mar-test")
    path = gtr.export("mar-test", d / "mar-test-fp16.plan", precision="fp16", plans=["gtr"], random_weights=True,
                      log=None)
    build(path, d)
    return path


@pytest.fixture(scope="module")
def mar_tiny(tmp_path_factory):
    import gtr
    d = tmp_path_factory.mktemp("mar-tiny")
    path = gtr.export("mar-tiny", d / "mar-tiny-fp16.plan", precision="fp16", plans=["gtr", "mar-16"], log=None)
    r = build(path, d)
    assert r.output.count("built in") == len(read_bundle(path).graphs)
    return path


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _inputs(graph: str, s: dict, config, rng):
    """Plausible inputs of one graph at static shape s."""
    from gtr.plan import spaced_schedule, step_table
    c, D, L = config.token_dim, config.decoder_embed_dim, config.seq_len
    if graph == "backbone":
        B, K, n = s["B"], s["K"], s["n"]
        perms = [rng.permutation(L) for _ in range(B)]
        return {"tokens": rng.standard_normal((B, K, c)).astype(np.float32),
                "positions": np.stack([np.sort(p[:K]) for p in perms]).astype(np.int64).reshape(B, K),
                "class_ids": rng.integers(0, config.num_classes + 1, B).astype(np.int64),
                "pred_positions": np.stack([np.sort(p[K:K + n]) for p in perms]).astype(np.int64)}
    if graph.startswith("head"):
        r, k = s["r"], 10
        coef = np.append(step_table(50)[k], 1.0).astype(np.float32)
        return {"x": rng.standard_normal((r, c)).astype(np.float32),
                "t": np.full(r, spaced_schedule(50).timesteps[k], np.int64),
                "z": rng.standard_normal((s.get("r2", r), D)).astype(np.float32),
                "coef": np.broadcast_to(coef, (r, coef.size)).copy(),
                "cfg_weight": np.full((r, 1), 2.0, np.float32),
                "noise": rng.standard_normal((r, c)).astype(np.float32)}
    return {"tokens": (0.5 * rng.standard_normal((s["B"], L, c))).astype(np.float32)}


def test_mar_test_engines_match_onnxruntime_at_every_shape(mar_test):
    from gtr.runtime.onnx_backend import OnnxComponents
    from gtr.runtime.trt.backend import TensorRTComponents
    b = read_bundle(mar_test)
    trt, ort = TensorRTComponents(b), OnnxComponents(b, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    calls = {"backbone": "backbone", "head": "head_step", "head_nocfg": "head_step", "vae_decoder": "decode"}
    for graph, entry in b.graphs.items():
        for s in entry["static_shapes"]:
            feeds = _inputs(graph, s, b.config, rng)
            got, want = (getattr(c, calls[graph])(**feeds) for c in (trt, ort))
            assert got.shape == want.shape and np.isfinite(got).all(), (graph, s)
            assert _rel(got, want) <= FP16_REL, (graph, s, _rel(got, want))
    trt.close()


def test_mar_tiny_images_match_onnxruntime(mar_tiny):
    from gtr.runtime.onnx_backend import OnnxComponents
    from gtr.runtime.sampler import sample
    from gtr.runtime.trt.backend import TensorRTComponents
    b = read_bundle(mar_tiny)
    trt, ort = TensorRTComponents(b), OnnxComponents(b, providers=["CPUExecutionProvider"])
    kw = dict(token_dim=b.config.token_dim, num_classes=b.config.num_classes)
    for plan in b.plans().values():
        got, want = sample(trt, plan, [3], 0, **kw), sample(ort, plan, [3], 0, **kw)
        mse = float(np.mean((np.clip(got.images, -1, 1) - np.clip(want.images, -1, 1)) ** 2))
        assert 10 * np.log10(4.0 / max(mse, 1e-20)) >= FP16_PSNR, plan.name
    trt.close()


def test_head_loop_cuda_graph_replays_within_the_bundle_tolerance(mar_tiny):
    """The device loop (eager on its first run, a CUDA graph after) against plain engine calls. Replays
    and eager runs are compared by the bundle's rule (gtr.runtime.fidelity: images PSNR >= its bar, and
    the runtime's own first-replay check), not bit for bit."""
    from gtr.runtime.fidelity import image_psnr, sample_passes, token_error
    from gtr.runtime.sampler import sample
    from gtr.runtime.trt.backend import TensorRTComponents
    b = read_bundle(mar_tiny)
    trt = TensorRTComponents(b)
    plan = b.plans()["gtr"]
    kw = dict(token_dim=b.config.token_dim, num_classes=b.config.num_classes)
    notes = []
    trt.log = notes.append
    first, second, third = (sample(trt, plan, [5], 1, **kw) for _ in range(3))
    assert any(loop.graph is not None for loop in trt._loops.values()), f"no head loop was captured: {notes}"
    assert notes == []  # every first replay matched its eager run

    class PlainCalls:  # the same engines without `diffuse`: one head_step call at a time
        def __getattr__(self, name):
            if name == "diffuse":
                raise AttributeError(name)
            return getattr(trt, name)

    plain = sample(PlainCalls(), plan, [5], 1, **kw)
    for replayed, eager in ((third, second), (second, first), (third, plain)):
        psnr = image_psnr(replayed.images, eager.images)
        assert sample_passes(b.precision, psnr, token_error(replayed.tokens, eager.tokens)), psnr
    trt.close()


def test_cli_run_inspect_rebuild(mar_tiny, tmp_path):
    out = tmp_path / "three.png"
    for backend in ("tensorrt", "auto"):
        r = run("run", mar_tiny, "--class", 3, "-o", out, "--backend", backend)
        assert r.exit_code == 0, r.output
        assert "TensorRT" in r.output and out.is_file()
    r = run("inspect", mar_tiny, "--no-plans")
    engines = [line for line in r.output.splitlines() if line.startswith("engine ")]
    assert r.exit_code == 0 and len(engines) == len(read_bundle(mar_tiny).graphs)
    r = build(mar_tiny, tmp_path)
    assert "every engine is up to date" in r.output


def test_check_cli_with_tensorrt(mar_tiny):
    pytest.importorskip("torch")
    r = run("check", mar_tiny, "--backend", "tensorrt", "--plan", "mar-16")
    assert r.exit_code == 0, r.output
    assert r.output.count("PASS") == 2 and "tensorrt vs onnxruntime" in r.output and "tensorrt vs torch" in r.output


def _rewrite(src, dst, change):
    """Copy a bundle with its manifest changed by change(manifest) (members as they are)."""
    b = read_bundle(src)
    manifest = {k: v for k, v in b.manifest.items() if k not in ("format", "format_version", "members")}
    change(manifest)
    write_bundle(dst, manifest, {n: b.member(n) for n in b.member_names})
    return dst


def test_engines_for_another_gpu(mar_tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("GTR_HOME", str(tmp_path))  # --rebuild keeps its timing cache there
    def other_gpu(m):
        for e in m["engines"]:
            e["key"] = dict(e["key"], gpu="Some Other GPU")
    path = _rewrite(mar_tiny, tmp_path / "other.plan", other_gpu)
    assert "not for this" in find_engines(read_bundle(path), current_target())[1]
    r = run("run", path, "--class", 3, "-o", tmp_path / "a.png")
    assert r.exit_code == 0 and "note: not using TensorRT" in r.output and "onnxruntime" in r.output
    r = run("run", path, "--class", 3, "-o", tmp_path / "b.png", "--backend", "tensorrt")
    assert r.exit_code == 1 and "Some Other GPU" in r.output and not (tmp_path / "b.png").exists()
    r = run("run", path, "--class", 3, "-o", tmp_path / "c.png", "--backend", "tensorrt", "--rebuild")
    assert r.exit_code == 0, r.output
    assert find_engines(read_bundle(path), current_target())[1] is None  # rebuilt into the file


def test_damaged_engine_is_one_line(mar_tiny, tmp_path):
    from gtr.runtime.trt.backend import TensorRTComponents
    b = read_bundle(mar_tiny)
    engines, _ = find_engines(b, current_target())
    path = tmp_path / "damaged.plan"
    write_with_engines(b, [(engines["backbone"], b"\0" * 4096)], path)  # valid checksum, garbage engine
    with pytest.raises(EngineError, match="'backbone' TensorRT engine does not load"):
        TensorRTComponents(read_bundle(path))
    r = run("run", path, "--class", 3, "-o", tmp_path / "x.png", "--backend", "tensorrt")
    assert r.exit_code == 1 and "does not load" in r.output and "Traceback" not in r.output


def test_batch_without_profiles(mar_tiny):
    import gtr
    from gtr.pipeline import Pipeline
    pipe = Pipeline(mar_tiny, backend="auto")  # export batch 1: batch 2 has no profiles, runs on onnxruntime
    assert pipe.generate(3, num_images=2, batch=2, progress=False).shape[0] == 2
    with pytest.raises(EngineError, match="has no profile"):
        gtr.load(mar_tiny, backend="tensorrt").generate(3, num_images=2, batch=2, progress=False)


def test_build_rebuilds_engines_whose_key_names_another_gpu(mar_tiny, tmp_path):
    """Issue 20 item 2 on the GPU: gtr-build (and Pipeline(rebuild=True)) rebuild engines the run refuses."""
    from gtr.engines.build import build_engines
    def other_gpu(m):
        for e in m["engines"]:
            e["key"] = dict(e["key"], gpu="Some Other GPU")
    path = _rewrite(mar_tiny, tmp_path / "other.plan", other_gpu)
    lines = []
    summary = build_engines(path, timing_cache=tmp_path / "timing.cache", log=lines.append)
    assert summary["cached"] == [] and len(summary["built"]) == len(read_bundle(path).graphs)
    assert find_engines(read_bundle(path), current_target())[1] is None


def test_fp32_engines_meet_the_fp32_rule(tmp_path):
    """Issue 20 item 5: fp32 engines are built without TF32, so they meet fp32's bar against ONNX Runtime."""
    import gtr
    from gtr.runtime.fidelity import image_psnr, tolerance
    from gtr.runtime.onnx_backend import OnnxComponents
    from gtr.runtime.sampler import sample
    from gtr.runtime.trt.backend import TensorRTComponents
    path = gtr.export("mar-tiny", tmp_path / "mar-tiny-fp32.plan", precision="fp32", plans=["mar-16"], log=None)
    build(path, tmp_path)
    b = read_bundle(path)
    kw = dict(token_dim=b.config.token_dim, num_classes=b.config.num_classes)
    plan = b.plans()["mar-16"]
    with TensorRTComponents(b) as trt:
        got = sample(trt, plan, [3, 7], 0, **kw)
    want = sample(OnnxComponents(b, providers=["CPUExecutionProvider"]), plan, [3, 7], 0, **kw)
    assert image_psnr(got.images, want.images) >= tolerance("fp32").min_psnr


def test_load_and_drop_twenty_times_does_not_grow_gpu_memory(mar_tiny):
    """Issue 20 item 7: closing (or dropping) the components frees their device memory and contexts."""
    import gc
    from gtr.runtime.sampler import sample
    from gtr.runtime.trt.backend import TensorRTComponents
    b = read_bundle(mar_tiny)
    plan = b.plans()["gtr"]
    kw = dict(token_dim=b.config.token_dim, num_classes=b.config.num_classes, decode=False)

    def once(i):
        comps = TensorRTComponents(b)
        sample(comps, plan, [3], 0, **kw)
        sample(comps, plan, [3], 0, **kw)  # captures the head loops
        if i % 2:
            comps.close()
        del comps  # the other half are freed on collection
        gc.collect()

    once(1)
    cuda.Stream().sync()
    before = cuda.free_memory()
    for i in range(20):
        once(i)
    assert before - cuda.free_memory() <= 32 * 2**20, "GPU memory grew over 20 loads"

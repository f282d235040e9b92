"""The onnxruntime backend against the torch reference on the same seed, and the torch-free runtime.

The test model is tests/tiny_export_model.py (random weights, but O(1) tokens like a trained model).
"""

import numpy as np
import pytest
import torch

from gtr.export.exporter import export_bundle
from gtr.models.reference import TorchComponents
from gtr.plan import build_plan
from gtr.runtime.bundle import read_bundle
from gtr.runtime.onnx_backend import OnnxComponents
from gtr.runtime.sampler import head_calls, run_head, sample

from tiny_export_model import TINY  # noqa: E402  (tests/ is on sys.path under pytest)
from torch_free import run_without_torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LABELS = [1, None, 7]
KW = dict(token_dim=TINY.token_dim, num_classes=TINY.num_classes)


@pytest.fixture(scope="module")
def bundles(models, plans, tmp_path_factory):
    d = tmp_path_factory.mktemp("rt")
    out = {}
    for precision in ("fp32", "fp16"):
        export_bundle(TINY, *models, plans, batch=1, precision=precision, out_path=d / f"{precision}.plan",
                      random_weights=True, sources={"random_seed": 0})
        out[precision] = d / f"{precision}.plan"
    return out


@pytest.fixture(scope="module")
def reference(models, plans):
    comps = TorchComponents(*models)
    return {p.name: sample(comps, p, LABELS, 0, **KW) for p in plans}


def psnr(a, b):
    mse = float(np.mean((np.clip(a, -1, 1).astype(np.float64) - np.clip(b, -1, 1)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)


@pytest.mark.parametrize("plan_index", [0, 1], ids=["gtr-cfg3", "mar16-nocfg"])
def test_fp32_matches_torch(bundles, plans, reference, plan_index):
    plan = plans[plan_index]
    got = sample(OnnxComponents(bundles["fp32"], threads=1), plan, LABELS, 0, **KW)
    ref = reference[plan.name]
    assert np.array_equal(got.orders, ref.orders)
    assert np.abs(ref.tokens).max() > 0.5 and np.abs(ref.images).max() > 0.3  # realistic magnitudes
    assert np.abs(got.tokens - ref.tokens).max() <= 1e-4
    assert np.abs(got.images - ref.images).max() <= 1e-3
    assert psnr(got.images, ref.images) >= 60


@pytest.mark.parametrize("plan_index", [0, 1], ids=["gtr-cfg3", "mar16-nocfg"])
def test_fp16_close_to_torch(bundles, plans, reference, plan_index):
    """fp16: image PSNR >= 30 dB (measured ~68 dB gtr, ~91 dB mar-16). Tokens: max error <= 0.25 and mean
    <= 0.02 against the fp32 reference, token scale ~1.5 (measured max 0.05-0.07 gtr, 1.5e-3 mar-16;
    mean ~7e-3 gtr). The gtr plan's T = 20 chains amplify an eps error by c1*r2 ~ 1700 at their first
    step (316 for T = 100), so fp16 rounding of eps shows more there; later steps contract it."""
    plan = plans[plan_index]
    got = sample(OnnxComponents(bundles["fp16"], threads=1), plan, LABELS, 0, **KW)
    ref = reference[plan.name]
    assert np.isfinite(got.tokens).all()
    err = np.abs(got.tokens - ref.tokens)
    assert err.max() <= 0.25 and err.mean() <= 0.02
    assert psnr(got.images, ref.images) >= 30


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_deterministic(bundles, plans, precision):
    comps = OnnxComponents(read_bundle(bundles[precision]), threads=1)
    a = sample(comps, plans[0], LABELS, 3, **KW)
    b = sample(OnnxComponents(bundles[precision], threads=1), plans[0], LABELS, 3, **KW)
    c = sample(comps, plans[0], LABELS, 4, **KW)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.images, b.images)
    assert not np.allclose(a.tokens, c.tokens)


@pytest.mark.parametrize("threads", [1, 3], ids=["shards-in-turn", "shards-at-once"])
@pytest.mark.parametrize("cfg", [True, False])
def test_diffuse_equals_head_step_loop(bundles, cfg, threads):
    """The IO-binding head loop (diffuse) gives the same result as one head_step call per step, also when
    its rows run as shards (CPU_SHARDS of groups of 3 and 9 rows), one after the other or on several
    threads. (Run on CPU here; on CUDA the same bindings keep x on the device.)"""
    from gtr.runtime.onnx_backend import CPU_SHARDS
    comps = OnnxComponents(bundles["fp32"], threads=threads)
    assert comps.shards["head"] == CPU_SHARDS

    class PlainLoop:  # the same components without `diffuse`
        head_step = comps.head_step

    rng = np.random.default_rng(0)
    sizes, Ts = (3, 9), (50, 20)  # FTS-like groups: 3 rows join first, 9 join for the last 20 steps
    R = sum(sizes)
    z = rng.standard_normal(((2 if cfg else 1) * R, 32)).astype(np.float32)
    x = rng.standard_normal((R, 4)).astype(np.float32)
    noise = [rng.standard_normal((T - 1, n, 4)).astype(np.float32) for n, T in zip(sizes, Ts)]
    calls = head_calls(Ts, sizes, 1.0)
    looped = run_head(PlainLoop(), x.copy(), z, calls, 2.5, noise, 4)
    bound = run_head(comps, x.copy(), z, calls, 2.5, noise, 4)
    np.testing.assert_allclose(bound, looped, rtol=0, atol=1e-6)
    assert not np.allclose(bound, x)


def test_row_shards_keep_active_rows_a_prefix():
    """Every shard takes an even share of each group, in order, so the work of every head call splits
    evenly: in a 7@50 + 57@20 step the first 30 calls run 7 rows (4 + 3), the last 20 run 64 (33 + 31)."""
    from gtr.runtime.sampler import row_shards
    shards = row_shards([7, 57], 2)
    assert sorted(np.concatenate(shards).tolist()) == list(range(64))
    assert all((np.diff(s) > 0).all() for s in shards)
    assert [int(np.searchsorted(s, 7)) for s in shards] == [4, 3]
    assert [len(s) for s in shards] == [33, 31]
    assert [len(s) for s in row_shards([1], 4)] == [1]  # no empty shards


def test_cuda_fallback_runs_on_the_session_device(bundles, plans, reference, monkeypatch):
    """CUDA asked for, but the sessions come up on the CPU (as onnxruntime does when CUDA cannot start):
    the device is taken from the sessions, the fallback is reported in one line, and the IO-binding
    head loop binds CPU memory (binding CUDA buffers to a CPU session would fail)."""
    import gtr.runtime.onnx_backend as backend
    real = backend.make_session
    monkeypatch.setattr(backend, "make_session", lambda proto, ext, providers=None, threads=None:
                        real(proto, ext, ["CPUExecutionProvider"], threads))  # a CPU-only session
    lines = []
    comps = OnnxComponents(bundles["fp32"], providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
                           threads=1, log=lines.append)
    assert comps.device == "cuda"  # what was asked for, until a session exists
    got = sample(comps, plans[0], LABELS, 0, **KW)
    assert comps.device == "cpu" and "CPU" in comps.device_name
    assert len(lines) == 1 and "CUDA" in lines[0] and "CPU" in lines[0]  # once, not per session
    assert np.abs(got.tokens - reference[plans[0].name].tokens).max() <= 1e-4


def test_cfg_graph_serves_cfg_one_without_head_nocfg(models, plans, reference, tmp_path):
    """A bundle exported with CFG plans only has no head_nocfg graph; a cfg = 1 run then uses the CFG
    graph with duplicated z and weight 1 (same result), and its sessions are created on first use."""
    path = tmp_path / "cfg-only.plan"
    export_bundle(TINY, *models, plans[:1], batch=1, precision="fp32", out_path=path, random_weights=True,
                  sources={}, verify=False)
    comps = OnnxComponents(path, threads=1)
    assert not comps.has_graph("head_nocfg") and comps.info()["sessions"] == []
    got = sample(comps, plans[1], LABELS, 0, **KW)
    assert np.abs(got.tokens - reference[plans[1].name].tokens).max() <= 1e-4
    assert set(comps.info()["sessions"]) == {"backbone", "head", "vae_decoder"}


def test_other_batch_sizes_run(bundles, models, plans):
    """Symbolic axes: a batch-1 export runs 2 images per call (the static shapes are for engine builders)."""
    got = sample(OnnxComponents(bundles["fp32"], threads=1), plans[1], [0, 5], 1, **KW)
    ref = sample(TorchComponents(*models), plans[1], [0, 5], 1, **KW)
    assert np.abs(got.tokens - ref.tokens).max() <= 1e-4


def test_runtime_needs_no_torch(bundles, plans, tmp_path):
    """gtr.runtime imports and samples from a bundle with torch (and onnx) unimportable."""
    out = tmp_path / "tokens.npy"
    run_without_torch(f"""
        import numpy as np
        import gtr.runtime as rt
        b = rt.load_bundle({str(bundles["fp32"])!r})
        plan = b.plans()["gtr"]
        res = rt.sample(rt.OnnxComponents(b, threads=1), plan, [1, None, 7], 0,
                        token_dim=b.config.token_dim, num_classes=b.config.num_classes)
        assert res.images.shape == (3, 3, 32, 32)
        np.save({str(out)!r}, res.tokens)
    """)
    same = sample(OnnxComponents(bundles["fp32"], threads=1), plans[0], LABELS, 0, **KW)
    assert np.array_equal(np.load(out), same.tokens)


@pytest.mark.parametrize("cfg", [True, False])
def test_io_binding_keeps_every_bound_value_alive(bundles, cfg, monkeypatch):
    """Issue 20 item 1: on CUDA an OrtValue owns its device copy, so every value the head loop binds must
    stay alive for the whole loop. Each OrtValue made is tracked; at every run_with_iobinding, all of
    them must still exist (a loop that keeps only the pointer binds freed memory)."""
    import gc
    import weakref

    import onnxruntime as ort

    made, alive_at_runs = [], []
    real_from_numpy = ort.OrtValue.ortvalue_from_numpy
    real_run = ort.InferenceSession.run_with_iobinding

    class Tracked:  # an OrtValue stand-in that can be weakly referenced (pybind objects cannot)
        def __init__(self, value):
            self._value = value
            made.append(weakref.ref(self))

        def __getattr__(self, name):
            return getattr(self._value, name)

    def from_numpy(*args, **kwargs):
        return Tracked(real_from_numpy(*args, **kwargs))

    def run_with_iobinding(self, *args, **kwargs):
        gc.collect()
        alive_at_runs.append(sum(ref() is not None for ref in made) == len(made))
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", staticmethod(from_numpy))
    monkeypatch.setattr(ort.InferenceSession, "run_with_iobinding", run_with_iobinding)
    comps = OnnxComponents(bundles["fp32"], threads=1)
    comps.shards = dict.fromkeys(comps.shards, 1)  # one loop over all rows, as on CUDA (no row shards there)
    comps.chain = lambda name: None  # one call per step, as on CUDA (no chain graph there)
    rng = np.random.default_rng(1)
    R = 5
    z = rng.standard_normal(((2 if cfg else 1) * R, 32)).astype(np.float32)
    x = rng.standard_normal((R, 4)).astype(np.float32)
    noise = [rng.standard_normal((9, R, 4)).astype(np.float32)]
    run_head(comps, x, z, head_calls((10,), (R,), 1.0), 2.0, noise, 4)
    assert len(made) >= 7 and len(alive_at_runs) == 10
    assert all(alive_at_runs)


def test_components_close(bundles, plans):
    """Issue 20 item 7: close() frees the sessions and the row threads, twice is harmless, and a closed
    object still samples (sessions are made again)."""
    comps = OnnxComponents(bundles["fp32"], threads=2)
    first = sample(comps, plans[0], [1], 0, **KW).tokens
    pool = comps._pool
    assert comps._sessions and pool is not None
    comps.close()
    comps.close()
    assert comps._sessions == {} and comps._pool is None and pool._shutdown
    np.testing.assert_allclose(sample(comps, plans[0], [1], 0, **KW).tokens, first, rtol=0, atol=1e-5)
    with OnnxComponents(bundles["fp32"], threads=1) as c:
        c.prepare(plans[0])
        assert c._sessions
    assert c._sessions == {}


def test_nocfg_on_cfg_graph_is_one_helper():
    """The CFG graph with duplicated z and weight 1 (the one copy both backends use)."""
    from gtr.runtime.head_inputs import head_graph, nocfg_on_cfg_graph
    z = np.arange(6, dtype=np.float32).reshape(3, 2)
    zz, w = nocfg_on_cfg_graph(z)
    assert zz.shape == (6, 2) and w == 1.0 and (zz[:3] == z).all() and (zz[3:] == z).all()
    assert head_graph({"head"}.__contains__, False) == "head"
    assert head_graph({"head", "head_nocfg"}.__contains__, False) == "head_nocfg"
    assert head_graph({"head_nocfg"}.__contains__, True) is None


def test_head_loop_cut_follows_the_rows_not_the_threads():
    """A sharded head loop splits in 2 until each of more shards gets HEAD_ROWS_PER_SHARD rows (a small
    call pays a call per shard and diffusion step); unsharded graphs stay whole; threads play no part."""
    from gtr.runtime.onnx_backend import CPU_SHARDS, HEAD_ROWS_PER_SHARD, head_shards
    assert head_shards(1, 4096) == 1
    assert [head_shards(CPU_SHARDS, r) for r in (1, 8, 2 * HEAD_ROWS_PER_SHARD, 3 * HEAD_ROWS_PER_SHARD - 1)] == [2] * 4
    assert head_shards(CPU_SHARDS, 3 * HEAD_ROWS_PER_SHARD) == 3
    assert head_shards(CPU_SHARDS, 64 * HEAD_ROWS_PER_SHARD) == CPU_SHARDS

"""The TensorRT backend's GPU logic on the CPU (issue 20 items 3, 6, 7, 9): the real TensorRTComponents,
head loop and gtr.runtime.trt.cuda over stand-ins of cuda-python and TensorRT (tests/trt_fakes.py).

What the stand-ins cannot show (real kernels, real capture, device memory) is checked where a GPU is:
tests/test_tensorrt_gpu.py and tools/gpu_check.py.
"""
import gc
import sys

import numpy as np
import pytest

from gtr.configs import get_config
from gtr.errors import CudaError, EngineError
from gtr.plan import build_plan
from gtr.runtime.trt import cuda, engine_store
from gtr.runtime.bundle import read_bundle, write_bundle
from gtr.runtime.sampler import head_calls, run_head

from trt_fakes import FakeCudart, FakeHeadComponents, fake_tensorrt, head_engine_spec

C, D = 4, 8
SIZES, TS = (3, 5), (6, 3)  # an FTS-like step: 3 rows for 6 calls, 5 more rows join for the last 3
R = sum(SIZES)


@pytest.fixture()
def rt(monkeypatch):
    fake = FakeCudart()
    monkeypatch.setattr(cuda, "_RT", fake)
    monkeypatch.setattr(engine_store, "_LOGGER", None)
    return fake


def install(monkeypatch, rt, **kw):
    trt = fake_tensorrt(rt, **kw)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


@pytest.fixture()
def bundle(tmp_path):
    config = get_config("mar-test")
    plan = build_plan("gtr", config.grid, cfg=3.0)
    manifest = {"config": config.to_dict(), "plans": {plan.name: plan.to_dict()}, "precision": "fp16",
                "graphs": {"head": {"member": "head.onnx", "inputs": [], "static_shapes": []}}}
    rows = sorted({call.rows for call in head_calls(TS, SIZES, 1.0)})
    write_bundle(tmp_path / "fake.plan", manifest, {"head.onnx": b"graph", "head.engine": head_engine_spec(rows, C, D)})
    return read_bundle(tmp_path / "fake.plan")


def components(bundle, notes=None):
    from gtr.runtime.trt.backend import TensorRTComponents
    log = notes.append if notes is not None else (lambda line: None)
    return TensorRTComponents(bundle, engines={"head": {"member": "head.engine"}}, log=log)


def step(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((R, C)).astype(np.float32)
    z = rng.standard_normal((2 * R, D)).astype(np.float32)
    noise = [rng.standard_normal((T - 1, n, C)).astype(np.float32) for n, T in zip(SIZES, TS)]
    return x, z, noise


def loop_on(comps, seed):
    """One AR step's head loop on `comps`, and the same step as plain numpy head steps."""
    x, z, noise = step(seed)
    calls = head_calls(TS, SIZES, 1.0)
    got = run_head(comps, x.copy(), z, calls, 2.5, noise, C)
    want = run_head(FakeHeadComponents(), x.copy(), z, calls, 2.5, noise, C)
    return got, want


def test_captured_loop_replays_what_eager_computes(rt, bundle, monkeypatch):
    """Item 3: a captured loop has contexts of its own, one per call, so even if a graph read a context's
    addresses at replay time (late binding), every replay computes what the eager loop does."""
    trt = install(monkeypatch, rt, late_binding=True)
    comps = components(bundle)
    calls = len(head_calls(TS, SIZES, 1.0))
    for seed in range(4):  # run 1 eager (warm-up), run 2 capture + check, runs 3-4 replay
        got, want = loop_on(comps, seed)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    (loop,) = comps._loops.values()
    assert loop.graph is not None and rt.launches == 3
    assert len(loop.own) == calls and len({id(c) for c in loop.own}) == calls
    shared = comps._engines["head"].contexts
    assert not {id(c) for c in shared.values()} & {id(c) for c in loop.own}  # eager runs never use them
    assert trt.engines[0].contexts_made == calls + len(shared)
    comps.close()


def test_a_replay_that_differs_turns_the_loop_eager(rt, bundle, monkeypatch):
    """Item 3: the first replay is checked against an eager run; a mismatch gives one note, the eager
    result, and eager runs from then on."""
    install(monkeypatch, rt, wrong_replay=True)
    notes = []
    comps = components(bundle, notes)
    for seed in range(4):
        got, want = loop_on(comps, seed)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    (loop,) = comps._loops.values()
    assert loop.graph is None and not loop.capturable and rt.launches == 1
    assert len(notes) == 1 and "differs from the eager run" in notes[0] and "\n" not in notes[0]
    comps.close()


def test_profile_selection_error_is_an_engine_error(rt, bundle, monkeypatch):
    """Item 6: set_optimization_profile_async raises RuntimeError (it never returns False)."""
    install(monkeypatch, rt, faults={"profile": True})
    comps = components(bundle)
    x, z, noise = step(0)
    with pytest.raises(EngineError, match=r"'head' TensorRT engine: selecting profile \d+ failed "
                                          r"\(Error in set optimization profile async.\)"):
        comps.head_step(x[:3], np.zeros(3, np.int64), z[:6], np.ones((3, 7), np.float32),
                        np.ones((3, 1), np.float32), x[:3])
    comps.close()


def test_capture_only_enqueues(rt, bundle, monkeypatch):
    """Risk: a captured context's shapes and addresses are set in its warm-up run, outside the capture,
    and not again inside it (setting them while capturing fails here, as it may on a GPU): the loop is
    captured, replays right, and has nothing to note."""
    install(monkeypatch, rt, faults={"bind_in_capture": True})
    notes = []
    comps = components(bundle, notes)
    for seed in range(4):
        got, want = loop_on(comps, seed)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    (loop,) = comps._loops.values()
    assert loop.graph is not None and rt.launches == 3 and notes == []
    comps.close()


def test_enqueue_error_inside_capture_ends_it(rt, bundle, monkeypatch):
    """A failed enqueue during capture ends the capture (the stream leaves capture mode), says so in one
    note, and the loop runs eagerly, right."""
    install(monkeypatch, rt, faults={"enqueue_in_capture": True})
    notes = []
    comps = components(bundle, notes)
    for seed in range(3):
        got, want = loop_on(comps, seed)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert not any(s.capturing for s in rt.streams.values())
    assert len(notes) == 1 and "capture failed" in notes[0] and "running it" in notes[0]
    (loop,) = comps._loops.values()
    assert loop.graph is None and rt.launches == 0
    comps.close()


def test_failed_first_run_leaves_no_capture_behind(rt, bundle, monkeypatch):
    """Defect: when the loop's own contexts cannot be made (TensorRT returns None, e.g. out of memory),
    that run fails in one line, nothing half-made is kept, the stream is never left capturing, and once
    contexts can be made again the loop warms up, captures and replays as usual."""
    trt = install(monkeypatch, rt, faults={"context_limit": 2})
    comps = components(bundle)
    with pytest.raises(EngineError, match="could not create an execution context"):
        loop_on(comps, 0)
    (loop,) = comps._loops.values()
    assert loop.own == [] and not any(s.capturing for s in rt.streams.values())
    trt.faults["context_limit"] = None
    for seed in range(1, 5):  # warm-up, capture + check, two replays
        got, want = loop_on(comps, seed)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert not any(s.capturing for s in rt.streams.values())
    assert loop.graph is not None and rt.launches == 3
    comps.close()


def test_any_exception_inside_capture_ends_it(rt, bundle, monkeypatch):
    """Defect: whatever an enqueue raises inside the capture (here a plain IndexError, not one of gtr's
    error types), the capture is ended, one note says why, and the loop runs eagerly."""
    install(monkeypatch, rt)
    notes = []
    comps = components(bundle, notes)
    loop_on(comps, 0)
    (loop,) = comps._loops.values()
    enqueue = loop.eng.enqueue

    def broken(ctx, stream):
        if any(s.capturing for s in rt.streams.values()):
            raise IndexError("list index out of range")
        enqueue(ctx, stream)

    monkeypatch.setattr(loop.eng, "enqueue", broken)
    for seed in range(1, 4):
        got, want = loop_on(comps, seed)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert not any(s.capturing for s in rt.streams.values())
    assert loop.graph is None and len(notes) == 1 and "capture failed (list index out of range)" in notes[0]
    comps.close()


def test_a_failed_first_replay_drops_the_graph(rt, bundle, monkeypatch):
    """Risk: when the first replay (run 2) fails, the graph is dropped with one note and never replayed
    unchecked; that run and later ones are eager and right."""
    install(monkeypatch, rt)
    notes = []
    comps = components(bundle, notes)
    rt.fail_launches = 1
    for seed in range(4):
        got, want = loop_on(comps, seed)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    (loop,) = comps._loops.values()
    assert loop.graph is None and rt.launches == 0 and rt.live()["graphs"] == 0
    assert len(notes) == 1 and "first replay failed (CUDA error cudaErrorIllegalAddress)" in notes[0]
    comps.close()


def test_loop_cache_is_bounded_and_gives_its_budget_back(rt, bundle, monkeypatch):
    """Risk: a long-running server sees many call patterns (batches); the loops kept are bounded, an
    evicted loop frees its device memory and graph, and its captured contexts return to the budget."""
    from gtr.runtime.trt import backend
    install(monkeypatch, rt)
    monkeypatch.setattr(backend, "LOOPS", 2)
    comps = components(bundle)
    full = comps._budget.left
    live = []
    patterns = [(6, 3), (6, 3), (4, 2), (5, 3), (6, 3), (3, 3), (4, 2)]  # rows 3 and 8, calls vary
    for i, ts in enumerate(patterns * 2):
        rng = np.random.default_rng(i)
        x = rng.standard_normal((R, C)).astype(np.float32)
        z = rng.standard_normal((2 * R, D)).astype(np.float32)
        noise = [rng.standard_normal((T - 1, n, C)).astype(np.float32) for n, T in zip(SIZES, ts)]
        calls = head_calls(ts, SIZES, 1.0)
        want = run_head(FakeHeadComponents(), x.copy(), z, calls, 2.5, noise, C)
        got = run_head(comps, x.copy(), z, calls, 2.5, noise, C)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert len(comps._loops) <= 2
        live.append(rt.live()["memory"])
    assert max(live[7:]) <= max(live[:7])  # the second round of the same patterns holds no more memory
    taken = sum(loop.taken for loop in comps._loops.values())
    assert comps._budget.left == full - taken
    comps.close()
    assert comps._budget.left == full and rt.live() == {"memory": 0, "streams": 0, "graphs": 0}


def test_engines_run_on_the_device_in_every_thread(rt, bundle, monkeypatch):
    """Risk: CUDA's current device is per thread; components made for device 1 run their engines on
    device 1 from any thread (a server's worker and warm-up threads), not on that thread's default 0."""
    import threading
    from gtr.runtime.trt.backend import TensorRTComponents
    rt.devices = 2
    trt = install(monkeypatch, rt)
    comps = TensorRTComponents(bundle, engines={"head": {"member": "head.engine"}}, device=1, log=lambda line: None)
    results = []
    worker = threading.Thread(target=lambda: results.append(loop_on(comps, 0)))
    worker.start()
    worker.join()
    got, want = results[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert trt.engines[0].devices == {1}
    comps.close()


def test_close_and_collection_free_everything(rt, bundle, monkeypatch):
    """Item 7: a non-blocking stream; close() frees device memory, graphs and the stream, twice is harmless;
    a dropped object frees the same on collection; a closed one says so in one line."""
    install(monkeypatch, rt)
    comps = components(bundle)
    assert [s.flags for s in rt.streams.values()] == [1]  # cudaStreamNonBlocking
    for seed in range(3):
        loop_on(comps, seed)
    assert rt.live()["memory"] > 0 and rt.live()["graphs"] == 1
    comps.close()
    comps.close()
    assert rt.live() == {"memory": 0, "streams": 0, "graphs": 0}
    with pytest.raises(EngineError, match="closed"):
        loop_on(comps, 0)

    for _ in range(3):
        comps = components(bundle)
        for seed in range(3):
            loop_on(comps, seed)
        del comps
        gc.collect()
        assert rt.live() == {"memory": 0, "streams": 0, "graphs": 0}


def test_driver_older_than_cuda_python_is_one_line(monkeypatch):
    """Item 9: a CUDA 12.4 driver with cuda-python for CUDA 13 is a mismatched install, not "no GPU"."""
    monkeypatch.setattr(cuda, "_RT", FakeCudart(driver=12040, built=13000))
    with pytest.raises(CudaError) as e:
        cuda.device_count()
    line = str(e.value)
    assert "\n" not in line and "driver supports CUDA 12.4" in line and "built for CUDA 13.0" in line
    assert "pip install 'cuda-python>=12,<13'" in line
    install(monkeypatch, cuda._RT)
    with pytest.raises(EngineError, match="driver supports CUDA 12.4"):
        engine_store.current_target()


def test_tensorrt_for_a_newer_cuda_than_the_driver_is_one_line(rt, monkeypatch):
    """Item 9: the tensorrt-cu13 wheels on a CUDA 12 driver name the CUDA 12 set."""
    rt.driver, rt.built = 12080, 12080
    install(monkeypatch, rt)
    monkeypatch.setattr(engine_store, "tensorrt_cuda_major", lambda: 13)
    with pytest.raises(EngineError) as e:
        engine_store.current_target()
    assert "TensorRT 10.8.0.43 is built for CUDA 13.0" in str(e.value) and "'tensorrt-cu12'" in str(e.value)
    monkeypatch.setattr(engine_store, "tensorrt_cuda_major", lambda: 12)
    assert engine_store.current_target().gpu == "Fake GPU"

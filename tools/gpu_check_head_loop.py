"""Section c of tools/gpu_check.py: the TensorRT head loop's CUDA-graph capture and replay, with a CUDA
kernel (CuPy) standing in for the engine on a GPU, or numpy over the CPU stand-in runtime elsewhere."""
from __future__ import annotations

import sys
import time

import numpy as np

from gpu_check_common import ROOT, Skip

# ----------------------------------------------------------------------------- c: head loop capture/replay

_KERNEL = r"""
extern "C" __global__ void head(const float* x, const long long* t, const float* z, const float* coef,
                                const float* w, const float* noise, float* out, int r, int c, int D, int two) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= r) return;
    float s = 0.f;
    for (int d = 0; d < D; ++d) {
        float zc = z[i * D + d];
        s += two ? z[(r + i) * D + d] + w[i] * (zc - z[(r + i) * D + d]) : zc;
    }
    float drift = s / D * (1 + (float)(t[i] % 5)) * 0.01f;
    float a = tanhf(coef[i * 7]), b = coef[i * 7 + 6];
    for (int k = 0; k < c; ++k) out[i * c + k] = 0.9f * x[i * c + k] * a + 0.1f * noise[i * c + k] * b + drift;
}
"""


class StandInEngine:
    """What gtr.runtime.trt.head_loop needs of an engine, with the stand-in head step as its kernel:
    a CuPy kernel on the GPU, the numpy one on the CPU stand-in runtime (launched in stream order)."""

    inputs = ["x", "t", "z", "coef", "cfg_weight", "noise"]
    outputs = ["x_prev"]

    def __init__(self, rt=None, wrong_replay: bool = False):
        self.rt, self.wrong_replay = rt, wrong_replay  # rt: the CPU stand-in runtime, None on the GPU
        self.dtypes = {n: np.dtype(np.int64 if n == "t" else np.float32) for n in self.inputs + self.outputs}
        self.contexts, self.made, self.enqueues = {}, 0, 0
        if rt is None:
            import cupy
            self.cupy, self.kernel = cupy, cupy.RawKernel(_KERNEL, "head")

    def exact(self, p):
        return True

    def new_context(self, p, scratch, stream):
        self.made += 1
        return {"shapes": {}, "at": {}}

    def context(self, p, scratch, stream):
        if p not in self.contexts:
            self.contexts[p] = self.new_context(p, scratch, stream)
        return self.contexts[p]

    def set_shapes(self, ctx, shapes):
        ctx["shapes"].update(shapes)

    def set_addresses(self, ctx, addresses):
        ctx["at"].update({n: int(a) for n, a in addresses.items()})

    def enqueue(self, ctx, stream):
        self.enqueues += 1
        r, c = ctx["shapes"]["x"]
        D, two = ctx["shapes"]["z"][1], int(ctx["shapes"]["z"][0] == 2 * r)
        at = dict(ctx["at"])
        if self.rt is None:
            args = (tuple(np.uint64(at[n]) for n in self.inputs + self.outputs)
                    + tuple(np.int32(v) for v in (r, c, D, two)))
            with self.cupy.cuda.ExternalStream(stream.ptr):
                self.kernel(((r + 127) // 128,), (128,), args)
            return
        from trt_fakes import _view, head_math
        shapes = dict(ctx["shapes"])

        def run():
            ins = {n: _view(at[n], shapes[n], self.dtypes[n]) for n in self.inputs}
            out = head_math(ins["x"], ins["t"], ins["z"], ins["coef"], ins["cfg_weight"], ins["noise"])
            _view(at["x_prev"], out.shape, np.float32)[...] = out + (1.0 if self.wrong_replay and self.rt.replaying
                                                                    else 0.0)
        self.rt.launch(stream.handle, run)


def _loop_case(eng, runs: int, notes: list) -> dict:
    """One FTS-like head-loop pattern run `runs` times through HeadLoop; each result against numpy."""
    sys.path.insert(0, str(ROOT / "tests"))
    from trt_fakes import FakeHeadComponents

    from gtr.runtime.trt import cuda
    from gtr.runtime.sampler import head_calls, run_head
    from gtr.runtime.trt.head_loop import ContextBudget, HeadLoop

    sizes, Ts, c, D = (24, 40), (50, 20), 16, 64
    R = sum(sizes)
    calls = head_calls(Ts, sizes, 1.0)
    rows = tuple(call.rows for call in calls)
    stream, scratch = cuda.Stream(), cuda.Buffer(4096)

    def shapes(r):
        return {"x": (r, c), "t": (r,), "z": (2 * r, D), "coef": (r, 7), "cfg_weight": (r, 1), "noise": (r, c)}

    loop = HeadLoop(eng, stream, scratch, rows, {r: r for r in set(rows)}, R, c, D, 7, True, shapes,
                    ContextBudget(1024), notes.append)
    errors, seconds = [], []
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((R, c)).astype(np.float32)
        z = rng.standard_normal((2 * R, D)).astype(np.float32)
        noise = [rng.standard_normal((T - 1, n, c)).astype(np.float32) for n, T in zip(sizes, Ts)]
        want = run_head(FakeHeadComponents(), x.copy(), z, calls, 2.5, noise, c)
        t = time.perf_counter()
        got = loop.run(x.copy(), z, calls, 2.5, noise)
        seconds.append(time.perf_counter() - t)
        errors.append(float(np.abs(got - want).max()))
    out = {"calls": len(rows), "runs": runs, "max_error_vs_numpy": max(errors), "captured": loop.graph is not None,
           "own_contexts": len(loop.own), "engine_contexts_made": eng.made, "enqueues": eng.enqueues,
           "run_seconds": [round(s, 5) for s in seconds], "notes": list(notes)}
    loop.close()
    scratch.free()
    stream.close()
    return out


def section_head_loop(ctx) -> dict:
    from gtr.runtime.trt import cuda
    if ctx["device"] == "cuda":
        try:
            import cupy  # noqa: F401
            cuda.runtime()
        except (ImportError, cuda.CudaError) as e:
            raise Skip(f"needs CuPy and cuda-python on the GPU ({e})") from None
        case = _loop_case(StandInEngine(), 4, [])
        ok = case["captured"] and case["max_error_vs_numpy"] <= 1e-4 and not case["notes"]
        return {"status": "ok" if ok else "failed", "kernel": "CuPy RawKernel", "replay": case,
                "differing_replay": "not forced on the GPU (checked with the CPU stand-in)"}
    sys.path.insert(0, str(ROOT / "tests"))
    from trt_fakes import FakeCudart
    saved = cuda._RT
    try:
        rt = cuda._RT = FakeCudart()
        good = _loop_case(StandInEngine(rt), 4, [])
        good["graph_launches"] = rt.launches
        rt = cuda._RT = FakeCudart()
        bad = _loop_case(StandInEngine(rt, wrong_replay=True), 4, [])
        bad["graph_launches"] = rt.launches
    finally:
        cuda._RT = saved
    ok = (good["captured"] and good["max_error_vs_numpy"] <= 1e-5 and good["graph_launches"] == 3
          and not bad["captured"] and bad["max_error_vs_numpy"] <= 1e-5 and len(bad["notes"]) == 1)
    return {"status": "ok" if ok else "failed", "kernel": "numpy on the CPU stand-in runtime (tests/trt_fakes.py)",
            "replay": good, "differing_replay": bad}

"""The machine's matmul limit, measured in the same run as the benchmark: one square fp32 MatMul on
ONNX Runtime's CPU provider with the benchmark's thread count (numpy's BLAS when the onnx package,
needed to write the one-node graph, is not installed)."""
from __future__ import annotations

import time

import numpy as np


def _ort_matmul(threads: int | None):
    import onnx
    from onnx import TensorProto, helper

    from gtr.runtime.onnx_backend import make_session
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", "n"])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", "n"])
    c = helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n", "n"])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "probe", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = make_session(model.SerializeToString(), {}, ["CPUExecutionProvider"], threads)
    return lambda x, y: session.run(None, {"a": x, "b": y})[0]


def matmul_probe(threads: int | None, n: int = 2048, seconds: float = 1.0) -> dict:
    """Best GFLOP/s of an [n,n] x [n,n] fp32 matmul over repeats filling about `seconds`."""
    try:
        matmul, engine = _ort_matmul(threads), "onnxruntime MatMul"
    except ImportError:
        matmul, engine = np.matmul, "numpy matmul"
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    matmul(x, y)  # warm-up
    best, spent = float("inf"), 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        matmul(x, y)
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return {"engine": engine, "n": n, "gflops": 2.0 * n ** 3 / best / 1e9}

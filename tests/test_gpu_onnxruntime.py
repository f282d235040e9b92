"""ONNX Runtime's CUDA execution provider for real (issue 20 item 1): the IO-binding head loop on the GPU
equals one head step at a time on the CPU. Skipped without onnxruntime-gpu and a GPU."""
import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
if "CUDAExecutionProvider" not in ort.get_available_providers():
    pytest.skip("onnxruntime has no CUDA provider here (pip install onnxruntime-gpu, with an NVIDIA GPU)",
                allow_module_level=True)


@pytest.mark.parametrize("cfg", [True, False])
def test_cuda_io_binding_loop_equals_cpu_steps(tmp_path, cfg):
    import gtr
    from gtr.runtime.onnx_backend import OnnxComponents
    from gtr.runtime.sampler import head_calls, run_head
    path = gtr.export("mar-tiny", tmp_path / "mar-tiny-fp32.plan", precision="fp32", plans=["gtr"], log=None)
    gpu = OnnxComponents(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    cpu = OnnxComponents(path, providers=["CPUExecutionProvider"])
    gpu.prepare()
    if gpu.device != "cuda":
        pytest.skip("onnxruntime could not start CUDA here (it fell back to the CPU)")

    class Steps:  # the CPU components without `diffuse`: one head_step call at a time
        head_step = cpu.head_step

    c, D = gpu.config.token_dim, gpu.config.decoder_embed_dim
    rng = np.random.default_rng(0)
    sizes, Ts = (3, 9), (50, 20)
    R = sum(sizes)
    z = rng.standard_normal(((2 if cfg else 1) * R, D)).astype(np.float32)
    x = rng.standard_normal((R, c)).astype(np.float32)
    noise = [rng.standard_normal((T - 1, n, c)).astype(np.float32) for n, T in zip(sizes, Ts)]
    calls = head_calls(Ts, sizes, 1.0)
    want = run_head(Steps(), x.copy(), z, calls, 2.5, noise, c)
    for _ in range(3):  # freed device memory would show as differing or garbage results
        got = run_head(gpu, x.copy(), z, calls, 2.5, noise, c)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    gpu.close()

"""Which backend runs a bundle: `make_components(bundle, backend, device)` (gtr.load and gtr-run use it).

    onnxruntime  ONNX Runtime: its CUDA provider where installed and `device` allows, else the CPU.
    tensorrt     the bundle's TensorRT engines for this GPU and TensorRT version; anything missing (TensorRT,
                 cuda-python, a GPU, matching engines) is an EngineError that says what, in one line.
    auto         TensorRT when the bundle holds engines, TensorRT imports and the engines match this
                 machine; else ONNX Runtime (CUDA, else CPU). A bundle with engines that cannot be used
                 here gets a one-line note why; a bundle without engines runs on ONNX Runtime silently.

On TensorRT, a call shape that no engine profile covers (another batch than the export batch) runs on
ONNX Runtime when the backend is auto, and is an error when it is tensorrt. Building missing engines
(gtr-build, `gtr.load(..., rebuild=True)`) happens before this, in gtr.engines.build.
"""
from __future__ import annotations

from gtr.errors import DeviceError, EngineError, MissingExtra
from gtr.runtime.notes import stderr_line
from gtr.runtime.providers import DEVICES

BACKENDS = ("onnxruntime", "tensorrt")


def check_choice(device: str, backend: str) -> None:
    """DeviceError for a device or backend name that gtr does not know, before anything is loaded."""
    if backend not in ("auto",) + BACKENDS:
        raise DeviceError(f"backend {backend!r} is not available; this gtr runs bundles on: auto, {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise DeviceError(f"device must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, got {device!r}")
    if backend == "tensorrt" and device == "cpu":
        raise EngineError("--backend tensorrt runs on a GPU; it cannot run with --device cpu")


def _onnx(bundle, device: str, threads):
    from gtr.runtime.providers import providers
    chosen = providers(device)  # first: says in one line when onnxruntime is not installed
    from gtr.runtime.onnx_backend import OnnxComponents
    comps = OnnxComponents(bundle, providers=chosen, threads=threads, require_cuda=device == "cuda")
    if device == "cuda":
        comps.session("backbone")  # a CUDA provider that cannot start is a DeviceError now, not at the first call
    return comps


def make_components(bundle, backend: str = "auto", device: str = "auto", threads: int | None = None,
                    log=stderr_line):
    """The components (backbone, head, decoder calls) that run `bundle` on `backend` and `device`."""
    from gtr.runtime.trt.engine_store import engine_entries
    check_choice(device, backend)
    if backend == "onnxruntime" or (backend == "auto" and (device == "cpu" or not engine_entries(bundle))):
        return _onnx(bundle, device, threads)
    fallback = None
    if backend == "auto":  # for call shapes the engines have no profile for
        try:
            fallback = _onnx(bundle, device, threads)
        except (DeviceError, MissingExtra):  # no onnxruntime, or --device cuda without its CUDA provider:
            fallback = None                   # TensorRT alone
    try:
        return _tensorrt(bundle, log, fallback)
    except EngineError as e:
        if backend == "tensorrt":
            raise
        log(f"note: not using TensorRT: {e}; running on ONNX Runtime")
        return _onnx(bundle, device, threads)


def _tensorrt(bundle, log, fallback):
    from gtr.runtime.trt.engine_store import current_target, find_engines
    from gtr.runtime.trt.backend import TensorRTComponents
    engines, reason = find_engines(bundle, current_target())
    if reason:
        raise EngineError(reason)
    return TensorRTComponents(bundle, engines, fallback=fallback, log=log)

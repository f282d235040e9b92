"""Which backend runs a bundle: `make_components(bundle, backend, device)` (gtr.load and gtr-run use it).

    onnxruntime  ONNX Runtime: its CUDA provider where installed and `device` allows, else the CPU.
    tensorrt     the bundle's TensorRT engines for this GPU and TensorRT version; anything missing (TensorRT,
                 cuda-python, a GPU, matching engines) is an EngineError that says what, in one line.
    auto         TensorRT when the bundle holds engines, TensorRT imports and the engines match this
                 machine; else ONNX Runtime (CUDA, else CPU). A bundle with engines that cannot be used
                 here gets a one-line note why; a bundle without engines runs on ONNX Runtime silently.

`rebuild=True` builds the missing engines for this machine first (gtr-build, written into the bundle
file in place, atomically). On TensorRT, a call shape that no engine profile covers (another batch
than the export batch) runs on ONNX Runtime when the backend is auto, and is an error when it is
tensorrt.
"""
from __future__ import annotations

import sys

BACKENDS = ("onnxruntime", "tensorrt")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _onnx(bundle, device: str, threads):
    from gtr.pipeline import providers
    chosen = providers(device)  # first: says in one line when onnxruntime is not installed
    from gtr.runtime.onnx_backend import OnnxComponents
    return OnnxComponents(bundle, providers=chosen, threads=threads)


def make_components(bundle, backend: str = "auto", device: str = "auto", threads: int | None = None,
                    rebuild: bool = False, log=_stderr):
    """(components, bundle) for `backend`; the bundle is a new one after a rebuild, else the same."""
    from gtr.runtime.engine_store import EngineError, engine_entries
    if backend not in ("auto",) + BACKENDS:
        raise ValueError(f"backend must be auto, {' or '.join(BACKENDS)}, got {backend!r}")
    if backend == "onnxruntime" or (backend == "auto" and device == "cpu"):
        return _onnx(bundle, device, threads), bundle
    if device == "cpu":
        raise EngineError("--backend tensorrt runs on a GPU; it cannot run with --device cpu")
    if backend == "auto" and not engine_entries(bundle) and not rebuild:
        return _onnx(bundle, device, threads), bundle
    fallback = None
    if backend == "auto":  # for call shapes the engines have no profile for
        from gtr.extras import MissingExtra
        from gtr.pipeline import PipelineError
        try:
            fallback = _onnx(bundle, device, threads)
        except (PipelineError, MissingExtra):  # no onnxruntime, or --device cuda without its CUDA provider:
            fallback = None                    # TensorRT alone
    try:
        return _tensorrt(bundle, rebuild, log, fallback)
    except EngineError as e:
        if backend == "tensorrt":
            raise
        log(f"note: not using TensorRT: {e}; running on ONNX Runtime")
        return _onnx(bundle, device, threads), bundle


def _tensorrt(bundle, rebuild: bool, log, fallback):
    from gtr.runtime.engine_store import EngineError, current_target, find_engines
    from gtr.runtime.tensorrt_backend import TensorRTComponents
    target = current_target()
    engines, reason = find_engines(bundle, target)
    if reason and rebuild:
        from gtr.engines.build import build_engines
        from gtr.runtime.bundle import read_bundle
        path = bundle.path
        log(f"note: {reason}; building them (--rebuild)")
        build_engines(path, path, log=lambda line: log(f"  {line}"))
        bundle = read_bundle(path)
        engines, reason = find_engines(bundle, target)
    if reason:
        raise EngineError(reason)
    return TensorRTComponents(bundle, engines, fallback=fallback, log=log), bundle

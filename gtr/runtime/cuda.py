"""The little of the CUDA runtime that the TensorRT backend needs, through cuda-python (no torch).

cuda-python >= 12 is imported lazily: `cuda.bindings.runtime` (cuda-python >= 12.6), else the older
`cuda.cudart`. Every call returns (error, results...) there; `_call` turns an error into a
`CudaError` naming it. Device memory is plain integers (addresses) that TensorRT takes as they are.
"""
from __future__ import annotations

import numpy as np
from gtr.errors import CudaError  # noqa: F401  (re-exported: defined with the other error types)


_RT = None


def runtime():
    """The cuda-python runtime module; CudaError when cuda-python is not installed."""
    global _RT
    if _RT is None:
        try:
            from cuda.bindings import runtime as rt
        except ImportError:
            try:
                from cuda import cudart as rt
            except ImportError:
                raise CudaError("cuda-python is not installed (pip install cuda-python)") from None
        _RT = rt
    return _RT


def _call(result):
    """Check a cuda-python result tuple (err, *values); return the values (one value unwrapped)."""
    rt = runtime()
    err, values = result[0], result[1:]
    if err != rt.cudaError_t.cudaSuccess:
        name = rt.cudaGetErrorName(err)[1]
        raise CudaError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def device_count() -> int:
    try:
        return int(_call(runtime().cudaGetDeviceCount()))
    except CudaError:  # no driver, or no device: both mean "no GPU here"
        return 0


def set_device(index: int) -> None:
    count = device_count()
    if not 0 <= index < count:
        raise CudaError(f"no CUDA device {index} (this machine has {count})")
    _call(runtime().cudaSetDevice(int(index)))


def current_device() -> int:
    return int(_call(runtime().cudaGetDevice()))


def device_info(index: int | None = None) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of a device (default: the current one)."""
    prop = _call(runtime().cudaGetDeviceProperties(current_device() if index is None else int(index)))
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0")[0].decode("utf-8", "replace")
    return str(name).strip(), f"{prop.major}.{prop.minor}"


class Buffer:
    """Device memory that can grow; `ptr` is its address. Never smaller than 256 bytes, so an empty
    tensor (e.g. K = 0 visible tokens) still gets a valid, aligned address."""

    def __init__(self, nbytes: int = 0):
        self.ptr, self.nbytes = 0, 0
        self.reserve(nbytes)

    def reserve(self, nbytes: int) -> bool:
        """Make room for nbytes; True when the address changed (bindings must be set again)."""
        nbytes = max(int(nbytes), 256)
        if nbytes <= self.nbytes:
            return False
        self.free()
        self.ptr, self.nbytes = int(_call(runtime().cudaMalloc(nbytes))), nbytes
        return True

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr, self.nbytes = self.ptr, 0, 0
            _call(runtime().cudaFree(ptr))


class Stream:
    """A CUDA stream, with the copies and the graph capture the backend runs on it. Host arrays must be
    C-contiguous and stay alive until `sync()` (copies from pageable memory are staged by the driver)."""

    def __init__(self):
        rt = runtime()
        self._rt = rt
        self.handle = _call(rt.cudaStreamCreate())

    @property
    def ptr(self) -> int:
        """The stream as the integer TensorRT's execute_async_v3 takes."""
        return int(self.handle)

    def upload(self, device_ptr: int, array: np.ndarray) -> None:
        if array.nbytes:
            _call(self._rt.cudaMemcpyAsync(device_ptr, array.ctypes.data, array.nbytes,
                                           self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.handle))

    def download(self, array: np.ndarray, device_ptr: int) -> None:
        if array.nbytes:
            _call(self._rt.cudaMemcpyAsync(array.ctypes.data, device_ptr, array.nbytes,
                                           self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.handle))

    def sync(self) -> None:
        _call(self._rt.cudaStreamSynchronize(self.handle))

    # ---- CUDA graphs: record what is enqueued between begin_capture and end_capture, replay it

    def begin_capture(self) -> None:
        # Thread-local: another thread's unrelated CUDA calls do not invalidate this capture.
        _call(self._rt.cudaStreamBeginCapture(self.handle,
                                              self._rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))

    def end_capture(self) -> "Graph":
        """Stop capturing (always: the stream leaves capture mode even when capture failed)."""
        graph = _call(self._rt.cudaStreamEndCapture(self.handle))
        return Graph(self._rt, graph)

    def close(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            _call(self._rt.cudaStreamDestroy(handle))


class Graph:
    """An instantiated CUDA graph; `launch(stream)` replays it."""

    def __init__(self, rt, graph):
        self._rt, self._graph = rt, graph
        try:
            self._exec = _call(rt.cudaGraphInstantiate(graph, 0))
        except CudaError:
            _call(rt.cudaGraphDestroy(graph))
            raise

    def launch(self, stream: Stream) -> None:
        _call(self._rt.cudaGraphLaunch(self._exec, stream.handle))

    def close(self) -> None:
        if self._exec is not None:
            _call(self._rt.cudaGraphExecDestroy(self._exec))
            _call(self._rt.cudaGraphDestroy(self._graph))
            self._exec = self._graph = None

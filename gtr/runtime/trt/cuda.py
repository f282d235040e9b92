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


def versions() -> tuple[int, int]:
    """(CUDA version the NVIDIA driver supports, CUDA version cuda-python is built for), e.g. (12040, 13000);
    0 where not known (no driver)."""
    rt = runtime()
    out = []
    for fn in (rt.cudaDriverGetVersion, rt.cudaRuntimeGetVersion):
        try:
            out.append(int(_call(fn())))
        except CudaError:
            out.append(0)
    return out[0], out[1]


def version_text(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def driver_mismatch(driver: int, built: int, what: str, package: str | None = None) -> str:
    """The one line for a driver older than the CUDA a package was built for, naming the fix: the
    package's build for the driver's CUDA (default: cuda-python's), or a newer driver."""
    major = driver // 1000
    package = package or f"cuda-python>={major},<{major + 1}"
    return (f"the NVIDIA driver supports CUDA {version_text(driver)} but {what} is built for CUDA "
            f"{version_text(built)}: install the CUDA {major} set (docs/tensorrt.md: pip install '{package}' ...) "
            f"or update the NVIDIA driver")


def device_count() -> int:
    """Number of CUDA devices; 0 without a driver or a device; CudaError when the driver is too old
    for this cuda-python (a mismatched install, not "no GPU")."""
    rt = runtime()
    err, *values = rt.cudaGetDeviceCount()
    if err == rt.cudaError_t.cudaSuccess:
        return int(values[0])
    if err == getattr(rt.cudaError_t, "cudaErrorInsufficientDriver", None):
        driver, built = versions()
        if driver:
            raise CudaError(driver_mismatch(driver, built, "cuda-python"))
    return 0  # no driver, or no device: both mean "no GPU here"


def free_memory() -> int:
    """Bytes of device memory free on the current device (cudaMemGetInfo)."""
    free, _total = _call(runtime().cudaMemGetInfo())
    return int(free)


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

    def __del__(self):
        _quietly(self.free)


class Stream:
    """A CUDA stream, with the copies and the graph capture the backend runs on it. Host arrays must be
    C-contiguous and stay alive until `sync()` (copies from pageable memory are staged by the driver).

    Non-blocking: work on the legacy default stream (another library's) neither waits for it nor, during
    a capture, joins or invalidates the capture."""

    def __init__(self):
        rt = runtime()
        self._rt = rt
        self.handle = None
        self.handle = _call(rt.cudaStreamCreateWithFlags(getattr(rt, "cudaStreamNonBlocking", 1)))

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

    def __del__(self):
        _quietly(self.close)


class Graph:
    """An instantiated CUDA graph; `launch(stream)` replays it."""

    def __init__(self, rt, graph):
        self._rt, self._graph, self._exec = rt, graph, None
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

    def __del__(self):
        _quietly(self.close)


def _quietly(release) -> None:
    """Release on garbage collection: never raise there (at interpreter exit the driver may be gone)."""
    try:
        release()
    except Exception:  # noqa: BLE001
        pass

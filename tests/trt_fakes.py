"""CPU stand-ins for cuda-python's runtime module and the TensorRT Python API, for the GPU paths' logic.

`FakeCudart` has the calls gtr.runtime.trt.cuda makes, with the same (err, value) results; device memory is
host memory (ctypes), a stream runs work at once unless it is capturing, then records it, and a graph
replays what was recorded. `fake_tensorrt()` returns a module with what gtr uses of `tensorrt`: a
runtime that "deserializes" engines described as JSON, and execution contexts whose `execute_async_v3`
runs a numpy stand-in of the head step on the fake stream.

`faults` make TensorRT or CUDA calls fail the way the real ones report failure: "profile" (selecting a
profile raises), "bind_in_capture" (setting shapes or addresses while a stream captures raises),
"enqueue_in_capture" (an enqueue while capturing fails), "context_limit" (creating contexts beyond this
many returns None, as TensorRT does out of memory); FakeCudart.fail_launches makes graph launches fail.
Every public name a stand-in offers exists on the real class (tests/real_gpu/check_tensorrt.py).

Two knobs model what the real libraries do not document: `late_binding` (a captured enqueue reads its
context's tensor addresses when the graph is replayed, not when it was captured: the worst case of
several enqueues per context in one graph) and `wrong_replay` (a replay computes something else).
Used by tests/test_trt_runtime.py and by `tools/gpu_check.py --device cpu`.
"""
from __future__ import annotations

import ctypes
import json
import threading
import types
from dataclasses import dataclass, field

import numpy as np


class Logger:
    """TensorRT's Logger as the stand-ins offer it (shared by trt_fakes and trt_builder_fakes)."""
    WARNING = 2

    def __init__(self, level=2):
        self.level = level


class _Enum:
    def __init__(self, **members):
        for k, v in members.items():
            setattr(self, k, v)


@dataclass
class _Stream:
    id: int
    flags: int
    capturing: bool = False
    ops: list = field(default_factory=list)

    def __int__(self):
        return 0x1000 + self.id


ERROR_NAMES = {1: b"cudaErrorInvalidValue", 35: b"cudaErrorInsufficientDriver", 100: b"cudaErrorNoDevice",
               101: b"cudaErrorInvalidDevice", 700: b"cudaErrorIllegalAddress",
               901: b"cudaErrorStreamCaptureInvalidated"}  # as cuda-bindings names them (checked there)


class FakeCudart:
    """cuda.bindings.runtime, as far as gtr.runtime.trt.cuda uses it (one device)."""

    def __init__(self, driver: int = 13000, built: int = 13000, devices: int = 1, gpu: str = "Fake GPU"):
        self.cudaError_t = _Enum(cudaSuccess=0, cudaErrorInvalidValue=1, cudaErrorInsufficientDriver=35,
                                 cudaErrorNoDevice=100, cudaErrorStreamCaptureInvalidated=901)
        self.cudaMemcpyKind = _Enum(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
        self.cudaStreamCaptureMode = _Enum(cudaStreamCaptureModeGlobal=0, cudaStreamCaptureModeThreadLocal=1)
        self.cudaStreamNonBlocking = 1
        self.driver, self.built, self.devices, self.gpu = driver, built, devices, gpu
        self.memory: dict[int, ctypes.Array] = {}  # live allocations by address
        self.streams: dict[int, _Stream] = {}
        self.graphs, self.execs = set(), {}
        self.launches = 0      # graph launches
        self.fail_launches = 0  # this many next graph launches fail
        self.replaying = False
        self._current = threading.local()  # the current device, per thread as in CUDA

    # ---- errors, devices, versions

    def cudaGetErrorName(self, err):
        return 0, ERROR_NAMES.get(int(err), b"cudaError")

    def cudaGetDeviceCount(self):
        if self.driver < self.built:
            return 35, 0
        return (0, self.devices) if self.devices else (100, 0)

    def cudaDriverGetVersion(self):
        return 0, self.driver

    def cudaRuntimeGetVersion(self):
        return 0, self.built

    def cudaSetDevice(self, index):
        if not 0 <= int(index) < self.devices:
            return (101,)
        self._current.device = int(index)
        return (0,)

    def cudaGetDevice(self):
        return 0, getattr(self._current, "device", 0)

    def cudaGetDeviceProperties(self, index):
        return 0, types.SimpleNamespace(name=self.gpu.encode() + b"\0\0", major=9, minor=0)

    # ---- memory and copies

    def cudaMalloc(self, n):
        buf = (ctypes.c_char * n)()
        self.memory[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def cudaFree(self, ptr):
        return (0,) if self.memory.pop(int(ptr), None) is not None else (1,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        return self.launch(stream, lambda: ctypes.memmove(int(dst), int(src), int(n)))

    # ---- streams, capture, graphs

    def cudaStreamCreate(self):
        return self.cudaStreamCreateWithFlags(0)

    def cudaStreamCreateWithFlags(self, flags):
        s = _Stream(len(self.streams) + 1, int(flags))
        self.streams[int(s)] = s
        return 0, s

    def cudaStreamDestroy(self, stream):
        return (0,) if self.streams.pop(int(stream), None) is not None else (1,)

    def cudaStreamSynchronize(self, stream):
        return (901,) if self.streams[int(stream)].capturing else (0,)

    def launch(self, stream, fn):
        """Run `fn` in stream order: now, or at replay when the stream is capturing."""
        s = self.streams[int(stream)]
        if s.capturing:
            s.ops.append(fn)
        else:
            fn()
        return (0,)

    def cudaStreamBeginCapture(self, stream, mode):
        s = self.streams[int(stream)]
        if s.capturing:
            return (1,)
        s.capturing, s.ops = True, []
        return (0,)

    def cudaStreamEndCapture(self, stream):
        s = self.streams[int(stream)]
        s.capturing = False
        graph = ("graph", id(s.ops), tuple(s.ops))
        self.graphs.add(graph)
        return 0, graph

    def cudaGraphInstantiate(self, graph, flags):
        handle = ("exec", len(self.execs) + len(self.graphs) + 1, graph)
        self.execs[handle] = graph[2]
        return 0, handle

    def cudaGraphLaunch(self, handle, stream):
        if self.fail_launches:
            self.fail_launches -= 1
            return (700,)
        self.launches += 1
        self.replaying = True
        try:
            for op in self.execs[handle]:
                op()
        finally:
            self.replaying = False
        return (0,)

    def cudaGraphExecDestroy(self, handle):
        return (0,) if self.execs.pop(handle, None) is not None else (1,)

    def cudaGraphDestroy(self, graph):
        self.graphs.discard(graph)
        return (0,)

    def live(self) -> dict:
        """What is still allocated: device blocks, streams, graphs."""
        return {"memory": len(self.memory), "streams": len(self.streams), "graphs": len(self.execs)}


# ------------------------------------------------------------------------------------------------ TensorRT

def _view(ptr: int, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    if n == 0:
        return np.zeros(shape, dtype)
    return np.frombuffer((ctypes.c_char * n).from_address(int(ptr)), dtype).reshape(shape)


def head_math(x, t, z, coef, w, noise):
    """The stand-in head step (CFG graph when z has 2r rows): numpy, the same wherever it runs."""
    r = x.shape[0]
    m = z[:r] if z.shape[0] == r else z[r:] + w * (z[:r] - z[r:])
    drift = m.mean(axis=1, keepdims=True) * (1 + (t[:, None] % 5)) * 0.01
    return (0.9 * x * np.tanh(coef[:, :1]) + 0.1 * noise * coef[:, -1:] + drift).astype(np.float32)


class FakeHeadComponents:
    """Plain numpy components with the stand-in head step (what the engine loop must reproduce)."""

    def head_step(self, x, t, z, coef, cfg_weight, noise):
        return head_math(x, t, z, coef, cfg_weight, noise)


_DT = {"FLOAT": np.float32, "INT64": np.int64}


class _Context:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses, self.profile = engine, {}, {}, None
        self.memory = None

    def set_device_memory(self, ptr, size):
        self.memory = (ptr, size)

    def set_optimization_profile_async(self, p, stream):
        if self.engine.faults.get("profile"):
            raise RuntimeError("Error in set optimization profile async.")
        self.profile = p
        return True

    def _capturing(self) -> bool:
        return any(s.capturing for s in self.engine.rt.streams.values())

    def set_input_shape(self, name, shape):
        if self.engine.faults.get("bind_in_capture") and self._capturing():
            raise RuntimeError("cannot set shapes during capture (stand-in fault)")
        lo, _, hi = self.engine.spec["profiles"][self.profile][name]
        ok = len(shape) == len(lo) and all(a <= s <= b for a, s, b in zip(lo, shape, hi))
        if ok:
            self.shapes[name] = tuple(shape)
        return ok

    def set_tensor_address(self, name, ptr):
        if self.engine.faults.get("bind_in_capture") and self._capturing():
            raise RuntimeError("cannot bind during capture (stand-in fault)")
        self.addresses[name] = int(ptr)
        return True

    def get_tensor_shape(self, name):
        return self.shapes["x"]

    def execute_async_v3(self, stream):
        eng = self.engine
        if eng.faults.get("enqueue_in_capture") and self._capturing():
            return False
        eng.enqueues += 1
        eng.devices.add(eng.rt.cudaGetDevice()[1])
        shapes = dict(self.shapes)
        frozen = dict(self.addresses)

        def run():
            at = self.addresses if eng.late_binding else frozen
            ins = {n: _view(at[n], shapes[n], _DT[eng.spec["inputs"][n]]) for n in eng.spec["inputs"]}
            out = head_math(ins["x"], ins["t"], ins["z"], ins["coef"], ins["cfg_weight"], ins["noise"])
            if eng.wrong_replay and eng.rt.replaying:
                out = out + 1.0
            _view(at["x_prev"], out.shape, np.float32)[...] = out

        return eng.rt.launch(stream, run)[0] == 0


class _Engine:
    def __init__(self, spec, rt, trt):
        self.spec, self.rt, self.trt = spec, rt, trt
        self.names = list(spec["inputs"]) + ["x_prev"]
        self.late_binding, self.wrong_replay, self.faults = trt.late_binding, trt.wrong_replay, trt.faults
        self.contexts_made = 0
        self.enqueues = 0
        self.devices = set()  # the devices current in the threads that enqueued

    num_io_tensors = property(lambda self: len(self.names))
    num_optimization_profiles = property(lambda self: len(self.spec["profiles"]))

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return self.trt.TensorIOMode.INPUT if name in self.spec["inputs"] else self.trt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return types.SimpleNamespace(name=self.spec["inputs"].get(name, "FLOAT"))

    def get_tensor_profile_shape(self, name, p):
        return self.spec["profiles"][p][name]

    def get_device_memory_size_for_profile_v2(self, p):
        return 4096

    def create_execution_context(self, strategy):
        limit = self.faults.get("context_limit")
        if limit is not None and self.contexts_made >= limit:
            return None
        self.contexts_made += 1
        return _Context(self)


def head_engine_spec(rows, c: int, D: int, cfg: bool = True) -> bytes:
    """A stand-in head engine with one exact profile per row count in `rows`."""
    inputs = {"x": "FLOAT", "t": "INT64", "z": "FLOAT", "coef": "FLOAT", "cfg_weight": "FLOAT", "noise": "FLOAT"}
    profiles = []
    for r in rows:
        s = {"x": [r, c], "t": [r], "z": [2 * r if cfg else r, D], "coef": [r, 7], "cfg_weight": [r, 1],
             "noise": [r, c]}
        profiles.append({n: [v, v, v] for n, v in s.items()})
    return json.dumps({"inputs": inputs, "profiles": profiles}).encode()


def fake_tensorrt(rt: FakeCudart, version: str = "10.8.0.43", late_binding: bool = True,
                  wrong_replay: bool = False, faults: dict | None = None):
    """A `tensorrt` module stand-in whose engines run on `rt`; `.engines` lists those deserialized."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.late_binding, trt.wrong_replay, trt.faults = late_binding, wrong_replay, dict(faults or {})
    trt.engines = []
    trt.TensorIOMode = _Enum(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.ExecutionContextAllocationStrategy = _Enum(USER_MANAGED="USER_MANAGED", STATIC="STATIC")
    trt.BuilderFlag = _Enum(TF32="TF32")
    trt.NetworkDefinitionCreationFlag = _Enum(STRONGLY_TYPED=1)
    trt.MemoryPoolType = _Enum(WORKSPACE="WORKSPACE")

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            try:
                spec = json.loads(bytes(data))
            except ValueError:
                return None
            engine = _Engine(spec, rt, trt)
            trt.engines.append(engine)
            return engine

    class Builder:  # present for import_tensorrt's check; gtr-build tests stub build_engine itself
        def __init__(self, logger):
            self.logger = logger

    trt.Logger, trt.Runtime, trt.Builder = Logger, Runtime, Builder
    return trt


# Which real class each stand-in stands for (tests/real_gpu/check_tensorrt.py checks every public
# attribute of each against the real TensorRT module); attributes that are test knobs, not TensorRT's.
# (tests/trt_builder_fakes.py: the builder side)
REAL_CLASSES = {"_Engine": "ICudaEngine", "_Context": "IExecutionContext"}
KNOBS = {"late_binding", "wrong_replay", "faults", "engines"}

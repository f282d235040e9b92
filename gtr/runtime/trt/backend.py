"""TensorRT backend: the sampler components (backbone, head_step, diffuse, decode) on the engines stored
in a bundle (gtr-build). numpy + tensorrt + cuda-python; no torch, no onnxruntime.

Execution contexts: one per (engine, optimization profile), made on first use with the profile set once,
so a context never switches profile and, with gtr-build's exact profiles (min = opt = max), never
changes shape either. All contexts share one block of device scratch memory (TensorRT's
USER_MANAGED allocation), sized for the largest profile: they run one after another on one stream,
so sharing is safe, and a model with 64 backbone profiles does not hold 64 activation blocks. (A
head loop captured in a CUDA graph has contexts of its own, one per call, sharing the same block.)

Profile selection per call: the profile whose opt is the call's exact shape, else the first whose
min/max span it. A shape no profile covers (another --batch than the export batch, or a CFG override
that doubles the backbone rows) runs on the `fallback` components (ONNX Runtime) when there are any,
with a one-line note, else is an EngineError.

The head loop of one AR step (`diffuse`) stays on the device, and from its second run replays as a
CUDA graph checked against an eager run: gtr.runtime.trt.head_loop. Loops are kept per call pattern,
at most LOOPS of them (least recently used first out, closed: their device memory and their share of
the captured-context budget come back), so a long-running server with varying batches stays bounded.

The CUDA device is made current in every thread that runs engines (a server's worker and warm-up
threads), once per thread: CUDA's current device is per thread.

Every TensorRT call that can fail (profile selection, which raises RuntimeError; shapes and addresses,
which return False; enqueue) becomes an EngineError in one line. `close()` (or collection) frees the
CUDA graphs, the contexts, the engines and then the device memory they used.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

from gtr.errors import first_line
from gtr.runtime.trt import cuda
from gtr.runtime.bundle import Bundle, read_bundle
from gtr.runtime.trt import engine_store
from gtr.runtime.trt.engine_store import EngineError, find_engines, import_tensorrt, logger
from gtr.runtime.head_inputs import head_graph, nocfg_on_cfg_graph
from gtr.runtime.notes import stderr_line
from gtr.runtime.trt.head_loop import ContextBudget, HeadLoop

CAPTURE_CONTEXTS = 1024  # execution contexts that captured head loops may create per components object
LOOPS = 32  # head-loop call patterns kept (each holds device buffers and, when captured, a graph)


_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8,
           "UINT8": np.uint8, "BOOL": np.bool_}


def _numpy_dtype(dtype) -> np.dtype:
    """numpy dtype of a tensorrt.DataType, by member name (trt.nptype lacks INT64 in some versions)."""
    name = getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
    if name not in _DTYPES:
        raise EngineError(f"engine tensors of type {name} are not supported by gtr's TensorRT backend")
    return np.dtype(_DTYPES[name])


class _Engine:
    """One deserialized engine: IO tensors, dtypes, profiles, and one execution context per profile."""

    def __init__(self, trt, runtime, component: str, data):
        try:
            engine = runtime.deserialize_cuda_engine(data)
        except Exception:  # noqa: BLE001 - some versions raise instead of returning None
            engine = None
        if engine is None:
            raise EngineError(f"the {component!r} TensorRT engine does not load (damaged, or not built for this "
                              f"TensorRT); rebuild it with gtr-build")
        self.trt, self.engine, self.component = trt, engine, component
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: _numpy_dtype(engine.get_tensor_dtype(n)) for n in names}
        count = engine.num_optimization_profiles
        # profiles[p][input] = (min dims, opt dims, max dims)
        self.profiles = [{n: tuple(tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(n, p))
                          for n in self.inputs} for p in range(count)]
        self.memory = max(int(engine.get_device_memory_size_for_profile_v2(p)) for p in range(count))
        self.contexts = {}

    def profile_for(self, shapes: dict) -> int | None:
        """The profile to run these input shapes with: opt == the shapes first, else the first spanning them."""
        for p, prof in enumerate(self.profiles):
            if all(prof[n][1] == shapes[n] for n in self.inputs):
                return p
        for p, prof in enumerate(self.profiles):
            if all(len(prof[n][0]) == len(shapes[n])
                   and all(lo <= s <= hi for lo, s, hi in zip(prof[n][0], shapes[n], prof[n][2]))
                   for n in self.inputs):
                return p
        return None

    def exact(self, p: int) -> bool:
        return all(lo == hi for lo, _, hi in self.profiles[p].values())

    def _call(self, what: str, fn, *args):
        """One TensorRT call; False or an exception (the bindings raise RuntimeError for some) -> EngineError."""
        try:
            ok = fn(*args)
        except Exception as e:  # noqa: BLE001 - pybind11 raises RuntimeError, TypeError, ValueError
            raise EngineError(f"the {self.component!r} TensorRT engine: {what} failed ({first_line(e)})") from None
        if ok is False:
            raise EngineError(f"the {self.component!r} TensorRT engine: {what} failed (see TensorRT's log above)")
        return ok

    def new_context(self, p: int, scratch: cuda.Buffer, stream: cuda.Stream):
        """A fresh execution context on profile p, using the shared scratch memory."""
        ctx = self._call("creating an execution context", self.engine.create_execution_context,
                         self.trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        if ctx is None:
            raise EngineError(f"TensorRT could not create an execution context for the {self.component!r} engine")
        self._call("setting its device memory", ctx.set_device_memory, scratch.ptr, scratch.nbytes)
        self._call(f"selecting profile {p}", ctx.set_optimization_profile_async, p, stream.ptr)
        return ctx

    def context(self, p: int, scratch: cuda.Buffer, stream: cuda.Stream):
        """The shared (eager) context of profile p, made on first use."""
        ctx = self.contexts.get(p)
        if ctx is None:
            ctx = self.contexts[p] = self.new_context(p, scratch, stream)
        return ctx

    def set_shapes(self, ctx, shapes: dict) -> None:
        for n, shape in shapes.items():
            self._call(f"shape {tuple(shape)} for {n!r}", ctx.set_input_shape, n, tuple(shape))

    def set_addresses(self, ctx, addresses: dict) -> None:
        for n, ptr in addresses.items():
            self._call(f"binding {n!r}", ctx.set_tensor_address, n, int(ptr))

    def enqueue(self, ctx, stream: cuda.Stream) -> None:
        self._call("running it", ctx.execute_async_v3, stream.ptr)


class TensorRTComponents:
    """Sampler components on a bundle's TensorRT engines (see the module docstring).

    `engines` {component: manifest entry} (default: the ones that match this machine, EngineError with
    the reason when there are none); `device` the CUDA device index; `fallback` components for shapes
    no profile covers (None: an EngineError); `log` gets one-line notes.
    """

    def __init__(self, bundle, engines: dict | None = None, device: int | None = None, fallback=None,
                 log=stderr_line):
        self._engines, self._loops, self._buffers = {}, OrderedDict(), {}  # what close() frees, even after a failed init
        trt = import_tensorrt()
        if isinstance(bundle, (str, os.PathLike)):
            bundle = read_bundle(bundle)
        if not isinstance(bundle, Bundle):
            raise TypeError(f"expected a Bundle or a path, got {type(bundle).__name__}")
        target = engine_store.current_target(device)  # also makes `device` the current CUDA device
        if engines is None:
            engines, reason = find_engines(bundle, target)
            if reason:
                raise EngineError(reason)
        self.bundle, self.config, self.target, self.trt = bundle, bundle.config, target, trt
        self.fallback, self.log = fallback, log
        self._noted = set()
        self._device_index = cuda.current_device()
        self._thread = threading.local()
        self._thread.device = self._device_index
        self.stream = cuda.Stream()
        try:
            runtime = trt.Runtime(logger(trt))
        except Exception as e:  # noqa: BLE001 - pybind11 raises TypeError when TensorRT cannot start
            raise EngineError(f"TensorRT could not create its runtime ({first_line(e)})") from None
        self._runtime = runtime  # engines must not outlive their runtime
        for c, e in engines.items():
            self._engines[c] = _Engine(trt, runtime, c, bundle.member(e["member"]))
        self._scratch = cuda.Buffer(max(e.memory for e in self._engines.values()))
        self._budget = ContextBudget(CAPTURE_CONTEXTS)

    # ---- display

    @property
    def device(self) -> str:
        return "cuda"

    @property
    def device_name(self) -> str:
        return f"TensorRT {self.target.tensorrt} on {self.target.gpu}, {self.bundle.precision}"

    def has_graph(self, name: str) -> bool:
        return name in self._engines

    def _engine(self, name: str) -> "_Engine":
        self._check_open()
        if getattr(self._thread, "device", None) != self._device_index:  # first call in this thread
            cuda.set_device(self._device_index)
            self._thread.device = self._device_index
        return self._engines[name]

    def _check_open(self) -> None:
        if not self._engines:
            raise EngineError("these TensorRT components are closed; load the bundle again")

    # ---- plain calls: upload, run, copy back

    def _buffer(self, comp: str, tensor: str, nbytes: int) -> cuda.Buffer:
        buf = self._buffers.get((comp, tensor))
        if buf is None:
            buf = self._buffers[(comp, tensor)] = cuda.Buffer()
        buf.reserve(nbytes)
        return buf

    def _uncovered(self, comp: str, shapes: dict, fallback_call):
        where = ", ".join(f"{n}{list(s)}" for n, s in shapes.items())
        if self.fallback is None:
            raise EngineError(f"the {comp!r} TensorRT engine has no profile for {where}: run with the bundle's "
                              f"export batch, or rebuild with gtr-build after exporting for this batch")
        if comp not in self._noted:
            self._noted.add(comp)
            self.log(f"note: the {comp!r} TensorRT engine has no profile for {where}; such calls run on "
                     f"{getattr(self.fallback, 'device_name', 'the fallback backend')}")
        return fallback_call()

    def _run(self, comp: str, feeds: dict, fallback_call) -> np.ndarray:
        eng = self._engine(comp)
        arrays = {n: np.ascontiguousarray(feeds[n], dtype=eng.dtypes[n]) for n in eng.inputs}
        p = eng.profile_for({n: a.shape for n, a in arrays.items()})
        if p is None:
            return self._uncovered(comp, {n: a.shape for n, a in arrays.items()}, fallback_call)
        ctx = eng.context(p, self._scratch, self.stream)
        eng.set_shapes(ctx, {n: a.shape for n, a in arrays.items()})
        outs = {n: np.empty(tuple(ctx.get_tensor_shape(n)), eng.dtypes[n]) for n in eng.outputs}
        ptrs = {n: self._buffer(comp, n, a.nbytes).ptr for n, a in {**arrays, **outs}.items()}
        for n, a in arrays.items():
            self.stream.upload(ptrs[n], a)
        eng.set_addresses(ctx, ptrs)
        eng.enqueue(ctx, self.stream)
        for n, o in outs.items():
            self.stream.download(o, ptrs[n])
        self.stream.sync()
        return outs[eng.outputs[0]]

    def backbone(self, tokens, positions, class_ids, pred_positions):
        feeds = {"tokens": tokens, "positions": positions, "class_ids": class_ids, "pred_positions": pred_positions}
        return self._run("backbone", feeds,
                         lambda: self.fallback.backbone(tokens, positions, class_ids, pred_positions))

    def decode(self, tokens):
        return self._run("vae_decoder", {"tokens": tokens}, lambda: self.fallback.decode(tokens))

    def _head_name(self, cfg: bool) -> str:
        self._check_open()
        name = head_graph(self.has_graph, cfg)
        if name is None:
            raise EngineError(f"{self.bundle.path}: this bundle has no CFG head engine; re-export with --cfg")
        return name

    def head_step(self, x, t, z, coef, cfg_weight, noise):
        r = x.shape[0]
        cfg = z.shape[0] == 2 * r
        name = self._head_name(cfg)
        zz, ww = z, cfg_weight
        if name == "head" and not cfg:
            zz, w = nocfg_on_cfg_graph(z)
            ww = np.full((r, 1), w, np.float32)
        feeds = {"x": x, "t": t, "z": zz, "coef": coef, "cfg_weight": ww, "noise": noise}
        return self._run(name, feeds, lambda: self.fallback.head_step(x, t, z, coef, cfg_weight, noise))

    # ---- the head loop of one AR step, on the device

    def diffuse(self, x, z, calls, cfg_weight, step_noise):
        """The whole head loop of one AR step (see gtr.runtime.sampler.run_head), kept on the GPU."""
        R, c = x.shape
        cfg = z.shape[0] == 2 * R
        name = self._head_name(cfg)
        zz, w = nocfg_on_cfg_graph(z) if name == "head" and not cfg else (z, cfg_weight)
        eng = self._engine(name)
        rows = tuple(call.rows for call in calls)
        ncoef = calls[0].coef.shape[1]
        D = zz.shape[1]
        two = name == "head"  # the CFG graph takes z of 2r rows

        def shapes(r):
            s = {"x": (r, c), "t": (r,), "z": (2 * r if two else r, D), "coef": (r, ncoef), "cfg_weight": (r, 1),
                 "noise": (r, c)}
            return {n: s[n] for n in eng.inputs}

        profiles = {r: eng.profile_for(shapes(r)) for r in set(rows)}
        if None in profiles.values():
            r = next(r for r, p in profiles.items() if p is None)
            return self._uncovered(name, shapes(r),
                                   lambda: self.fallback.diffuse(x, z, calls, cfg_weight, step_noise))
        key = (name, R, c, D, ncoef, rows)
        loop = self._loops.get(key)
        if loop is None:
            while len(self._loops) >= LOOPS:  # the least recently used pattern goes, with what it holds
                self._loops.popitem(last=False)[1].close()
            loop = self._loops[key] = HeadLoop(eng, self.stream, self._scratch, rows, profiles, R, c, D, ncoef, two,
                                               shapes, self._budget, self.log)
        self._loops.move_to_end(key)
        x[...] = loop.run(x, zz, calls, w, step_noise)
        return x

    # ---- lifetime

    def close(self) -> None:
        """Free graphs, contexts, engines and device memory (in that order); idempotent, also run on collection."""
        for loop in self._loops.values():
            loop.close()
        self._loops.clear()
        for eng in self._engines.values():
            eng.contexts.clear()  # contexts go before their engine and the memory they use
        self._engines.clear()
        self._runtime = None
        for buf in self._buffers.values():
            buf.free()
        self._buffers.clear()
        if getattr(self, "_scratch", None) is not None:
            self._scratch.free()
        if getattr(self, "stream", None) is not None:
            self.stream.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit the driver or modules may be gone
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

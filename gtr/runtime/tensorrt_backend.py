"""TensorRT backend: the sampler components (backbone, head_step, diffuse, decode) on the engines stored
in a bundle (gtr-build). numpy + tensorrt + cuda-python; no torch, no onnxruntime.

Execution contexts: one per (engine, optimization profile), made on first use with the profile set once,
so a context never switches profile and, with gtr-build's exact profiles (min = opt = max), never
changes shape either. All contexts share one block of device scratch memory (TensorRT's
USER_MANAGED allocation), sized for the largest profile: they run one after another on one stream,
so sharing is safe, and a model with 64 backbone profiles does not hold 64 activation blocks.

Profile selection per call: the profile whose opt is the call's exact shape, else the first whose
min/max span it. A shape no profile covers (another --batch than the export batch, or a CFG override
that doubles the backbone rows) runs on the `fallback` components (ONNX Runtime) when there are any,
with a one-line note, else is an EngineError.

The head loop of one AR step (`diffuse`) stays on the device: the step's timesteps, coefficients and
noise for all its calls are packed on the host as [calls, rows] blocks (256-byte aligned) and uploaded
once, z once per distinct row count, x goes into two device buffers that the calls ping-pong between
(x_prev of one call is the x of the next), and only the final x is copied back. Each distinct call
pattern (graph, rows per call) keeps its own buffers, so its addresses are fixed: its first run is
eager (TensorRT wants one run after a context's shapes are set before it is captured), the second is
captured into a CUDA graph, and later ones replay it. Capture is used only when every context of the
loop has an exact profile, i.e. fixed shapes; otherwise, or if capture fails, the loop runs eagerly.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from gtr.runtime import cuda
from gtr.runtime.bundle import Bundle, read_bundle
from gtr.runtime.engine_store import EngineError, current_target, find_engines, import_tensorrt, logger

ALIGN = 256  # bytes; device addresses handed to TensorRT are kept 256-byte aligned


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _blocks(n: int, elems: int, dtype) -> tuple[np.ndarray, int]:
    """Zeroed [n, S] host array whose rows start ALIGN bytes apart (S >= elems); and that stride in bytes."""
    itemsize = np.dtype(dtype).itemsize
    stride = -(-elems * itemsize // ALIGN) * ALIGN
    return np.zeros((n, stride // itemsize), dtype), stride


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

    def context(self, p: int, scratch: cuda.Buffer, stream: cuda.Stream):
        ctx = self.contexts.get(p)
        if ctx is None:
            ctx = self.engine.create_execution_context(self.trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if ctx is None:
                raise EngineError(f"TensorRT could not create an execution context for the {self.component!r} engine")
            ctx.set_device_memory(scratch.ptr, scratch.nbytes)
            if not ctx.set_optimization_profile_async(p, stream.ptr):
                raise EngineError(f"TensorRT could not select profile {p} of the {self.component!r} engine")
            self.contexts[p] = ctx
        return ctx

    def set_shapes(self, ctx, shapes: dict) -> None:
        for n, shape in shapes.items():
            if not ctx.set_input_shape(n, tuple(shape)):
                raise EngineError(f"the {self.component!r} engine refuses shape {tuple(shape)} for {n!r}")

    @staticmethod
    def set_addresses(ctx, addresses: dict) -> None:
        for n, ptr in addresses.items():
            ctx.set_tensor_address(n, int(ptr))

    def enqueue(self, ctx, stream: cuda.Stream) -> None:
        if not ctx.execute_async_v3(stream.ptr):
            raise EngineError(f"TensorRT failed to run the {self.component!r} engine (see its log above)")


class TensorRTComponents:
    """Sampler components on a bundle's TensorRT engines (see the module docstring).

    `engines` {component: manifest entry} (default: the ones that match this machine, EngineError with
    the reason when there are none); `device` the CUDA device index; `fallback` components for shapes
    no profile covers (None: an EngineError); `log` gets one-line notes.
    """

    def __init__(self, bundle, engines: dict | None = None, device: int | None = None, fallback=None,
                 log=_stderr):
        trt = import_tensorrt()
        if isinstance(bundle, (str, os.PathLike)):
            bundle = read_bundle(bundle)
        if not isinstance(bundle, Bundle):
            raise TypeError(f"expected a Bundle or a path, got {type(bundle).__name__}")
        target = current_target(device)  # also makes `device` the current CUDA device
        if engines is None:
            engines, reason = find_engines(bundle, target)
            if reason:
                raise EngineError(reason)
        self.bundle, self.config, self.target, self.trt = bundle, bundle.config, target, trt
        self.fallback, self.log = fallback, log
        self._noted = set()
        self.stream = cuda.Stream()
        runtime = trt.Runtime(logger(trt))
        self._engines = {c: _Engine(trt, runtime, c, bundle.member(e["member"])) for c, e in engines.items()}
        self._runtime = runtime  # engines must not outlive their runtime
        self._scratch = cuda.Buffer(max(e.memory for e in self._engines.values()))
        self._buffers: dict[tuple[str, str], cuda.Buffer] = {}
        self._loops: dict[tuple, _HeadLoop] = {}

    # ---- display

    @property
    def device(self) -> str:
        return "cuda"

    @property
    def device_name(self) -> str:
        return f"TensorRT {self.target.tensorrt} on {self.target.gpu}, {self.bundle.precision}"

    def has_graph(self, name: str) -> bool:
        return name in self._engines

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
        eng = self._engines[comp]
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
        return self._run("backbone", feeds, lambda: self.fallback.backbone(tokens, positions, class_ids, pred_positions))

    def decode(self, tokens):
        return self._run("vae_decoder", {"tokens": tokens}, lambda: self.fallback.decode(tokens))

    def _head_name(self, cfg: bool) -> str:
        if cfg:
            if "head" not in self._engines:
                raise EngineError(f"{self.bundle.path}: this bundle has no CFG head engine; re-export with --cfg")
            return "head"
        # Without a no-CFG engine, the CFG engine with duplicated z and weight 1 computes the same step.
        return "head_nocfg" if "head_nocfg" in self._engines else "head"

    def head_step(self, x, t, z, coef, cfg_weight, noise):
        r = x.shape[0]
        cfg = z.shape[0] == 2 * r
        name = self._head_name(cfg)
        zz, ww = (np.concatenate([z, z]), np.ones((r, 1), np.float32)) if name == "head" and not cfg else (z, cfg_weight)
        feeds = {"x": x, "t": t, "z": zz, "coef": coef, "cfg_weight": ww, "noise": noise}
        return self._run(name, feeds, lambda: self.fallback.head_step(x, t, z, coef, cfg_weight, noise))

    # ---- the head loop of one AR step, on the device

    def diffuse(self, x, z, calls, cfg_weight, step_noise):
        """The whole head loop of one AR step (see gtr.runtime.sampler.run_head), kept on the GPU."""
        R, c = x.shape
        cfg = z.shape[0] == 2 * R
        name = self._head_name(cfg)
        zz, w = (np.concatenate([z, z]), 1.0) if name == "head" and not cfg else (z, cfg_weight)
        eng = self._engines[name]
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
            loop = self._loops[key] = _HeadLoop(self, eng, rows, profiles, R, c, D, ncoef, two, shapes)
        x[...] = loop.run(x, zz, calls, w, step_noise)
        return x

    # ---- lifetime

    def close(self) -> None:
        for loop in self._loops.values():
            loop.close()
        self._loops.clear()
        for eng in self._engines.values():
            eng.contexts.clear()  # contexts go before the memory they use
        for buf in self._buffers.values():
            buf.free()
        self._scratch.free()
        self.stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _HeadLoop:
    """Device buffers, bindings and (after the first run) the CUDA graph of one head-call pattern."""

    def __init__(self, owner: TensorRTComponents, eng: _Engine, rows: tuple, profiles: dict, R: int, c: int, D: int,
                 ncoef: int, two: bool, shapes):
        self.owner, self.eng, self.rows, self.profiles = owner, eng, rows, profiles
        self.R, self.c, self.two, self.shapes = R, c, two, shapes
        n = len(rows)
        self.t, self.t_stride = _blocks(n, R, eng.dtypes["t"])
        self.coef, self.coef_stride = _blocks(n, R * ncoef, eng.dtypes["coef"])
        self.noise, self.noise_stride = _blocks(n, R * c, eng.dtypes["noise"])
        self.w = np.zeros((R, 1), np.float32)
        # z of each distinct active prefix r ([:r] and, with CFG, [R:R + r]), one aligned block each
        self.z_rows = {r: (2 * r if two else r) for r in sorted(set(rows))}
        self.z_offset, offset = {}, 0
        for r, zr in self.z_rows.items():
            self.z_offset[r] = offset
            offset += -(-zr * D * 4 // ALIGN) * ALIGN
        self.z = np.zeros(offset // 4, np.float32)
        self.D = D
        self.dev = {k: cuda.Buffer(a.nbytes) for k, a in
                    (("t", self.t), ("coef", self.coef), ("noise", self.noise), ("w", self.w), ("z", self.z))}
        self.xa, self.xb = cuda.Buffer(R * c * 4), cuda.Buffer(R * c * 4)
        self.out = self.xb if n % 2 else self.xa  # where the last call writes
        self.capturable = all(eng.exact(p) for p in profiles.values())
        self.graph = None
        self.runs = 0

    def _fill(self, x, z, calls, cfg_weight, step_noise) -> None:
        R, c = self.R, self.c
        self.noise[...] = 0
        for j, call in enumerate(calls):
            r = call.rows
            self.t[j, :r] = call.t
            self.coef[j, :call.coef.size] = call.coef.reshape(-1)
            start = 0
            for noise, i in zip(step_noise, call.noise_index):
                g = noise.shape[1] * c
                if i >= 0:
                    self.noise[j, start:start + g] = noise[i].reshape(-1)
                start += g
        self.w[...] = cfg_weight
        for r, zr in self.z_rows.items():
            prefix = np.concatenate([z[:r], z[R:R + r]]) if self.two else z[:r]
            o = self.z_offset[r] // 4
            self.z[o:o + zr * self.D] = prefix.reshape(-1)

    def _enqueue(self) -> None:
        """Enqueue every call of the loop on the stream (eagerly, or into a capture)."""
        owner, eng = self.owner, self.eng
        ptr = {k: b.ptr for k, b in self.dev.items()}
        src, dst = self.xa, self.xb
        for j, r in enumerate(self.rows):
            ctx = eng.context(self.profiles[r], owner._scratch, owner.stream)
            s = self.shapes(r)
            at = {"x": src.ptr, "t": ptr["t"] + j * self.t_stride, "z": ptr["z"] + self.z_offset[r],
                  "coef": ptr["coef"] + j * self.coef_stride, "cfg_weight": ptr["w"],
                  "noise": ptr["noise"] + j * self.noise_stride}
            eng.set_shapes(ctx, {n: s[n] for n in eng.inputs})
            eng.set_addresses(ctx, {**{n: at[n] for n in eng.inputs}, eng.outputs[0]: dst.ptr})
            eng.enqueue(ctx, owner.stream)
            src, dst = dst, src

    def _capture(self) -> bool:
        """Record the loop into a CUDA graph; False (and never again) when that does not work."""
        stream = self.owner.stream
        stream.begin_capture()
        try:
            self._enqueue()
        except (EngineError, cuda.CudaError):
            try:
                stream.end_capture().close()
            except cuda.CudaError:
                pass  # the capture was invalidated; ending it is all that was needed
            self.capturable = False
            return False
        try:
            self.graph = stream.end_capture()
        except cuda.CudaError:
            self.capturable = False
            return False
        return True

    def run(self, x, z, calls, cfg_weight, step_noise) -> np.ndarray:
        stream = self.owner.stream
        self._fill(x, z, calls, cfg_weight, step_noise)
        x0 = np.ascontiguousarray(x, dtype=np.float32)
        for k in ("t", "coef", "noise", "w", "z"):
            stream.upload(self.dev[k].ptr, getattr(self, k))
        stream.upload(self.xa.ptr, x0)
        stream.upload(self.xb.ptr, x0)  # rows that join later read their initial x from either buffer
        if self.graph is None and self.capturable and self.runs >= 1:
            self._capture()
        if self.graph is not None:
            self.graph.launch(stream)
        else:
            self._enqueue()
        self.runs += 1
        out = np.empty((self.R, self.c), np.float32)
        stream.download(out, self.out.ptr)
        stream.sync()
        return out

    def close(self) -> None:
        if self.graph is not None:
            self.graph.close()
            self.graph = None
        for b in (*self.dev.values(), self.xa, self.xb):
            b.free()

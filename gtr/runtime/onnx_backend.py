"""onnxruntime backend: the sampler components (backbone, head_step, diffuse, decode) on a bundle's
graphs. numpy + onnxruntime only.

Graphs are loaded straight from the mapped bundle: the graph proto bytes go to InferenceSession and
the component's weight blob (ONNX external data, referenced by its member name) is handed over with
`SessionOptions.add_external_initializers_from_files_in_memory`, so nothing is written to disk and
the head and head_nocfg graphs read one stored copy of the MLP weights (onnxruntime copies the data
into the session when it is created). A session is created once per graph, on first use, so a bundle
with both head graphs only loads the one its plan needs; `prepare(plan)` creates them up front.

The head loop (`diffuse`) runs with IO binding: all per-call inputs of a step (timesteps,
coefficients, noise) are laid out once as [calls, R, ...] arrays and uploaded once; each call binds
pointers into them, x ping-pongs between two device buffers (x_prev of one call is bound as the x of
the next), and only the final x comes back. On CUDA everything stays on the GPU between head steps;
on CPU the same code binds numpy memory directly (no copies). Only the CPU path is tested here (no
GPU in CI); the CUDA path differs only in the device name given to OrtValue and the bindings. Where
the bundle has a chain graph for the head (fp32 bundles with small heads, gtr.export.head_chain) and
the head runs on the CPU, each run of `steps` calls of the same rows (at most CHAIN_MAX_ROWS) is one
call of the chain graph instead: the same nodes, so the same bits, at less per-call cost
(docs/speed.md). Which calls are chained depends on the bundle and the call only.

On the CPU, graphs with small weights (`SHARD_MAX_BYTES`) run as row shards on single-threaded
sessions, up to one per thread at once, each over a part of the rows (the backbone's batch rows; the
head loop's rows, each FTS group split evenly); at batch 1 this beats two threads sharing each small
GEMM (docs/speed.md). How the rows are cut depends only on the bundle and the call (`CPU_SHARDS`,
`BACKBONE_ROWS`, `head_shards`), never on the threads, the core count or the affinity: a call of
other rows can round differently, so the same request gives the same bits on any machine with the
same build.

The device comes from each session's own providers (`session.get_providers()`), not from the ones
asked for: onnxruntime falls back to the CPU when CUDA cannot start (missing libraries, no GPU), and
then binding CUDA buffers would fail. Such a fallback is reported in one line (on stderr by default),
and is a DeviceError when CUDA is required (--device cuda). onnxruntime's own log lines about it (two
coloured blocks per session) are silenced while a session with the CUDA provider is created: its
default logger is set to "fatal only" and back to onnxruntime's default (warning) afterwards
(SessionOptions.log_severity_level does not reach them).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort

from gtr.errors import DeviceError
from gtr.runtime.bundle import Bundle, BundleError, read_bundle
from gtr.runtime.head_inputs import CHAIN_OUTPUT, CHAIN_SEQ_INPUTS, blocks, head_graph, nocfg_on_cfg_graph
from gtr.runtime.notes import stderr_line
from gtr.runtime.cpus import usable_cpus
from gtr.runtime.sampler import call_arrays, row_shards

CUDA = "CUDAExecutionProvider"
SHARD_MAX_BYTES = 16 * 2**20  # graphs with weights up to this size run as row shards on the CPU (OnnxComponents)
BACKBONE_ROWS = 4  # rows per backbone call when sharded (benchmarks/calls_cpu.py; docs/speed.md)
CPU_SHARDS = 4  # most row shards of a sharded call: set by the call (head_shards), never by the threads
HEAD_ROWS_PER_SHARD = 16  # a head call splits into more than 2 shards only from 16 rows a shard on
CHAIN_MAX_ROWS = 16  # head calls of up to this many rows (per shard) run as chain calls where the bundle has them

ORT_DEFAULT_SEVERITY = 2  # onnxruntime's default logger level (warning), restored after a CUDA session is made
ORT_FATAL_ONLY = 4
_LOGGER_LOCK = threading.Lock()  # the default logger is process-wide: one session creation at a time changes it


def head_shards(shards: int, rows: int) -> int:
    """Row shards of a sharded head loop of `rows` rows: at most `shards`, at least 2 (two cores stay busy),
    more only where each gets HEAD_ROWS_PER_SHARD rows: every shard costs a call per diffusion step, which
    dominates a small call (docs/speed.md; benchmarks/shards_cpu.py). The cut depends on the bundle and the
    call only, never on the threads."""
    return shards if shards <= 2 else min(shards, max(2, rows // HEAD_ROWS_PER_SHARD))


def default_providers() -> list[str]:
    available = ort.get_available_providers()
    if CUDA in available:
        return [CUDA, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(proto, external: dict, providers=None, threads: int | None = None) -> ort.InferenceSession:
    """InferenceSession from graph proto bytes whose external data lives in memory.

    external: {location: bytes-like} for the external data files the graph references.
    """
    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only; OnnxComponents reports a CUDA fallback itself, in one line
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    # Idle pool threads sleep instead of spinning: the head shards (diffuse) run right after a backbone
    # call, and a spinning backbone pool would take their cores (measured by gtr-bench).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if external:
        names = list(external)
        bufs = [np.frombuffer(external[n], dtype=np.uint8) for n in names]
        so.add_external_initializers_from_files_in_memory(names, bufs, [b.nbytes for b in bufs])
    providers = list(providers or default_providers())
    if CUDA not in providers:
        return ort.InferenceSession(bytes(proto), so, providers=providers)
    with _LOGGER_LOCK:
        ort.set_default_logger_severity(ORT_FATAL_ONLY)  # a CUDA provider that cannot start logs two blocks
        try:
            return ort.InferenceSession(bytes(proto), so, providers=providers)
        finally:
            ort.set_default_logger_severity(ORT_DEFAULT_SEVERITY)


class OnnxComponents:
    """Sampler components on onnxruntime for a bundle (a `Bundle` or a path).

    `providers` are the ones asked for (default: CUDA when onnxruntime has it, then CPU); `log` gets
    the one-line note when a session does not run on CUDA although CUDA was asked for; with
    `require_cuda` that is a DeviceError instead.
    """

    def __init__(self, bundle, providers=None, threads: int | None = None, log=stderr_line,
                 require_cuda: bool = False):
        if isinstance(bundle, (str, os.PathLike)):
            bundle = read_bundle(bundle)
        if not isinstance(bundle, Bundle):
            raise TypeError(f"expected a Bundle or a path, got {type(bundle).__name__}")
        self.bundle = bundle  # sessions are created lazily from its mapped members
        self.config = bundle.config
        self.providers = list(providers or default_providers())  # as asked for
        self.threads = threads
        self.require_cuda = require_cuda
        # On the CPU, a graph whose weights stay in cache runs as row shards on single-threaded sessions,
        # one shard per thread at once (rows are independent: backbone rows, head rows through the whole
        # loop); one thread per shard beats several threads on one small GEMM (docs/speed.md). Each
        # shard reads all the weights, so a big graph (MAR-B) runs as one call whose GEMMs use the threads.
        threads_total = max(1, int(threads or usable_cpus()))
        members = bundle.manifest.get("members", {})
        self.shards = {name: (CPU_SHARDS if members.get(g.get("weights"), {}).get("length", 0) <= SHARD_MAX_BYTES
                              else 1) for name, g in bundle.graphs.items() if name != "vae_decoder"}
        # The threads only decide how many of a call's fixed shards run at once.
        workers = min(threads_total, CPU_SHARDS)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="gtr-rows") if workers > 1 else None
        self.log = log
        self._graphs = bundle.graphs
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._chains: dict[str, tuple[ort.InferenceSession, int]] = {}  # head graph -> its chain's (session, steps)
        self._inputs: dict[str, tuple[str, ...]] = {}
        self._device: dict[str, str] = {}  # session name -> "cuda" | "cpu", from the session itself
        self._fallback_reported = False

    # ---- sessions

    @property
    def device(self) -> str:
        """Where the sessions made so far run: "cuda" if all of them run on CUDA, else "cpu" (before
        the first session: what was asked for)."""
        devices = set(self._device.values()) or {"cuda" if self.providers[0] == CUDA else "cpu"}
        return "cuda" if devices == {"cuda"} else "cpu"

    @property
    def device_name(self) -> str:
        return f"onnxruntime {ort.__version__} {self.device.upper()}, {self.bundle.precision}"

    def has_graph(self, name: str) -> bool:
        return name in self._graphs

    def session(self, name: str) -> ort.InferenceSession:
        s = self._sessions.get(name)
        if s is not None:
            return s
        g = self._graphs.get(name)
        if g is None:
            raise BundleError(f"{self.bundle.path}: the bundle has no {name!r} graph "
                              f"(it has: {', '.join(self._graphs) or 'none'})")
        s = self._load(name, g["member"], g.get("weights"), 1 if self.shards.get(name, 1) > 1 else self.threads)
        used = s.get_providers()
        self._device[name] = "cuda" if used and used[0] == CUDA else "cpu"
        if CUDA in self.providers and self._device[name] == "cpu":
            self._cuda_fallback(name)
        self._sessions[name] = s
        self._inputs[name] = tuple(i.name for i in s.get_inputs())
        return s

    def _load(self, name: str, member: str, weights: str | None, threads) -> ort.InferenceSession:
        external = {weights: self.bundle.member(weights)} if weights else {}
        try:
            return make_session(self.bundle.member(member), external, self.providers, threads)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise BundleError(f"{self.bundle.path}: cannot load graph {name!r}: "
                              f"{str(e).strip().splitlines()[0]}") from None

    def chain(self, name: str):
        """(session, steps) of the chain graph of head graph `name` (gtr.export.head_chain), made on
        first use, when the bundle has one and the head runs on the CPU; else None. Same threads and
        weights as the step graph's session."""
        entry = self._graphs[name].get("chain")
        if not entry or self._device.get(name) != "cpu":
            return None
        if name not in self._chains:
            threads = 1 if self.shards.get(name, 1) > 1 else self.threads
            session = self._load(f"{name} chain", entry["member"], self._graphs[name].get("weights"), threads)
            self._chains[name] = session, int(entry["steps"])
        return self._chains[name]

    def _cuda_fallback(self, name: str) -> None:
        """A session fell back to the CPU although CUDA was asked for: DeviceError when CUDA is required,
        else one note for the whole bundle."""
        if not self.require_cuda and self._fallback_reported:
            return
        from gtr.runtime.providers import cuda_provider_problem
        why = (f"onnxruntime {ort.__version__} cannot start its CUDA provider ({cuda_provider_problem(ort)}); "
               f"onnxruntime-gpu needs an NVIDIA driver and the CUDA/cuDNN libraries of its own CUDA version "
               f"(docs/tensorrt.md, Install)")
        if self.require_cuda:
            raise DeviceError(f"device cuda: {why}")
        self._fallback_reported = True
        self.log(f"note: {why}; running on the CPU")

    def prepare(self, plan=None) -> None:
        """Create the sessions a plan needs now (sampling creates them on first use otherwise)."""
        self.session("backbone")
        head = self._head_name(plan is None or plan.uses_cfg)
        self.session(head)
        self.chain(head)
        if self.has_graph("vae_decoder"):
            self.session("vae_decoder")

    def _head_name(self, cfg: bool) -> str:
        name = head_graph(self.has_graph, cfg)
        if name is None:
            raise BundleError(f"{self.bundle.path}: this bundle was exported without CFG (no 'head' graph); "
                              f"re-export with --cfg to use guidance")
        return name

    # ---- components

    def backbone(self, tokens, positions, class_ids, pred_positions):
        s = self.session("backbone")
        feeds = {"tokens": tokens, "positions": positions, "class_ids": class_ids, "pred_positions": pred_positions}
        rows, shards = len(class_ids), self._shard_count("backbone")
        if shards == 1 or rows == 1:
            return s.run(None, feeds)[0]
        # At most BACKBONE_ROWS rows per call: larger calls' attention scores outgrow the cache.
        parts = np.array_split(np.arange(rows), max(min(shards, rows), -(-rows // BACKBONE_ROWS)))
        outs = self._map(lambda p: s.run(None, {k: v[p[0]:p[-1] + 1] for k, v in feeds.items()})[0], parts)
        return np.concatenate(outs)

    def head_step(self, x, t, z, coef, cfg_weight, noise):
        r = x.shape[0]
        cfg = z.shape[0] == 2 * r
        name = self._head_name(cfg)
        if name == "head" and not cfg:
            z, w = nocfg_on_cfg_graph(z)
            cfg_weight = np.full((r, 1), w, np.float32)
        s = self.session(name)
        feeds = {"x": x, "t": t, "z": z, "coef": coef, "cfg_weight": cfg_weight, "noise": noise}
        return s.run(None, {k: feeds[k] for k in self._inputs[name]})[0]

    def decode(self, tokens):
        s = self.session("vae_decoder")
        return s.run(None, {"tokens": np.ascontiguousarray(tokens, dtype=np.float32)})[0]

    def diffuse(self, x, z, calls, cfg_weight, step_noise):
        """The whole head loop of one AR step (see gtr.runtime.sampler.run_head), with IO binding.

        On the CPU a small head's rows are split into shards (each group's rows evenly, so every
        call's work splits evenly) whose loops run at once on single-threaded sessions (see __init__).
        """
        R, c = x.shape
        cfg = z.shape[0] == 2 * R
        name = self._head_name(cfg)
        if name == "head" and not cfg:
            (z, cfg_weight), cfg = nocfg_on_cfg_graph(z), True
        self.session(name)
        rows, t_all, coef_all, noise_all = call_arrays(calls, step_noise, R, c)
        z_c, z_u = z[:R], (z[R:] if cfg else None)
        shards = row_shards([n.shape[1] for n in step_noise], head_shards(self._shard_count(name), R))
        if len(shards) == 1:
            x[...] = self._head_loop(name, x, z_c, z_u, rows, t_all, coef_all, noise_all, cfg_weight)
            return x
        outs = self._map(lambda i: self._head_loop(name, x[i], z_c[i], None if z_u is None else z_u[i],
                                                   np.searchsorted(i, rows), t_all[:, i], coef_all[:, i],
                                                   noise_all[:, i], cfg_weight), shards)
        for i, out in zip(shards, outs):
            x[i] = out
        return x

    def _shard_count(self, name: str) -> int:
        return self.shards.get(name, 1) if self._device[name] == "cpu" else 1

    def _map(self, fn, parts) -> list:
        """fn over the shards: on the row threads when there are several, else one after the other."""
        if self._pool is None:
            return [fn(p) for p in parts]
        jobs = [self._pool.submit(fn, p) for p in parts]
        return [job.result() for job in jobs]

    def _head_loop(self, name, x, z_c, z_u, rows, t_all, coef_all, noise_all, cfg_weight) -> np.ndarray:
        """Head calls j = 0.. on rows [:rows[j]] of x [R,c]; per-call inputs t_all [n,R], coef_all [n,R,7],
        noise_all [n,R,c]; z_c / z_u [R,D] the cond / uncond z (z_u None without CFG). Returns the final x.
        Runs of `steps` calls of the same rows go to the chain graph where there is one (see `chain`)."""
        R, c = x.shape
        n = len(rows)
        sess, inputs, dev = self._sessions[name], self._inputs[name], self._device[name]
        # Per-call inputs as n blocks, each 256-byte aligned for device kernels; call j binds the first
        # rows[j] rows of block j.
        t_blk, t_stride = blocks(n, R, np.int64)
        coef_blk, coef_stride = blocks(n, R * 7, np.float32)
        noise_blk, noise_stride = blocks(n, R * c, np.float32)
        t_blk[:, :R] = t_all
        coef_blk[:, :R * 7] = coef_all.reshape(n, -1)
        noise_blk[:, :R * c] = noise_all.reshape(n, -1)
        w = np.full((R, 1), cfg_weight, np.float32)
        # z of the active prefix: rows [:r] of z_c (and of z_u with CFG), one copy per distinct r.
        z_of = {r: np.ascontiguousarray(z_c[:r] if z_u is None else np.concatenate([z_c[:r], z_u[:r]]), np.float32)
                for r in sorted(set(int(r) for r in rows))}

        # Every bound value stays referenced until the loop ends: on CUDA the OrtValue owns the device
        # copy (ortvalue_from_numpy copies), on the CPU it wraps the numpy array, which must live too.
        keep = []

        def put(a):
            a = np.ascontiguousarray(a)
            v = ort.OrtValue.ortvalue_from_numpy(a, dev, 0)
            keep.append((a, v))
            return v

        t_ptr, coef_ptr, noise_ptr, w_ptr = (put(a).data_ptr() for a in (t_blk, coef_blk, noise_blk, w))
        z_ptr = {r: put(a).data_ptr() for r, a in z_of.items()}
        xa, xb = put(x.astype(np.float32, copy=True)), put(x.astype(np.float32, copy=True))
        chain = self.chain(name)
        chain_sess, steps = chain if chain else (None, 0)
        f32, i64 = np.float32, np.int64
        has_w = "cfg_weight" in inputs
        bound_r = {}  # io binding -> the r its z and cfg_weight are bound for

        def bind_rows(io, r):
            if bound_r.get(id(io)) != r:
                io.bind_input("z", dev, 0, f32, [r if z_u is None else 2 * r, z_of[r].shape[1]], z_ptr[r])
                if has_w:
                    io.bind_input("cfg_weight", dev, 0, f32, [r, 1], w_ptr)
                bound_r[id(io)] = r

        io = sess.io_binding()
        chain_io = chain_sess.io_binding() if chain_sess is not None else None
        src, dst = xa, xb
        j = 0
        while j < n:
            r = int(rows[j])
            if r == 0:
                j += 1
                continue  # a shard with no rows of the groups active at this call
            if chain_io is not None and r <= CHAIN_MAX_ROWS and j + steps <= n and rows[j + steps - 1] == r:
                # `steps` calls of the same rows (rows only grow) as one chain call
                bind_rows(chain_io, r)
                chain_io.bind_input("x", dev, 0, f32, [r, c], src.data_ptr())
                for key, part, dtype in (("t", t_all, i64), ("coef", coef_all, f32), ("noise", noise_all, f32)):
                    seq = np.ascontiguousarray(part[j:j + steps, :r], dtype)
                    chain_io.bind_input(CHAIN_SEQ_INPUTS[key], dev, 0, dtype, list(seq.shape), put(seq).data_ptr())
                chain_io.bind_output(CHAIN_OUTPUT, dev, 0, f32, [r, c], dst.data_ptr())
                chain_sess.run_with_iobinding(chain_io)
                j += steps
            else:
                bind_rows(io, r)
                io.bind_input("x", dev, 0, f32, [r, c], src.data_ptr())
                io.bind_input("t", dev, 0, i64, [r], t_ptr + j * t_stride)
                io.bind_input("coef", dev, 0, f32, [r, 7], coef_ptr + j * coef_stride)
                io.bind_input("noise", dev, 0, f32, [r, c], noise_ptr + j * noise_stride)
                io.bind_output("x_prev", dev, 0, f32, [r, c], dst.data_ptr())
                sess.run_with_iobinding(io)
                j += 1
            src, dst = dst, src
        return src.numpy().copy()

    # ---- lifetime

    def close(self) -> None:
        """Free the sessions (their weights and, on CUDA, device memory) and the row threads; idempotent.
        Later calls make sessions again."""
        self._sessions.clear()
        self._chains.clear()
        self._inputs.clear()
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.shutdown(wait=False)  # later calls run their shards one after the other: the same cut

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit, modules may already be gone
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- display

    def info(self) -> dict:
        m = self.bundle.manifest
        return {"providers": self.providers, "device": self.device,
                "providers_used": {k: s.get_providers() for k, s in self._sessions.items()},
                "precision": self.bundle.precision,
                "graphs": {k: {"inputs": [i["name"] for i in g.get("inputs", [])],
                               "static_shapes": len(g.get("static_shapes", []))} for k, g in self._graphs.items()},
                "sessions": list(self._sessions), "model": m.get("config", {}).get("name")}

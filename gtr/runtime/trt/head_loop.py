"""The head loop of one AR step on the GPU for the TensorRT backend: device buffers, bindings, and the
CUDA graph that replays the loop. numpy + gtr.runtime.trt.cuda; the engine is duck-typed (the TensorRT
backend's `_Engine`, or a stand-in with the same methods: tools/gpu_check.py, tests/trt_fakes.py).

Layout: the step's timesteps, coefficients and noise for all its calls are packed on the host as
[calls, rows] blocks (256-byte aligned) and uploaded once, z once per distinct row count, and x goes
into two device buffers the calls ping-pong between (x_prev of one call is the x of the next); only the
final x is copied back. Each distinct call pattern keeps its own buffers, so its addresses are fixed.

Capture, made so that it cannot be silently wrong:
* A captured loop gets contexts of its own, one per call, so every context in the CUDA graph was
  enqueued exactly once during capture, with addresses that never change afterwards (the pattern
  trtexec uses; several enqueues of one context with changing addresses in one graph are not
  documented). Eager runs use the engine's shared contexts and never touch a captured one.
* Run 1 is eager on the loop's own contexts (TensorRT wants one run after a context's shapes are set,
  outside capture; contexts are also never created inside a capture). It sets each context's shapes
  and addresses for good: the capture only enqueues. The contexts are kept only once all of them
  exist; until then (e.g. out of memory) the next run is a run 1 again.
* Run 2 captures and replays, then runs the loop eagerly on the shared contexts and compares: on a
  mismatch, or when the replay fails, one note line, the graph is dropped (never replayed unchecked)
  and the loop runs eagerly from then on. Later runs replay.
* Capture is used only when every profile of the loop is exact (fixed shapes), and while the owner's
  budget of captured contexts lasts; a closed loop gives its share of the budget back. Any failure
  inside capture ends the capture (whatever the exception) and the loop runs eagerly (an error there
  is raised by the eager run, in the project's error type).
"""
from __future__ import annotations

import numpy as np

from gtr.errors import CudaError, EngineError, first_line
from gtr.runtime.trt import cuda
from gtr.runtime.head_inputs import ALIGN, blocks

REPLAY_TOL = 1e-3  # max |replay - eager| / max(1, max |eager|) accepted on the first replay


class ContextBudget:
    """How many more execution contexts captured loops may create (each holds host and some device state)."""

    def __init__(self, limit: int):
        self.left = int(limit)

    def take(self, n: int) -> bool:
        if n > self.left:
            return False
        self.left -= n
        return True

    def give(self, n: int) -> None:
        self.left += int(n)


class HeadLoop:
    """Device buffers, bindings and (from the second run) the checked CUDA graph of one head-call pattern."""

    def __init__(self, eng, stream: cuda.Stream, scratch: cuda.Buffer, rows: tuple, profiles: dict, R: int, c: int,
                 D: int, ncoef: int, two: bool, shapes, budget: ContextBudget, log):
        self.eng, self.stream, self.scratch, self.rows, self.profiles = eng, stream, scratch, rows, profiles
        self.R, self.c, self.D, self.two, self.shapes, self.log = R, c, D, two, shapes, log
        n = len(rows)
        self.t, self.t_stride = blocks(n, R, eng.dtypes["t"])
        self.coef, self.coef_stride = blocks(n, R * ncoef, eng.dtypes["coef"])
        self.noise, self.noise_stride = blocks(n, R * c, eng.dtypes["noise"])
        self.w = np.zeros((R, 1), np.float32)
        # z of each distinct active prefix r ([:r] and, with CFG, [R:R + r]), one aligned block each
        self.z_rows = {r: (2 * r if two else r) for r in sorted(set(rows))}
        self.z_offset, offset = {}, 0
        for r, zr in self.z_rows.items():
            self.z_offset[r] = offset
            offset += -(-zr * D * 4 // ALIGN) * ALIGN
        self.z = np.zeros(offset // 4, np.float32)
        self.dev = {k: cuda.Buffer(a.nbytes) for k, a in
                    (("t", self.t), ("coef", self.coef), ("noise", self.noise), ("w", self.w), ("z", self.z))}
        self.xa, self.xb = cuda.Buffer(R * c * 4), cuda.Buffer(R * c * 4)
        self.out = self.xb if n % 2 else self.xa  # where the last call writes
        self.budget = budget
        self.capturable = all(eng.exact(p) for p in profiles.values()) and budget.take(n)
        self.taken = n if self.capturable else 0  # what close() gives back to the budget
        self.own = []  # the loop's own contexts, one per call (only when capturable), bound at run 1
        self.graph = None

    # ---- host side

    def _fill(self, z, calls, cfg_weight, step_noise) -> None:
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

    def _upload_x(self, x0: np.ndarray) -> None:
        self.stream.upload(self.xa.ptr, x0)
        self.stream.upload(self.xb.ptr, x0)  # rows that join later read their initial x from either buffer

    def _result(self) -> np.ndarray:
        out = np.empty((self.R, self.c), np.float32)
        self.stream.download(out, self.out.ptr)
        self.stream.sync()
        return out

    # ---- device side

    def _enqueue(self, contexts, bind: bool = True) -> None:
        """Enqueue every call of the loop on the stream (eagerly, or into a capture); contexts[j] runs call j.
        bind=False: the contexts' shapes and addresses are set already (the loop's own, during capture)."""
        eng = self.eng
        ptr = {k: b.ptr for k, b in self.dev.items()}
        src, dst = self.xa, self.xb
        for j, r in enumerate(self.rows):
            ctx = contexts[j]
            s = self.shapes(r)
            at = {"x": src.ptr, "t": ptr["t"] + j * self.t_stride, "z": ptr["z"] + self.z_offset[r],
                  "coef": ptr["coef"] + j * self.coef_stride, "cfg_weight": ptr["w"],
                  "noise": ptr["noise"] + j * self.noise_stride}
            if bind:
                eng.set_shapes(ctx, {n: s[n] for n in eng.inputs})
                eng.set_addresses(ctx, {**{n: at[n] for n in eng.inputs}, eng.outputs[0]: dst.ptr})
            eng.enqueue(ctx, self.stream)
            src, dst = dst, src

    def _shared(self) -> list:
        return [self.eng.context(self.profiles[r], self.scratch, self.stream) for r in self.rows]

    def _capture(self) -> bool:
        """Record the loop on its own contexts into a CUDA graph; False (and never again) when that fails.
        The capture is ended whatever happens inside it: a stream left capturing fails every later call."""
        graph, error = None, None
        self.stream.begin_capture()
        try:
            self._enqueue(self.own, bind=False)
        except Exception as e:  # noqa: BLE001 - anything; the eager run reports errors in gtr's types
            error = e
        finally:
            try:
                graph = self.stream.end_capture()
            except CudaError as e:
                error = error or e
        if error is not None:
            if graph is not None:
                graph.close()
            self._give_up(f"capture failed ({first_line(error)})")
            return False
        self.graph = graph
        return True

    def _give_up(self, why: str) -> None:
        if self.graph is not None:
            graph, self.graph = self.graph, None
            try:
                graph.close()
            except CudaError:
                pass
        self.capturable = False
        self.own = []
        self._give_back()
        self.log(f"note: the TensorRT head loop of {len(self.rows)} calls runs without a CUDA graph: {why}")

    def run(self, x, z, calls, cfg_weight, step_noise) -> np.ndarray:
        self._fill(z, calls, cfg_weight, step_noise)
        x0 = np.ascontiguousarray(x, dtype=np.float32)
        for k in ("t", "coef", "noise", "w", "z"):
            self.stream.upload(self.dev[k].ptr, getattr(self, k))
        self._upload_x(x0)
        if self.graph is not None:  # checked on its first replay: replay from now on
            self.graph.launch(self.stream)
            return self._result()
        if not self.capturable:
            self._enqueue(self._shared())
            return self._result()
        if not self.own:  # warm-up of the loop's own contexts, eagerly, outside any capture; binds them
            own = [self.eng.new_context(self.profiles[r], self.scratch, self.stream) for r in self.rows]
            self._enqueue(own)
            out = self._result()
            self.own = own  # kept only once every one was made and ran
            return out
        if not self._capture():
            self._enqueue(self._shared())
            return self._result()
        try:
            self.graph.launch(self.stream)
            replayed = self._result()
        except (EngineError, CudaError) as e:
            self._give_up(f"its first replay failed ({first_line(e)})")
            self._upload_x(x0)
            self._enqueue(self._shared())
            return self._result()
        self._upload_x(x0)
        self._enqueue(self._shared())
        eager = self._result()
        diff = float(np.abs(replayed - eager).max()) if eager.size else 0.0
        if not diff <= REPLAY_TOL * max(1.0, float(np.abs(eager).max(initial=0.0))):
            self._give_up(f"its first replay differs from the eager run (max |diff| {diff:.3g})")
        return eager

    def _give_back(self) -> None:
        self.budget.give(self.taken)
        self.taken = 0

    def close(self) -> None:
        if self.graph is not None:
            self.graph.close()
            self.graph = None
        self.own = []  # contexts go before the memory they use
        self._give_back()
        for b in (*self.dev.values(), self.xa, self.xb):
            b.free()

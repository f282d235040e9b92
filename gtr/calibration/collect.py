"""Calibration data from real sampling along the plans: every input each graph sees, streamed.

The fp32 graphs run the shared sampling loop (`gtr.runtime.sampler.sample`, the same loop as the
runtime) for every plan, class and seed; a recording wrapper keeps the inputs of every call: the
backbone at every AR step (each known-token count K and predicted-token count n of the plan), the head
at every reverse step of every group (t = 999 down to 0, all respacings the plan uses) and the VAE
decoder on the finished tokens. Activation ranges are therefore taken over all timesteps at once:
a per-tensor range has to hold both x_t at t = 999 and at t = 0 (the large products of the update at
t = 999 are not quantized: they live in the float update after the MLP).

Head calls are row-wise (each row is one token at its own t), so calls are packed along rows into
feeds of at most MAX_HEAD_ROWS rows: the calibrator then runs a few hundred large feeds instead of
thousands of tiny ones, with the same per-tensor statistics.

Bounded memory: nothing is kept for later. `record(..., sink=)` hands each graph input to `sink` as it
is made: a `FeedStream` passes it to that graph's range collector at once (head calls after packing
into a MAX_HEAD_ROWS feed), so calibration holds at most one packed head feed, whatever the number of
images. Without a sink, `record` keeps every input in `Recorded.feeds` (and `pack` packs them): the
unbounded computation, kept as the reference the tests compare the stream with (same feeds, in the
same order, so the same ranges).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gtr.calibration.spec import CalibrationError
from gtr.calibration.spec import rss_note as _rss
from gtr.runtime.head_inputs import head_graph, nocfg_on_cfg_graph

MAX_HEAD_ROWS = 1024  # rows per packed head feed: bounds the calibrator's memory (MAR-B: ~40 tensors x 1024 x 4 KiB)
PROGRESS_SECONDS = 30.0  # at most one AR-step progress line this often


@dataclass
class Recorded:
    """Graph inputs seen while sampling, and the static shapes they had (per image, see `per_image`)."""
    feeds: dict = field(default_factory=dict)   # graph -> [feed dict]
    shapes: dict = field(default_factory=dict)  # graph -> set of per-image shape tuples
    images: int = 0


def per_image(graph: str, shape: dict, batch: int) -> tuple:
    """A static shape (as the manifest lists it for `batch` images per call) per image, hashable."""
    if graph == "backbone":
        return ("B", shape["B"] // batch, "K", shape["K"], "n", shape["n"])
    if graph in ("head", "head_nocfg"):
        return ("r", shape["r"] // batch)
    return ("B", 1)


class Recorder:
    """Sampler components on fp32 onnxruntime sessions that keep every input they are called with.

    No `diffuse` method on purpose: the loop then calls `head_step` once per reverse step, which is
    what has to be recorded. `images` = images per sampling call (shapes are stored per image).
    """

    def __init__(self, sessions: dict, images: int, rec: Recorded, sink=None, on_step=None):
        self.sessions, self.images, self.rec, self.sink, self.on_step = sessions, images, rec, sink, on_step
        self.inputs = {k: {i.name for i in s.get_inputs()} for k, s in sessions.items()}
        self.steps = 0

    def _keep(self, graph, feed, shape):
        if self.sink is None:
            self.rec.feeds.setdefault(graph, []).append(feed)
        else:
            self.sink(graph, feed)
        self.rec.shapes.setdefault(graph, set()).add(per_image(graph, shape, self.images))

    def _run(self, graph, feed):
        return self.sessions[graph].run(None, {k: v for k, v in feed.items() if k in self.inputs[graph]})[0]

    def backbone(self, tokens, positions, class_ids, pred_positions):
        feed = {"tokens": tokens, "positions": positions, "class_ids": class_ids, "pred_positions": pred_positions}
        self._keep("backbone", feed, {"B": tokens.shape[0], "K": tokens.shape[1], "n": pred_positions.shape[1]})
        self.steps += 1
        if self.on_step is not None:
            self.on_step(self.steps)
        return self._run("backbone", feed)

    def head_step(self, x, t, z, coef, cfg_weight, noise):
        r = x.shape[0]
        feed = {"x": x.copy(), "t": t, "z": z, "coef": coef, "cfg_weight": cfg_weight, "noise": noise}
        if z.shape[0] == 2 * r:
            self._keep("head", feed, {"r": r})
            return self._run("head", feed)
        # A no-CFG call: the head_nocfg graph's data, and also the CFG graph's with z duplicated and
        # weight 1 (what the runtime runs when a bundle has no head_nocfg graph).
        zz, w = nocfg_on_cfg_graph(z)
        as_cfg = {**feed, "z": zz, "cfg_weight": np.full((r, 1), w, np.float32)}
        self._keep("head", as_cfg, {"r": r})
        graph = head_graph(self.sessions.__contains__, cfg=False)
        if graph == "head_nocfg":
            self._keep(graph, feed, {"r": r})
            return self._run(graph, feed)
        return self._run("head", as_cfg)

    def decode(self, tokens):
        feed = {"tokens": np.ascontiguousarray(tokens, dtype=np.float32)}
        if "vae_decoder" not in self.sessions:
            return None
        self._keep("vae_decoder", feed, {"B": tokens.shape[0]})
        return self._run("vae_decoder", feed)


def record(sessions: dict, plans, spec, num_classes: int, token_dim: int, sink=None, say=None) -> Recorded:
    """Sample every plan for every seed with all calibration classes as one batch, recording inputs.

    sink(graph, feed): where each input goes (see module docstring); None keeps them all in memory.
    say: progress lines, one per sampling call (the calibration classes of one plan and seed) and one
    per AR step at most every PROGRESS_SECONDS, with the elapsed time."""
    import time

    from gtr.runtime.sampler import sample
    rec = Recorded()
    labels = list(spec.classes)
    t0 = time.perf_counter()
    calls = len(plans) * len(spec.seed_values)
    done = 0
    for plan in plans:
        for seed in spec.seed_values:
            last = [time.perf_counter()]

            def on_step(step, plan=plan, seed=seed, last=last):
                now = time.perf_counter()
                if say is not None and now - last[0] >= PROGRESS_SECONDS:
                    last[0] = now
                    say(f"  calibration: {plan.name} seed {seed}: AR step {step}/{plan.num_steps} "
                        f"({now - t0:.0f} s{_rss()})")

            sample(Recorder(sessions, len(labels), rec, sink, on_step), plan, labels, seed, token_dim=token_dim,
                   num_classes=num_classes, decode="vae_decoder" in sessions)
            rec.images += len(labels)
            done += 1
            if say is not None:
                say(f"  calibration: sampled {len(labels)} image(s) along {plan.name}, seed {seed} ({done}/{calls}, "
                    f"{rec.images} image(s), {time.perf_counter() - t0:.1f} s)")
    return rec


class HeadPacker:
    """Packs head feeds along rows as they come, exactly as `pack` packs the recorded list: a packed
    feed is handed to `emit` as soon as the next call would take it past MAX_HEAD_ROWS rows."""

    def __init__(self, emit, max_rows: int | None = None):
        self.emit, self.max_rows = emit, MAX_HEAD_ROWS if max_rows is None else max_rows
        self.group, self.rows = [], 0

    def add(self, feed: dict) -> None:
        r = feed["x"].shape[0]
        if self.group and self.rows + r > self.max_rows:
            self.flush()
        self.group.append(feed)
        self.rows += r

    def flush(self) -> None:
        if self.group:
            merged = _merge_rows(self.group)
            self.group, self.rows = [], 0
            self.emit(merged)


class FeedStream:
    """The sink of a bounded-memory calibration: each feed goes to `collect[graph](feed)` at once
    (after the same selection and packing as `pack`); graphs without a collector are dropped.
    `feeds` counts the feeds each collector got; call `finish()` after the last sampling call."""

    def __init__(self, collect: dict):
        self.collect = collect
        self.feeds = {g: 0 for g in collect}
        self.packers = {g: HeadPacker(lambda f, g=g: self._emit(g, f)) for g in collect if g in ("head", "head_nocfg")}

    def __call__(self, graph: str, feed: dict) -> None:
        if graph not in self.collect:
            return
        if graph in self.packers:
            self.packers[graph].add(feed)
        elif all(np.asarray(v).size for v in feed.values()):
            self._emit(graph, feed)

    def _emit(self, graph, feed):
        self.feeds[graph] += 1
        self.collect[graph](feed)

    def finish(self) -> None:
        for packer in self.packers.values():
            packer.flush()


def check_coverage(rec: Recorded, required: dict, batch: int) -> None:
    """Every static shape the bundle lists (exporter.static_shapes) must have been seen while calibrating."""
    for graph, shapes in required.items():
        missing = [s for s in shapes if per_image(graph, s, batch) not in rec.shapes.get(graph, set())]
        if missing:
            raise CalibrationError(f"calibration does not cover {len(missing)} static shape(s) of the {graph} graph "
                                   f"(first: {missing[0]}): calibrate along every plan the bundle holds")


def pack(graph: str, feeds: list[dict]) -> list[dict]:
    """The feeds the range statistics are taken over: head feeds merged along rows (z keeps its
    [cond; uncond] halves); backbone feeds with an empty input (the first AR step, K = 0) left out.

    Why the latter: onnxruntime's calibrators reduce each tensor with ReduceMin/ReduceMax, which give
    +inf/-inf on an empty tensor, and one infinite range poisons the merged range (NaN scales). The
    tensors of a K = 0 step that are not empty (class/buffer rows of the encoder, the decoder) are seen
    again at every later step of the plan.
    """
    if graph not in ("head", "head_nocfg"):
        return [f for f in feeds if all(np.asarray(v).size for v in f.values())]
    out, group, rows = [], [], 0
    for f in feeds + [None]:
        if f is None or (group and rows + f["x"].shape[0] > MAX_HEAD_ROWS):
            out.append(_merge_rows(group))
            group, rows = [], 0
        if f is not None:
            group.append(f)
            rows += f["x"].shape[0]
    return [f for f in out if f is not None]


def _merge_rows(group: list[dict]) -> dict | None:
    if not group:
        return None
    merged = {k: np.concatenate([f[k] for f in group]) for k in group[0] if k != "z"}
    rs = [f["x"].shape[0] for f in group]
    if all(f["z"].shape[0] == 2 * r for f, r in zip(group, rs)):
        z = [f["z"][:r] for f, r in zip(group, rs)] + [f["z"][r:] for f, r in zip(group, rs)]
    else:
        z = [f["z"] for f in group]
    merged["z"] = np.concatenate(z)
    return merged

"""Calibration data from real sampling along the plans: every input each graph sees.

The graphs run the shared sampling loop (`gtr.runtime.sampler.sample`, the same loop as the runtime)
for every plan, class and seed through a recording wrapper: the backbone at every AR step (each
known-token count K and predicted-token count n of the plan), the head at every reverse step of every
group (t = 999 down to 0, all respacings the plan uses) and the VAE decoder on the finished tokens.
Activation ranges are therefore taken over all timesteps at once: a per-tensor range has to hold both
x_t at t = 999 and at t = 0 (the large products of the update at t = 999 are not quantized: they live
in the float update after the MLP).

Every input calibration sees is run on its graph's session, so the sessions decide what a run
gathers. The exporter passes `gtr.calibration.quantize.RangeCollector`s: each runs the call on
onnxruntime's augmented graph (the graph's own output plus every tensor the ranges are taken over)
and merges that call's ranges at once, so sampling and range collection are ONE run per call and
nothing is kept for later: memory does not depend on the number of images. With `keep=True`, `record`
also keeps every input in `Recorded.feeds`: the unbounded computation, kept as the reference the
tests compare the collectors with.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gtr.calibration.spec import CalibrationError
from gtr.calibration.spec import rss_note as _rss
from gtr.runtime.head_inputs import head_graph, nocfg_on_cfg_graph

PROGRESS_SECONDS = 30.0  # at most one AR-step progress line this often
# Images per sampling call. Why not all classes at once: onnxruntime's augmented graphs keep every
# tensor they take a range of alive until the end of the run (the reductions come last), so a call's
# memory grows with its rows: MAR-L at 10 images per call went past 18 GiB. Per-image noise makes an
# image the same whatever its batch companions, so this changes memory and speed only.
IMAGES_PER_CALL = 2


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
    """Sampler components on sessions that run (and so record) every input they are called with.

    No `diffuse` method on purpose: the loop then calls `head_step` once per reverse step, which is
    what has to be recorded. `images` = images per sampling call (shapes are stored per image).
    keep: also keep every input in `rec.feeds` (the unbounded reference).
    """

    def __init__(self, sessions: dict, images: int, rec: Recorded, keep: bool = False, on_step=None):
        self.sessions, self.images, self.rec, self.keep, self.on_step = sessions, images, rec, keep, on_step
        self.inputs = {k: {i.name for i in s.get_inputs()} for k, s in sessions.items()}
        self.steps = 0

    def _run(self, graph, feed, shape):
        if self.keep:
            self.rec.feeds.setdefault(graph, []).append(feed)
        self.rec.shapes.setdefault(graph, set()).add(per_image(graph, shape, self.images))
        return self.sessions[graph].run(None, {k: v for k, v in feed.items() if k in self.inputs[graph]})[0]

    def backbone(self, tokens, positions, class_ids, pred_positions):
        feed = {"tokens": tokens, "positions": positions, "class_ids": class_ids, "pred_positions": pred_positions}
        self.steps += 1
        if self.on_step is not None:
            self.on_step(self.steps)
        return self._run("backbone", feed, {"B": tokens.shape[0], "K": tokens.shape[1], "n": pred_positions.shape[1]})

    def head_step(self, x, t, z, coef, cfg_weight, noise):
        r = x.shape[0]
        feed = {"x": x.copy(), "t": t, "z": z, "coef": coef, "cfg_weight": cfg_weight, "noise": noise}
        if z.shape[0] == 2 * r:
            return self._run("head", feed, {"r": r})
        # A no-CFG call: the CFG graph's data too, with z duplicated and weight 1 (what the runtime runs
        # when a bundle has no head_nocfg graph), so both graphs' ranges cover it.
        zz, w = nocfg_on_cfg_graph(z)
        as_cfg = self._run("head", {**feed, "z": zz, "cfg_weight": np.full((r, 1), w, np.float32)}, {"r": r})
        if head_graph(self.sessions.__contains__, cfg=False) == "head_nocfg":
            return self._run("head_nocfg", feed, {"r": r})
        return as_cfg

    def decode(self, tokens):
        if "vae_decoder" not in self.sessions:
            return None
        return self._run("vae_decoder", {"tokens": np.ascontiguousarray(tokens, dtype=np.float32)}, {"B": tokens.shape[0]})


def record(sessions: dict, plans, spec, num_classes: int, token_dim: int, keep: bool = False, say=None) -> Recorded:
    """Sample the images `spec.images` gives each plan (IMAGES_PER_CALL classes per call), running
    (and so recording) every graph input on `sessions` ({graph: session}; see the module docstring).

    keep: also keep every input in the result's `feeds` (memory grows with the images).
    say: progress lines, one per sampling call and one per AR step at most every PROGRESS_SECONDS, with
    the elapsed time and the resident memory."""
    import time

    from gtr.runtime.sampler import sample
    rec = Recorded()
    work = []  # (plan, seed, classes of one sampling call): the first plan on the whole set (spec.images)
    for index, plan in enumerate(plans):
        images = spec.images(index)
        for seed in dict.fromkeys(s for s, _ in images):
            labels = [c for s, c in images if s == seed]
            work += [(plan, seed, labels[i:i + IMAGES_PER_CALL]) for i in range(0, len(labels), IMAGES_PER_CALL)]
    t0 = time.perf_counter()
    calls = len(work)
    done = 0
    for plan, seed, chunk in work:
        last = [time.perf_counter()]

        def on_step(step, plan=plan, seed=seed, last=last, done=done):
            now = time.perf_counter()
            if say is not None and now - last[0] >= PROGRESS_SECONDS:
                last[0] = now
                say(f"  calibration: {plan.name} seed {seed}, call {done + 1}/{calls}: AR step "
                    f"{step}/{plan.num_steps} ({now - t0:.0f} s{_rss()})")

        sample(Recorder(sessions, len(chunk), rec, keep, on_step), plan, chunk, seed, token_dim=token_dim,
               num_classes=num_classes, decode="vae_decoder" in sessions)
        rec.images += len(chunk)
        done += 1
        if say is not None:
            say(f"  calibration: sampled classes {', '.join(map(str, chunk))} along {plan.name}, seed {seed} "
                f"({done}/{calls}, {rec.images} image(s), {time.perf_counter() - t0:.1f} s{_rss()})")
    return rec


def check_coverage(rec: Recorded, required: dict, batch: int) -> None:
    """Every static shape the bundle lists (exporter.static_shapes) must have been seen while calibrating."""
    for graph, shapes in required.items():
        missing = [s for s in shapes if per_image(graph, s, batch) not in rec.shapes.get(graph, set())]
        if missing:
            raise CalibrationError(f"calibration does not cover {len(missing)} static shape(s) of the {graph} graph "
                                   f"(first: {missing[0]}): calibrate along every plan the bundle holds")


def has_data(feed: dict) -> bool:
    """False for a feed with an empty input (the first AR step, K = 0): its ranges are left out.

    Why: onnxruntime's calibrators reduce each tensor with ReduceMin/ReduceMax, which give +inf/-inf on
    an empty tensor, and one infinite range poisons the merged range (NaN scales). The tensors of a
    K = 0 step that are not empty (class/buffer rows of the encoder, the decoder) are seen again at
    every later step of the plan.
    """
    return all(np.asarray(v).size for v in feed.values())

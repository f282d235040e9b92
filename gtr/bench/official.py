"""The official MAR sampler (a checkout of LTH14/mar, e.g. ../shared/anchors/official_mar) on gtr's
weights, timed like the other backends: only to be timed against, never part of gtr.

It is imported from the checkout at run time. Its `sample_tokens` runs the baseline MAR loop (num_iter
AR steps, `num_sampling_steps` diffusion steps each), so it stands beside gtr's `mar-N` plans only.
The time split wraps its encoder and decoder passes (backbone) and `diffloss.sample` (head).
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
import time
from collections import Counter

from gtr.bench.timing import timed
from gtr.errors import OfficialError  # noqa: F401  (re-exported: defined with the other error types)

TIMM_HINT = "pip install --no-deps timm==0.9.12 huggingface_hub safetensors pyyaml"


def official_plan_steps(plan) -> tuple[int, int] | None:
    """(AR steps, diffusion steps) when `plan` is what the official sampler runs (mar-N), else None."""
    Ts = {g.T for s in plan.steps for g in s.groups if g.size > 0}
    if plan.params.get("builder") != "mar" or len(Ts) != 1:  # no step annealing (diffusion_steps_min)
        return None
    return len(plan.steps), Ts.pop()


def _import_mar_class(path: str):
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, "models", "mar.py")):
        raise OfficialError(f"{path}: not a checkout of the official MAR code (no models/mar.py)")
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        importlib.import_module("torchvision")
    except Exception:  # noqa: BLE001 - a broken torchvision raises anything
        shim = os.path.join(path, "sitecustomize.py")  # the anchor's torchvision stand-in for timm's imports
        if os.path.isfile(shim):
            import runpy
            runpy.run_path(shim)
    try:
        return importlib.import_module("models.mar").MAR
    except ImportError as e:
        raise OfficialError(f"cannot import the official MAR code from {path} ({e}); it needs timm 0.9.12: "
                            f"{TIMM_HINT}") from None


class OfficialRunner:
    """`run(labels, seed)` samples tokens with the official code; returns the time split in seconds."""

    def __init__(self, path: str, config, state_dict, plan, threads: int | None):
        import torch
        steps = official_plan_steps(plan)
        if steps is None:
            raise OfficialError(f"the official sampler runs only mar-N plans, not {plan.name!r}")
        self.num_iter, T = steps
        self.plan, self.config = plan, config
        MAR = _import_mar_class(path)
        c = config
        self.model = MAR(img_size=c.img_size, vae_stride=c.vae_stride, patch_size=c.patch_size,
                         encoder_embed_dim=c.encoder_embed_dim, encoder_depth=c.encoder_depth,
                         encoder_num_heads=c.encoder_num_heads, decoder_embed_dim=c.decoder_embed_dim,
                         decoder_depth=c.decoder_depth, decoder_num_heads=c.decoder_num_heads, mlp_ratio=c.mlp_ratio,
                         norm_layer=functools.partial(torch.nn.LayerNorm, eps=c.norm_eps), vae_embed_dim=c.token_dim,
                         buffer_size=c.buffer_size, class_num=c.num_classes, diffloss_d=c.diffloss_d,
                         diffloss_w=c.diffloss_w, num_sampling_steps=str(T)).eval()
        try:
            self.model.load_state_dict(state_dict, strict=True)  # gtr's MAR keeps the official key names
        except RuntimeError as e:
            raise OfficialError(f"the official MAR does not take gtr's weights: {str(e).splitlines()[0]}") from None
        self.seconds = Counter()
        for owner, name, part in ((self.model, "forward_mae_encoder", "backbone"),
                                  (self.model, "forward_mae_decoder", "backbone"),
                                  (self.model.diffloss, "sample", "head")):
            setattr(owner, name, timed(getattr(owner, name), self.seconds, part))
        if threads:
            torch.set_num_threads(threads)

    def run(self, labels, seed: int) -> dict:
        import torch
        self.seconds.clear()
        torch.manual_seed(seed)
        ids = torch.tensor([int(x) for x in labels])
        t0 = time.perf_counter()
        with torch.no_grad():
            self.model.sample_tokens(len(labels), num_iter=self.num_iter, cfg=self.plan.cfg,
                                     cfg_schedule=self.plan.cfg_schedule, labels=ids,
                                     temperature=self.plan.temperature)
        total = time.perf_counter() - t0
        split = {"backbone": self.seconds["backbone"], "head": self.seconds["head"], "decode": 0.0}
        split["loop"] = max(0.0, total - split["backbone"] - split["head"])
        return {"total": total, **split}

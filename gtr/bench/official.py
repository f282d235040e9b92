"""The official MAR sampler (a checkout of LTH14/mar, e.g. the one $GTR_OFFICIAL_MAR names) on gtr's
weights, timed like the other backends: only to be timed against, never part of gtr.

It is imported from the checkout at run time (`import_official`, also used by
tools/make_official_fixtures.py). Its `sample_tokens` runs the baseline MAR loop (num_iter AR steps,
`num_sampling_steps` diffusion steps each), so it stands beside gtr's `mar-N` plans only. The time
split wraps its encoder and decoder passes (backbone) and `diffloss.sample` (head). The official code
moves the tensors it makes with `.cuda()`; while it runs here those calls leave them where they were made,
beside the weights: on the CPU, or on the caller's default device (`cuda_calls_stay_on_cpu`).
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import time
import types
from collections import Counter

from gtr.bench.timing import timed
from gtr.errors import OfficialError

ENV = "GTR_OFFICIAL_MAR"  # the checkout the tests and tools take when no path is given
TIMM_HINT = "pip install --no-deps timm==0.9.12 huggingface_hub safetensors pyyaml"


class _Placeholder(type):
    """A class whose attributes are placeholder classes too: enough for timm's module-level
    `from torchvision... import X` and `X.Y`; the MAR code never calls any of them."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _Placeholder(name, (), {})
        setattr(cls, name, value)
        return value


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers `import torchvision[.x]` with empty modules whose attributes are placeholders."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        holder = _Placeholder(spec.name, (), {})
        module.__getattr__ = lambda name: getattr(holder, name)
        return module

    def exec_module(self, module):
        pass


def _torchvision_importable() -> bool:
    try:
        importlib.import_module("torchvision")
        return True
    except Exception:  # noqa: BLE001 - absent, or a build for another torch, which raises anything
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        return False


def import_official(path, *names: str) -> list[types.ModuleType]:
    """Import modules (e.g. "models.mar", "diffusion") of the official checkout at `path`. timm (the
    official code uses its ViT block) imports torchvision at module level; where torchvision cannot be
    imported, stand-ins answer those imports while the official modules load."""
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, "models", "mar.py")):
        raise OfficialError(f"{path}: not a checkout of the official MAR code (no models/mar.py)")
    if path not in sys.path:
        sys.path.insert(0, path)
    stand_in = None if _torchvision_importable() else _TorchvisionStandIn()
    if stand_in is not None:
        sys.meta_path.insert(0, stand_in)
    try:
        return [importlib.import_module(n) for n in names]
    except ImportError as e:
        hint = f"; it needs timm 0.9.12: {TIMM_HINT}" if (e.name or "").partition(".")[0] == "timm" else ""
        raise OfficialError(f"cannot import the official MAR code from {path} ({e}){hint}") from None
    finally:
        if stand_in is not None:  # the loaded modules keep their placeholders; later imports find no torchvision
            sys.meta_path.remove(stand_in)
            _torchvision_importable()


@contextlib.contextmanager
def cuda_calls_stay_on_cpu():
    """While the official code runs, `tensor.cuda()` returns the tensor itself, which was made where the weights
    are (the CPU, or the default device of a `with torch.device(...)` around the run)."""
    import torch
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = cuda


def official_plan_steps(plan) -> tuple[int, int] | None:
    """(AR steps, diffusion steps) when `plan` is what the official sampler runs (mar-N), else None."""
    Ts = {g.T for s in plan.steps for g in s.groups if g.size > 0}
    if plan.params.get("builder") != "mar" or len(Ts) != 1:  # no step annealing (diffusion_steps_min)
        return None
    return len(plan.steps), Ts.pop()


class OfficialRunner:
    """`run(labels, seed)` samples tokens with the official code; returns the time split in seconds."""

    def __init__(self, path: str, config, state_dict, plan, threads: int | None):
        import torch
        steps = official_plan_steps(plan)
        if steps is None:
            raise OfficialError(f"the official sampler runs only mar-N plans, not {plan.name!r}")
        self.num_iter, T = steps
        self.plan, self.config = plan, config
        MAR = import_official(path, "models.mar")[0].MAR
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
        with torch.no_grad(), cuda_calls_stay_on_cpu():
            self.model.sample_tokens(len(labels), num_iter=self.num_iter, cfg=self.plan.cfg,
                                     cfg_schedule=self.plan.cfg_schedule, labels=ids,
                                     temperature=self.plan.temperature)
        total = time.perf_counter() - t0
        split = {"backbone": self.seconds["backbone"], "head": self.seconds["head"], "decode": 0.0}
        split["loop"] = max(0.0, total - split["backbone"] - split["head"])
        return {"total": total, **split}

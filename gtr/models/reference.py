"""The PyTorch reference: MAR + VAE modules as sampler components, and `sample_images`.

This is "what users run today" in benchmarks and the ground truth for parity checks. It uses the
same loop (gtr.runtime.sampler) and random numbers as every other backend.
"""
from __future__ import annotations

import numpy as np
import torch

from gtr.models.diffusion import HeadStep
from gtr.models.mar import MAR
from gtr.runtime.sampler import SampleResult, sample


class TorchComponents:
    def __init__(self, model: MAR, vae=None, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vae = vae.to(self.device).eval() if vae is not None else None
        self.config = model.config
        self._heads = {cfg: HeadStep(model.diffloss.net, cfg).eval() for cfg in (False, True)}

    def _t(self, a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    @torch.no_grad()
    def backbone(self, tokens, positions, class_ids, pred_positions):
        z = self.model(self._t(tokens), self._t(positions), self._t(class_ids), self._t(pred_positions))
        return z.float().cpu().numpy()

    @torch.no_grad()
    def head_step(self, x, t, z, coef, cfg_weight, noise):
        head = self._heads[z.shape[0] == 2 * x.shape[0]]
        out = head(self._t(x), self._t(t), self._t(z), self._t(coef), self._t(cfg_weight), self._t(noise))
        return out.float().cpu().numpy()

    @torch.no_grad()
    def decode(self, tokens):
        if self.vae is None:
            raise RuntimeError("no VAE loaded: pass vae= to decode images")
        return self.vae.tokens_to_image(self._t(tokens)).float().cpu().numpy()


def sample_images(model: MAR, vae, plan, labels, seed: int = 0, device="cpu", progress=None) -> SampleResult:
    """Sample with the torch reference; `labels` is a list of class ids (None = unconditional)."""
    comps = TorchComponents(model, vae, device)
    return sample(comps, plan, labels, seed, token_dim=model.config.token_dim,
                  num_classes=model.config.num_classes, decode=vae is not None, progress=progress)

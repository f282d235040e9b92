"""One reverse diffusion step of the per-token sampler, CFG and the update inside (mar-spec.md §7.4, §8.4).

Every per-step quantity is a per-row input, so one module (and one exported graph) serves every
respacing, every step index and rows at different step indices in the same call (the FTS groups of
a reconstruction step). Coefficient columns are `gtr.runtime.sampler.COEF_COLUMNS`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from gtr.models.mar import DiffusionMLP


class HeadStep(nn.Module):
    """x_t -> x_{t-1} for n rows.

    Inputs: x [n,c]; t [n] original timesteps; z [n,D] (no CFG) or [2n,D] = [cond; uncond];
    coef [n,7] = (sqrt_recip_ac, sqrt_recipm1_ac, mean_coef1, mean_coef2, log_beta,
    log_var_clipped, noise_scale) with noise_scale = temperature at k > 0 and 0 at k = 0;
    cfg_weight [n,1]; noise [n,c].
    """

    def __init__(self, net: DiffusionMLP, cfg: bool):
        super().__init__()
        self.net = net
        self.cfg = cfg

    def forward(self, x, t, z, coef, cfg_weight, noise):
        c = x.shape[1]
        if self.cfg:
            # Both branches see the same x (one trajectory, mar-spec.md §8.4); guidance on eps only,
            # the variance values come from the conditional branch.
            out = self.net(torch.cat([x, x]), torch.cat([t, t]), z)
            n = x.shape[0]
            eps_c, eps_u, v = out[:n, :c], out[n:, :c], out[:n, c:]
            eps = eps_u + cfg_weight * (eps_c - eps_u)
        else:
            out = self.net(x, t, z)
            eps, v = out[:, :c], out[:, c:]
        # The update stays in fp32 even in fp16 graphs: r1*x and r2*eps reach ~1e5 at t = 999.
        eps, v = eps.float(), v.float()
        r1, r2, c1, c2, log_beta, log_var_clip, noise_scale = coef.unbind(dim=1)
        frac = (v + 1) / 2  # learned range, not clamped
        log_var = frac * log_beta[:, None] + (1 - frac) * log_var_clip[:, None]
        x0 = r1[:, None] * x - r2[:, None] * eps
        mean = c1[:, None] * x0 + c2[:, None] * x
        return mean + torch.exp(0.5 * log_var) * noise_scale[:, None] * noise

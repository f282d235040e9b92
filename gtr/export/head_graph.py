"""The head step as exported: HeadStep's math, arranged into fewer and larger graph nodes.

A head call at batch 1 works on a handful of rows, so its time is mostly per-node overhead, not
FLOPs. Three rearrangements, each exact up to float rounding (the export checks every graph
against `HeadStep` itself, see `HeadGraph.reference`):

* The timestep embedding MLP depends on t alone: its value for every t in 0..T-1 is computed once
  at export and looked up (one Gather instead of the sinusoid and two linears per call).
* The adaLN modulations of every res block and of the final layer all read SiLU(y): their weights
  are stacked into one linear (one Gemm and one Split instead of depth + 1 Gemms and Slices), and
  the 1 of `(1 + scale)` is folded into the scale biases.
* With CFG both branches share x: input_proj runs once on x, not on [x; x].

Node names keep '/input_proj/' and '/final_layer/linear/', which the int8 rules key on
(gtr.calibration.quantize.EXCLUDE: those two layers stay float).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gtr.models.diffusion import HeadStep
from gtr.models.mar import DiffusionMLP


class _FinalLayer(nn.Module):
    """The final layer's norm and linear, under the name final_layer: node names (and so the int8
    rules) see '/final_layer/linear/' as in the reference module."""

    def __init__(self, final):
        super().__init__()
        self.norm_final, self.linear = final.norm_final, final.linear

    def forward(self, h, shift, scale1):
        return self.linear(self.norm_final(h) * scale1 + shift)


class HeadGraph(nn.Module):
    """Same inputs and output as HeadStep(net, cfg): x, t, z, coef, cfg_weight, noise -> x_prev."""

    def __init__(self, net: DiffusionMLP, cfg: bool, num_timesteps: int):
        super().__init__()
        self.net, self.cfg = net, cfg
        self._reference = (HeadStep(net, cfg).eval(),)  # a tuple: not a submodule, so not exported
        width = net.input_proj.out_features
        mods = [b.adaLN_modulation[1] for b in net.res_blocks] + [net.final_layer.adaLN_modulation[1]]
        with torch.no_grad():
            self.register_buffer("time_table", net.time_embed(torch.arange(num_timesteps)).float())
            bias = [m.bias.clone() for m in mods]
            for b in bias:
                b[width:2 * width] += 1.0  # chunk order (shift, scale[, gate]): scale is the second
            self.modulation = nn.Linear(width, sum(m.out_features for m in mods))
            self.modulation.weight.copy_(torch.cat([m.weight for m in mods]))
            self.modulation.bias.copy_(torch.cat(bias))
        self.chunks = [width] * (3 * len(net.res_blocks) + 2)
        self.final_layer = _FinalLayer(net.final_layer)

    @property
    def reference(self) -> HeadStep:
        return self._reference[0]

    def forward(self, x, t, z, coef, cfg_weight, noise):
        net, c = self.net, x.shape[1]
        temb = self.time_table[t]
        h = net.input_proj(x)
        if self.cfg:
            temb, h = torch.cat([temb, temb]), torch.cat([h, h])
        mod = torch.split(self.modulation(F.silu(temb + net.cond_embed(z))), self.chunks, dim=-1)
        for i, block in enumerate(net.res_blocks):
            shift, scale1, gate = mod[3 * i:3 * i + 3]
            h = h + gate * block.mlp(block.in_ln(h) * scale1 + shift)
        out = self.final_layer(h, mod[-2], mod[-1])
        if self.cfg:
            n = x.shape[0]
            eps_c, eps_u, v = out[:n, :c], out[n:, :c], out[:n, c:]
            eps = eps_u + cfg_weight * (eps_c - eps_u)
        else:
            eps, v = out[:, :c], out[:, c:]
        # The update in fp32 (as HeadStep): r1 * x and r2 * eps reach ~1e5 at t = 999.
        eps, v = eps.float(), v.float()
        r1, r2, c1, c2, log_beta, log_var_clip, noise_scale = torch.split(coef, 1, dim=1)
        frac = (v + 1) / 2  # learned range, not clamped
        log_var = frac * log_beta + (1 - frac) * log_var_clip
        mean = c1 * (r1 * x - r2 * eps) + c2 * x
        return mean + torch.exp(0.5 * log_var) * noise_scale * noise

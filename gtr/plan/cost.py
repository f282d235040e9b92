"""FLOP model of a plan on a MAR config (gtr-spec.md §6.1 = mar-spec.md §10).

FLOPs = 2 x multiply-accumulates, per image. Counted: transformer blocks (linears with biases, the two
LayerNorm affines, QK^T and AV), decoder_embed, and the diffusion MLP at 2 x its parameter count per
token and diffusion step. Not counted: VAE decode, FTS transforms, softmax, GELU, other element-wise
ops and embedding lookups. CFG doubles both the backbone and the MLP, except that a condition-cached
step (docs/lazy.md) runs the backbone on the conditional branch only (the MLP still runs both halves).
A refresh step's backbone costs what a full step's does: every decoder block is counted on all P + L
slots either way, so asking it for z at every still-masked position adds nothing to the count.
"""
from __future__ import annotations

from dataclasses import dataclass

from .plan import SamplingPlan


@dataclass(frozen=True)
class PlanCost:
    """Per-image cost. Pass/token counts are per CFG branch; the *_flops include CFG doubling."""

    backbone_passes: int  # AR steps = encoder+decoder passes per branch
    encoder_tokens: int  # sum over steps of buffer + K_s, per branch
    decoder_tokens: int  # sum over steps of buffer + L, per branch
    head_token_steps: int  # sum over groups of size * T (diffusion MLP evaluations), per branch
    backbone_flops: float  # encoder + decoder_embed + decoder, all branches
    head_flops: float  # diffusion MLP, all branches
    branches: int = 1  # 2 when the plan uses CFG
    cached_steps: int = 0  # condition-cached steps: their backbone runs 1 branch (counted in backbone_flops)

    @property
    def total_flops(self) -> float:
        return self.backbone_flops + self.head_flops


def block_flops(n: int, D: int, mlp_ratio: float = 4.0) -> float:
    """One pre-norm ViT block on n tokens of width D.

    Per token: qkv + proj + fc1 + fc2 weights (4D^2 + 2*D*hidden) and biases (5D + hidden), plus the
    two LayerNorm affines (4D). With hidden = 4D this is 2n(12D^2 + 13D); attention adds 4n^2 D.
    """
    hidden = int(D * mlp_ratio)
    per_token = 4 * D * D + 2 * D * hidden + 9 * D + hidden
    return 2.0 * n * per_token + 4.0 * n * n * D


def plan_cost(plan: SamplingPlan, config) -> PlanCost:
    """FLOPs of one image sampled with `plan` on the MAR `config` (a gtr.configs.MARConfig)."""
    if tuple(config.grid) != plan.grid:
        raise ValueError(f"plan grid {plan.grid} does not match model grid {tuple(config.grid)}")
    P, L = config.buffer_size, plan.seq_len
    De, Dd = config.encoder_embed_dim, config.decoder_embed_dim
    enc_tokens = dec_tokens = token_steps = 0
    backbone = 0.0
    branches = 2 if plan.uses_cfg else 1
    cached = 0
    for i, s in enumerate(plan.steps):
        n_enc, n_dec = P + s.known_before, P + L
        step = config.encoder_depth * block_flops(n_enc, De, config.mlp_ratio)
        step += 2.0 * n_enc * (De * Dd + Dd)  # decoder_embed on the visible encoder outputs
        step += config.decoder_depth * block_flops(n_dec, Dd, config.mlp_ratio)
        is_cached = plan.cond_mode(i) == "cached"
        cached += is_cached
        backbone += (1 if is_cached else branches) * step
        enc_tokens += n_enc
        dec_tokens += n_dec
        token_steps += sum(g.size * g.T for g in s.groups)
    head = 2.0 * config.head_params * token_steps
    return PlanCost(backbone_passes=len(plan.steps), encoder_tokens=enc_tokens, decoder_tokens=dec_tokens,
                    head_token_steps=token_steps, backbone_flops=backbone,
                    head_flops=branches * head, branches=branches, cached_steps=cached)


def format_flops(x: float) -> str:
    """Human-readable FLOPs: 1.621e13 -> '16.21 TFLOP', 3.2e9 -> '3.2 GFLOP' (2 decimals, zeros trimmed)."""
    for scale, unit in ((1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP"), (1e3, "kFLOP")):
        if round(abs(x) / scale, 2) >= 1:  # judge after rounding: 999.999e9 -> '1 TFLOP'
            break
    else:
        scale, unit = 1.0, "FLOP"
    text = f"{x / scale:.2f}".rstrip("0").rstrip(".")
    return f"{text} {unit}"

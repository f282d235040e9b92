"""MAR backbone (MAE-style encoder/decoder with buffer tokens) and the per-token diffusion MLP.

Parameter names follow the official checkpoints exactly (mar-spec.md §5), so official state dicts
load with strict key checks. The forward signature is the one every backend shares: visible tokens
gathered in ascending position order, their positions, one class id per row (id == num_classes
selects `fake_latent`, the unconditional embedding), and the positions to predict. No masks, no
scatters, no data-dependent shapes: the same code traces into static-shape ONNX graphs.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gtr.configs import MARConfig


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)  # features: [Q | K | V], head h owns h*hd..(h+1)*hd-1
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        return self._attend(q, k, v)

    def forward_rows(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Attention output for the query slots `rows` [B, n] only; keys and values from every slot of x."""
        B, N, C = x.shape
        h, hd = self.num_heads, C // self.num_heads
        xq = torch.gather(x, 1, rows[:, :, None].expand(B, rows.shape[1], C))
        q = F.linear(xq, self.qkv.weight[:C], self.qkv.bias[:C]).reshape(B, -1, h, hd).transpose(1, 2)
        k, v = F.linear(x, self.qkv.weight[C:], self.qkv.bias[C:]).reshape(B, N, 2, h, hd).permute(2, 0, 3, 1, 4)
        return self._attend(q, k, v)

    def _attend(self, q, k, v):
        B, _, n, hd = q.shape
        if torch.onnx.is_in_onnx_export():
            # Explicit softmax keeps the graph plain (and lets fp16 conversion keep softmax in fp32).
            # q and k are scaled by d^-1/4 each BEFORE the product: in a fp16 graph QK^T is a fp16
            # MatMul, and unscaled it can overflow (> 65504) on real activations before any 1/sqrt(d).
            s = q.shape[-1] ** -0.25
            attn = (q * s) @ (k * s).transpose(-2, -1)
            out = attn.softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, n, -1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf form, as the official timm blocks
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block: no layer scale, no qk-norm, no drop-path (mar-spec.md §3.3)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def forward_rows(self, x, rows):
        """The block's output at slots `rows` [B, n] only (each slot still attends to every slot):
        what the last decoder block needs, at n/N of its query, projection and MLP cost."""
        out = torch.gather(x, 1, rows[:, :, None].expand(x.shape[0], rows.shape[1], x.shape[2]))
        out = out + self.attn.forward_rows(self.norm1(x), rows)
        return out + self.mlp(self.norm2(out))


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[cos | sin] sinusoid of the ORIGINAL 1000-step timestep (mar-spec.md §4 step 1), float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t):
        return self.mlp(timestep_embedding(t, self.freq_dim))


class ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, h, y):
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        u = self.in_ln(h) * (1 + scale) + shift
        return h + gate * self.mlp(u)


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, h, y):
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(self.norm_final(h) * (1 + scale) + shift)


class DiffusionMLP(nn.Module):
    """Per-token denoiser with adaLN res blocks (mar-spec.md §4). Output: [eps (c) | v (c)]."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int):
        super().__init__()
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(token_dim, width)
        self.res_blocks = nn.ModuleList([ResBlock(width) for _ in range(depth)])
        self.final_layer = FinalLayer(width, 2 * token_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        y = self.time_embed(t) + self.cond_embed(c)
        h = self.input_proj(x)
        for block in self.res_blocks:
            h = block(h, y)
        return self.final_layer(h, y)


class DiffLoss(nn.Module):
    """Holds the MLP under the official name `diffloss.net`."""

    def __init__(self, config: MARConfig):
        super().__init__()
        self.net = DiffusionMLP(config.token_dim, config.decoder_embed_dim, config.diffloss_w, config.diffloss_d)


class MAR(nn.Module):
    def __init__(self, config: MARConfig):
        super().__init__()
        self.config = config
        c = config
        P, L, De, Dd = c.buffer_size, c.seq_len, c.encoder_embed_dim, c.decoder_embed_dim
        self.fake_latent = nn.Parameter(torch.zeros(1, De))
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, P + L, De))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, P + L, Dd))
        self.diffusion_pos_embed_learned = nn.Parameter(torch.zeros(1, L, Dd))
        self.class_emb = nn.Embedding(c.num_classes, De)
        self.z_proj = nn.Linear(c.token_dim * c.patch_size**2, De)
        self.z_proj_ln = nn.LayerNorm(De, eps=1e-6)
        self.encoder_blocks = nn.ModuleList(
            [Block(De, c.encoder_num_heads, c.mlp_ratio, c.norm_eps) for _ in range(c.encoder_depth)])
        self.encoder_norm = nn.LayerNorm(De, eps=c.norm_eps)
        self.decoder_embed = nn.Linear(De, Dd)
        self.decoder_blocks = nn.ModuleList(
            [Block(Dd, c.decoder_num_heads, c.mlp_ratio, c.norm_eps) for _ in range(c.decoder_depth)])
        self.decoder_norm = nn.LayerNorm(Dd, eps=c.norm_eps)
        self.diffloss = DiffLoss(config)

    @property
    def uncond_id(self) -> int:
        """The class id that selects `fake_latent` (the unconditional / CFG row)."""
        return self.config.num_classes

    def class_vectors(self, class_ids: torch.Tensor) -> torch.Tensor:
        table = torch.cat([self.class_emb.weight, self.fake_latent], dim=0)
        return table[class_ids]

    def encode(self, tokens: torch.Tensor, positions: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """Encoder on buffer + visible tokens -> [B, P + K, De] (mar-spec.md §3.1)."""
        P = self.config.buffer_size
        pos = self.encoder_pos_embed_learned[0]
        buffer = self.class_vectors(class_ids)[:, None, :] + pos[:P][None]  # all P slots get the class vector
        x = buffer.expand(class_ids.shape[0], P, -1)
        if tokens.shape[1] > 0:  # static at trace time: the first AR step has no visible tokens
            visible = self.z_proj(tokens) + pos[P + positions]
            x = torch.cat([x, visible], dim=1)
        x = self.z_proj_ln(x)  # per-slot LN, so applying it only to kept slots is exact
        for block in self.encoder_blocks:
            x = block(x)
        return self.encoder_norm(x)

    def decode(self, encoded: torch.Tensor, positions: torch.Tensor, pred_positions: torch.Tensor) -> torch.Tensor:
        """Decoder over all P + L slots; returns z for the predicted positions only (§3.2)."""
        P, L = self.config.buffer_size, self.config.seq_len
        B, K = positions.shape
        x = self.decoder_embed(encoded)  # [B, P + K, Dd]
        mask_row = self.mask_token.expand(B, 1, -1)
        x = torch.cat([x, mask_row], dim=1)  # row P + K is the mask token
        # Source row of every token slot, by gathers only: a known position p sits at row P + rank(p),
        # where rank(p) = number of known positions below p; unknown slots read the mask row.
        slots = torch.arange(L, device=positions.device)
        if K > 0:
            is_known = (positions[:, :, None] == slots[None, None, :]).any(dim=1)
            rank = (positions[:, :, None] < slots[None, None, :]).sum(dim=1)
            src = torch.where(is_known, P + rank, torch.full_like(rank, P + K))
        else:
            src = torch.full((B, L), P, dtype=torch.long, device=positions.device)
        buffer_src = torch.arange(P, device=positions.device)[None].expand(B, P)
        index = torch.cat([buffer_src, src], dim=1)
        x = torch.gather(x, 1, index[:, :, None].expand(B, P + L, x.shape[-1]))
        x = x + self.decoder_pos_embed_learned
        for block in self.decoder_blocks[:-1]:
            x = block(x)
        # Only the predicted slots are read out, so the last block computes only those rows (every
        # block before it must run on all slots: they are the last block's keys and values).
        z = self.decoder_norm(self.decoder_blocks[-1].forward_rows(x, P + pred_positions))
        return z + self.diffusion_pos_embed_learned[0][pred_positions]

    def forward(self, tokens, positions, class_ids, pred_positions):
        """tokens [B,K,c] at ascending `positions` [B,K]; class_ids [B]; pred_positions [B,n] -> z [B,n,Dd]."""
        return self.decode(self.encode(tokens, positions, class_ids), positions, pred_positions)

    def forward_masked(self, tokens: torch.Tensor, mask: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """Official-style call: full token canvas [B,L,c] and mask [B,L] (1 = unknown) -> z [B,L,Dd].
        Every row must have the same number of known tokens."""
        known = (mask == 0)
        counts = known.sum(dim=1)
        if not bool((counts == counts[0]).all()):
            raise ValueError("every row must have the same number of known tokens")
        L = mask.shape[1]
        order = torch.argsort((~known).to(torch.int64) * L + torch.arange(L, device=mask.device), dim=1)
        positions = order[:, : int(counts[0])]
        gathered = torch.gather(tokens, 1, positions[:, :, None].expand(-1, -1, tokens.shape[-1]))
        all_positions = torch.arange(L, device=mask.device)[None].expand(mask.shape[0], L)
        return self(gathered, positions, class_ids, all_positions)

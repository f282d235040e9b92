"""KL-16 autoencoder (the MAR tokenizer), mar-spec.md §2.

Submodule names mirror the official checkpoint so `state_dict()` keys match it one to one
(`encoder.down.4.attn.0.q.weight`, `decoder.up.3.block.0.nin_shortcut.weight`, ...).
Forward passes use only plain, shape-static ops so the model can be exported to ONNX.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gtr.configs import VAEConfig

ENCODER_PREFIXES = ("encoder.", "quant_conv.")  # what a decoder-only model does not have


def Norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = Norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = Norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        # a 1x1 projection only when the width changes (keeps the official key set)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions, with 1x1 convs as projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = Norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        B, C, H, W = x.shape
        n = self.norm(x)
        q, k, v = (m(n).flatten(2) for m in (self.q, self.k, self.v))  # [B, C, N]
        # Explicit matmul/softmax rather than a fused kernel: exports to plain ONNX ops. q and k are
        # scaled by C^-1/4 each before the product, which is a fp16 MatMul in fp16 graphs: with 512
        # channels an unscaled q.k overflows fp16 (> 65504) on real activations.
        s = C ** -0.25
        att = torch.softmax(torch.matmul((q * s).transpose(1, 2), k * s), dim=-1)  # [B, Nq, Nk]
        out = torch.matmul(v, att.transpose(1, 2))  # out[:, :, i] = sum_j att[i, j] v[:, :, j]
        return x + self.proj_out(out.reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x):
        # asymmetric padding (right/bottom only), as the official model was trained with
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: res blocks (each optionally followed by attention), then a resampler.

    Attribute names `block`, `attn`, `downsample` / `upsample` match the official keys; an empty
    `attn` list adds no keys.
    """

    def __init__(self, cin: int, cout: int, n_blocks: int, attn: bool, resample: nn.Module | None,
                 resample_name: str):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(cin if i == 0 else cout, cout) for i in range(n_blocks))
        self.attn = nn.ModuleList(AttnBlock(cout) for _ in range(n_blocks)) if attn else nn.ModuleList()
        self.resample_name = resample_name
        if resample is not None:
            setattr(self, resample_name, resample)

    def forward(self, x):
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn) > 0:
                x = self.attn[i](x)
        resample = getattr(self, self.resample_name, None)
        return resample(x) if resample is not None else x


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, mult = cfg.ch, tuple(cfg.ch_mult)
        n = len(mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        in_mult = (1,) + mult
        self.down = nn.ModuleList(
            Level(ch * in_mult[i], ch * mult[i], cfg.num_res_blocks, attn=(i == n - 1),
                  resample=Downsample(ch * mult[i]) if i < n - 1 else None, resample_name="downsample")
            for i in range(n))
        top = ch * mult[-1]
        self.mid = MidBlock(top)
        self.norm_out = Norm(top)
        self.conv_out = nn.Conv2d(top, 2 * cfg.embed_dim, 3, padding=1)  # mean and log-variance

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, mult = cfg.ch, tuple(cfg.ch_mult)
        n = len(mult)
        self.conv_in = nn.Conv2d(cfg.embed_dim, ch * mult[-1], 3, padding=1)
        self.mid = MidBlock(ch * mult[-1])
        # `up[i]` is level i; it takes the width of level i+1 (or the mid width at the top level)
        cin = [ch * (mult[i + 1] if i < n - 1 else mult[-1]) for i in range(n)]
        self.up = nn.ModuleList(
            Level(cin[i], ch * mult[i], cfg.num_res_blocks + 1, attn=False,
                  resample=Upsample(ch * mult[i]) if i > 0 else None, resample_name="upsample")
            for i in range(n))
        self.norm_out = Norm(ch * mult[0])
        self.conv_out = nn.Conv2d(ch * mult[0], cfg.out_channels, 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):  # lowest resolution first
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """KL autoencoder with a diagonal Gaussian posterior. `with_encoder=False` builds only the
    decoder side (`decoder.*`, `post_quant_conv.*`), which is all that sampling needs."""

    def __init__(self, config: VAEConfig = VAEConfig(), with_encoder: bool = True):
        super().__init__()
        if config.ch % 32 != 0:
            raise ValueError(f"VAE ch must be a positive multiple of 32 (GroupNorm uses 32 groups), got {config.ch}")
        if config.ch <= 0 or len(config.ch_mult) == 0 or any(m <= 0 for m in config.ch_mult):
            raise ValueError(f"bad VAE config: ch={config.ch}, ch_mult={config.ch_mult}")
        self.config = config
        self.with_encoder = with_encoder
        # attribute order = official state_dict order: encoder, decoder, quant_conv, post_quant_conv
        if with_encoder:
            self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        if with_encoder:
            self.quant_conv = nn.Conv2d(2 * config.embed_dim, 2 * config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.embed_dim, 1)

    # ---- image -> latent ----
    def encode_moments(self, image: torch.Tensor) -> torch.Tensor:
        """[B, in_ch, H, W] in [-1, 1] -> [B, 2*embed_dim, H/stride, W/stride] (mean ‖ raw logvar)."""
        if not self.with_encoder:
            raise RuntimeError("this AutoencoderKL was built with with_encoder=False; it cannot encode")
        return self.quant_conv(self.encoder(image))

    def encode(self, image: torch.Tensor, noise: torch.Tensor | None = None):
        """Returns (z, logvar): z is the posterior mean, or mean + exp(logvar/2) * noise when noise
        (shaped like the mean) is given. Latents are unscaled (no scale_factor)."""
        mean, logvar = self.encode_moments(image).chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        if noise is not None:
            mean = mean + torch.exp(0.5 * logvar) * noise
        return mean, logvar

    # ---- latent -> image ----
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, embed_dim, h, w] (unscaled) -> image [B, out_ch, h*stride, w*stride], not clamped."""
        return self.decoder(self.post_quant_conv(latent))

    # ---- MAR token layout (mar-spec §2.1): token r*w + c holds latent[:, r, c], times scale_factor ----
    def tokens_to_image(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """[B, L, embed_dim] scaled tokens in raster order -> image. grid defaults to a square."""
        B, L, C = tokens.shape
        if grid is None:
            side = math.isqrt(int(L))
            if side * side != L:
                raise ValueError(f"{L} tokens do not form a square grid; pass grid=(h, w)")
            grid = (side, side)
        latent = tokens.transpose(1, 2).reshape(B, C, grid[0], grid[1])
        return self.decode(latent / self.config.scale_factor)

    def image_to_tokens(self, image: torch.Tensor, sample_noise: torch.Tensor | None = None) -> torch.Tensor:
        """Image -> [B, h*w, embed_dim] scaled tokens in raster order. Uses the posterior mean unless
        sample_noise ([B, embed_dim, h, w]) is given, then a posterior sample."""
        z, _ = self.encode(image, sample_noise)
        return (z * self.config.scale_factor).flatten(2).transpose(1, 2)


def split_vae_state_dict(sd: dict, with_encoder: bool) -> tuple[dict, list[str]]:
    """Keep what an AutoencoderKL(with_encoder=...) holds. Returns (kept, skipped_keys): a decoder-only
    model drops `encoder.*` / `quant_conv.*`; nothing is skipped for a full model. Extra or missing
    keys are left for the strict loader to report."""
    if with_encoder:
        return dict(sd), []
    kept = {k: v for k, v in sd.items() if not k.startswith(ENCODER_PREFIXES)}
    skipped = [k for k in sd if k.startswith(ENCODER_PREFIXES)]
    return kept, skipped

"""mar-glyphs: a small real MAR on MAR's own 16x16 token grid, trained on the capital letters of
Debian's Latin fonts (gtr.glyphs.data); its configuration and loader.

Importing this module registers "mar-glyphs" in `gtr.configs.REGISTRY`. No torch at module level.

Model choices (trained by tools/train_glyphs.py; the numbers are in mar_glyphs.json):

* Tokenizer: the mar-tiny VAE structure, VAEConfig(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1,
  embed_dim=4): stride 4, so a 64x64 letter becomes a 16x16 grid of 4-channel tokens (L = 256,
  the token grid of the official 256x256 models). `scale_factor` = 1 / std of the training
  latents, read from mar_glyphs.json.
* MAR: width 128, depth 2 + 2, 4 heads, buffer 64 (the official 64 buffer slots for 256 tokens),
  26 classes; diffusion MLP width 128 with 2 res blocks. Sized so that training fits in about
  two hours on 2 CPU cores and a 1,000-image evaluation of `mar-64` in about ten minutes.
* Training: mar-tiny's recipe (10 % of diffusion rows at t = 999, then a fresh identity-initialised
  head on the frozen backbone with the t = 999 eps MSE weighted 1e5), see gtr.tiny.model.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from gtr.configs import MARConfig, VAEConfig, register
from gtr.tiny.model import load_tiny, shipped_values

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "glyphs"
MAR_FILE = "mar_glyphs.safetensors"
VAE_FILE = "vae_glyphs.safetensors"
JSON_FILE = "mar_glyphs.json"
FILES = (MAR_FILE, VAE_FILE, JSON_FILE)

_SHIPPED = shipped_values(ASSET_DIR, JSON_FILE)
GLYPHS_VAE = VAEConfig(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, embed_dim=4,
                       scale_factor=_SHIPPED["scale_factor"])


def glyphs_config(scale_factor: float = _SHIPPED["scale_factor"],
                  default_cfg: float = _SHIPPED["default_cfg"]) -> MARConfig:
    """The mar-glyphs MARConfig (default: the shipped weights' scale factor and CFG)."""
    return MARConfig(
        name="mar-glyphs", encoder_embed_dim=128, encoder_depth=2, encoder_num_heads=4,
        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4,
        diffloss_d=2, diffloss_w=128, img_size=64, vae_stride=4, patch_size=1, token_dim=4,
        buffer_size=64, num_classes=26, default_cfg=default_cfg,
        vae=dataclasses.replace(GLYPHS_VAE, scale_factor=float(scale_factor)))


MAR_GLYPHS = register(glyphs_config())


def load_glyphs(asset_dir: str | Path = ASSET_DIR, device="cpu", with_encoder: bool = False):
    """The shipped (or a retrained copy's) mar-glyphs weights -> (MAR model, AutoencoderKL), eval mode."""
    return load_tiny(asset_dir, device=device, with_encoder=with_encoder, files=FILES)

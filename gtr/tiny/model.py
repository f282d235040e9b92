"""mar-tiny: the configuration of the small real MAR model shipped with gtr, and its loader.

Importing this module registers "mar-tiny" in `gtr.configs.REGISTRY`. It imports no torch at
module level (gtr.configs imports it lazily and the plan tools stay torch-free); `load_tiny()`
imports torch when called.

Model choices (trained by tools/train_tiny.py on the 'train' split of gtr.tiny.data, 1,438
scikit-learn digits upscaled to 32x32 RGB in [-1, 1]; the numbers are in mar_tiny.json):

* Tokenizer, VAEConfig(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, embed_dim=4): the KL-16
  structure (mar-spec.md §2) scaled down. ch=32 is the smallest width GroupNorm(32) allows;
  two downsamplings give stride 4, so a 32x32 digit becomes an 8x8 grid of 4-channel tokens
  (L = 64). The source digits hold only 8x8 grey values, so 4 channels per token are plenty
  (held-out reconstructions classify exactly as the originals), and a low token dimension keeps
  the per-token diffusion problem easy for a small head. ch_mult (1, 1, 2) rather than (1, 2, 2)
  and one res block per level (the decoder then has 2) keep it to 0.75 M parameters (3.0 MB) and
  VAE training to ~7 CPU minutes. `scale_factor` = 1 / std of the training-set posterior samples
  (MAR's convention: token = scale_factor * latent, no mean shift), measured by the training
  script and read here from mar_tiny.json, which the training script writes next to the weights.
* MAR: width 128 for encoder and decoder, depth 3 each, 4 heads (head_dim 32), buffer 16
  (MAR-B has 64 buffer slots for 256 tokens; 16 keeps the same 1:4 ratio for 64 tokens), 10
  classes. Diffusion MLP width 192 with 3 res blocks: the head costs ~2/3 of every training step
  (each masked token is trained 4 times), and 192 rather than 256 wide buys ~45% more steps in
  the CPU budget. 1.98 M parameters (7.9 MB float32).
* Training: the official objective (gtr.tiny.training), plus two documented additions that the
  short run needs because sampling starts at t = 999, where the first reverse step multiplies the
  head's eps error by 316 (100-step chains) to 1674 (20-step chains) and 7707 (5 steps): 10% of
  the diffusion rows at t = 999, and a head stage that trains a fresh diffusion MLP on the frozen
  backbone's conditions from an initialisation where eps_hat = x_t holds exactly, with the t = 999
  eps MSE weighted 1e5 (eps RMS error at t = 999: 6e-5 instead of 9e-3). Same architecture and
  sampler as the official head; see gtr.tiny.training.init_identity_head.
* default_cfg: chosen by a quick class-accuracy check with the baseline mar-64 plan on seeds not
  used for the reported numbers (mar_tiny.json, "cfg_check"), and read from there too.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from gtr.configs import MARConfig, VAEConfig, register

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny"
MAR_FILE = "mar_tiny.safetensors"
VAE_FILE = "vae_tiny.safetensors"
JSON_FILE = "mar_tiny.json"


def read_info(asset_dir: str | Path = ASSET_DIR, json_file: str = JSON_FILE) -> dict:
    """The JSON written next to the weights (config + training metadata)."""
    return json.loads((Path(asset_dir) / json_file).read_text())


def shipped_values(asset_dir: str | Path = ASSET_DIR, json_file: str = JSON_FILE) -> dict:
    """{"scale_factor", "default_cfg"} of the weights in asset_dir, read from their JSON (the training
    script measures and writes both), so a retrained model needs no code change. Without a JSON (no
    trained weights yet) the neutral values scale 1 and CFG 3."""
    if not (Path(asset_dir) / json_file).is_file():
        return {"scale_factor": 1.0, "default_cfg": 3.0}
    config = read_info(asset_dir, json_file)["config"]
    return {"scale_factor": float(config["vae"]["scale_factor"]), "default_cfg": float(config["default_cfg"])}


_SHIPPED = shipped_values()
TINY_SCALE_FACTOR = _SHIPPED["scale_factor"]  # 1 / std of the shipped VAE's training latents
TINY_DEFAULT_CFG = _SHIPPED["default_cfg"]  # chosen by the training script's mar-64 check

TINY_VAE = VAEConfig(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, embed_dim=4, scale_factor=TINY_SCALE_FACTOR)


def tiny_config(scale_factor: float = TINY_SCALE_FACTOR, default_cfg: float = TINY_DEFAULT_CFG) -> MARConfig:
    """The mar-tiny MARConfig with a given VAE scale factor and default CFG (default: the shipped
    weights'; training passes its own)."""
    return MARConfig(
        name="mar-tiny", encoder_embed_dim=128, encoder_depth=3, encoder_num_heads=4,
        decoder_embed_dim=128, decoder_depth=3, decoder_num_heads=4,
        diffloss_d=3, diffloss_w=192, img_size=32, vae_stride=4, patch_size=1, token_dim=4,
        buffer_size=16, num_classes=10, default_cfg=default_cfg,
        vae=dataclasses.replace(TINY_VAE, scale_factor=float(scale_factor)))


MAR_TINY = register(tiny_config())


def load_tiny(asset_dir: str | Path = ASSET_DIR, device="cpu", with_encoder: bool = False,
              files: tuple[str, str, str] = (MAR_FILE, VAE_FILE, JSON_FILE)):
    """Load the shipped mar-tiny weights -> (MAR model, AutoencoderKL), both in eval mode.

    The config comes from the JSON next to the weights (so a retrained copy in another folder
    loads with its own scale factor); keys are matched strictly by name and shape.
    """
    from gtr.models.checkpoint import load_mar, load_vae

    asset_dir = Path(asset_dir)
    mar_file, vae_file, json_file = files
    config = MARConfig.from_dict(read_info(asset_dir, json_file)["config"])
    model = load_mar(config, asset_dir / mar_file, device=device)
    vae = load_vae(config.vae, asset_dir / vae_file, with_encoder=with_encoder, device=device)
    return model, vae

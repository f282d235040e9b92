"""Checkpoint IO: official MAR `.pth`, official `kl16.ckpt`, and safetensors.

Loading never unpickles arbitrary objects (`torch.load(weights_only=True)`), matches keys by name,
and is strict: an error lists missing and unexpected keys and shape mismatches, and names the
registered config whose shapes would fit.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

from gtr.configs import REGISTRY, MARConfig, VAEConfig
from gtr.runtime.files import atomic_write, atomic_write_bytes
from gtr.errors import CheckpointError, first_line  # noqa: F401  (re-exported: defined with the other error types)


def read_file(path: str | os.PathLike) -> dict:
    """Read a checkpoint file into a (possibly nested) dict of tensors without executing code from it.

    A file that cannot be read as a checkpoint (missing, truncated, damaged, foreign) is a
    CheckpointError, whatever the parser raised.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - only the parser runs here: any failure is the file's
            raise CheckpointError(f"{path}: not a readable safetensors file ({first_line(e)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if not found:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (unreadable pickle data)") from None
        raise CheckpointError(
            f"{path}: refused to unpickle {found.group(1)} (only tensors and plain containers are loaded). "
            "Training-script checkpoints hold 'args'; extract 'model_ema' in a trusted step and save it as safetensors"
        ) from None
    except Exception as e:  # noqa: BLE001 - damaged files make torch.load raise many types (IndexError, KeyError, ...)
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {first_line(e)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of weights, found {type(obj).__name__}")
    return obj


def _is_state_dict(d) -> bool:
    return isinstance(d, dict) and len(d) > 0 and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in d.items())


def mar_state_dict(path, weights: str = "ema") -> dict[str, torch.Tensor]:
    """The MAR weights in `path`: 'model_ema' by default (all reported results use EMA), 'model' on request.
    A flat state dict (e.g. safetensors) is returned as is."""
    if weights not in ("ema", "model"):
        raise ValueError("weights must be 'ema' or 'model'")
    obj = read_file(path)
    if _is_state_dict(obj):
        return obj
    key = "model_ema" if weights == "ema" else "model"
    if key not in obj:
        raise CheckpointError(f"{path}: no '{key}' entry (found: {', '.join(map(str, obj)) or 'nothing'})")
    if not _is_state_dict(obj[key]):
        raise CheckpointError(f"{path}: '{key}' is not a dict of tensors")
    return obj[key]


def vae_state_dict(path) -> dict[str, torch.Tensor]:
    obj = read_file(path)
    if _is_state_dict(obj):
        return obj
    if "model" in obj and _is_state_dict(obj["model"]):
        return obj["model"]
    raise CheckpointError(f"{path}: expected a VAE checkpoint with a 'model' dict of tensors")


def infer_mar_dims(sd: dict) -> dict:
    """Read the width/depth facts a MAR state dict carries in its shapes (heads are not visible)."""
    def depth(prefix):
        idx = [int(m.group(1)) for k in sd if (m := re.match(rf"{prefix}\.(\d+)\.", k))]
        return max(idx) + 1 if idx else 0
    try:
        return dict(
            encoder_embed_dim=sd["fake_latent"].shape[1], decoder_embed_dim=sd["mask_token"].shape[2],
            encoder_depth=depth("encoder_blocks"), decoder_depth=depth("decoder_blocks"),
            diffloss_w=sd["diffloss.net.input_proj.weight"].shape[0], diffloss_d=depth("diffloss.net.res_blocks"),
            num_classes=sd["class_emb.weight"].shape[0], token_dim=sd["z_proj.weight"].shape[1],
            buffer_size=sd["encoder_pos_embed_learned"].shape[1] - sd["diffusion_pos_embed_learned"].shape[1],
        )
    except (KeyError, IndexError, AttributeError):
        return {}


def _fitting_configs(dims: dict) -> list[str]:
    return [name for name, c in REGISTRY.items()
            if dims and all(getattr(c, k) == v for k, v in dims.items())]


def check_keys(module: torch.nn.Module, sd: dict, what: str, hint: str = "") -> None:
    """Strict name-and-shape check; raises one CheckpointError listing every problem."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    # Weights must be real floating point (any width: load_state_dict converts); an integer, bool or
    # complex tensor where a weight belongs means a damaged or foreign file.
    mistyped = [f"{k} {sd[k].dtype}" for k in own
                if k in sd and own[k].is_floating_point() and not sd[k].is_floating_point()]
    if not (missing or unexpected or mismatched or mistyped):
        return
    def few(items):
        return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {few(unexpected)}")
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches (file vs model): {few(mismatched)}")
    if mistyped:
        parts.append(f"{len(mistyped)} not floating point: {few(mistyped)}")
    raise CheckpointError(f"{what}: " + "; ".join(parts) + (f". {hint}" if hint else ""))


def load_mar_weights(model: torch.nn.Module, sd: dict, source: str = "checkpoint") -> None:
    dims = infer_mar_dims(sd)
    fits = [n for n in _fitting_configs(dims) if n != model.config.name]
    if fits:
        hint = f"the file fits config {', '.join(fits)}"
    elif dims:
        hint = "the file has " + ", ".join(f"{k}={v}" for k, v in dims.items())
    else:
        hint = "the file does not look like a MAR checkpoint"
    check_keys(model, sd, f"{source} does not match config {model.config.name!r}", hint)
    model.load_state_dict(sd, strict=True)


def load_mar(config: MARConfig | str, path, weights: str = "ema", device="cpu"):
    """Build the model of `config` and load `path` strictly (EMA weights by default)."""
    from gtr.configs import get_config
    from gtr.models.mar import MAR
    config = get_config(config) if isinstance(config, str) else config
    model = MAR(config)
    load_mar_weights(model, mar_state_dict(path, weights), source=str(path))
    return model.to(device).eval()


def load_vae(config: VAEConfig, path, with_encoder: bool = True, device="cpu"):
    """Load a KL autoencoder; extra keys are tolerated (and skipped), missing ones are an error."""
    from gtr.models.vae import AutoencoderKL, split_vae_state_dict
    vae = AutoencoderKL(config, with_encoder=with_encoder)
    kept, _skipped = split_vae_state_dict(vae_state_dict(path), with_encoder)
    own = vae.state_dict()
    extra = [k for k in kept if k not in own]
    kept = {k: v for k, v in kept.items() if k in own}
    check_keys(vae, kept, f"{path} does not match the VAE config (ch={config.ch}, ch_mult={config.ch_mult})")
    vae.load_state_dict(kept, strict=True)
    vae.extra_keys = extra  # reported by callers that care
    return vae.to(device).eval()


def save_mar_checkpoint(path, model_sd: dict, ema_sd: dict | None = None) -> None:
    """Write the official layout {'model', 'model_ema'} (EMA defaults to the model weights)."""
    ema_sd = model_sd if ema_sd is None else ema_sd
    atomic_write(path, lambda f: torch.save({"model": model_sd, "model_ema": ema_sd}, f))


def save_safetensors(path, sd: dict, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save
    sd = {k: v.detach().contiguous().cpu() for k, v in sd.items()}
    atomic_write_bytes(path, save(sd, metadata=metadata))

"""Where an export's weights come from: an official checkpoint, a shipped small model (mar-tiny,
mar-glyphs), or random init."""
from __future__ import annotations

import importlib
from pathlib import Path

import torch

from gtr.configs import MARConfig
from gtr.errors import CheckpointError
from gtr.paths import cache_dir


def find_weights(model: str, checkpoint=None, vae=None) -> tuple[Path, Path]:
    """Explicit paths, else the cache: $GTR_HOME/<model>/checkpoint-last.pth and $GTR_HOME/kl16.ckpt."""
    ckpt = Path(checkpoint) if checkpoint else cache_dir() / model / "checkpoint-last.pth"
    vae_path = Path(vae) if vae else cache_dir() / "kl16.ckpt"
    missing = [p for p in (ckpt, vae_path) if not p.is_file()]
    if missing:
        from gtr.download import OFFICIAL  # the official URLs live with the downloader
        how = (f"fetch them with `gtr download {model}` or --download (`gtr download {model} --dry-run` shows "
               f"the official URLs), " if model in OFFICIAL else "")
        raise CheckpointError(f"missing weights: {', '.join(map(str, missing))} ({how}pass "
                              f"--checkpoint/--vae, or export an untrained model with --random-weights)")
    return ckpt, vae_path


def random_models(config: MARConfig, seed: int = 0):
    """Untrained MAR + VAE with a reproducible init (normal 0.02 on every tensor), for tests and benchmarks."""
    from gtr.models.mar import MAR
    from gtr.models.vae import AutoencoderKL
    g = torch.Generator().manual_seed(seed)
    mar, vae = MAR(config), AutoencoderKL(config.vae, with_encoder=False)
    with torch.no_grad():
        for module in (mar, vae):
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return mar.eval(), vae.eval()


# Models whose weights ship inside the package: (module with ASSET_DIR / MAR_FILE / VAE_FILE, trainer).
SHIPPED = {"mar-tiny": ("gtr.tiny.model", "tools/train_tiny.py"),
           "mar-glyphs": ("gtr.glyphs.model", "tools/train_glyphs.py")}


def build_models(config: MARConfig, checkpoint=None, vae=None, weights="ema", random_weights=False, seed=0):
    """(MAR, decoder-only VAE, sources) for an export or a parity check.

    Sources record what was loaded (paths, EMA or raw, random seed) in the bundle manifest, so
    gtr-check can rebuild the same reference later.
    """
    from gtr.models.checkpoint import load_mar, load_vae
    if random_weights:
        mar, vae_model = random_models(config, seed)
        return mar, vae_model, {"random_seed": seed}
    if config.name in SHIPPED and (checkpoint is None or vae is None):  # the shipped file fills the gap
        module, trainer = SHIPPED[config.name]
        assets = importlib.import_module(module)
        ASSET_DIR, MAR_FILE, VAE_FILE = assets.ASSET_DIR, assets.MAR_FILE, assets.VAE_FILE  # noqa: N806
        shipped = [ASSET_DIR / f for f, given in ((MAR_FILE, checkpoint), (VAE_FILE, vae)) if given is None]
        checkpoint = ASSET_DIR / MAR_FILE if checkpoint is None else checkpoint
        vae = ASSET_DIR / VAE_FILE if vae is None else vae
        if not all(p.is_file() for p in shipped):
            raise CheckpointError(f"{config.name} weights are not in this installation ({ASSET_DIR}); train them "
                                  f"there with `python {trainer}`, or export with --random-weights")
    else:
        checkpoint, vae = find_weights(config.name, checkpoint, vae)
    mar = load_mar(config, checkpoint, weights=weights)
    vae_model = load_vae(config.vae, vae, with_encoder=False)
    return mar, vae_model, {"checkpoint": str(checkpoint), "vae": str(vae), "weights": weights}


def bundle_models(manifest: dict, config: MARConfig, checkpoint=None, vae=None):
    """(MAR, VAE, sources) rebuilt from what a bundle's manifest records of its weights (the reference
    gtr-check and gtr-bench compare with); `checkpoint` / `vae` replace the recorded paths. A recorded
    file is checked against the size and sha256 recorded at export, so the reference is built from the
    very weights the bundle holds (CheckpointError otherwise); a file given instead is taken as given."""
    src = manifest.get("sources") or {}
    mar, vae_model, sources = build_models(config, checkpoint=checkpoint or src.get("checkpoint"),
                                           vae=vae or src.get("vae"), weights=src.get("weights", "ema"),
                                           random_weights=bool(manifest.get("random_weights")),
                                           seed=int(src.get("random_seed", 0)))
    given = {"checkpoint": checkpoint, "vae": vae}
    for key, recorded in (manifest.get("checkpoints") or {}).items():
        if key in sources and given.get(key) is None and isinstance(recorded, dict):
            _check_digest(Path(sources[key]), recorded)
    return mar, vae_model, sources


def _check_digest(path: Path, recorded: dict) -> None:
    import hashlib
    size, digest = recorded.get("bytes"), recorded.get("sha256")
    if size is not None and path.stat().st_size != size:
        got = f"{path.stat().st_size:,} bytes, the bundle was exported from {size:,}"
    else:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if digest is None or h.hexdigest() == digest:
            return
        got = "its sha256 differs from the one recorded at export"
    raise CheckpointError(f"{path}: not the file this bundle was exported from ({got}); pass the original "
                          f"with --checkpoint/--vae")

"""Train mar-glyphs (KL VAE, then MAR, then a fresh head) on the A-Z glyphs of Debian's Latin fonts and
ship it under gtr/assets/glyphs/.

The same three stages and objective as tools/train_tiny.py (read its docstring), with the glyph data
(gtr.glyphs.data: the training faces; the font packages are apt-get installed first when missing and
this runs as root) and the mar-glyphs config (gtr.glyphs.model: a 16x16 token grid). Defaults are the
shipped weights' flags. About two hours on 2 otherwise idle CPU cores; `--resume` continues an
interrupted run from its last checkpoint (every --checkpoint-every MAR steps) with the same result.

    python tools/train_glyphs.py [--seed 0] [--mar-steps N] [--out DIR] [--resume]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train_tiny import Recipe, main  # noqa: E402

from gtr.glyphs.model import ASSET_DIR, FILES, GLYPHS_VAE, glyphs_config  # noqa: E402


def _glyph_split(split):
    from gtr.glyphs.data import load_split
    return load_split(split, install=True)


GLYPHS = Recipe(
    "mar-glyphs", "tools/train_glyphs.py", _glyph_split,
    "A-Z of the training faces of Debian's Latin fonts (gtr.glyphs.data 'train' split), 64x64 RGB in [-1,1]",
    GLYPHS_VAE, lambda scale, cfg: glyphs_config(scale_factor=scale, default_cfg=cfg), ASSET_DIR, FILES,
    ASSET_DIR / "classifier.safetensors",
    {"vae_steps": 600, "vae_batch": 32, "mar_steps": 5000, "mar_batch": 32, "head_steps": 3000,
     "head_cache_reps": 1, "checkpoint_every": 250, "cfg_check": "2.0,3.0,4.0", "cfg_check_per_class": 4})

if __name__ == "__main__":
    raise SystemExit(main(recipe=GLYPHS, description=__doc__.splitlines()[0]))

"""Model configurations and the registry (stdlib only: the runtime and the plan read these too).

MAR-B/L/H are the official configs (mar-spec.md §1). Test and small models are plain
`MARConfig(...)` values; every width, depth and head count is a parameter.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from gtr.errors import ConfigError  # noqa: F401  (re-exported: defined with the other error types)


def _value_ok(kind: str, v) -> bool:
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if kind == "str":
        return isinstance(v, str) and v != ""
    if kind.startswith("tuple"):
        return isinstance(v, (list, tuple)) and len(v) > 0 and all(_value_ok("int", x) for x in v)
    return isinstance(v, dict)  # a nested config, checked by its own from_dict


def _checked(cls, d, what: str) -> dict:
    """A copy of `d` whose keys are fields of `cls` and whose values have the fields' types (a bundle's
    manifest or a JSON file is data from outside: ValueError naming the first bad field)."""
    if not isinstance(d, dict):
        raise ValueError(f"{what} config must be a mapping, got {type(d).__name__}")
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown {what} config fields: {unknown}")
    for name, value in d.items():
        if not _value_ok(fields[name], value):
            raise ValueError(f"{what} config field {name!r} must be {fields[name]}, got {value!r}")
    return dict(d)


@dataclass(frozen=True)
class VAEConfig:
    """KL autoencoder (the KL-16 structure of mar-spec.md §2, with free channel counts)."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2  # the decoder uses num_res_blocks + 1 per level
    embed_dim: int = 16  # latent channels = MAR token dim
    in_channels: int = 3
    out_channels: int = 3
    scale_factor: float = 0.2325  # token = scale_factor * latent

    @property
    def stride(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        d = _checked(cls, d, "VAE")
        d["ch_mult"] = tuple(d["ch_mult"])
        return cls(**d)


@dataclass(frozen=True)
class MARConfig:
    """MAR backbone + diffusion MLP (mar-spec.md §1, §3, §4)."""

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    decoder_embed_dim: int
    decoder_depth: int
    decoder_num_heads: int
    diffloss_d: int
    diffloss_w: int
    img_size: int = 256
    vae_stride: int = 16
    patch_size: int = 1
    token_dim: int = 16
    mlp_ratio: float = 4.0
    buffer_size: int = 64
    num_classes: int = 1000
    num_timesteps: int = 1000
    norm_eps: float = 1e-6
    default_cfg: float = 3.0
    vae: VAEConfig = field(default_factory=VAEConfig)

    @property
    def grid(self) -> tuple[int, int]:
        side = self.img_size // self.vae_stride // self.patch_size
        return side, side

    @property
    def seq_len(self) -> int:
        h, w = self.grid
        return h * w

    @property
    def head_params(self) -> int:
        """Parameter count of the diffusion MLP (mar-spec.md §1 formula, general token dim)."""
        w, d, D, c = self.diffloss_w, self.diffloss_d, self.decoder_embed_dim, self.token_dim
        time_embed = 256 * w + w + w * w + w
        cond_and_input = (D * w + w) + (c * w + w)
        res_blocks = d * (5 * w * w + 7 * w)
        final = (2 * w * w + 2 * w) + (w * 2 * c + 2 * c)
        return time_embed + cond_and_input + res_blocks + final

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["vae"] = self.vae.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MARConfig":
        d = _checked(cls, d, "MAR")
        d["vae"] = VAEConfig.from_dict(d.get("vae", {}))
        return cls(**d)


def check_classes(labels, num_classes: int) -> None:
    """RequestError naming the first class id outside 0..num_classes-1 (None = unconditional)."""
    from gtr.errors import RequestError
    for c in labels:
        if c is not None and not 0 <= int(c) < num_classes:
            raise RequestError(f"class {c} is out of range: the model has {num_classes} classes (0..{num_classes - 1})")


def _official(name, D, depth, heads, d, w, cfg):
    return MARConfig(name=name, encoder_embed_dim=D, encoder_depth=depth, encoder_num_heads=heads,
                     decoder_embed_dim=D, decoder_depth=depth, decoder_num_heads=heads,
                     diffloss_d=d, diffloss_w=w, default_cfg=cfg)


REGISTRY: dict[str, MARConfig] = {
    "mar-b": _official("mar-b", 768, 12, 12, 6, 1024, 2.9),
    "mar-l": _official("mar-l", 1024, 16, 16, 8, 1280, 3.0),
    "mar-h": _official("mar-h", 1280, 20, 16, 12, 1536, 3.2),
    # The config of tests/fixtures/official_mar (small random weights, official layout).
    "mar-test": MARConfig(name="mar-test", encoder_embed_dim=96, encoder_depth=3, encoder_num_heads=6,
                          decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=6,
                          diffloss_d=3, diffloss_w=192, vae=VAEConfig(ch=32)),
}


def register(config: MARConfig) -> MARConfig:
    REGISTRY[config.name] = config
    return config


# Configs shipped as JSON next to their weights (the training script writes it), read on first use.
_ASSETS = Path(__file__).resolve().parent / "assets"
_SHIPPED = {"mar-tiny": _ASSETS / "tiny" / "mar_tiny.json", "mar-glyphs": _ASSETS / "glyphs" / "mar_glyphs.json"}
_TRAINERS = {"mar-tiny": "tools/train_tiny.py", "mar-glyphs": "tools/train_glyphs.py"}


def _shipped_config(name: str) -> MARConfig | None:
    path = _SHIPPED.get(name)
    if path is None or not path.is_file():
        return None
    return MARConfig.from_dict(json.loads(path.read_text())["config"])


def get_config(name: str) -> MARConfig:
    if name not in REGISTRY and name in _SHIPPED:
        shipped = _shipped_config(name)
        if shipped is None:
            raise ConfigError(f"{name}: its config is not in this installation ({_SHIPPED[name]}); "
                              f"train it with `python {_TRAINERS[name]}`")
        register(shipped)
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(sorted(set(REGISTRY) | set(_SHIPPED)))}") from None

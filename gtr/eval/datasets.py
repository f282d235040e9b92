"""What gtr-eval scores each small model against: its classifier and its held-out real images.

mar-tiny makes digits (10 classes, 32 px): the digit CNN trained on the digits' 'train' split, with
the held-out digits as the Frechet reference. mar-glyphs makes capital letters (26 classes, 64 px):
the same CNN shape trained on the held-out font faces (faces the generator never saw), which are also
the Frechet reference. A model is matched by its class count and image size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gtr.errors import EvalError

_ASSETS = Path(__file__).resolve().parent.parent / "assets"


@dataclass(frozen=True)
class EvalData:
    name: str
    num_classes: int
    size: int
    classifier: Path
    reference: str  # what the Frechet reference images are

    def heldout(self):
        """(images float32 [N, 3, size, size] in [-1, 1], labels [N]) of the held-out real images."""
        return self._split("heldout")

    def generator_training(self):
        """(images, labels) as heldout(), of the real images the model itself was trained on."""
        return self._split("train")

    def _split(self, split: str):
        if self.name == "digits":
            from gtr.tiny.data import load_split
            return load_split(split, self.size)
        from gtr.glyphs.data import load_split
        return load_split(split)


DIGITS = EvalData("digits", 10, 32, _ASSETS / "tiny" / "classifier.safetensors", "held-out digits")
GLYPHS = EvalData("glyphs", 26, 64, _ASSETS / "glyphs" / "classifier.safetensors", "glyphs of held-out font faces")
DATASETS = (DIGITS, GLYPHS)


def for_config(config) -> EvalData:
    """The data set a model config is scored on (EvalError if gtr-eval has none for it)."""
    for data in DATASETS:
        if (config.num_classes, config.img_size) == (data.num_classes, data.size):
            return data
    known = "; ".join(f"{d.name}: {d.num_classes} classes at {d.size} px" for d in DATASETS)
    raise EvalError(f"gtr-eval has no classifier for {config.name} ({config.num_classes} classes at "
                    f"{config.img_size} px); it scores {known}")

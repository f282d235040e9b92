"""The floor of gtr-eval's Frechet distance: real images the model was trained on, scored like samples.

Draws `--sets` random sets of `--per-class` images per class from the real images the generator learned
from (mar-tiny: the 'train' digits; mar-glyphs: the glyphs of the training font faces) and scores each
against the held-out reference with the shipped classifier, as gtr-eval scores a plan's samples. A
generator that reproduced its training data exactly would score this, not 0: the sets differ from the
reference, and the distance is biased upward at small n.

    python tools/frechet_floor.py --data glyphs --per-class 40 --sets 3     # n = 1,040 per set
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gtr.eval import metrics  # noqa: E402
from gtr.eval.classifier import load_classifier  # noqa: E402
from gtr.eval.datasets import DIGITS, GLYPHS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["digits", "glyphs"], default="glyphs")
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--sets", type=int, default=3)
    a = ap.parse_args()
    data = {"digits": DIGITS, "glyphs": GLYPHS}[a.data]
    classifier = load_classifier(data.classifier)
    reference = metrics.reference_stats(classifier, data)
    images, labels = data.generator_training()
    scores = []
    for k in range(a.sets):
        rng = np.random.default_rng(k)
        pick = np.concatenate([rng.choice(np.flatnonzero(labels == c), a.per_class, replace=False)
                               for c in range(data.num_classes)])
        q = metrics.evaluate_images(images[pick], labels[pick], classifier, reference)
        scores.append(q["frechet"])
        print(f"set {k} (seed {k}): n = {q['n']}, accuracy {q['accuracy']:.3f}, Frechet {q['frechet']:.1f}")
    print(f"{data.name}: real training images against {data.reference}, n = {q['n']}: "
          f"Frechet {min(scores):.1f}-{max(scores):.1f}")


if __name__ == "__main__":
    main()

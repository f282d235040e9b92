"""Train the classifier gtr-eval scores a small model with, and ship it next to the model's weights.

--data digits (mar-tiny): trains on the 'train' split of gtr.tiny.data, reports accuracy on the
'heldout' split; writes gtr/assets/tiny/classifier.{safetensors,json}. About a minute on 2 CPU cores.

--data glyphs (mar-glyphs): trains on the glyphs of the held-out font faces (gtr.glyphs.data), the
faces the generator never sees, and reports accuracy on the training faces, which the classifier
never sees; writes gtr/assets/glyphs/classifier.{safetensors,json}. A few minutes on 2 CPU cores.

    python tools/train_classifier.py [--data digits|glyphs] [--epochs N] [--seed 0] [--out PATH]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gtr.eval.classifier import embed, save_classifier, train_classifier  # noqa: E402
from gtr.eval.datasets import DIGITS, GLYPHS  # noqa: E402
from gtr.eval.metrics import class_accuracy  # noqa: E402

# per data set: (architecture widths, default epochs, default --min-accuracy, what it trains / tests on)
SETTINGS = {
    "digits": ((16, 32, 32), 20, 0.97, "sklearn load_digits, bicubic 8->32, [-1,1], 3 channels; "
               "trained on the gtr.tiny.data 'train' split (0.2, seed 0), tested on 'heldout'"),
    "glyphs": ((16, 32, 64, 64), 30, 0.85, "A-Z of Debian's Latin fonts, 64x64, [-1,1], 3 channels; trained on the "
               "held-out faces of gtr.glyphs.data, tested on the generator's training faces"),
}


def _data(name: str):
    """(train images, train labels, test images, test labels)."""
    if name == "digits":
        from gtr.tiny.data import load_digits_images, train_heldout_split
        images, labels = load_digits_images(32)
        train, heldout = train_heldout_split(labels)
        return images[train], labels[train], images[heldout], labels[heldout]
    from gtr.glyphs.data import load_split
    x_train, y_train = load_split("heldout", install=True)
    x_test, y_test = load_split("train")
    return x_train, y_train, x_test, y_test


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=sorted(SETTINGS), default="digits")
    ap.add_argument("--epochs", type=int, default=None, help="default: 20 (digits), 30 (glyphs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-shift", type=int, default=3, help="random shift augmentation, pixels")
    ap.add_argument("--out", default=None, help="default: the shipped classifier of --data")
    ap.add_argument("--min-accuracy", type=float, default=None, help="refuse to ship below this "
                    "(default: 0.97 digits, 0.85 glyphs)")
    args = ap.parse_args(argv)
    widths, epochs, min_acc, what = SETTINGS[args.data]
    epochs = args.epochs or epochs
    min_acc = min_acc if args.min_accuracy is None else args.min_accuracy
    out = args.out or str((DIGITS if args.data == "digits" else GLYPHS).classifier)

    x_train, y_train, x_test, y_test = _data(args.data)
    num_classes = int(y_train.max()) + 1
    print(f"train {len(x_train)} test {len(x_test)} ({num_classes} classes)")
    t0 = time.time()
    model = train_classifier(x_train, y_train, epochs=epochs, seed=args.seed, max_shift=args.max_shift, log=print,
                             widths=widths, num_classes=num_classes, threads=args.threads)
    logits, _ = embed(model, x_test)
    acc = class_accuracy(logits, y_test)
    print(f"test accuracy {acc:.4f} ({time.time() - t0:.0f}s)")
    if acc < min_acc:
        print(f"below --min-accuracy {min_acc}: not written", file=sys.stderr)
        return 1
    meta = {
        "heldout_accuracy": round(acc, 6),
        "n_train": int(len(x_train)),
        "n_heldout": int(len(x_test)),
        "data": what,
        "train": {"epochs": epochs, "seed": args.seed, "max_shift": args.max_shift},
    }
    save_classifier(model, out, meta)
    print(f"wrote {out} and {Path(out).with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

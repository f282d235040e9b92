"""Train the mar-tiny digit classifier and ship it as gtr/assets/tiny/classifier.{safetensors,json}.

Trains on the 'train' split of gtr.tiny.data, reports accuracy on the 'heldout' split and
writes both files atomically. About a minute on 2 CPU cores.

    python tools/train_classifier.py [--epochs 20] [--seed 0] [--out PATH]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gtr.eval.classifier import DEFAULT_PATH, embed, save_classifier, train_classifier  # noqa: E402
from gtr.eval.metrics import class_accuracy  # noqa: E402
from gtr.tiny.data import load_digits_images, train_heldout_split  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-shift", type=int, default=3, help="random shift augmentation, pixels")
    ap.add_argument("--out", default=str(DEFAULT_PATH))
    ap.add_argument("--min-accuracy", type=float, default=0.97, help="refuse to ship below this")
    args = ap.parse_args(argv)

    images, labels = load_digits_images(32)
    train, heldout = train_heldout_split(labels)
    print(f"train {len(train)} heldout {len(heldout)}")
    t0 = time.time()
    model = train_classifier(images[train], labels[train], epochs=args.epochs, seed=args.seed,
                             max_shift=args.max_shift, log=print)
    logits, _ = embed(model, images[heldout])
    acc = class_accuracy(logits, labels[heldout])
    print(f"held-out accuracy {acc:.4f} ({time.time() - t0:.0f}s)")
    if acc < args.min_accuracy:
        print(f"below --min-accuracy {args.min_accuracy}: not written", file=sys.stderr)
        return 1
    meta = {
        "heldout_accuracy": round(acc, 6),
        "n_train": int(len(train)),
        "n_heldout": int(len(heldout)),
        "data": "sklearn load_digits, bicubic 8->32, [-1,1], 3 channels; gtr.tiny.data split (0.2, seed 0)",
        "train": {"epochs": args.epochs, "seed": args.seed, "max_shift": args.max_shift},
    }
    save_classifier(model, args.out, meta)
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

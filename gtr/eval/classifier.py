"""A small CNN: accuracy of generated digits (letters) and features for the Frechet distance.

Input [B,3,32,32] in [-1,1] (the mar-tiny image format). Three conv-relu-maxpool stages
(32 -> 16 -> 8 -> 4), a fc layer to `feature_dim` features (post-ReLU, like Inception's
pool features in FID) and a fc layer to 10 logits. The letter classifier of mar-glyphs is the same
shape with four stages for 64 px and 26 logits (gtr.eval.datasets). Weights ship as safetensors, with a
JSON next to it holding the architecture and the held-out accuracy it reached.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gtr.runtime.files import atomic_write

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "assets" / "tiny" / "classifier.safetensors"


class DigitClassifier(nn.Module):
    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (16, 32, 32),
                 feature_dim: int = 64, num_classes: int = 10, image_size: int = 32):
        super().__init__()
        self.arch = dict(in_channels=in_channels, widths=list(widths), feature_dim=feature_dim,
                         num_classes=num_classes, image_size=image_size)
        chans = [in_channels, *widths]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans, chans[1:]))
        side = image_size // 2 ** len(widths)
        self.fc = nn.Linear(widths[-1] * side * side, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features [B, feature_dim] (used for the Frechet distance)."""
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    # pad with the background value (-1) and crop at a random offset per image
    b, _, h, w = x.shape
    p = max_shift
    xp = F.pad(x, (p, p, p, p), value=-1.0)
    dy = torch.randint(0, 2 * p + 1, (b,), generator=g).tolist()
    dx = torch.randint(0, 2 * p + 1, (b,), generator=g).tolist()
    return torch.stack([xp[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


def train_classifier(images, labels, epochs: int = 20, seed: int = 0, batch_size: int = 64,
                     lr: float = 2e-3, max_shift: int = 3, threads: int = 2,
                     log=None, widths: tuple[int, ...] = (16, 32, 32), num_classes: int = 10) -> DigitClassifier:
    """Train a DigitClassifier with Adam and random shifts (so it tolerates off-centre samples)."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    # process-wide settings: set for training, restored afterwards
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        model = DigitClassifier(in_channels=x.shape[1], image_size=x.shape[-1], widths=widths, num_classes=num_classes)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        steps = epochs * -(-len(x) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        model.train()
        for ep in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            total, correct, loss_sum = 0, 0, 0.0
            for i in range(0, len(x), batch_size):
                idx = perm[i:i + batch_size]
                xb = _shift(x[idx], max_shift, g) if max_shift else x[idx]
                logits = model(xb)
                loss = F.cross_entropy(logits, y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.item() * len(idx)
                correct += (logits.argmax(1) == y[idx]).sum().item()
                total += len(idx)
            if log:
                log(f"epoch {ep + 1}/{epochs} loss {loss_sum / total:.4f} train acc {correct / total:.4f}")
        model.eval()
        return model
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


@torch.no_grad()
def embed(model: DigitClassifier, images, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N,10], features [N,feature_dim]) as float64 numpy, in eval mode, batched."""
    x = torch.as_tensor(images, dtype=torch.float32)
    model.eval()
    logits, feats = [], []
    for i in range(0, len(x), batch_size):
        f = model.features(x[i:i + batch_size])
        feats.append(f)
        logits.append(model.head(f))
    if not feats:
        k, d = model.arch["num_classes"], model.arch["feature_dim"]
        return np.zeros((0, k)), np.zeros((0, d))
    return (torch.cat(logits).double().numpy(), torch.cat(feats).double().numpy())


def _json_path(path) -> Path:
    return Path(path).with_suffix(".json")


def save_classifier(model: DigitClassifier, path=DEFAULT_PATH, meta: dict | None = None) -> None:
    """Write weights (safetensors) and `<path>.json` (architecture + meta), each atomically."""
    from safetensors.torch import save

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    data = save(state, metadata={"format": "pt"})
    atomic_write(path, lambda f: f.write(data))
    info = {"arch": model.arch, **(meta or {})}
    text = (json.dumps(info, indent=2) + "\n").encode()
    atomic_write(_json_path(path), lambda f: f.write(text))


def load_classifier(path=DEFAULT_PATH) -> DigitClassifier:
    """Load a classifier written by save_classifier (default: the shipped mar-tiny asset)."""
    from safetensors.torch import load_file

    path = Path(path)
    info = json.loads(_json_path(path).read_text())
    arch = dict(info["arch"])
    arch["widths"] = tuple(arch["widths"])
    model = DigitClassifier(**arch)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model


def load_classifier_info(path=DEFAULT_PATH) -> dict:
    """The JSON metadata shipped next to the weights."""
    return json.loads(_json_path(path).read_text())

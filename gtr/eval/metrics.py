"""Sample-quality metrics for the small models (numpy; torch only inside the classifier calls).

- class accuracy: does the classifier read the digit (letter) that was asked for?
- Frechet distance between Gaussian fits of classifier features, the FID formula
  ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) with the digit CNN instead of Inception.
  The reference is the held-out real split (359 digits; for mar-glyphs the glyphs of the held-out font
  faces, gtr.eval.datasets), so real held-out images score 0. The numbers below are the digits'.

The Frechet distance is biased upwards at small n (64-dim features), so compare plans
only at equal n. Its floor, real train digits against the held-out reference with the
shipped classifier: ~90 at n=100, ~33 at n=359, ~20 at n=700, ~9 at n=1438. For scale,
held-out digits shifted 2 px score ~90, 5 px ~560; plus N(0, 1) pixel noise ~270.
"""
from __future__ import annotations

import numpy as np
from gtr.errors import EvalError  # noqa: F401  (re-exported: defined with the other error types)


def class_accuracy(logits_or_pred, labels) -> float:
    """Fraction correct; accepts logits [N,K] (argmax taken) or predicted labels [N]."""
    p = np.asarray(logits_or_pred)
    pred = p.argmax(axis=-1) if p.ndim == 2 else p
    labels = np.asarray(labels)
    if pred.shape != labels.shape:
        raise ValueError(f"predictions {pred.shape} vs labels {labels.shape}")
    if labels.size == 0:
        return float("nan")
    return float((pred == labels).mean())


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D,D]) in float64; covariance is unbiased (N-1), as in FID."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need features [N>=2, D], got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sym_sqrt(s: np.ndarray) -> np.ndarray:
    # PSD square root via a symmetric eigendecomposition; tiny negative eigenvalues are round-off
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Tr((S1 S2)^{1/2}) = sum sqrt(eig(R S2 R)) with R = S1^{1/2}: R S2 R is symmetric PSD and
    similar to S1 S2, so this avoids a non-symmetric sqrtm (and scipy).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shape mismatch: {mu1.shape} {s1.shape} vs {mu2.shape} {s2.shape}")
    r = _sym_sqrt(s1)
    m = r @ s2 @ r
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    d = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt
    return float(max(d, 0.0))  # exact value is >= 0; clip round-off


def reference_stats(classifier, data=None) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the classifier's features on a data set's held-out real images (default: the
    digits; gtr.eval.datasets), not cached."""
    from gtr.eval.classifier import embed
    from gtr.eval.datasets import DIGITS

    images, _ = (data or DIGITS).heldout()
    return feature_stats(embed(classifier, images)[1])


def evaluate_images(images, labels, classifier, reference_stats) -> dict:
    """Quality of float images [N,3,H,W] in [-1,1] generated for `labels` (None: skip accuracy).
    gtr-eval (gtr.eval.run.evaluate_plans) scores every plan with this function.

    Returns dict(accuracy, frechet, n, logits, features): the classifier's outputs come back too, so
    several sets can be scored as one (score_features) without embedding them again. Images are clipped
    to [-1,1] first, as post-processing would, so out-of-range decoder outputs are not penalised twice.
    """
    from gtr.eval.classifier import embed

    logits, features = embed(classifier, np.clip(np.asarray(images, dtype=np.float32), -1.0, 1.0))
    return {**score_features(logits, features, labels, reference_stats), "logits": logits, "features": features}


def score_features(logits, features, labels, reference_stats) -> dict:
    """dict(accuracy, frechet, n) from the classifier's outputs (logits, features) for a set of images."""
    acc = class_accuracy(logits, labels) if labels is not None else None
    mu, sigma = feature_stats(features)
    return {"accuracy": acc, "frechet": frechet_distance(mu, sigma, *reference_stats), "n": int(len(features))}

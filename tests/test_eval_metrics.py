import json

import numpy as np
import pytest
from PIL import Image

from gtr.eval.metrics import (class_accuracy, evaluate_images, feature_stats, frechet_distance,
                              reference_stats)
from gtr.eval.report import class_grid_png, format_table, quality_cost_plot, write_json
from gtr.plan import build_plan

# ---------------------------------------------------------------- metrics (pure numpy)


def test_class_accuracy_known_inputs():
    assert class_accuracy([0, 1, 2, 3], [0, 1, 0, 3]) == 0.75
    logits = np.array([[2.0, 1.0], [0.0, 5.0], [3.0, -1.0]])
    assert class_accuracy(logits, [0, 1, 1]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        class_accuracy([0, 1], [0, 1, 2])


def test_feature_stats():
    f = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])
    mu, sigma = feature_stats(f)
    assert np.allclose(mu, [3.0, 4.0])
    assert np.allclose(sigma, [[4.0, 2.0], [2.0, 4.0]])  # unbiased (N-1)


def test_frechet_1d_closed_form():
    # N(m1, s1^2) vs N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2
    d = frechet_distance([1.0], [[4.0]], [3.0], [[9.0]])
    assert d == pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2)


def test_frechet_diagonal_and_rotated():
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.0])  # includes a singular one
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expect = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expect, rel=1e-10)
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))  # same rotation: same distance
    d = frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    # the singular direction costs ~sqrt(machine eps) after rotation: sqrt of a round-off eigenvalue
    assert d == pytest.approx(expect, rel=1e-6)


def test_frechet_general_matches_eigen_formula():
    rng = np.random.default_rng(1)
    x1, x2 = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    s1, s2 = x1 @ x1.T, x2 @ x2.T
    # Tr((S1 S2)^1/2) = sum sqrt(eig(S1 S2)); S1 S2 is non-symmetric but has real non-negative eigenvalues
    tr = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    expect = np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance(np.zeros(5), s1, np.zeros(5), s2) == pytest.approx(expect, rel=1e-8)
    assert frechet_distance(np.zeros(5), s1, np.zeros(5), s1) < 1e-9 * np.trace(s1)
    # symmetric in its arguments
    assert frechet_distance(np.zeros(5), s2, np.zeros(5), s1) == pytest.approx(expect, rel=1e-8)


# ---------------------------------------------------------------- with the shipped classifier


@pytest.fixture(scope="module")
def clf():
    from gtr.eval.classifier import load_classifier
    return load_classifier()


@pytest.fixture(scope="module")
def heldout():
    from gtr.tiny.data import load_split
    return load_split("heldout")


@pytest.fixture(scope="module")
def ref(clf):
    return reference_stats(clf)


def test_shipped_classifier_does_what_its_metadata_says(clf, heldout):
    """The JSON's held-out accuracy and architecture are what the shipped weights measure and are."""
    from gtr.eval.classifier import DEFAULT_PATH, embed, load_classifier_info
    info = load_classifier_info()
    x, y = heldout
    logits, feats = embed(clf, x)
    assert class_accuracy(logits, y) == pytest.approx(info["heldout_accuracy"], abs=1e-6)  # stored to 6 digits
    assert logits.shape[1] == info["arch"]["num_classes"] and feats.shape[1] == info["arch"]["feature_dim"]
    assert DEFAULT_PATH.stat().st_size < 400_000


def test_shipped_classifier_on_heldout(clf, heldout, ref):
    from gtr.eval.classifier import embed
    x, y = heldout
    logits, feats = embed(clf, x)
    assert logits.shape == (len(x), 10) and feats.shape == (len(x), clf.arch["feature_dim"])
    assert class_accuracy(logits, y) >= 0.95
    mu, sigma = ref
    scale = np.trace(sigma) + mu @ mu
    res = evaluate_images(x, y, clf, ref)
    assert res["n"] == len(x) and res["accuracy"] >= 0.95
    assert res["frechet"] < 1e-6 * scale  # real held-out vs its own statistics


def test_frechet_detects_degraded_images(clf, heldout, ref):
    x, y = heldout
    rng = np.random.default_rng(0)
    noisy = x + 1.0 * rng.standard_normal(x.shape).astype(np.float32)
    shifted = np.roll(x, 5, axis=-1)
    f_noisy = evaluate_images(noisy, y, clf, ref)["frechet"]
    f_shift = evaluate_images(shifted, y, clf, ref)["frechet"]
    from gtr.tiny.data import load_split
    xt, yt = load_split("train")
    # other real digits at the same n: the finite-sample floor (~33 at n=359)
    f_train = evaluate_images(xt[:len(x)], yt[:len(x)], clf, ref)["frechet"]
    assert 0 < f_train < f_noisy / 3 and f_train < f_shift / 5
    assert evaluate_images(x, (y + 1) % 10, clf, ref)["accuracy"] < 0.05


def test_gtr_eval_scores_with_evaluate_images(heldout, monkeypatch):
    """gtr-eval's evaluate_plans scores its samples with the tested evaluate_images, not a copy."""
    from gtr.configs import get_config
    from gtr.eval import metrics
    from gtr.eval.run import evaluate_plans
    config = get_config("mar-tiny")
    x, y = heldout
    per_class = 3
    images = np.concatenate([x[y == c][:per_class] for c in range(10)])  # in gtr-eval's label order
    served = []

    class RealDigits:  # sampler components whose decoder returns held-out digits of the asked classes
        def backbone(self, tokens, positions, class_ids, pred):
            return np.zeros((len(tokens), pred.shape[1], config.decoder_embed_dim), np.float32)

        def head_step(self, x, t, z, coef, w, noise):
            return x

        def decode(self, tokens):
            start = sum(len(s) for s in served)
            served.append(images[start:start + len(tokens)])
            return served[-1]

    calls = []
    real = metrics.evaluate_images
    monkeypatch.setattr(metrics, "evaluate_images", lambda *a, **k: calls.append(a) or real(*a, **k))
    plan = build_plan("mar-4", config.grid, diffusion_steps=2)
    [row] = evaluate_plans(RealDigits(), [plan], config, per_class, batch=10, log=lambda s: None)
    assert len(calls) == 1 and np.array_equal(calls[0][0], images)
    expect = real(images, np.repeat(np.arange(10), per_class), calls[0][2], calls[0][3])
    assert row["accuracy"] == expect["accuracy"] >= 0.9 and row["frechet"] == expect["frechet"]


def test_gtr_eval_several_seeds_report_means_and_ranges(heldout):
    """--seeds: each plan sampled once per base seed; the row holds the means and the per-seed values."""
    from gtr.configs import get_config
    from gtr.eval.run import evaluate_plans
    config = get_config("mar-tiny")
    x, y = heldout
    per_class = 3
    real = np.concatenate([x[y == c][:per_class] for c in range(10)])
    shifted = np.roll(real, 4, axis=-1)  # what the second seed "samples": worse on both metrics
    queue = [real, shifted]

    class Served:
        def backbone(self, tokens, positions, class_ids, pred):
            return np.zeros((len(tokens), pred.shape[1], config.decoder_embed_dim), np.float32)

        def head_step(self, x, t, z, coef, w, noise):
            return x

        def decode(self, tokens):
            return queue.pop(0)  # one call per seed (batch = all 30 images)

    plan = build_plan("mar-4", config.grid, diffusion_steps=2)
    [row] = evaluate_plans(Served(), [plan], config, per_class, batch=30, log=lambda s: None, seeds=[0, 1000])
    a, b = row["per_seed"]
    assert (a["seed"], b["seed"]) == (0, 1000) and a["frechet"] < b["frechet"]
    assert row["frechet"] == pytest.approx((a["frechet"] + b["frechet"]) / 2)
    assert row["frechet_min"] == a["frechet"] and row["frechet_max"] == b["frechet"]
    assert row["accuracy"] == pytest.approx((a["accuracy"] + b["accuracy"]) / 2) and row["seeds"] == 2
    # all seeds as one set: half real, half shifted, so between the two seeds' own distances
    assert row["n_pooled"] == 60 and a["frechet"] < row["frechet_pooled"] < b["frechet"]


def test_train_save_load_round_trip(tmp_path, heldout):
    import torch
    from gtr.eval.classifier import embed, load_classifier, save_classifier, train_classifier
    x, y = heldout[0][:64], heldout[1][:64]
    m1 = train_classifier(x, y, epochs=1, seed=3)
    m2 = train_classifier(x, y, epochs=1, seed=3)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k  # deterministic
    path = tmp_path / "c.safetensors"
    save_classifier(m1, path, {"heldout_accuracy": 0.5})
    assert json.loads(path.with_suffix(".json").read_text())["heldout_accuracy"] == 0.5
    m3 = load_classifier(path)
    assert np.array_equal(embed(m1, x)[0], embed(m3, x)[0])


# ---------------------------------------------------------------- reports


def test_reports(tmp_path, heldout):
    from gtr.runtime.images import to_uint8
    rows = [dict(plan="full", gflops=10.0, accuracy=0.98, frechet=1.5, n=100),
            dict(plan="gtr", gflops=4.0, accuracy=0.96, frechet=np.float64(2.5), n=100)]
    write_json(tmp_path / "r.json", {"rows": rows, "arr": np.arange(2)})
    assert json.loads((tmp_path / "r.json").read_text())["rows"][1]["frechet"] == 2.5
    quality_cost_plot(rows, tmp_path / "q.png")
    assert Image.open(tmp_path / "q.png").size[0] > 0
    table = format_table(rows)
    assert table.splitlines()[0].split() == ["plan", "gflops", "accuracy", "frechet", "n"]
    assert "gtr" in table and "0.9600" in table

    x, y = heldout
    u8 = to_uint8(x[:60])
    grid = class_grid_png(u8, y[:60], tmp_path / "g.png", per_class=3, pad=2)
    ncls = len(np.unique(y[:60]))
    assert grid.shape == (2 + ncls * 34, 2 + 3 * 34, 3)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.png")), grid)
    # row 0 holds the first class-0 image
    assert np.array_equal(grid[2:34, 2:34], u8[np.flatnonzero(y[:60] == 0)[0]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "q.png", "r.json"]


def test_frechet_floor_tool_scores_real_training_images():
    """tools/frechet_floor.py: random sets of the generator's own training images, scored as gtr-eval
    scores samples; each set is read correctly and lies above 0 (the sets differ from the reference)."""
    import re
    import subprocess
    import sys
    from pathlib import Path
    tool = Path(__file__).resolve().parent.parent / "tools" / "frechet_floor.py"
    out = subprocess.run([sys.executable, str(tool), "--data", "digits", "--per-class", "20", "--sets", "2"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    sets = re.findall(r"n = 200, accuracy ([\d.]+), Frechet ([\d.]+)", out)
    assert len(sets) == 2 and sets[0] != sets[1], out
    assert all(float(acc) >= 0.95 and float(f) > 0 for acc, f in sets), out
    low, high = map(float, re.search(r"Frechet ([\d.]+)-([\d.]+)$", out.strip()).groups())
    assert (low, high) == (min(float(f) for _, f in sets), max(float(f) for _, f in sets))

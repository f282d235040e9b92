import numpy as np
import pytest

from gtr.tiny.data import load_digits_images, load_split, train_heldout_split


@pytest.fixture(scope="module")
def digits():
    return load_digits_images(32)


def test_shapes_and_range(digits):
    x, y = digits
    assert x.shape == (1797, 3, 32, 32) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))
    assert x.min() == -1.0 and x.max() <= 1.0 and x.max() > 0.99
    assert np.array_equal(x[:, 0], x[:, 1]) and np.array_equal(x[:, 0], x[:, 2])  # grey as RGB
    # bright ink on a dark background (digits span the full height, so test the side columns)
    sides = np.concatenate([x[..., 0].ravel(), x[..., -1].ravel()])
    assert np.mean(sides < -0.9) > 0.95 and x.mean() < -0.2


def test_deterministic_and_other_sizes(digits):
    x2, y2 = load_digits_images(32)
    assert np.array_equal(digits[0], x2) and np.array_equal(digits[1], y2)
    x8, _ = load_digits_images(8)
    from sklearn.datasets import load_digits
    assert np.allclose(x8[:, 0], load_digits().images / 8.0 - 1.0)  # size 8: no resampling


def test_split_stratified_disjoint_deterministic(digits):
    y = digits[1]
    tr, he = train_heldout_split(y)
    assert len(np.intersect1d(tr, he)) == 0
    assert np.array_equal(np.sort(np.concatenate([tr, he])), np.arange(len(y)))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(he) > 0)
    assert (len(tr), len(he)) == (1438, 359)
    for c in range(10):
        n = np.sum(y == c)
        assert abs(np.sum(y[he] == c) - 0.2 * n) <= 0.5 + 1e-9
    tr2, he2 = train_heldout_split(y)
    assert np.array_equal(tr, tr2) and np.array_equal(he, he2)
    _, he3 = train_heldout_split(y, seed=1)
    assert not np.array_equal(he, he3)


def test_load_split(digits):
    x, y = digits
    tr, he = train_heldout_split(y)
    xh, yh = load_split("heldout")
    assert np.array_equal(xh, x[he]) and np.array_equal(yh, y[he])
    xt, _ = load_split("train")
    assert len(xt) == len(tr)
    with pytest.raises(ValueError):
        load_split("test")

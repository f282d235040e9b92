"""FTS scoring, k_top and the top/rest split (gtr-spec §4.5)."""
import numpy as np
import pytest

from gtr.plan import fts_scores, fts_split, fts_top_k


def _direct_scores(z):
    """O(D^2) DFT straight from the definition, one vector at a time."""
    D = z.shape[-1]
    h = D // 2
    d = np.arange(D)
    out = []
    for v in z.reshape(-1, D):
        s = 0.0
        for n in range(1, h + 1):
            amp = abs(np.sum(v * np.exp(-2j * np.pi * n * d / D)))
            s += amp * (1 + n / h)
        out.append(s)
    return np.array(out).reshape(z.shape[:-1])


def test_check_values():
    z = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.float32)
    np.testing.assert_allclose(np.abs(np.fft.rfft(z.astype(np.float64)))[1:], [8.289495, 3.605551, 11.193046, 3],
                               rtol=1e-6)
    assert fts_scores(z) == pytest.approx(41.358026, abs=1e-6)
    d = np.arange(8)
    assert fts_scores(np.cos(2 * np.pi * 3 * d / 8) + 0.5) == pytest.approx(7.0, abs=1e-12)
    assert fts_scores(np.ones(8)) == pytest.approx(0.0, abs=1e-12)
    for D in (8, 768, 1024, 1280):
        impulse = np.zeros(D)
        impulse[0] = 1
        h = D // 2
        assert fts_scores(impulse) == pytest.approx(h + (h + 1) / 2, rel=1e-12)
        assert fts_scores((-1.0) ** np.arange(D)) == pytest.approx(2 * D, rel=1e-12)
    np.testing.assert_allclose(fts_scores(np.eye(1280)[:1]), [960.5], rtol=1e-12)


@pytest.mark.parametrize("shape", [(5, 8), (2, 3, 7), (4, 96), (3, 33), (1, 2)])
def test_matches_direct_dft(shape):
    rng = np.random.default_rng(sum(shape))
    z = rng.standard_normal(shape).astype(np.float32)
    got = fts_scores(z)
    assert got.dtype == np.float64 and got.shape == shape[:-1]
    np.testing.assert_allclose(got, _direct_scores(z.astype(np.float64)), rtol=1e-10)


def test_odd_dimension_uses_bins_up_to_floor_half():
    # D = 7, h = 3: impulse has |A(n)| = 1, weights 4/3, 5/3, 2 -> 5.
    z = np.zeros(7)
    z[0] = 1
    assert fts_scores(z) == pytest.approx(5.0, rel=1e-12)
    assert fts_scores(np.ones(1)) == 0.0


@pytest.mark.parametrize("n,beta,k", [(100, 0.07, 7), (64, 0.1, 7), (128, 0.1, 13), (32, 0.1, 4), (16, 0.1, 2),
                                      (64, 0.0, 0), (64, 1.0, 64), (57, 0.2, 12), (10, 0.3, 3), (1, 0.1, 1),
                                      (0, 0.1, 0), (5, 1.5, 5), (5, -0.1, 0)])
def test_top_k(n, beta, k):
    assert fts_top_k(n, beta) == k


def test_split_ranks_by_score_and_sorts_rows():
    D = 16
    impulse = np.zeros(D, dtype=np.float32)
    impulse[0] = 1
    # Scores are proportional to the (non-negative) amplitude of an impulse.
    amps = np.array([[0.5, 3.0, 1.0, 2.0, 0.1, 2.5], [4.0, 0.2, 0.3, 0.1, 5.0, 0.0]], dtype=np.float32)
    z = amps[..., None] * impulse
    top, rest = fts_split(z, 3)
    assert top.dtype == rest.dtype == np.int64 and top.shape == (2, 3) and rest.shape == (2, 3)
    np.testing.assert_array_equal(top, [[1, 3, 5], [0, 2, 4]])
    np.testing.assert_array_equal(rest, [[0, 2, 4], [1, 3, 5]])


def test_split_ties_go_to_lower_index():
    rng = np.random.default_rng(0)
    v = rng.standard_normal(32).astype(np.float32)
    z = np.stack([0.5 * v, v, v, v, 0.5 * v, v])[None]  # equal scores at 1, 2, 3, 5
    top, rest = fts_split(z, 2)
    np.testing.assert_array_equal(top, [[1, 2]])
    np.testing.assert_array_equal(rest, [[0, 3, 4, 5]])
    top, _ = fts_split(np.repeat(z[:, :1], 7, axis=1), 3)  # all equal
    np.testing.assert_array_equal(top, [[0, 1, 2]])


def test_split_edges_and_partition():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((4, 10, 24))
    for k in (0, 1, 7, 10):
        top, rest = fts_split(z, k)
        assert top.shape == (4, k) and rest.shape == (4, 10 - k)
        for b in range(4):
            assert sorted(np.concatenate([top[b], rest[b]])) == list(range(10))
            assert list(top[b]) == sorted(top[b]) and list(rest[b]) == sorted(rest[b])
            if 0 < k < 10:
                s = fts_scores(z[b])
                assert s[top[b]].min() >= s[rest[b]].max()
    with pytest.raises(ValueError):
        fts_split(z, 11)


def test_split_low_and_random_selection():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 10, 16))
    scores = fts_scores(z)
    low, _ = fts_split(z, 3, select="low")
    np.testing.assert_array_equal(low, np.sort(np.argsort(scores, axis=1, kind="stable")[:, :3], axis=1))
    r = rng.random((3, 10))
    top, rest = fts_split(z, 3, select="random", random_scores=r)
    np.testing.assert_array_equal(top, np.sort(np.argsort(-r, axis=1, kind="stable")[:, :3], axis=1))
    assert sorted(np.concatenate([top[0], rest[0]]).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="random_scores"):
        fts_split(z, 3, select="random")
    with pytest.raises(ValueError, match="unknown"):
        fts_split(z, 3, select="middle")

"""The shared sampling loop with the torch reference components (tests/tiny_export_model.py, CPU)."""
import numpy as np
import pytest

from gtr.models.reference import TorchComponents, sample_images
from gtr.plan import NoiseSource, build_plan, image_seeds
from gtr.runtime.sampler import head_calls, run_head

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("plan_name", ["gtr", "mar-64", "gtr-32"])
def test_plans_sample_images_deterministically(models, plan_name):
    if plan_name == "gtr-32":  # invalid on 8x8 (24 steps > 16 tokens in stage 1): a clear error
        with pytest.raises(ValueError, match="stage_steps"):
            build_plan(plan_name, grid=(8, 8))
        return
    mar, vae = models
    plan = build_plan(plan_name, grid=(8, 8), cfg=3.0)
    a = sample_images(mar, vae, plan, [3, 7, None], seed=5)
    b = sample_images(mar, vae, plan, [3, 7, None], seed=5)
    c = sample_images(mar, vae, plan, [3, 7, None], seed=6)
    assert a.images.shape == (3, 3, 32, 32) and np.isfinite(a.images).all()
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.images, b.images)
    assert not np.allclose(a.tokens, c.tokens)
    # Every position is written exactly once, in the order the noise source drew.
    assert np.array_equal(np.sort(a.orders, axis=1), np.broadcast_to(np.arange(64), (3, 64)))
    assert np.array_equal(a.orders, NoiseSource(image_seeds(5, [3, 7, None])).orders(plan))
    assert (np.abs(a.tokens).sum(-1) > 0).all()


def test_cfg_one_uses_no_unconditional_rows(models):
    mar, _ = models
    seen = []

    class Spy(TorchComponents):
        def backbone(self, tokens, positions, class_ids, pred):
            seen.append(class_ids.copy())
            return super().backbone(tokens, positions, class_ids, pred)

    from gtr.runtime.sampler import sample
    plan = build_plan("gtr", grid=(8, 8), cfg=1.0)
    sample(Spy(mar), plan, [1, 2], 0, token_dim=4, num_classes=10, decode=False)
    assert all(list(ids) == [1, 2] for ids in seen)
    seen.clear()
    sample(Spy(mar), plan.replace(cfg=2.0), [1, 2], 0, token_dim=4, num_classes=10, decode=False)
    assert all(list(ids) == [1, 2, 10, 10] for ids in seen)


def test_merged_fts_groups_equal_separate_runs(models):
    """7@50 + 57@20 in shared calls gives the same tokens as running each group alone."""
    mar, _ = models
    comps = TorchComponents(mar)
    rng = np.random.default_rng(0)
    sizes, Ts = (3, 9), (50, 20)
    z = rng.standard_normal((2 * sum(sizes), 32)).astype(np.float32)
    x = [rng.standard_normal((n, 4)).astype(np.float32) for n in sizes]
    noise = [rng.standard_normal((T - 1, n, 4)).astype(np.float32) for n, T in zip(sizes, Ts)]
    merged = run_head(comps, np.concatenate(x), z, head_calls(Ts, sizes, 1.0), 2.5, noise, 4)
    R = sum(sizes)
    z_c, z_u = z[:R], z[R:]
    alone = []
    start = 0
    for n, T, xg, ng in zip(sizes, Ts, x, noise):
        zg = np.concatenate([z_c[start:start + n], z_u[start:start + n]])
        alone.append(run_head(comps, xg.copy(), zg, head_calls((T,), (n,), 1.0), 2.5, [ng], 4))
        start += n
    np.testing.assert_allclose(merged, np.concatenate(alone), rtol=1e-5, atol=1e-5)
    calls = head_calls(Ts, sizes, 1.0)
    assert [c.rows for c in calls] == [3] * 30 + [12] * 20


def test_fts_groups_follow_scores(models):
    """The reconstruction step gives T_detail to the tokens with the highest FTS score of z_cond."""
    mar, _ = models
    from gtr.plan import fts_scores
    from gtr.runtime.sampler import sample
    rows_by_call = []

    class Spy(TorchComponents):
        def backbone(self, *a):
            self.z = super().backbone(*a)
            return self.z

        def head_step(self, x, t, z, coef, w, noise):
            rows_by_call.append((x.shape[0], z[: x.shape[0]].copy(), self.z))
            return super().head_step(x, t, z, coef, w, noise)

    plan = build_plan("gtr", grid=(8, 8), cfg=2.0)
    sample(Spy(mar), plan, [4], 1, token_dim=4, num_classes=10, decode=False)
    last_step_first_call = [r for r in rows_by_call if r[0] == 2][-1]  # 2 = ceil(0.1 * 16) fts_top rows
    _, z_top, z_step = last_step_first_call
    scores = fts_scores(z_step[0])
    expected = np.sort(np.argsort(-scores, kind="stable")[:2])
    np.testing.assert_array_equal(z_top, z_step[0][expected])


def test_random_fts_selection_draws_from_the_run_seed(models):
    """fts_select='random': deterministic per seed, and a different split than the FTS ranking."""
    mar, vae = models
    from gtr.runtime.sampler import sample
    plan = build_plan("gtr", grid=(8, 8), cfg=2.0)
    rand = plan.replace(fts_select="random")
    run = lambda p: sample(TorchComponents(mar), p, [1, 2], 3, token_dim=4, num_classes=10, decode=False)  # noqa: E731
    a, b, high = run(rand), run(rand), run(plan)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.orders, high.orders)  # the orders are drawn first, unchanged
    assert not np.allclose(a.tokens, high.tokens)


def test_bad_class_is_refused(models):
    mar, vae = models
    with pytest.raises(ValueError, match="out of range"):
        sample_images(mar, vae, build_plan("gtr", grid=(8, 8)), [10], seed=0)

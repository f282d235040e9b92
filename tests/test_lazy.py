"""The condition cache (docs/lazy.md): plan JSON and validation, the builders' options, what `sample()`
calls the backbone with on refresh and cached steps, the static shapes, and the cost model."""
import json

import numpy as np
import pytest

from gtr.configs import get_config
from gtr.export.exporter import static_shapes
from gtr.plan import PlanError, SamplingPlan, build_plan, plan_cost
from gtr.plan.builders import cond_cache_modes
from gtr.plan.options import make_plans
from gtr.runtime.sampler import sample, step_calls

D, C = 8, 4  # condition width and token dim of the fake components
UNCOND = 10  # num_classes of the fake model: the class id of the unconditional rows


def lazy(grid=(16, 16), cfg=3.0, **kw):
    return build_plan("gtr-lazy", grid, cfg=cfg, **kw)


def modes(plan):
    return [s.cond for s in plan.steps]


# ------------------------------------------------------------------------------------- the plan

def test_gtr_lazy_modes_and_params():
    plan = lazy()
    assert modes(plan) == ["full", "refresh", "cached", "cached", "refresh", "cached", "cached", "refresh",
                           "cached", "cached", "refresh", "cached", "cached", "refresh", "cached", "cached"]
    assert plan.params["cache_every"] == 3 and plan.params["cache_from"] == 2
    base = build_plan("gtr", (16, 16), cfg=3.0)
    # the cache changes nothing else: same steps, tokens, groups, CFG weights
    assert [(s.known_before, s.predict, s.groups, s.cfg_count) for s in plan.steps] == \
           [(s.known_before, s.predict, s.groups, s.cfg_count) for s in base.steps]
    assert plan.uses_cond_cache and not base.uses_cond_cache
    assert not plan.replace(cfg=1.0).uses_cond_cache  # no CFG: nothing to cache
    assert [plan.replace(cfg=1.0).cond_mode(i) for i in range(16)] == ["full"] * 16


def test_json_round_trip_and_versions():
    plan = lazy()
    text = plan.to_json()
    again = SamplingPlan.from_json(text)
    assert again == plan and modes(again) == modes(plan) and again.to_json() == text
    d = json.loads(text)
    assert d["version"] == 2 and d["steps"][2]["cond"] == "cached" and "cond" not in d["steps"][0]
    # a plan without the cache is written as before (version 1, no cond keys)
    plain = json.loads(build_plan("gtr", (16, 16), cfg=3.0).to_json())
    assert plain["version"] == 1 and all("cond" not in s for s in plain["steps"])
    # and a plan file from build_plan's path route keeps the cache
    assert SamplingPlan.from_dict(d).uses_cond_cache


def _with_modes(plan, new_modes):
    d = plan.to_dict()
    d["version"] = 2  # per-step cond modes are a version-2 field
    for s, m in zip(d["steps"], new_modes):
        s["cond"] = m
    return d


@pytest.mark.parametrize("new_modes, message", [
    (["cached"] + ["full"] * 15, "step 0: a cached step needs a refresh step before it"),
    (["full", "refresh", "full", "cached"] + ["full"] * 12, "step 3: cached, but the latest uncached step before it "
                                                             r"\(step 2\) is 'full', not 'refresh'"),
    (["full", "lazy"] + ["full"] * 14, "step 1: cond must be one of full, refresh, cached, got 'lazy'"),
])
def test_validation_errors_are_one_line(new_modes, message):
    with pytest.raises(PlanError, match=message) as e:
        SamplingPlan.from_dict(_with_modes(build_plan("gtr", (16, 16), cfg=3.0), new_modes))
    assert "\n" not in str(e.value)


def test_unknown_step_field_is_rejected():
    d = lazy().to_dict()
    d["steps"][1]["cache"] = True
    with pytest.raises(PlanError, match=r"steps\[1\] has unknown fields \['cache'\]"):
        SamplingPlan.from_dict(d)


def test_a_refresh_with_full_steps_after_it_is_valid():
    # valid, if wasteful: the builders never write it, a hand-made plan may
    d = _with_modes(build_plan("gtr", (16, 16), cfg=3.0), ["refresh", "full", "refresh", "cached"] + ["full"] * 12)
    assert modes(SamplingPlan.from_dict(d))[:4] == ["refresh", "full", "refresh", "cached"]


@pytest.mark.parametrize("options, message", [
    (dict(cache_every=0), "cache_every must be an integer >= 1, got 0"),
    (dict(cache_every=3, cache_from=0), "cache_from must be an integer >= 1, got 0"),
    (dict(cache_every=3, cache_from=16), "cache_from = 16 leaves no step to cache"),
    (dict(cache_every=3, cache_stages=(4,)), r"cache_stages must name stages in 1..3, got \[4\]"),
    (dict(cache_stages=(1,)), "cache_stages needs cache_every"),
])
def test_builder_option_errors_are_one_line(options, message):
    with pytest.raises(PlanError, match=message) as e:
        build_plan("gtr", (16, 16), cfg=3.0, **options)
    assert "\n" not in str(e.value)


def test_cache_options_through_make_plans():
    config = get_config("mar-b")
    [p] = make_plans(["gtr-lazy"], config, {"cache_every": 4, "cache_from": 3, "cache_stages": (1, 2)})
    assert modes(p) == ["full", "full", "refresh", "cached", "cached", "cached", "refresh", "cached", "cached",
                        "cached", "refresh", "cached", "cached", "cached", "full", "full"]
    [m] = make_plans(["mar-64"], config, {"cache_every": 9, "cache_from": 6})  # LazyMAR's setting
    refresh = [i for i, s in enumerate(m.steps) if s.cond == "refresh"]
    assert refresh == [5, 14, 23, 32, 41, 50, 59] and modes(m).count("cached") == 52
    # every 1 refreshes each step: nothing is ever cached, so every step is a plain full one
    [g] = make_plans(["gtr-lazy"], config, {"cache_every": 1})
    assert modes(g) == ["full"] * 16


def test_cache_stages_upgrade_the_step_before_a_cache_stage():
    got = cond_cache_modes([0] * 4 + [1] * 4 + [2] * 2, cache_every=3, cache_from=1, cache_stages=(2,))
    assert got == ["full", "full", "full", "refresh", "cached", "cached", "refresh", "cached", "full", "full"]


# ------------------------------------------------------------------------------- the sampler's calls

def fake_z(pred, class_ids, K):
    """z per (row, position); the unconditional rows also drift with K, so a stored difference goes stale."""
    z = np.sin(pred[..., None] * (np.arange(D) + 1) * 0.37 + class_ids[:, None, None])
    return (z + 0.01 * K * (class_ids == UNCOND)[:, None, None]).astype(np.float32)


class Recorder:
    def __init__(self, drift=True):
        self.calls, self.heads, self.drift = [], [], drift

    def backbone(self, tokens, positions, class_ids, pred):
        K = tokens.shape[1]
        self.calls.append(dict(B=tokens.shape[0], K=K, n=pred.shape[1], class_ids=class_ids.copy(), pred=pred.copy()))
        return fake_z(pred, class_ids, K if self.drift else 0)

    def head_step(self, x, t, z, coef, cfg_weight, noise):
        self.heads.append((len(self.calls) - 1, z.copy()))
        return (0.5 * x + noise).astype(np.float32)

    def decode(self, tokens):
        return np.zeros((tokens.shape[0], 3, 2, 2), np.float32)


def test_cached_steps_call_the_backbone_with_the_conditional_rows_only():
    plan = lazy((8, 8), t_gen_max=3, t_gen_min=2, t_rec=2, t_detail=3)
    labels = [3, 7, None]
    B = len(labels)
    rec = Recorder()
    got = sample(rec, plan, labels, seed=4, token_dim=C, num_classes=UNCOND, decode=False)
    assert len(rec.calls) == plan.num_steps
    cond_ids = np.array([3, 7, UNCOND])
    for s, (step, call) in enumerate(zip(plan.steps, rec.calls)):
        K, n = step.known_before, step.predict
        pred = np.sort(got.orders[:, K:K + n], axis=1)
        if step.cond == "cached":
            assert call["B"] == B and np.array_equal(call["class_ids"], cond_ids)
            assert np.array_equal(call["pred"], pred)
        else:
            assert call["B"] == 2 * B and np.array_equal(call["class_ids"], np.r_[cond_ids, [UNCOND] * B])
            if step.cond == "refresh":  # also the positions of the cached steps after it, its own first
                ahead = 0
                for later in plan.steps[s + 1:]:
                    if later.cond != "cached":
                        break
                    ahead += later.predict
                assert ahead > 0 and call["n"] == n + ahead
                rest = np.sort(got.orders[:, K + n:K + n + ahead], axis=1)
                assert np.array_equal(call["pred"], np.tile(np.concatenate([pred, rest], 1), (2, 1)))
            else:
                assert call["n"] == n and np.array_equal(call["pred"], np.tile(pred, (2, 1)))


def test_cached_steps_use_the_difference_stored_at_the_latest_refresh():
    """With a single 'all' group the head's z is [z_cond; z_uncond] over (image, position ascending):
    on a cached step z_uncond must be z_cond now minus (z_cond - z_uncond) of the latest refresh."""
    plan = lazy((8, 8), t_gen_max=3, t_gen_min=2, t_rec=2, t_detail=3, cache_stages=(1, 2))
    labels = [1, 5]
    B = len(labels)
    rec = Recorder()
    got = sample(rec, plan, labels, seed=2, token_dim=C, num_classes=UNCOND, decode=False)
    ids = np.array(labels)
    checked = 0
    last_refresh_K = None
    for s, step in enumerate(plan.steps):
        if step.cond == "refresh":
            last_refresh_K = step.known_before
        if step.cond != "cached":
            continue
        K, n = step.known_before, step.predict
        pred = np.sort(got.orders[:, K:K + n], axis=1)
        z = [zz for call, zz in rec.heads if call == s][0]
        zc = fake_z(pred, ids, K).reshape(B * n, D)
        zu_then = fake_z(pred, np.full(B, UNCOND), last_refresh_K).reshape(B * n, D)
        zc_then = fake_z(pred, ids, last_refresh_K).reshape(B * n, D)
        np.testing.assert_allclose(z[:B * n], zc, atol=1e-6)
        np.testing.assert_allclose(z[B * n:], zc - (zc_then - zu_then), atol=1e-6)
        # and this is not what a full step would have used (the difference is stale by 0.01 * (K - K_r))
        assert not np.allclose(z[B * n:], fake_z(pred, np.full(B, UNCOND), K).reshape(B * n, D), atol=1e-4)
        checked += 1
    assert checked >= 5


def test_an_unchanging_difference_makes_the_cache_exact():
    """When z_cond - z_uncond never changes, gtr-lazy must give gtr's tokens exactly: the cache adds no
    random draws and substitutes the same z_uncond (the documented draw order holds)."""
    kw = dict(t_gen_max=3, t_gen_min=2, t_rec=2, t_detail=3)
    labels = [0, 4, 4, None]
    a = sample(Recorder(drift=False), lazy((8, 8), **kw), labels, 9, token_dim=C, num_classes=UNCOND, decode=False)
    b = sample(Recorder(drift=False), build_plan("gtr", (8, 8), cfg=3.0, **kw), labels, 9, token_dim=C,
               num_classes=UNCOND, decode=False)
    assert np.array_equal(a.orders, b.orders)
    np.testing.assert_allclose(a.tokens, b.tokens, rtol=0, atol=1e-6)


def test_static_shapes_list_the_cache_shapes():
    plan = lazy()
    batch = 2
    listed = static_shapes([plan], batch)["backbone"]
    # refresh steps ask for their own positions and those of the two cached steps after them
    ahead = {s: plan.steps[s + 1].predict + plan.steps[s + 2].predict for s in (1, 4, 7, 10, 13)}
    for s, step in enumerate(plan.steps):
        sc = step_calls(plan, s, batch)
        want = {"cached": (batch, step.predict), "refresh": (2 * batch, step.predict + ahead.get(s, 0)),
                "full": (2 * batch, step.predict)}[step.cond]
        assert (sc.backbone_rows, sc.predict) == want and sc.cond == step.cond
        assert {"B": want[0], "K": step.known_before, "n": want[1]} in listed
    assert len(listed) == plan.num_steps  # one backbone shape per step, nothing else


# ------------------------------------------------------------------------------------- cost model

def test_cost_counts_cached_steps_at_one_branch():
    from gtr.plan import block_flops
    config = get_config("mar-b")
    plan = lazy(cfg=2.9)
    gtr = plan_cost(build_plan("gtr", (16, 16), cfg=2.9), config)
    lz = plan_cost(plan, config)
    mar = plan_cost(build_plan("mar-64", (16, 16), cfg=2.9), config)
    assert lz.cached_steps == 10 and gtr.cached_steps == 0 and lz.branches == 2
    assert lz.head_flops == gtr.head_flops and lz.head_token_steps == gtr.head_token_steps
    P, L, De, Dd = config.buffer_size, plan.seq_len, config.encoder_embed_dim, config.decoder_embed_dim

    def one_branch(K):  # one backbone pass, as the cost model counts it (gtr-spec §6.1)
        return (config.encoder_depth * block_flops(P + K, De, config.mlp_ratio) + 2.0 * (P + K) * (De * Dd + Dd)
                + config.decoder_depth * block_flops(P + L, Dd, config.mlp_ratio))

    saved = sum(one_branch(s.known_before) for s in plan.steps if s.cond == "cached")
    assert gtr.backbone_flops - lz.backbone_flops == pytest.approx(saved, rel=1e-12)
    # done-when figure of issue 23: >= 5x fewer FLOPs than mar-64 on MAR-B (gtr alone: 4.02x)
    assert mar.total_flops / lz.total_flops >= 5.0 > mar.total_flops / gtr.total_flops
    assert plan_cost(lazy(cfg=1.0), config) == plan_cost(build_plan("gtr", (16, 16), cfg=1.0), config)

"""What the sampling loop promises, checked through `sample()` with instrumented numpy components:

- it runs every plan that validation accepts (every group-role combination of a step);
- every shape it calls a component with is listed by the exporter's `static_shapes`;
- its random draws follow the documented order (gtr.plan.noise), replayed here by hand.
"""
import dataclasses
import itertools

import numpy as np
import pytest

from gtr.export.exporter import static_shapes
from gtr.plan import PRESETS, Group, PlanError, build_plan, fts_split, image_seed
from gtr.plan.plan import ROLES
from gtr.runtime.sampler import sample

D, C = 8, 4  # condition width and token dim of the fake components


def fake_z(pred, class_ids):
    """A deterministic z per (row, predicted position): FTS scores then depend on the position."""
    return np.sin(pred[..., None] * (np.arange(D) + 1) * 0.37 + class_ids[:, None, None]).astype(np.float32)


class Recorder:
    """numpy components that record the shape of every call. The head step is x / 2 + noise, so the
    result depends on every noise value and on which call it was given to."""

    def __init__(self):
        self.shapes = []

    def backbone(self, tokens, positions, class_ids, pred):
        assert tokens.shape[:2] == positions.shape and len(class_ids) == len(pred) == len(tokens)
        self.shapes.append(("backbone", {"B": tokens.shape[0], "K": tokens.shape[1], "n": pred.shape[1]}))
        return fake_z(pred, class_ids)

    def head_step(self, x, t, z, coef, cfg_weight, noise):
        r = x.shape[0]
        assert t.shape == (r,) and coef.shape == (r, 7) and cfg_weight.shape == (r, 1) and noise.shape == x.shape
        self.shapes.append(("head", {"r": r, "r2": 2 * r}) if len(z) == 2 * r else ("head_nocfg", {"r": r}))
        return (0.5 * x + noise).astype(np.float32)

    def decode(self, tokens):
        self.shapes.append(("vae_decoder", {"B": tokens.shape[0]}))
        return np.zeros((tokens.shape[0], 3, 2, 2), np.float32)


# ------------------------------------------------------------------------------- every valid role mix

def _with_groups(plan, roles, split, Ts):
    """The plan with every step's groups replaced by `roles`; `split` picks the sizes from predict."""
    steps = []
    for step in plan.steps:
        sizes = split(step.predict)
        steps.append(dataclasses.replace(step, groups=tuple(Group(r, n, T) for r, n, T in zip(roles, sizes, Ts))))
    return plan.replace(steps=steps)


SPLITS = {1: [lambda n: (n,)],
          2: [lambda n: (0, n), lambda n: (1, n - 1), lambda n: (n, 0)],
          3: [lambda n: (1, n - 2, 1)]}


@pytest.mark.parametrize("select", ["high", "low", "random"])
def test_every_role_combination_that_validates_runs(select):
    base = build_plan("gtr", (8, 8), cfg=2.0).replace(fts_select=select)
    accepted = set()
    for m in (1, 2, 3):
        for roles in itertools.product(ROLES, repeat=m):
            for split, Ts in itertools.product(SPLITS[m], [(3, 2, 2), (2, 3, 3)]):
                try:
                    plan = _with_groups(base, roles, split, Ts)
                except PlanError:
                    continue
                accepted.add(roles)
                result = sample(Recorder(), plan, [1, None], seed=0, token_dim=C, num_classes=10)
                # every position was written by a head chain (x / 2 + noise is never exactly 0)
                assert (np.abs(result.tokens).sum(-1) > 0).all(), (roles, Ts)
    assert accepted == {("all",), ("fts_top",), ("fts_rest",), ("fts_top", "fts_rest")}


# ------------------------------------------------------------------- static shapes = shapes called

@pytest.mark.parametrize("cfg", [1.0, 3.0])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_static_shapes_list_every_shape_the_sampler_calls(name, cfg):
    plan = build_plan(name, (16, 16), cfg=cfg)
    batch = 2
    rec = Recorder()
    sample(rec, plan, [0, None], seed=1, token_dim=C, num_classes=10)
    called = {}
    for graph, shape in rec.shapes:
        called.setdefault(graph, []).append(shape)
    listed = static_shapes([plan], batch)
    for graph, shapes in called.items():
        missing = [s for s in shapes if s not in listed[graph]]
        assert not missing, (graph, missing[:3])
    # and nothing listed that this plan never calls (head is listed for cfg = 1 plans too, by design)
    for graph in ("backbone", "head_nocfg", "vae_decoder") + (("head",) if plan.uses_cfg else ()):
        assert all(s in called.get(graph, []) for s in listed.get(graph, [])), graph


# --------------------------------------------------------------------------------- draw order by hand

def _plan_with_draw_order_unlike_run_order(select):
    """gtr on 8x8 with short chains; in its reconstruction steps the fts_top group (drawn first) runs
    fewer steps than fts_rest (run first), so drawing in run order would give other tokens."""
    plan = build_plan("gtr", (8, 8), cfg=1.0, t_gen_max=4, t_gen_min=2, t_rec=5, t_detail=3)
    assert any(g.role == "fts_top" and g.size > 0 for s in plan.steps for g in s.groups)
    return plan.replace(fts_select=select)


@pytest.mark.parametrize("select", ["high", "random"])
def test_sample_draws_in_the_documented_order(select):
    plan = _plan_with_draw_order_unlike_run_order(select)
    labels, seed = [3, 8], 5
    got = sample(Recorder(), plan, labels, seed, token_dim=C, num_classes=10, decode=False)

    B = len(labels)
    class_ids = np.array(labels, np.int64)
    # one generator per image, seeded from (seed, class, index of the class in the call)
    rngs = [np.random.default_rng(image_seed(seed, lab, 0)) for lab in labels]

    # 1. one permutation per stage, per image
    orders = np.stack([np.concatenate([r.permutation(np.asarray(st)) for st in plan.stages]) for r in rngs])
    np.testing.assert_array_equal(got.orders, orders)
    expected = np.zeros((B, plan.seq_len), np.float64)
    for step in plan.steps:
        K, n = step.known_before, step.predict
        pred = np.sort(orders[:, K:K + n], axis=1)
        tops = [g for g in step.groups if g.role == "fts_top"]
        # per image: 2a. selection scores first (random FTS only), then 2b. per group in plan order:
        # x_T, then the T-1 normals; the call's rows are the images' rows stacked
        scores = np.stack([r.random(n) for r in rngs]) if tops and select == "random" else None
        per_image = [[(r.standard_normal((g.size, C), dtype=np.float32),
                       r.standard_normal((g.T - 1, g.size, C), dtype=np.float32)) if g.size else None
                      for g in step.groups] for r in rngs]
        draws = [None if per_image[0][k] is None else
                 (np.concatenate([p[k][0] for p in per_image]), np.concatenate([p[k][1] for p in per_image], axis=1))
                 for k in range(len(step.groups))]
        if tops:
            top, rest = fts_split(fake_z(pred, class_ids), tops[0].size, select, scores)
            index = {"fts_top": top, "fts_rest": rest}
        else:
            index = {"all": np.broadcast_to(np.arange(n), (B, n))}
        for g, d in zip(step.groups, draws):
            if d is None:
                continue
            x_T, noise = (a.astype(np.float64) for a in d)
            # T calls of x -> x / 2 + noise; the last call (k = 0) adds no noise
            final = 0.5 ** g.T * x_T + sum(0.5 ** (g.T - 1 - j) * noise[j] for j in range(g.T - 1))
            cols = index[g.role]  # rows of a group: (sample, position ascending)
            for b in range(B):
                expected[b, pred[b, cols[b]]] = final[b * g.size:(b + 1) * g.size, 0]
    np.testing.assert_allclose(got.tokens[..., 0], expected, rtol=1e-5, atol=1e-6)

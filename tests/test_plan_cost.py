"""FLOP model (gtr-spec §6, mar-spec §10)."""
import pytest

from gtr.configs import REGISTRY, MARConfig
from gtr.plan import build_plan, format_flops, mar_plan, plan_cost
from gtr.plan.cost import block_flops

# gtr-spec §6.2 (TFLOP per image, CFG on): mar-64 backbone, MLP, total; gtr backbone, MLP, total, ratio;
# gtr FTS off (total, ratio); gtr-32 (total, ratio); mar-16 (total, ratio).
TABLE_6_2 = {
    "mar-b": ((11.01, 3.66, 14.67), (2.61, 1.04, 3.65, 4.02), (3.59, 4.08), (5.96, 2.46), (6.38, 2.30)),
    "mar-l": ((25.71, 7.40, 33.10), (6.09, 2.11, 8.20, 4.04), (8.08, 4.10), (13.61, 2.43), (13.74, 2.41)),
    "mar-h": ((49.75, 15.48, 65.23), (11.79, 4.42, 16.21, 4.02), (15.96, 4.09), (26.65, 2.45), (27.76, 2.35)),
}


def _t(x):
    return round(x / 1e12, 2)


@pytest.mark.parametrize("model", sorted(TABLE_6_2))
def test_cost_table_6_2(model):
    config = REGISTRY[model]
    mar64, gtr, gtr_off, gtr32, mar16 = TABLE_6_2[model]

    def cost(name, **kw):
        return plan_cost(build_plan(name, config.grid, cfg=config.default_cfg, **kw), config)

    base = cost("mar-64")
    assert (_t(base.backbone_flops), _t(base.head_flops), _t(base.total_flops)) == mar64
    g = cost("gtr")
    assert (_t(g.backbone_flops), _t(g.head_flops), _t(g.total_flops)) == gtr[:3]
    assert round(base.total_flops / g.total_flops, 2) == gtr[3]
    for (total, ratio), c in ((gtr_off, cost("gtr", fts=False)), (gtr32, cost("gtr-32")), (mar16, cost("mar-16"))):
        assert _t(c.total_flops) == total
        assert round(base.total_flops / c.total_flops, 2) == ratio
    # Per-branch counts (gtr-spec §5.1)
    assert (g.backbone_passes, g.head_token_steps, g.branches) == (16, 7_304, 2)
    assert (base.backbone_passes, base.head_token_steps) == (64, 25_600)


def test_mar_spec_section_10_values():
    # 256-step totals and per-pass costs (GFLOP, one decimal)
    for model, total256, enc64, enc320, dec in (("mar-b", 51.05, 11.0, 58.2, 58.6), ("mar-l", 118.01, 26.1, 135.7, 136.4),
                                                ("mar-h", 229.51, 50.8, 262.4, 263.4)):
        c = REGISTRY[model]
        D = c.encoder_embed_dim
        assert _t(plan_cost(build_plan("mar-256", c.grid, cfg=3.0), c).total_flops) == total256
        assert round(c.encoder_depth * block_flops(64, D) / 1e9, 1) == enc64
        assert round(c.encoder_depth * block_flops(320, D) / 1e9, 1) == enc320
        assert round((c.decoder_depth * block_flops(320, D) + 2 * 320 * (D * D + D)) / 1e9, 1) == dec
        assert round(2 * c.head_params / 1e6, 1) == {"mar-b": 71.5, "mar-l": 144.5, "mar-h": 302.4}[model]
    # the paper-comparison split (6, 8, 2) on MAR-H: 16.60 T, 3.93x
    h = REGISTRY["mar-h"]
    c = plan_cost(build_plan("gtr", h.grid, cfg=3.2, stage_steps=(6, 8, 2)), h)
    base = plan_cost(build_plan("mar-64", h.grid, cfg=3.2), h)
    assert _t(c.total_flops) == 16.60 and round(base.total_flops / c.total_flops, 2) == 3.93


def test_block_flops_by_hand():
    # D = 8, n = 3: per token 12*64 + 13*8 = 872 MAC-ish terms; attention 2 * n^2 * D MACs.
    assert block_flops(3, 8) == 2 * 3 * 872 + 4 * 9 * 8 == 5520
    # mlp_ratio 2 (hidden 16): qkv 192+24, proj 64+8, fc1 128+16, fc2 128+8, two LN affines 32 -> 600/token
    assert block_flops(3, 8, mlp_ratio=2.0) == 2 * 3 * 600 + 4 * 9 * 8


def test_tiny_config_by_hand():
    config = MARConfig(name="tiny", encoder_embed_dim=8, encoder_depth=1, encoder_num_heads=2, decoder_embed_dim=4,
                       decoder_depth=2, decoder_num_heads=1, diffloss_d=1, diffloss_w=8, img_size=32, buffer_size=2)
    plan = mar_plan(grid=(2, 2), num_steps=2, diffusion_steps=3)  # 2 + 2 tokens
    assert [s.predict for s in plan.steps] == [2, 2]
    c = plan_cost(plan, config)
    # encoder: block(n=2, D=8) = 3616, block(n=4, D=8) = 7488; decoder_embed 2*n*(8*4+4) = 144, 288;
    # decoder: 2 blocks at n=6, D=4: 2 * (2*6*(192+52) + 4*36*4) = 7008 per step
    assert c.backbone_flops == 3616 + 7488 + 144 + 288 + 2 * 7008 == 25552
    assert c.head_token_steps == 12 and c.head_flops == 2 * config.head_params * 12
    assert (c.backbone_passes, c.encoder_tokens, c.decoder_tokens, c.branches) == (2, 6, 12, 1)
    c2 = plan_cost(plan.replace(cfg=2.0), config)
    assert c2.backbone_flops == 2 * c.backbone_flops and c2.head_flops == 2 * c.head_flops
    assert c2.head_token_steps == 12 and c2.total_flops == 2 * c.total_flops
    with pytest.raises(ValueError, match="grid"):
        plan_cost(mar_plan(grid=(4, 4), num_steps=4), config)


def test_format_flops():
    assert format_flops(16.2149e12) == "16.21 TFLOP"
    assert format_flops(3.2e9) == "3.2 GFLOP"
    assert format_flops(65.23e12) == "65.23 TFLOP"
    assert format_flops(999.999e9) == "1 TFLOP"
    assert format_flops(2.5e15) == "2.5 PFLOP"
    assert format_flops(0) == "0 FLOP"

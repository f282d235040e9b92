"""mar-tiny: training pieces (smoke runs on a handful of images) and the shipped weights."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from gtr.configs import MARConfig, VAEConfig
from gtr.tiny import training as T

SMALL = MARConfig(name="tiny-smoke", encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2,
                  decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, diffloss_d=1, diffloss_w=32,
                  img_size=32, vae_stride=4, token_dim=4, buffer_size=4, num_classes=10,
                  vae=VAEConfig(ch=32, ch_mult=(1, 1, 1), num_res_blocks=1, embed_dim=4))


def test_model_module_is_torch_free_and_registers():
    code = ("import sys; import gtr.tiny.model as m; from gtr.configs import REGISTRY, get_config; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert REGISTRY['mar-tiny'] is m.MAR_TINY and get_config('mar-tiny').vae.embed_dim == 4")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_mask_ratio_is_truncated_normal():
    g = torch.Generator().manual_seed(0)
    r = np.array([T.sample_mask_ratio(g) for _ in range(4000)])
    assert r.min() >= 0.7 and r.max() <= 1.0
    # mean of N(1, 0.25) truncated to [0.7, 1]: 1 - 0.25 * (phi(0) - phi(-1.2)) / (Phi(0) - Phi(-1.2))
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    expected = 1 - 0.25 * (phi(0) - phi(-1.2)) / (0.5 - 0.5 * math.erfc(1.2 / math.sqrt(2)))
    assert abs(r.mean() - expected) < 0.005


def test_diffusion_loss_vb_terms():
    sched = T.DiffusionSchedule()
    # vb is the exact KL of the true posterior against the model, so with the true eps and the
    # posterior variance (v = -1) it is zero for t >= 1.
    x0, noise = torch.randn(6, 4), torch.randn(6, 4)
    t = torch.tensor([1, 2, 10, 500, 998, 999])

    class Oracle(torch.nn.Module):
        def forward(self, x, tt, c):
            return torch.cat([noise, -torch.ones_like(noise)], dim=1)

    mse, vb = T.diffusion_loss(Oracle(), sched, x0, torch.zeros(6, 1), t, noise)
    assert torch.allclose(mse, torch.zeros(6)) and vb.abs().max() < 1e-3
    # at t = 0 the term is the Gaussian NLL of x0 (in bits), finite
    _, vb0 = T.diffusion_loss(Oracle(), sched, x0[:1], torch.zeros(1, 1), torch.tensor([0]), noise[:1])
    assert torch.isfinite(vb0).all()


def test_mar_training_smoke():
    """A few steps on a handful of token grids: finite loss, parameters move, EMA lags, loss drops."""
    from gtr.models.mar import MAR

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = MAR(SMALL)
    T.init_mar_weights(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sched = T.DiffusionSchedule()
    opt = T.make_optimizer(model, 3e-3, 0.02)
    ema = T.EMA(model, 0.999)
    tokens, labels = torch.randn(8, SMALL.seq_len, 4) * 0.5, torch.arange(8) % 10
    losses = []
    for step in range(12):
        T.set_lr(opt, T.lr_at(step, 12, 3e-3, warmup=2))
        loss, stats = T.mar_loss(model, sched, tokens, labels, g)
        assert math.isfinite(loss.item()) and 0 <= stats["known"] <= int(0.3 * SMALL.seq_len) + 1
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
        losses.append(loss.item())
    after = model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in ("diffloss.net.final_layer.linear.weight",
                                                              "encoder_blocks.0.attn.qkv.weight"))
    assert set(ema.state_dict()) == set(after)
    assert np.mean(losses[-4:]) < np.mean(losses[:4])


def test_vae_training_smoke():
    from gtr.models.vae import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(SMALL.vae)
    opt = torch.optim.AdamW(vae.parameters(), 2e-3)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(6):
        loss, stats = T.vae_loss(vae, x, torch.randn(4, 4, 8, 8, generator=g), kl_weight=1e-3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(stats["loss"])
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_lr_schedule():
    assert T.lr_at(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert T.lr_at(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert T.lr_at(100, 100, 1.0, warmup=10, min_ratio=0.05) == pytest.approx(0.05)


def test_shipped_weights_load_strictly():
    from gtr.models.checkpoint import check_keys, read_file
    from gtr.models.mar import MAR
    from gtr.models.vae import AutoencoderKL
    from gtr.tiny.model import ASSET_DIR, MAR_FILE, MAR_TINY, VAE_FILE, load_tiny, read_info

    if not (ASSET_DIR / MAR_FILE).is_file():
        pytest.skip("mar-tiny weights not shipped yet")
    info = read_info()
    config = MARConfig.from_dict(info["config"])
    assert config == MAR_TINY, "gtr.tiny.model constants differ from the shipped mar_tiny.json config"
    mar_sd, vae_sd = read_file(ASSET_DIR / MAR_FILE), read_file(ASSET_DIR / VAE_FILE)
    check_keys(MAR(config), mar_sd, "mar_tiny")  # exact official key names and shapes
    check_keys(AutoencoderKL(config.vae), vae_sd, "vae_tiny")  # full VAE, encoder included
    assert all(v.dtype == torch.float32 for v in (*mar_sd.values(), *vae_sd.values()))
    model, vae = load_tiny()
    # one backbone + head call and a decode: finite and the right shapes
    with torch.no_grad():
        z = model(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), torch.tensor([3, 10]),
                  torch.arange(64)[None].expand(2, 64))
        out = model.diffloss.net(torch.randn(128, 4), torch.full((128,), 500), z.reshape(128, -1))
        img = vae.tokens_to_image(torch.randn(2, 64, 4))
    assert z.shape == (2, 64, config.decoder_embed_dim) and out.shape == (128, 8)
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()


def test_training_steps_are_reproducible():
    """Same seed -> bit-identical losses and weights (the training script relies on this)."""
    from gtr.models.mar import MAR

    def run():
        torch.manual_seed(1)
        g = torch.Generator().manual_seed(1)
        model = MAR(SMALL)
        T.init_mar_weights(model)
        opt = T.make_optimizer(model, 1e-3, 0.02)
        sched = T.DiffusionSchedule()
        tokens, labels = torch.randn(4, SMALL.seq_len, 4, generator=g), torch.arange(4)
        losses = []
        for _ in range(3):
            loss, _ = T.mar_loss(model, sched, tokens, labels, g, top_t_prob=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, model.state_dict()

    (l1, sd1), (l2, sd2) = run(), run()
    assert l1 == l2 and all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def _tiny_head(width=192, depth=3, seed=0):
    from gtr.models.mar import DiffusionMLP

    torch.manual_seed(seed)
    net = DiffusionMLP(token_dim=4, cond_dim=32, width=width, depth=depth)
    T.init_head_weights(net)
    return net


def test_identity_init_makes_eps_equal_x_t():
    """The head stage's init: eps_hat = x_t to ~1e-5 at every t and condition, v = 0, official shapes."""
    net = _tiny_head()
    info = T.init_identity_head(net, seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4096, 4, generator=g)
    z = torch.randn(4096, 32, generator=g) * 3
    with torch.no_grad():
        for t in (999, 500, 0):
            out = net(x, torch.full((4096,), t), z)
            assert (out[:, :4] - x).pow(2).mean().sqrt() < 3e-5, t
            assert torch.all(out[:, 4:] == 0)
    assert info["gain"] > 1 and info["beta"] > 0
    # the official init is the zero function: eps RMS error ~1 there
    plain = _tiny_head()
    with torch.no_grad():
        assert (plain(x, torch.full((4096,), 999), z)[:, :4] - x).pow(2).mean().sqrt() > 0.9


def test_head_loss_weights_t999_rows():
    """head_loss: about top_t_prob of the rows at t = 999, their eps MSE weighted by top_weight."""
    sched = T.DiffusionSchedule()
    x0, z = torch.randn(4000, 4), torch.zeros(4000, 1)

    class Constant(torch.nn.Module):  # eps_hat = 0: eps MSE ~ 1 at every t
        def forward(self, x, tt, c):
            self.t = tt
            return torch.zeros(x.shape[0], 8)

    net = Constant()
    loss1, stats1 = T.head_loss(net, sched, x0, z, torch.Generator().manual_seed(0), 0.1, top_weight=1.0)
    share = (net.t == 999).float().mean().item()
    loss2, stats2 = T.head_loss(net, sched, x0, z, torch.Generator().manual_seed(0), 0.1, top_weight=1e5)
    assert 0.08 < share < 0.12
    assert stats1["top_mse"] == stats2["top_mse"] and 0.8 < stats1["top_mse"] < 1.2
    # same draws: the loss grows by (1e5 - 1) * share * mse(t = 999 rows)
    expected = (1e5 - 1) * share * stats1["top_mse"]
    assert abs((loss2 - loss1).item() - expected) < 1e-3 * expected


def test_identity_head_trains_to_precise_t999():
    """600 head-stage steps keep eps at t = 999 precise while learning mid t (x0 ~ class mean)."""
    net = _tiny_head(width=64, depth=2)
    T.init_identity_head(net, seed=0)
    sched = T.DiffusionSchedule()
    g = torch.Generator().manual_seed(0)
    means = torch.randn(10, 4, generator=g)
    cond = torch.eye(10, 32)

    def rows(n):
        k = torch.randint(0, 10, (n,), generator=g)
        return means[k] + 0.1 * torch.randn(n, 4, generator=g), cond[k]

    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0)
    before = T.eps_errors(net, sched, *rows(2048), ts=(999, 500))
    for step in range(600):
        T.set_lr(opt, T.lr_at(step, 600, 1e-3, warmup=15))
        loss, _ = T.head_loss(net, sched, *rows(512), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = T.eps_errors(net, sched, *rows(2048), ts=(999, 500))
    assert after["999"] < 1e-3, after
    assert after["500"] < 0.5 * before["500"], (before, after)

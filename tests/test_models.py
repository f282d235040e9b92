"""MAR reference vs the official implementation's outputs, configs, and checkpoint IO."""
import numpy as np
import pytest
import torch

from gtr.configs import REGISTRY, MARConfig, get_config
from gtr.models.checkpoint import (CheckpointError, load_mar, mar_state_dict, save_mar_checkpoint,
                                   save_safetensors)
from gtr.models.diffusion import HeadStep
from gtr.models.mar import MAR, timestep_embedding
from gtr.runtime.sampler import head_calls, run_head
from gtr.models.reference import TorchComponents

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("name,params,entries,D,w", [
    ("mar-b", 207_924_768, 364, 768, 1024),
    ("mar-l", 478_326_304, 476, 1024, 1280),
    ("mar-h", 942_403_104, 604, 1280, 1536),
])
def test_official_configs_on_meta(name, params, entries, D, w):
    cfg = get_config(name)
    with torch.device("meta"):
        model = MAR(cfg)
    sd = model.state_dict()
    assert len(sd) == entries
    assert sum(v.numel() for v in sd.values()) == params
    assert sum(v.numel() for k, v in sd.items() if k.startswith("diffloss.")) == cfg.head_params
    depth, d = cfg.encoder_depth, cfg.diffloss_d
    assert sd["fake_latent"].shape == (1, D)
    assert sd["encoder_pos_embed_learned"].shape == (1, 320, D)
    assert sd["diffusion_pos_embed_learned"].shape == (1, 256, D)
    assert sd[f"encoder_blocks.{depth - 1}.attn.qkv.weight"].shape == (3 * D, D)
    assert sd[f"decoder_blocks.{depth - 1}.mlp.fc1.weight"].shape == (4 * D, D)
    assert sd[f"diffloss.net.res_blocks.{d - 1}.adaLN_modulation.1.weight"].shape == (3 * w, w)
    assert sd["diffloss.net.final_layer.adaLN_modulation.1.weight"].shape == (2 * w, w)
    assert sd["diffloss.net.final_layer.linear.weight"].shape == (32, w)
    assert sd["diffloss.net.time_embed.mlp.0.weight"].shape == (w, 256)
    assert not any("norm_final" in k for k in sd)
    # Registration order of the official model (mar-spec.md §5).
    assert list(sd)[:6] == ["fake_latent", "encoder_pos_embed_learned", "mask_token", "decoder_pos_embed_learned",
                            "diffusion_pos_embed_learned", "class_emb.weight"]


def test_mar_h_head_dim_80():
    cfg = get_config("mar-h")
    assert cfg.encoder_embed_dim // cfg.encoder_num_heads == 80


def test_config_dict_round_trip():
    for cfg in REGISTRY.values():
        assert MARConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown MAR config fields"):
        MARConfig.from_dict({**get_config("mar-b").to_dict(), "bogus": 1})


def test_timestep_embedding_check_values():
    phi = timestep_embedding(torch.tensor([0, 999]))
    assert torch.equal(phi[0, :128], torch.ones(128)) and torch.equal(phi[0, 128:], torch.zeros(128))
    np.testing.assert_allclose(phi[1, [0, 1, 127, 128, 129, 255]].numpy(),
                               [0.99965, 0.96379, 0.99424, -0.02646, -0.26668, 0.10715], atol=2e-5)


def _gather_known(tokens, mask):
    known = [np.flatnonzero(m == 0) for m in mask]
    pos = np.stack(known)
    return np.take_along_axis(tokens, pos[:, :, None], 1), pos


def _class_ids(io):
    return torch.tensor(list(io["in_labels"]) + [1000] * 3)


def test_backbone_matches_official(mar_test_model, mar_io):
    m, io = mar_test_model, mar_io
    toks, pos = _gather_known(io["in_tokens"], io["in_mask"])
    cls = _class_ids(io)
    with torch.no_grad():
        enc = m.encode(torch.from_numpy(toks), torch.from_numpy(pos), cls).numpy()
        z = m(torch.from_numpy(toks), torch.from_numpy(pos), cls, torch.arange(256).expand(6, 256)).numpy()
        z_masked = m.forward_masked(torch.from_numpy(io["in_tokens"]), torch.from_numpy(io["in_mask"]), cls).numpy()
        cv = m.class_vectors(cls).numpy()
    np.testing.assert_allclose(cv, io["out_class_embedding"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(enc, io["out_encoder_out"], atol=2e-5, rtol=0)
    np.testing.assert_allclose(z, io["out_z"], atol=2e-5, rtol=0)
    np.testing.assert_allclose(z_masked, io["out_z"], atol=2e-5, rtol=0)
    # Predicting a subset returns exactly those rows of z.
    sub = np.sort(np.random.default_rng(0).permutation(256)[:40])
    with torch.no_grad():
        zs = m(torch.from_numpy(toks), torch.from_numpy(pos), cls, torch.from_numpy(sub).expand(6, 40)).numpy()
    np.testing.assert_allclose(zs, io["out_z"][:, sub], atol=2e-5, rtol=0)


def test_first_step_matches_official(mar_test_model, mar_io):
    m, io = mar_test_model, mar_io
    cls = _class_ids(io)
    with torch.no_grad():
        enc = m.encode(torch.zeros(6, 0, 16), torch.zeros(6, 0, dtype=torch.long), cls).numpy()
        z = m(torch.zeros(6, 0, 16), torch.zeros(6, 0, dtype=torch.long), cls, torch.arange(256).expand(6, 256)).numpy()
    np.testing.assert_allclose(enc, io["out_allmasked_encoder_out"], atol=2e-5, rtol=0)
    np.testing.assert_allclose(z, io["out_allmasked_z"], atol=2e-5, rtol=0)


def test_head_matches_official(mar_test_model, mar_io):
    net, io = mar_test_model.diffloss.net, mar_io
    with torch.no_grad():
        out = net(torch.from_numpy(io["in_head_x"]), torch.from_numpy(io["in_head_t"]), torch.from_numpy(io["in_head_c"]))
    np.testing.assert_allclose(out.numpy(), io["out_head_out"], atol=1e-5, rtol=0)


def _coef(io, R, k, temperature):
    g = lambda name: io[f"sched_{R}_{name}"][k]
    return np.array([g("sqrt_recip_alphas_cumprod"), g("sqrt_recipm1_alphas_cumprod"), g("posterior_mean_coef1"),
                     g("posterior_mean_coef2"), np.log(g("betas")), g("posterior_log_variance_clipped"),
                     temperature if k > 0 else 0.0], np.float32)


@pytest.mark.parametrize("R", ["100", "50"])
@pytest.mark.parametrize("cfg", [False, True])
def test_p_sample_matches_official(mar_test_model, mar_io, R, cfg):
    io, temperature = mar_io, float(mar_io["temperature"])
    pre = f"ps{R}_cfg" if cfg else f"ps{R}"
    head = HeadStep(mar_test_model.diffloss.net, cfg)
    n = 4 if cfg else 8  # with CFG only rows 0-3 are kept rows (fixture README §2.3)
    for j, (k, t) in enumerate(zip(io[f"ps{R}_indices"], io[f"ps{R}_orig_t"])):
        coef = np.tile(_coef(io, R, k, temperature), (n, 1))
        with torch.no_grad():
            out = head(torch.from_numpy(io[f"in_{pre}_x"][j][:n]), torch.full((n,), int(t)),
                       torch.from_numpy(io[f"in_{pre}_c"]), torch.from_numpy(coef),
                       torch.full((n, 1), float(io["cfg_scale"])), torch.from_numpy(io[f"in_{pre}_noise"][j][:n])).numpy()
        ref = io[f"out_{pre}_sample"][j][:n]
        if t == 999:
            assert rel(out, ref) < 1e-5
        else:
            np.testing.assert_allclose(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cfg", [False, True])
def test_full_loop_matches_official(mar_test_model, mar_io, cfg):
    """The runtime's head loop with the torch head reproduces DiffLoss.sample (100 steps)."""
    io = mar_io
    comps = TorchComponents(mar_test_model)
    if cfg:
        z, x, noise, ref = io["in_loop_cfg_z"], io["in_loop_cfg_xT"][:3], io["in_loop_cfg_noise"][:99, :3], io["out_loop_cfg_sample"][:3]
        w = float(io["cfg_scale"])
    else:
        z, x, noise, ref = io["in_loop_z"], io["in_loop_xT"], io["in_loop_noise"][:99], io["out_loop_sample"]
        w = 1.0
    calls = head_calls((100,), (x.shape[0],), float(io["temperature"]))
    out = run_head(comps, x.copy(), z, calls, w, [noise], 16)
    assert rel(out, ref) < 1e-5


def _random_sd(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in MAR(cfg).state_dict().items()}
    return {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}


def test_official_layout_round_trip_uses_ema_by_default(tmp_path):
    cfg = get_config("mar-test")
    raw, ema = _random_sd(cfg, 1), _random_sd(cfg, 2)
    path = tmp_path / "checkpoint-last.pth"
    save_mar_checkpoint(path, raw, ema)
    m_ema = load_mar(cfg, path)
    m_raw = load_mar(cfg, path, weights="model")
    assert torch.equal(m_ema.fake_latent, ema["fake_latent"])
    assert torch.equal(m_raw.fake_latent, raw["fake_latent"])
    save_safetensors(tmp_path / "w.safetensors", ema)
    m_st = load_mar(cfg, tmp_path / "w.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(m_st.state_dict().values(), m_ema.state_dict().values()))


def test_fixture_checkpoint_ema_differs_from_model(fixtures_dir):
    ema = mar_state_dict(fixtures_dir / "mar_small.pth")
    raw = mar_state_dict(fixtures_dir / "mar_small.pth", weights="model")
    assert not torch.equal(ema["fake_latent"], raw["fake_latent"])


def test_wrong_config_error_names_the_fitting_one(fixtures_dir):
    with pytest.raises(CheckpointError, match=r"mar-test") as e:
        load_mar("mar-b", fixtures_dir / "mar_small.pth")
    assert "shape mismatches" in str(e.value) and "missing" in str(e.value)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    cfg = get_config("mar-test")
    sd = _random_sd(cfg, 3)
    del sd["mask_token"]
    sd["extra.weight"] = torch.zeros(1)
    save_mar_checkpoint(tmp_path / "c.pth", sd)
    with pytest.raises(CheckpointError, match=r"1 missing: mask_token; 1 unexpected: extra.weight"):
        load_mar(cfg, tmp_path / "c.pth")


def test_foreign_and_unsafe_files_are_refused(tmp_path):
    import argparse
    bad = tmp_path / "train.pth"
    torch.save({"model": _random_sd(get_config("mar-test"), 4), "args": argparse.Namespace(lr=1)}, bad)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_mar("mar-test", bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_mar("mar-test", junk)
    with pytest.raises(CheckpointError, match="no such file"):
        load_mar("mar-test", tmp_path / "absent.pth")
    torch.save({"weights": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no 'model_ema' entry"):
        load_mar("mar-test", tmp_path / "other.pth")
    st = tmp_path / "bad.safetensors"
    st.write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_mar("mar-test", st)


def test_unknown_model_name():
    with pytest.raises(KeyError, match="known models"):
        get_config("mar-xl")


def test_vae_loader_skips_extra_and_refuses_missing(fixtures_dir, tmp_path):
    from gtr.configs import VAEConfig
    from gtr.models.checkpoint import load_vae
    sd = torch.load(fixtures_dir / "kl16_small.ckpt", map_location="cpu", weights_only=True)["model"]
    sd = dict(sd)
    sd["loss.logvar"] = torch.zeros(())  # e.g. a training-loss parameter left in the file
    torch.save({"model": sd}, tmp_path / "extra.ckpt")
    vae = load_vae(VAEConfig(ch=32), tmp_path / "extra.ckpt", with_encoder=False)
    assert vae.extra_keys == ["loss.logvar"]
    del sd["decoder.conv_out.weight"]
    torch.save({"model": sd}, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="1 missing: decoder.conv_out.weight"):
        load_vae(VAEConfig(ch=32), tmp_path / "missing.ckpt", with_encoder=False)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_vae(VAEConfig(ch=64), fixtures_dir / "kl16_small.ckpt", with_encoder=False)

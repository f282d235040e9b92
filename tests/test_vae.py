"""KL-16 VAE: official key layout, parity with the official outputs (fixtures/official_mar §3-5), token layout."""
from pathlib import Path

import numpy as np
import pytest
import torch

from gtr.configs import VAEConfig
from gtr.models.vae import AutoencoderKL, split_vae_state_dict

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "official_mar"
CKPT, IO = FIXTURES / "kl16_small.ckpt", FIXTURES / "kl16_small_io.npz"

DEC_PREFIXES = ("decoder.", "post_quant_conv.")


def _count(sd, prefixes):
    items = [v for k, v in sd.items() if k.startswith(prefixes)]
    return len(items), sum(v.numel() for v in items)


def test_default_config_keys_and_params():
    with torch.device("meta"):  # no memory, no init cost
        sd = AutoencoderKL(VAEConfig()).state_dict()
    assert len(sd) == 312
    assert _count(sd, DEC_PREFIXES) == (166, 38_189_203)
    assert _count(sd, ("encoder.", "quant_conv.")) == (146, 28_266_816)
    assert sum(v.numel() for v in sd.values()) == 66_456_019
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    expected = {  # mar-spec §2.5
        "post_quant_conv.weight": (16, 16, 1, 1), "post_quant_conv.bias": (16,),
        "decoder.conv_in.weight": (512, 16, 3, 3), "decoder.conv_in.bias": (512,),
        "decoder.mid.block_1.norm1.weight": (512,), "decoder.mid.block_2.norm2.bias": (512,),
        "decoder.mid.block_1.conv1.weight": (512, 512, 3, 3), "decoder.mid.block_2.conv2.bias": (512,),
        "decoder.mid.attn_1.norm.weight": (512,),
        "decoder.mid.attn_1.q.weight": (512, 512, 1, 1), "decoder.mid.attn_1.proj_out.bias": (512,),
        "decoder.up.4.block.0.conv1.weight": (512, 512, 3, 3),
        "decoder.up.3.block.0.norm1.weight": (512,), "decoder.up.3.block.0.conv1.weight": (256, 512, 3, 3),
        "decoder.up.3.block.0.norm2.weight": (256,), "decoder.up.3.block.0.conv2.weight": (256, 256, 3, 3),
        "decoder.up.3.block.0.nin_shortcut.weight": (256, 512, 1, 1),
        "decoder.up.3.block.0.nin_shortcut.bias": (256,),
        "decoder.up.1.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "decoder.up.1.block.0.nin_shortcut.bias": (128,),
        "decoder.up.0.block.2.conv2.weight": (128, 128, 3, 3),
        "decoder.up.4.upsample.conv.weight": (512, 512, 3, 3), "decoder.up.4.upsample.conv.bias": (512,),
        "decoder.up.3.upsample.conv.weight": (256, 256, 3, 3),
        "decoder.up.2.upsample.conv.weight": (256, 256, 3, 3),
        "decoder.up.1.upsample.conv.weight": (128, 128, 3, 3),
        "decoder.norm_out.weight": (128,), "decoder.norm_out.bias": (128,),
        "decoder.conv_out.weight": (3, 128, 3, 3), "decoder.conv_out.bias": (3,),
        "encoder.conv_in.weight": (128, 3, 3, 3),
        "encoder.down.4.attn.0.norm.weight": (512,), "encoder.down.4.attn.1.v.weight": (512, 512, 1, 1),
        "encoder.down.0.downsample.conv.weight": (128, 128, 3, 3),
        "encoder.down.2.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "encoder.conv_out.weight": (32, 512, 3, 3),
        "quant_conv.weight": (32, 32, 1, 1), "quant_conv.bias": (32,),
    }
    for k, shape in expected.items():
        assert shapes.get(k) == shape, k
    # no attention in the decoder's up path, no resampler at level 0 (decoder) / top level (encoder)
    assert not any(k.startswith("decoder.up.") and ".attn." in k for k in sd)
    assert not any(k.startswith(("decoder.up.0.upsample", "encoder.down.4.downsample")) for k in sd)


def test_decoder_only_and_bad_ch():
    with torch.device("meta"):
        sd = AutoencoderKL(VAEConfig(), with_encoder=False).state_dict()
    assert all(k.startswith(DEC_PREFIXES) for k in sd) and len(sd) == 166
    with pytest.raises(ValueError, match="multiple of 32"):
        AutoencoderKL(VAEConfig(ch=48))
    with pytest.raises(RuntimeError, match="with_encoder=False"):
        AutoencoderKL(VAEConfig(ch=32, ch_mult=(1, 2)), with_encoder=False).encode(torch.zeros(1, 3, 8, 8))


@pytest.fixture(scope="module")
def official():
    ckpt = torch.load(CKPT, map_location="cpu", weights_only=True)["model"]
    io = np.load(IO, allow_pickle=False)
    return ckpt, {k: io[k] for k in io.files}


def test_small_checkpoint_parity(official):
    ckpt, io = official
    assert int(io["vae_ch"]) == 32 and tuple(io["vae_ch_mult"]) == (1, 1, 2, 2, 4)
    model = AutoencoderKL(VAEConfig(ch=32)).eval()
    assert list(model.state_dict()) == list(ckpt)  # same names, same order
    model.load_state_dict(ckpt, strict=True)
    with torch.no_grad():
        decoded = model.decode(torch.from_numpy(io["latent"]))
        moments = model.encode_moments(torch.from_numpy(io["image"]))
        mean, logvar = model.encode(torch.from_numpy(io["image"]))  # re-runs the encoder: cheap at ch=32
    np.testing.assert_allclose(decoded.numpy(), io["decoded"], rtol=0, atol=1e-4)
    for name, got in [("enc_moments", moments), ("enc_mean", mean), ("enc_logvar", logvar),
                      ("enc_std", torch.exp(0.5 * logvar))]:
        np.testing.assert_allclose(got.numpy(), io[name], rtol=0, atol=2e-5, err_msg=name)


def test_decoder_only_loads_full_checkpoint(official):
    ckpt, io = official
    model = AutoencoderKL(VAEConfig(ch=32), with_encoder=False).eval()
    kept, skipped = split_vae_state_dict(ckpt, with_encoder=False)
    assert len(kept) == 166 and len(skipped) == 146
    assert all(k.startswith(("encoder.", "quant_conv.")) for k in skipped)
    model.load_state_dict(kept, strict=True)
    assert split_vae_state_dict(ckpt, with_encoder=True) == (dict(ckpt), [])
    with torch.no_grad():
        decoded = model.decode(torch.from_numpy(io["latent"][:1]))
    np.testing.assert_allclose(decoded.numpy(), io["decoded"][:1], rtol=0, atol=1e-4)


def test_token_layout(official):
    ckpt, io = official
    model = AutoencoderKL(VAEConfig(ch=32)).eval()
    model.load_state_dict(ckpt)
    s = model.config.scale_factor
    latent = torch.from_numpy(io["latent"][:2])
    tokens = torch.empty(2, 256, 16)
    for r in range(16):  # token r*16 + c holds latent[:, r, c], scaled
        for c in range(16):
            tokens[:, r * 16 + c] = latent[:, :, r, c] * s
    image = torch.from_numpy(io["image"][:1])
    with torch.no_grad():
        # end to end once: tokens -> official decode, image -> official posterior mean
        np.testing.assert_allclose(model.tokens_to_image(tokens[:1]).numpy(), io["decoded"][:1], rtol=0, atol=1e-4)
        tok = model.image_to_tokens(image)
        assert tok.shape == (1, 256, 16)
        np.testing.assert_allclose(tok[0, 3 * 16 + 5].numpy(), io["enc_mean"][0, :, 3, 5] * s, rtol=0, atol=2e-5)
        np.testing.assert_allclose(tok.numpy(), io["enc_mean"][:1].reshape(1, 16, 256).transpose(0, 2, 1) * s,
                                   rtol=0, atol=2e-5)
        # layout and sampling alone, with the networks stubbed out (cheap, exact)
        model.decode = lambda z: z
        torch.testing.assert_close(model.tokens_to_image(tokens), latent)  # divided back by s
        model.encode_moments = lambda x: torch.from_numpy(io["enc_moments"])
        noise = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(0))
        tok_sample = model.image_to_tokens(torch.from_numpy(io["image"]), sample_noise=noise)
    expect = (torch.from_numpy(io["enc_mean"]) + torch.from_numpy(io["enc_std"]) * noise) * s
    torch.testing.assert_close(tok_sample, expect.flatten(2).transpose(1, 2), rtol=0, atol=1e-6)
    assert abs(float(tok_sample[1, 7 * 16 + 2, 4]) - float(expect[1, 4, 7, 2])) < 1e-6  # token r*16+c, channel ch


def test_small_custom_config_shapes():
    torch.manual_seed(0)
    cfg = VAEConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, embed_dim=8)
    model = AutoencoderKL(cfg).eval()
    sd = model.state_dict()
    assert "encoder.down.2.attn.0.q.weight" in sd and "decoder.up.2.upsample.conv.weight" in sd
    assert "decoder.up.0.block.1.conv2.weight" in sd and "decoder.up.0.block.2.conv1.weight" not in sd
    with torch.no_grad():
        x = torch.rand(2, 3, 32, 32) * 2 - 1
        assert model.encode_moments(x).shape == (2, 16, 8, 8)
        tokens = model.image_to_tokens(x)
        assert tokens.shape == (2, 64, 8)
        assert model.tokens_to_image(tokens).shape == (2, 3, 32, 32)
        assert model.tokens_to_image(torch.zeros(1, 8, 8), grid=(2, 4)).shape == (1, 3, 8, 16)
        with pytest.raises(ValueError, match="square"):
            model.tokens_to_image(torch.zeros(1, 8, 8))

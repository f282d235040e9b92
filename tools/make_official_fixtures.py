#!/usr/bin/env python3
"""Make tests/fixtures/official_mar: official-format checkpoints with small random weights, and the
official MAR implementation's outputs for them (that folder's README.md says what every array is).

    python tools/make_official_fixtures.py OFFICIAL_CHECKOUT [-o tests/fixtures/official_mar]

OFFICIAL_CHECKOUT is a checkout of LTH14/mar (MIT), e.g. `git clone https://github.com/LTH14/mar`; its
modules are imported from there, never copied. It needs torch and timm 0.9.12 (`make install` puts both in
.venv). Weights and inputs are drawn from fixed seeds (weights 101-105, inputs 106-107) and everything
runs on the CPU in fp32, so a second run writes byte-identical files.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import io
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gtr.bench.official import cuda_calls_stay_on_cpu, import_official  # noqa: E402
from gtr.errors import OfficialError  # noqa: E402

MAR_ARGS = dict(img_size=256, vae_stride=16, patch_size=1, encoder_embed_dim=96, encoder_depth=3,
                encoder_num_heads=6, decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=6, mlp_ratio=4,
                vae_embed_dim=16, buffer_size=64, class_num=1000, diffloss_d=3, diffloss_w=192,
                num_sampling_steps="100")
# `model` keeps its own (pre-EMA) values for these 2-D entries and for every tensor that is not 2-D; the
# other 2-D matrices are the very tensors of `model_ema`, stored once.
OWN_2D = {"fake_latent", "class_emb.weight", "z_proj.weight", "diffloss.net.input_proj.weight",
          "diffloss.net.final_layer.linear.weight"}
LABELS, CFG, TEMPERATURE = [88, 207, 1], 3.0, 0.95
HEAD_T, CFG_T = [999, 0, 1, 374, 626, 45, 880, 998], [998, 374, 45, 0, 998, 374, 45, 0]
STEP_INDICES = {100: [99, 37, 1, 0], 50: [49, 17, 0]}
SCHED_STEPS = (100, 50, 25, 20, 250)
SCHED_FIELDS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
                "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
                "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod")
VAE_CH, VAE_EMBED_DIM, VAE_CH_MULT, SCALE_FACTOR = 32, 16, (1, 1, 2, 2, 4), 0.2325
THREADS = 2  # the stored outputs were computed with 2 CPU threads (the 100-step loops depend on it in the last bits)
MAR_NOTE = ("Official LTH14/mar outputs computed with the EMA weights (ckpt['model_ema']) of mar_small.pth, eval "
            "mode, fp32, CPU. See README.md for every key.")
VAE_NOTE = ("decoded = AutoencoderKL.decode(latent) (post_quant_conv -> decoder); enc_* = AutoencoderKL.encode(image)"
            " (encoder -> quant_conv -> diagonal Gaussian); eval mode, fp32, CPU. See README.md.")


def _noisy(state: dict, seed: int, std: float) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict((k, v + std * torch.randn(v.shape, generator=g)) for k, v in state.items())


def mar_checkpoint(MAR):
    """The model (EMA weights loaded, eval mode) and the checkpoint {'model', 'model_ema'}."""
    torch.manual_seed(101)
    model = MAR(norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6), **MAR_ARGS)
    init = model.state_dict()
    raw = _noisy(init, 102, 0.02)
    ema = _noisy(raw, 103, 0.01)
    own = [k for k, v in init.items() if v.dim() != 2 or k in OWN_2D]
    model.load_state_dict(ema)
    return model.eval(), {"model": OrderedDict((k, raw[k] if k in own else ema[k]) for k in init), "model_ema": ema}


def mar_inputs() -> dict:
    """Every input of mar_small_io.npz, drawn in this order from one generator (seed 106)."""
    g = torch.Generator().manual_seed(106)

    def randn(*shape):
        return torch.randn(shape, generator=g)

    x = {"in_tokens": randn(6, 256, 16), "in_mask": torch.zeros(6, 256)}
    for row in x["in_mask"]:
        row[torch.randperm(256, generator=g)[:150]] = 1.0
    x.update(in_labels=torch.tensor(LABELS), in_uncond_rows=torch.tensor([False] * 3 + [True] * 3),
             in_head_x=randn(8, 16), in_head_t=torch.tensor(HEAD_T), in_head_c=randn(8, 96),
             in_cfg_x=randn(8, 16), in_cfg_t=torch.tensor(CFG_T), in_cfg_c=randn(8, 96))
    for R, ks in STEP_INDICES.items():
        for cfg in ("", "_cfg"):
            x.update({f"in_ps{R}{cfg}_x": randn(len(ks), 8, 16), f"in_ps{R}{cfg}_c": randn(8, 96),
                      f"in_ps{R}{cfg}_noise": randn(len(ks), 8, 16)})
    x.update(in_loop_z=randn(5, 96), in_loop_xT=randn(5, 16), in_loop_noise=randn(100, 5, 16),
             in_loop_cfg_z=randn(6, 96))
    half = randn(3, 16)
    x.update(in_loop_cfg_xT=torch.cat([half, half]), in_loop_cfg_noise=randn(100, 6, 16))
    return x


@contextlib.contextmanager
def drawn_noise(noise):
    """The official p_sample draws its noise with torch.randn_like; here it gets `noise`, one per call."""
    draws, randn_like = iter(noise), torch.randn_like

    def stored(x, *args, **kwargs):
        n = next(draws)
        assert n.shape == x.shape, (n.shape, x.shape)
        return n

    torch.randn_like = stored
    try:
        yield
    finally:
        torch.randn_like = randn_like


def _recording(fn, seen: list):
    def call(*args, **kwargs):
        seen.append(fn(*args, **kwargs))
        return seen[-1]
    return call


def diffusion_steps(diffusion, net, x, c, noise, indices, cfg: bool) -> dict:
    """The official p_sample at respaced index indices[j] on x[j] (with noise[j]), and its intermediates."""
    fn, kwargs = (net.forward_with_cfg, dict(c=c, cfg_scale=CFG)) if cfg else (net.forward, dict(c=c))
    out = {k: [] for k in ("sample", "mean", "log_variance", "pred_xstart", "model_out")}
    for j, k in enumerate(indices):
        t = torch.full((x.shape[1],), k, dtype=torch.int64)
        seen = []
        with drawn_noise([noise[j]]):
            step = diffusion.p_sample(_recording(fn, seen), x[j], t, clip_denoised=False, model_kwargs=kwargs,
                                      temperature=TEMPERATURE)
        mv = diffusion.p_mean_variance(fn, x[j], t, clip_denoised=False, model_kwargs=kwargs)
        for name, value in (("sample", step["sample"]), ("mean", mv["mean"]), ("log_variance", mv["log_variance"]),
                            ("pred_xstart", step["pred_xstart"]), ("model_out", seen[0])):
            out[name].append(value)
    return {k: torch.stack(v) for k, v in out.items()}


def diffusion_loop(diffusion, net, z, xT, noise, cfg: bool):
    """What the official DiffLoss.sample runs after drawing x_T, with each step's noise from `noise`."""
    fn, kwargs = (net.forward_with_cfg, dict(c=z, cfg_scale=CFG)) if cfg else (net.forward, dict(c=z))
    with drawn_noise(noise):
        return diffusion.p_sample_loop(fn, xT.shape, xT, clip_denoised=False, model_kwargs=kwargs, progress=False,
                                       temperature=TEMPERATURE)


def schedules(create_diffusion) -> dict:
    out = {}
    for R in ("1000",) + tuple(map(str, SCHED_STEPS)):
        d = create_diffusion("" if R == "1000" else R, noise_schedule="cosine")
        if R == "1000":
            out.update(sched_1000_betas=d.betas, sched_1000_timestep_map=np.asarray(d.timestep_map, np.int64))
            continue
        out[f"sched_{R}_timestep_map"] = np.asarray(d.timestep_map, np.int64)
        out.update({f"sched_{R}_{f}": np.asarray(getattr(d, f), np.float64) for f in SCHED_FIELDS})
    return out


def mar_outputs(model, x: dict, create_diffusion) -> dict:
    out = {}
    emb = torch.cat([model.class_emb(x["in_labels"]), model.fake_latent.repeat(3, 1)])
    out["out_class_embedding"] = emb
    out["out_encoder_out"] = model.forward_mae_encoder(x["in_tokens"], x["in_mask"], emb)
    out["out_z"] = model.forward_mae_decoder(out["out_encoder_out"], x["in_mask"])
    ones = torch.ones(6, 256)
    out["out_allmasked_encoder_out"] = model.forward_mae_encoder(torch.zeros(6, 256, 16), ones, emb)
    out["out_allmasked_z"] = model.forward_mae_decoder(out["out_allmasked_encoder_out"], ones)
    net = model.diffloss.net
    out["out_head_out"] = net(x["in_head_x"], x["in_head_t"], x["in_head_c"])
    out["out_head_cfg_out"] = net.forward_with_cfg(x["in_cfg_x"], x["in_cfg_t"], x["in_cfg_c"], CFG)
    diffusions = {100: model.diffloss.gen_diffusion, 50: create_diffusion("50", noise_schedule="cosine")}
    for R, ks in STEP_INDICES.items():
        for cfg in ("", "_cfg"):
            p = f"ps{R}{cfg}"
            steps = diffusion_steps(diffusions[R], net, x[f"in_{p}_x"], x[f"in_{p}_c"], x[f"in_{p}_noise"], ks,
                                    cfg=bool(cfg))
            out.update({f"out_{p}_{k}": v for k, v in steps.items()})
    out["out_loop_sample"] = diffusion_loop(diffusions[100], net, x["in_loop_z"], x["in_loop_xT"],
                                            x["in_loop_noise"], cfg=False)
    out["out_loop_cfg_sample"] = diffusion_loop(diffusions[100], net, x["in_loop_cfg_z"], x["in_loop_cfg_xT"],
                                                x["in_loop_cfg_noise"], cfg=True)
    return out


def vae_model(vae_module):
    """The official AutoencoderKL with base channels VAE_CH (its Encoder and Decoder take `ch`; the class
    itself does not pass it on, so they are built with it while the model is made)."""
    torch.manual_seed(104)
    Encoder, Decoder = vae_module.Encoder, vae_module.Decoder
    vae_module.Encoder = functools.partial(Encoder, ch=VAE_CH)
    vae_module.Decoder = functools.partial(Decoder, ch=VAE_CH)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the decoder prints its latent shape
            vae = vae_module.AutoencoderKL(embed_dim=VAE_EMBED_DIM, ch_mult=VAE_CH_MULT)
    finally:
        vae_module.Encoder, vae_module.Decoder = Encoder, Decoder
    state = _noisy(vae.state_dict(), 105, 0.02)
    vae.load_state_dict(state)
    return vae.eval(), {"model": state}


def vae_io(vae, commit: str) -> dict:
    g = torch.Generator().manual_seed(107)
    latent = torch.randn(3, VAE_EMBED_DIM, 16, 16, generator=g)
    image = (torch.randint(0, 256, (2, 3, 256, 256), generator=g).double() / 127.5 - 1).float()
    posterior = vae.encode(image)
    return {"latent": latent, "image": image, "decoded": vae.decode(latent), "enc_moments": posterior.parameters,
            "enc_mean": posterior.mean, "enc_logvar": posterior.logvar, "enc_std": posterior.std,
            "scale_factor": np.float64(SCALE_FACTOR), "vae_ch": np.int64(VAE_CH),
            "vae_embed_dim": np.int64(VAE_EMBED_DIM), "vae_ch_mult": np.asarray(VAE_CH_MULT, np.int64),
            "official_commit": np.str_(commit), "note": np.str_(VAE_NOTE)}


def _arrays(d: dict) -> dict:
    return {k: v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in d.items()}


def mar_io(model, create_diffusion, commit: str) -> dict:
    x = mar_inputs()
    out = mar_outputs(model, x, create_diffusion)
    meta = {"cfg_scale": np.float64(CFG), "temperature": np.float64(TEMPERATURE)}
    for R, ks in STEP_INDICES.items():
        meta[f"ps{R}_indices"] = np.asarray(ks, np.int64)
        meta[f"ps{R}_orig_t"] = np.asarray(create_diffusion(str(R), noise_schedule="cosine").timestep_map,
                                           np.int64)[ks]
    meta.update(official_commit=np.str_(commit), note=np.str_(MAR_NOTE))
    return {**x, **out, **schedules(create_diffusion), **meta}


def checkout_commit(path: Path) -> str | None:
    r = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def make(checkout: Path, out_dir: Path, commit: str) -> list[Path]:
    mar, vae_module, diffusion = import_official(checkout, "models.mar", "models.vae", "diffusion")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with torch.no_grad(), cuda_calls_stay_on_cpu():
        model, checkpoint = mar_checkpoint(mar.MAR)
        torch.save(checkpoint, out_dir / "mar_small.pth")
        np.savez_compressed(out_dir / "mar_small_io.npz", **_arrays(mar_io(model, diffusion.create_diffusion, commit)))
        vae, vae_checkpoint = vae_model(vae_module)
        torch.save(vae_checkpoint, out_dir / "kl16_small.ckpt")
        np.savez_compressed(out_dir / "kl16_small_io.npz", **_arrays(vae_io(vae, commit)))
    for name in ("mar_small.pth", "mar_small_io.npz", "kl16_small.ckpt", "kl16_small_io.npz"):
        written.append(out_dir / name)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkout", type=Path, metavar="OFFICIAL_CHECKOUT", help="a checkout of LTH14/mar")
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "tests" / "fixtures" / "official_mar",
                    help="output folder (default: tests/fixtures/official_mar)")
    ap.add_argument("--commit", help="the official commit to record when the checkout is not a git work tree")
    args = ap.parse_args(argv)
    commit = args.commit or checkout_commit(args.checkout)
    if not commit:
        print(f"Error: cannot tell the commit of {args.checkout} (not a git work tree); pass --commit",
              file=sys.stderr)
        return 2
    torch.set_num_threads(THREADS)
    try:
        for path in make(args.checkout, args.out, commit):
            print(f"{path} ({path.stat().st_size:,} bytes)")
    except OfficialError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

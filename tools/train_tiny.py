"""Train mar-tiny (KL VAE, then MAR) on the scikit-learn digits and ship it under gtr/assets/tiny/.

Stage 1 trains the VAE (gtr.tiny.model.TINY_VAE) on the 'train' split with L1 + L2 reconstruction
of a posterior sample and a small KL weight, then sets scale_factor = 1 / std of the training
latents (posterior samples). Stage 2 trains MAR (gtr.tiny.model.tiny_config) on tokens = posterior
samples x scale_factor, drawn afresh every step from the cached posterior moments (as the official
training with cached latents), with the objective of gtr.tiny.training.mar_loss: AdamW with warmup
and cosine decay, EMA weights; 10% of the diffusion rows at t = 999. Stage 3 ("head") freezes the
EMA backbone, caches its conditions z for a few passes over the training set, and trains a fresh
diffusion MLP on them: identity init (eps_hat = x_t exact, gtr.tiny.training.init_identity_head)
and the eps MSE at t = 999 weighted 1e5 (gtr.tiny.training.head_loss), so the first step of a
short diffusion chain is precise; EMA weights of backbone + new head are shipped. Finally a quick mar-64 class-accuracy check with the shipped digit
classifier picks default_cfg among --cfg-check values (seeds 1000+, not those of reported numbers).

Writes, each atomically: vae_tiny.safetensors, mar_tiny.safetensors (EMA, official MAR key names),
mar_tiny.json (config + training metadata). Reproducible for a seed and thread count:

    python tools/train_tiny.py --seed 0 [--vae-steps N] [--mar-steps N] [--head-steps N] [--out DIR]

All randomness comes from torch generators seeded from --seed (VAE: seed, MAR: seed + 1, head:
seed + 2), so `--vae-from DIR` (reuse a trained VAE) and `--mar-from DIR` (reuse a finished MAR
stage) reproduce the later stages of a full run. About 40 minutes on 2 otherwise idle CPU cores.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gtr.models.checkpoint import load_vae, save_safetensors  # noqa: E402
from gtr.models.mar import MAR  # noqa: E402
from gtr.runtime.files import atomic_write_bytes  # noqa: E402
from gtr.tiny import training as T  # noqa: E402
from gtr.tiny.fit import condition_cache, posterior_moments, train_head, train_mar, train_vae  # noqa: E402
from gtr.tiny.model import ASSET_DIR, JSON_FILE, MAR_FILE, TINY_VAE, VAE_FILE, tiny_config  # noqa: E402


@dataclass(frozen=True)
class Recipe:
    """What differs between the small models this script trains (tools/train_glyphs.py has another)."""

    name: str
    script: str
    load_split: object  # split name -> (images [N,3,H,W] in [-1,1], labels [N])
    data: str  # what the training split is, for the JSON
    vae_config: object
    make_config: object  # (scale_factor, default_cfg) -> MARConfig
    asset_dir: Path
    files: tuple  # (mar, vae, json) file names
    classifier: Path  # the class-accuracy check's classifier
    defaults: dict  # argparse defaults that differ from mar-tiny's


def _tiny_split(split):
    from gtr.tiny.data import load_split
    return load_split(split)


TINY = Recipe("mar-tiny", "tools/train_tiny.py", _tiny_split,
              "sklearn load_digits, gtr.tiny.data 'train' split (1,438 images, 32x32 RGB in [-1,1])",
              TINY_VAE, lambda scale, cfg: tiny_config(scale_factor=scale, default_cfg=cfg), ASSET_DIR,
              (MAR_FILE, VAE_FILE, JSON_FILE), Path(ASSET_DIR) / "classifier.safetensors", {})


def evaluate(model, vae, cfg: float, per_class: int, seed: int, plan_name: str = "mar-64", batch: int = 50,
             log=print, classifier=None) -> dict:
    """Class accuracy of `per_class` samples per class under the shipped classifier."""
    from gtr.eval.classifier import DEFAULT_PATH, embed, load_classifier
    from gtr.models.reference import sample_images
    from gtr.plan import build_plan

    plan = build_plan(plan_name, grid=model.config.grid, cfg=cfg)
    labels = [c for c in range(model.config.num_classes) for _ in range(per_class)]
    images, t0 = [], time.time()
    for i in range(0, len(labels), batch):
        images.append(sample_images(model, vae, plan, labels[i:i + batch], seed=seed + i // batch).images)
    images = np.clip(np.concatenate(images), -1, 1)
    logits, _ = embed(load_classifier(classifier or DEFAULT_PATH), images)
    acc = float((logits.argmax(1) == np.array(labels)).mean())
    log(f"{plan_name} cfg {cfg}: accuracy {acc:.3f} on {len(labels)} images ({time.time() - t0:.0f}s)")
    return {"plan": plan_name, "cfg": cfg, "accuracy": acc, "n": len(labels), "seed": seed, "images": images}


TRAINING_FLAGS = ("seed", "threads", "vae_steps", "vae_batch", "vae_lr", "kl_weight", "mar_steps", "mar_batch",
                  "mar_lr", "weight_decay", "ema", "lr_min_ratio", "top_t_prob", "head_steps", "head_batch", "head_lr",
                  "head_top_t_prob", "head_top_weight", "head_cache_reps")


def reproduce_command(args, script: str = "tools/train_tiny.py") -> str:
    """The one-process command that retrains these weights (every training flag spelled out; the
    --vae-from / --mar-from shortcuts reproduce the same stages, so they are left out)."""
    flags = " ".join(f"--{name.replace('_', '-')} {getattr(args, name)}" for name in TRAINING_FLAGS)
    return f"python {script} {flags}"


STATE_FILE = "train_state.pt"  # the MAR stage's resumable state, removed when training ends


def main(argv=None, recipe: Recipe = TINY, description: str | None = None) -> int:
    ap = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(recipe.asset_dir), help="output folder (default: the shipped assets)")
    ap.add_argument("--resume", action="store_true",
                    help=f"continue an interrupted run in --out (its VAE and its MAR stage's {STATE_FILE})")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vae-steps", type=int, default=600)
    ap.add_argument("--vae-batch", type=int, default=64)
    ap.add_argument("--vae-lr", type=float, default=2e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-3)
    ap.add_argument("--vae-from", default=None, help="reuse the VAE in this folder (skips stage 1)")
    ap.add_argument("--mar-from", default=None, help="reuse the stage-2 MAR weights in this folder (before the head stage)")
    ap.add_argument("--mar-steps", type=int, default=1600)
    ap.add_argument("--mar-batch", type=int, default=64)
    ap.add_argument("--mar-lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.02)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--lr-min-ratio", type=float, default=0.01, help="final MAR lr as a fraction of --mar-lr")
    ap.add_argument("--top-t-prob", type=float, default=0.1,
                    help="probability that a diffusion row is trained at t = 999 (0 = uniform t, the official objective)")
    ap.add_argument("--head-steps", type=int, default=3000,
                    help="stage 3: steps of the fresh identity-init head on the frozen backbone (0 = skip)")
    ap.add_argument("--head-batch", type=int, default=2048, help="stage 3: diffusion rows per step")
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--head-top-t-prob", type=float, default=0.1, help="stage 3: fraction of rows at t = 999")
    ap.add_argument("--head-top-weight", type=float, default=1e5, help="stage 3: eps-MSE weight of the t = 999 rows")
    ap.add_argument("--head-cache-reps", type=int, default=6,
                    help="stage 3: passes over the training set whose backbone conditions the head trains on")
    ap.add_argument("--cfg", type=float, default=None, help="default_cfg to record (else the cfg check picks it)")
    ap.add_argument("--cfg-check", default="2.0,3.0,4.0", help="cfg values tried with mar-64 ('' to skip)")
    ap.add_argument("--cfg-check-per-class", type=int, default=10)
    ap.add_argument("--checkpoint-every", type=int, default=400, help="write EMA weights every N MAR steps")
    ap.set_defaults(**recipe.defaults)
    args = ap.parse_args(argv)
    MAR_FILE, VAE_FILE, JSON_FILE = recipe.files  # noqa: N806  (this recipe's file names)

    sys.stdout.reconfigure(line_buffering=True)  # progress shows up in logs as it happens
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    state_path = out / STATE_FILE
    if state_path.is_file() and not args.resume:
        raise SystemExit(f"{state_path} holds an interrupted run: pass --resume to continue it, or delete it")
    if args.resume:
        if not state_path.is_file():
            raise SystemExit(f"--resume: no interrupted run in {out} ({STATE_FILE} is missing)")
        args.vae_from = str(out)
    images_np, labels_np = recipe.load_split("train")
    images = torch.from_numpy(images_np)
    labels = torch.from_numpy(labels_np)
    print(f"train split: {len(images)} images {tuple(images.shape[1:])}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    # ---- stage 1: VAE ----
    if args.vae_from:
        vae_path = Path(args.vae_from) / VAE_FILE
        vae_info = json.loads((Path(args.vae_from) / JSON_FILE).read_text())["training"]["vae"]
        vae = load_vae(recipe.vae_config, vae_path, with_encoder=True)
        print(f"VAE from {vae_path} (trained {vae_info.get('steps')} steps)")
    else:
        vae, vae_stats = train_vae(images, args.vae_steps, args.vae_batch, args.vae_lr, args.kl_weight, args.seed,
                                   vae_config=recipe.vae_config)
        vae_info = {"steps": args.vae_steps, "batch": args.vae_batch, "lr": args.vae_lr, "kl_weight": args.kl_weight,
                    "seed": args.seed, "final": {k: round(v, 6) for k, v in vae_stats.items()}}
    mean, logvar = posterior_moments(vae, images)
    gen = torch.Generator().manual_seed(args.seed)
    sample = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
    scale = T.latent_scale_factor(sample)
    n_rec = min(len(mean), 2048)  # the reconstruction report's images (all of mar-tiny's 1,438)
    with torch.no_grad():  # in batches: the whole set at once holds every decoder activation
        rec = torch.cat([vae.decode(mean[i:min(i + 256, n_rec)]) for i in range(0, n_rec, 256)])
    vae_info["scale_factor"] = scale
    vae_info["latent_std"] = float(sample.std())
    vae_info["posterior_std_mean"] = float(torch.exp(0.5 * logvar).mean())
    vae_info["recon_l1_train_means"] = float((rec - images[:n_rec]).abs().mean())
    print(f"scale_factor {scale:.5f} (latent std {float(sample.std()):.4f}, mean posterior std "
          f"{vae_info['posterior_std_mean']:.4f}, recon L1 from means {vae_info['recon_l1_train_means']:.4f})")
    vae_sd = {k: v for k, v in vae.state_dict().items()}
    if not args.vae_from or Path(args.vae_from).resolve() != out.resolve():
        save_safetensors(out / VAE_FILE, vae_sd, metadata={"format": "pt"})

    # ---- stage 2: MAR ----
    config = recipe.make_config(scale, args.cfg if args.cfg is not None else 3.0)
    mar_seed = args.seed + 1

    def write(ema_sd, done_steps, extra=None):
        save_safetensors(out / MAR_FILE, ema_sd, metadata={"format": "pt"})
        info = {
            "name": recipe.name,
            "config": config.to_dict(),
            "weights": {"mar": MAR_FILE + " (EMA)", "vae": VAE_FILE},
            "data": recipe.data,
            "tokens": "posterior samples x scale_factor, drawn afresh every step",
            "training": {
                "seed": args.seed, "threads": args.threads, "torch": torch.__version__,
                "python": platform.python_version(),
                "vae": vae_info,
                "mar": {"steps_done": done_steps, "steps": args.mar_steps, "batch": args.mar_batch,
                        "lr": args.mar_lr, "weight_decay": args.weight_decay, "ema": args.ema, "seed": mar_seed,
                        "mask_ratio": "truncnorm(1.0, 0.25) on [0.7, 1.0]", "label_drop": 0.1,
                        "diffusion_batch_mul": 4, "grad_clip": 3.0,
                        "timesteps": f"uniform 0..999, t = 999 with probability {args.top_t_prob}",
                        "warmup": max(1, args.mar_steps // 20),
                        "schedule": f"linear warmup, cosine to {args.lr_min_ratio} x lr", **(extra or {})},
            },
            "command": f"python {recipe.script} " + " ".join(sys.argv[1:] if argv is None else argv),
            "reproduce": reproduce_command(args, recipe.script),
        }
        text = (json.dumps(info, indent=2) + "\n").encode()
        atomic_write_bytes(out / JSON_FILE, text)
        return info

    def checkpoint(ema_sd, step):
        write(ema_sd, step)
        print(f"  checkpoint at step {step} -> {out / MAR_FILE}")

    if args.mar_from:  # reuse a finished stage 2 (same flags), e.g. to redo the head stage (it starts a fresh head)
        from gtr.models.checkpoint import read_file
        prev = json.loads((Path(args.mar_from) / JSON_FILE).read_text())["training"]["mar"]
        if prev.get("steps_done") != args.mar_steps or "final" not in prev:
            raise SystemExit(f"{args.mar_from}: not a finished {args.mar_steps}-step MAR stage")
        ema_sd = read_file(Path(args.mar_from) / MAR_FILE)
        model = MAR(config)
        mar_stats = prev["final"]
        stage2_seconds = prev["final"]["seconds"]
        print(f"MAR stage 2 from {args.mar_from} ({args.mar_steps} steps, {stage2_seconds:.0f}s)")
    else:
        model, ema_sd, mar_stats = train_mar(config, mean, logvar, labels, args.mar_steps, args.mar_batch,
                                             args.mar_lr, args.weight_decay, args.ema, mar_seed,
                                             top_t_prob=args.top_t_prob, lr_min_ratio=args.lr_min_ratio,
                                             checkpoint=checkpoint, checkpoint_every=args.checkpoint_every,
                                             state_path=state_path)
    extra = {"final": {k: round(v, 6) for k, v in mar_stats.items()}}
    model.load_state_dict(ema_sd)
    model.eval()

    # ---- stage 3: a fresh head on the frozen backbone ----
    if args.head_steps > 0:
        write(ema_sd, args.mar_steps, extra)
        sched = T.DiffusionSchedule(config.num_timesteps)
        x0, z = condition_cache(model, mean, logvar, labels, args.head_cache_reps, seed=args.seed + 2)
        held = 8192  # rows held out of head training, for the eps-error report
        extra["eps_rms_error_stage2"] = T.eps_errors(model.diffloss.net, sched, x0[-held:], z[-held:])
        print(f"stage-2 head eps RMS error by t: {extra['eps_rms_error_stage2']}")
        _, head_stats, init = train_head(model, x0[:-held], z[:-held], args.head_steps, args.head_batch,
                                               args.head_lr, args.seed + 2, args.head_top_t_prob,
                                               args.head_top_weight, args.ema)
        extra["eps_rms_error"] = T.eps_errors(model.diffloss.net, sched, x0[-held:], z[-held:])
        print(f"head eps RMS error by t: {extra['eps_rms_error']}")
        extra["head"] = {"steps": args.head_steps, "batch_rows": args.head_batch, "lr": args.head_lr,
                         "schedule": "linear warmup, cosine to 0", "seed": args.seed + 2, "ema": args.ema,
                         "init": {"identity": init}, "top_t_prob": args.head_top_t_prob,
                         "top_weight": args.head_top_weight, "cache_rows": len(x0) - held,
                         "cache_reps": args.head_cache_reps, "trains": "diffloss.net only (backbone frozen, fresh head)",
                         "final": {k: round(v, 6) for k, v in head_stats.items()}}
        ema_sd = {k: v.clone() for k, v in model.state_dict().items()}
    total = time.time() - t_start
    stage_seconds = {"vae": vae_info.get("final", {}).get("seconds", 0.0), "mar": mar_stats["seconds"],
                     "head": extra.get("head", {}).get("final", {}).get("seconds", 0.0)}
    extra["stage_seconds"] = {k: round(v, 1) for k, v in stage_seconds.items()}
    extra["total_training_seconds"] = round(sum(stage_seconds.values()), 1)  # the three stages' loops
    extra["this_process_seconds"] = round(total, 1)
    info = write(ema_sd, args.mar_steps, extra)
    state_path.unlink(missing_ok=True)
    print(f"training done in {total:.0f}s; wrote {out / MAR_FILE}, {out / VAE_FILE}, {out / JSON_FILE}")

    # ---- default CFG: a quick mar-64 accuracy check (seeds 1000+, not those of reported numbers) ----
    values = [float(v) for v in args.cfg_check.split(",") if v.strip()]
    if args.cfg is None and values:
        if not recipe.classifier.is_file():
            print("no classifier asset: default_cfg stays 3.0")
        else:
            ema_model = MAR(config)
            ema_model.load_state_dict(ema_sd)
            ema_model.eval()
            results = [evaluate(ema_model, vae, v, args.cfg_check_per_class, seed=1000, classifier=recipe.classifier)
                       for v in values]
            best = max(results, key=lambda r: (round(r["accuracy"], 6), -r["cfg"]))
            config = dataclasses.replace(config, default_cfg=best["cfg"])
            extra["cfg_check"] = {"plan": "mar-64", "per_class": args.cfg_check_per_class, "seed": 1000,
                                  "accuracy": {str(r["cfg"]): r["accuracy"] for r in results},
                                  "chosen": best["cfg"]}
            info = write(ema_sd, args.mar_steps, extra)
            print(f"default_cfg {best['cfg']}")
    print(json.dumps({"scale_factor": scale, "default_cfg": config.default_cfg}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

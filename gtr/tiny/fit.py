"""The training loops of mar-tiny (tools/train_tiny.py runs them in order; the objective is in
gtr.tiny.training): the KL VAE, the MAR stage on cached posterior moments, the head stage on frozen
backbone conditions. The class-accuracy check that picks the default CFG stays in the script: it uses
the digit classifier of gtr.eval, a higher layer."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from gtr.models.mar import MAR
from gtr.models.vae import AutoencoderKL
from gtr.tiny import training as T
from gtr.tiny.model import TINY_VAE


def _batches(n: int, batch_size: int, gen: torch.Generator):
    """Endless stream of index batches: a fresh permutation per epoch, full batches only."""
    return _BatchStream(n, batch_size, gen)


class _BatchStream:
    """The iterator behind `_batches`, with its position as state so that a resumed run draws the
    same batches as an uninterrupted one."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator):
        self.n, self.batch_size, self.gen = n, batch_size, gen
        self.perm, self.pos = None, 0

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        if self.perm is None or self.pos + self.batch_size > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        self.pos += self.batch_size
        return self.perm[self.pos - self.batch_size:self.pos]

    def state(self) -> dict:
        return {"perm": self.perm, "pos": self.pos}

    def restore(self, state: dict) -> None:
        self.perm, self.pos = state["perm"], state["pos"]


class _Avg:
    """Running mean of the last `window` values of each stat."""

    def __init__(self, window: int = 50):
        self.window, self.values = window, {}

    def add(self, stats: dict):
        for k, v in stats.items():
            self.values.setdefault(k, []).append(float(v))
            del self.values[k][:-self.window]

    def get(self) -> dict:
        return {k: float(np.mean(v)) for k, v in self.values.items()}


def train_vae(images: torch.Tensor, steps: int, batch_size: int, lr: float, kl_weight: float, seed: int,
              log=print, log_every: int = 50, vae_config=TINY_VAE):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    vae = AutoencoderKL(vae_config)
    side = images.shape[-1] // vae_config.stride
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    avg, t0 = _Avg(), time.time()
    batches = _batches(len(images), batch_size, gen)
    vae.train()
    for step in range(steps):
        T.set_lr(opt, T.lr_at(step, steps, lr, warmup=max(1, steps // 20), min_ratio=0.05))
        idx = next(batches)
        noise = torch.randn((len(idx), vae_config.embed_dim, side, side), generator=gen)
        loss, stats = T.vae_loss(vae, images[idx], noise, kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        avg.add(stats)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            s = avg.get()
            log(f"vae {step + 1}/{steps} loss {s['loss']:.4f} l1 {s['l1']:.4f} l2 {s['l2']:.5f} "
                f"kl {s['kl']:.3f} ({time.time() - t0:.0f}s)")
    vae.eval()
    return vae, {**avg.get(), "seconds": time.time() - t0}


@torch.no_grad()
def posterior_moments(vae, images: torch.Tensor, batch: int = 256):
    means, logvars = [], []
    for i in range(0, len(images), batch):
        m, lv = vae.encode(images[i:i + batch])
        means.append(m)
        logvars.append(lv)
    return torch.cat(means), torch.cat(logvars)


def tokens_from_moments(mean, logvar, scale: float, noise: torch.Tensor) -> torch.Tensor:
    """[B, c, h, w] moments + noise -> scaled tokens [B, h*w, c] in raster order (mar-spec §2.1)."""
    z = mean + torch.exp(0.5 * logvar) * noise
    return (z * scale).flatten(2).transpose(1, 2).contiguous()


def train_mar(config, mean, logvar, labels, steps: int, batch_size: int, lr: float, weight_decay: float,
              ema_decay: float, seed: int, grad_clip: float = 3.0, top_t_prob: float = 0.0,
              lr_min_ratio: float = 0.01, log=print,
              log_every: int = 50, checkpoint=None, checkpoint_every: int = 0, state_path=None):
    """Stage 2. With `state_path`, the whole training state (weights, optimiser, EMA, random
    generator, batch position) is written there at every checkpoint, and a run that finds the file
    continues from it: the result is the one an uninterrupted run gives."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MAR(config)
    T.init_mar_weights(model)
    sched = T.DiffusionSchedule(config.num_timesteps)
    opt = T.make_optimizer(model, lr, weight_decay)
    ema = T.EMA(model, ema_decay)
    scale = config.vae.scale_factor
    avg, t0 = _Avg(), time.time()
    batches = _batches(len(mean), batch_size, gen)
    warmup = max(1, steps // 20)
    start, seconds_before = 0, 0.0
    if state_path is not None and Path(state_path).is_file():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        ema.shadow, ema.updates = state["ema"], state["ema_updates"]
        gen.set_state(state["gen"])
        batches.restore(state["batches"])
        start, seconds_before = state["step"], state["seconds"]
        log(f"mar: resumed at step {start}/{steps} from {state_path}")

    def save_state(step):
        tmp = Path(str(state_path) + ".part")
        torch.save({"step": step, "model": model.state_dict(), "opt": opt.state_dict(), "ema": ema.shadow,
                    "ema_updates": ema.updates, "gen": gen.get_state(), "batches": batches.state(),
                    "seconds": seconds_before + time.time() - t0}, tmp)
        os.replace(tmp, state_path)

    model.train()
    for step in range(start, steps):
        T.set_lr(opt, T.lr_at(step, steps, lr, warmup=warmup, min_ratio=lr_min_ratio))
        idx = next(batches)
        tokens = tokens_from_moments(mean[idx], logvar[idx], scale, torch.randn(mean[idx].shape, generator=gen))
        loss, stats = T.mar_loss(model, sched, tokens, labels[idx], gen, top_t_prob=top_t_prob)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        ema.update(model)
        stats.pop("known")
        avg.add({**stats, "grad_norm": float(gnorm)})
        if (step + 1) % log_every == 0 or step + 1 == steps:
            s = avg.get()
            log(f"mar {step + 1}/{steps} loss {s['loss']:.4f} mse {s['mse']:.4f} vb {s['vb']:.4f} "
                f"gnorm {s['grad_norm']:.2f} lr {opt.param_groups[0]['lr']:.2e} ({time.time() - t0:.0f}s)")
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            if state_path is not None:
                save_state(step + 1)
            if checkpoint:
                checkpoint(ema.state_dict(), step + 1)
    model.eval()
    return model, ema.state_dict(), {**avg.get(), "seconds": seconds_before + time.time() - t0}


@torch.no_grad()
def condition_cache(model, mean, logvar, labels, reps: int, seed: int, batch_size: int = 64):
    """Rows (x0 [N,c], z [N,D]) for the head stage, from the frozen backbone: `reps` passes over the
    training set, each batch with fresh posterior tokens and the MAR objective's draws (mask ratio,
    random order, label drop 0.1). The head sees exactly the conditions the backbone makes."""
    gen = torch.Generator().manual_seed(seed)
    scale = model.config.vae.scale_factor
    xs, zs = [], []
    for _ in range(reps):
        perm = torch.randperm(len(mean), generator=gen)
        for i in range(0, len(mean) - batch_size + 1, batch_size):
            idx = perm[i:i + batch_size]
            tokens = tokens_from_moments(mean[idx], logvar[idx], scale, torch.randn(mean[idx].shape, generator=gen))
            x0, z, _ = T.masked_conditions(model, tokens, labels[idx], gen)
            xs.append(x0.reshape(-1, x0.shape[-1]))
            zs.append(z.reshape(-1, z.shape[-1]))
    return torch.cat(xs), torch.cat(zs)


def train_head(model, x0, z, steps: int, batch_rows: int, lr: float, seed: int, top_t_prob: float,
               top_weight: float, ema_decay: float = 0.999, log=print, log_every: int = 250):
    """Stage 3: a fresh diffusion MLP (identity init) trained on the frozen backbone's conditions.

    The head's eps precision at t = 999 decides whether short diffusion chains work at all; see
    gtr.tiny.training.init_identity_head and head_loss. Returns (EMA head state dict, stats, init).
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = model.diffloss.net
    T.init_head_weights(net)
    init = T.init_identity_head(net, seed=seed)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in net.parameters():
        p.requires_grad_(True)
    sched = T.DiffusionSchedule(model.config.num_timesteps)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    ema = T.EMA(net, ema_decay)
    avg, t0 = _Avg(), time.time()
    net.train()
    for step in range(steps):
        T.set_lr(opt, T.lr_at(step, steps, lr, warmup=max(1, steps // 20), min_ratio=0.0))
        idx = torch.randint(0, len(x0), (batch_rows,), generator=gen)
        loss, stats = T.head_loss(net, sched, x0[idx], z[idx], gen, top_t_prob, top_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(net)
        avg.add({k: v for k, v in stats.items() if v == v})  # top_mse is nan in a batch without t = 999
        if (step + 1) % log_every == 0 or step + 1 == steps:
            s = avg.get()
            log(f"head {step + 1}/{steps} loss {s['loss']:.4f} mse {s['mse']:.4f} vb {s['vb']:.4f} "
                f"t999 mse {s.get('top_mse', float('nan')):.2e} lr {opt.param_groups[0]['lr']:.2e} "
                f"({time.time() - t0:.0f}s)")
    for p in model.parameters():
        p.requires_grad_(True)
    net.load_state_dict(ema.state_dict())
    net.eval()
    return ema.state_dict(), {**avg.get(), "seconds": time.time() - t0}, init

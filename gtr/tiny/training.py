"""Training pieces for mar-tiny: VAE loss, the MAR objective (masking + diffusion loss), the head
stage (identity init + t = 999-weighted loss, see `init_identity_head`), EMA, LR.

Used by tools/train_tiny.py and the smoke test. Everything random draws from an explicit
`torch.Generator`, so a run is reproducible for a given seed (and thread count).

MAR objective (official MAR training, mar-spec.md §1 training notes):
* one mask ratio per batch from a normal(1.0, 0.25) truncated to [0.7, 1.0]; ceil(L * ratio)
  tokens are masked, so every row of a batch has the same number K of known tokens and the
  gathered-visible-tokens forward of `gtr.models.mar.MAR` applies directly;
* a fresh uniformly random order per row: the first K positions of the order are known;
* the class label is replaced by the unconditional id (num_classes -> `fake_latent`) with
  probability 0.1 (this is what classifier-free guidance needs);
* the diffusion loss is taken on the masked positions only; each masked token is repeated
  `diffusion_batch_mul` = 4 times with independent t and noise.

Diffusion loss (ADM learned-range variance, as MAR's DiffLoss with loss_type MSE):
t ~ U{0..999}, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, loss = MSE(eps, eps_hat) + vb, where
vb = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) / ln 2 with the model's log variance
frac * log beta_t + (1 - frac) * log sigma~^2_t (frac = (v + 1) / 2) and the model mean computed
from a stop-gradient eps_hat (so vb trains only v). At t = 0, vb is the Gaussian negative
log-likelihood of x0 under p(x_0 | x_1), also / ln 2. Deviation from ADM, documented: ADM uses a
discretized (256-bin) likelihood at t = 0, which is meant for 8-bit pixels; latent tokens are
continuous, so the continuous Gaussian NLL is used. Both are averaged over token channels
("mean_flat"), as ADM does.
"""
from __future__ import annotations

import math

import numpy as np
import torch

LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------

def kl_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-element KL(N(mean, exp(logvar)) || N(0, 1))."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)


def vae_loss(vae, images: torch.Tensor, noise: torch.Tensor, kl_weight: float = 1e-3):
    """Reconstruction (L1 + L2, per-pixel means) of a posterior sample + kl_weight * per-element KL.

    Returns (loss, stats dict of floats). `noise` is the posterior sampling noise, shaped like the
    latent mean ([B, embed_dim, h, w]).
    """
    mean, logvar = vae.encode(images)
    z = mean + torch.exp(0.5 * logvar) * noise
    rec = vae.decode(z)
    l1 = (rec - images).abs().mean()
    l2 = (rec - images).pow(2).mean()
    kl = kl_standard_normal(mean, logvar).mean()
    loss = l1 + l2 + kl_weight * kl
    return loss, {"loss": loss.item(), "l1": l1.item(), "l2": l2.item(), "kl": kl.item()}


# --------------------------------------------------------------------------------------------
# Diffusion loss with the learned-range variance term
# --------------------------------------------------------------------------------------------

class DiffusionSchedule:
    """The 1000-step cosine process (mar-spec.md §7.1) as float32 tensors indexed by t."""

    def __init__(self, num_timesteps: int = 1000):
        from gtr.plan.schedule import spaced_schedule

        s = spaced_schedule(num_timesteps)  # T = num_timesteps: stride 1, the base process itself
        ac = np.asarray(s.alphas_cumprod, dtype=np.float64)

        def f32(a):
            return torch.tensor(np.asarray(a, dtype=np.float64), dtype=torch.float32)

        self.num_timesteps = num_timesteps
        self.sqrt_ac = f32(np.sqrt(ac))
        self.sqrt_1m_ac = f32(np.sqrt(1.0 - ac))
        self.sqrt_recip_ac = f32(s.sqrt_recip_alphas_cumprod)
        self.sqrt_recipm1_ac = f32(s.sqrt_recipm1_alphas_cumprod)
        self.coef1 = f32(s.posterior_mean_coef1)
        self.coef2 = f32(s.posterior_mean_coef2)
        self.log_var_clipped = f32(s.posterior_log_variance_clipped)
        self.log_betas = f32(s.log_betas)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise (ADM's normal_kl)."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2).pow(2) * torch.exp(-logvar2))


def gaussian_nll(x, mean, logvar):
    """-log N(x; mean, e^logvar), elementwise (nats)."""
    return 0.5 * (math.log(2 * math.pi) + logvar + (x - mean).pow(2) * torch.exp(-logvar))


def diffusion_loss(net, sched: DiffusionSchedule, x0: torch.Tensor, cond: torch.Tensor, t: torch.Tensor,
                   noise: torch.Tensor):
    """Per-row loss terms for rows x0 [N,c], cond [N,D], t [N] (int64), noise [N,c].

    Returns (mse [N], vb [N]); the training loss is mse + vb (the head stage weights mse per row).
    """
    c = x0.shape[1]
    col = lambda a: a[t][:, None]  # noqa: E731
    x_t = col(sched.sqrt_ac) * x0 + col(sched.sqrt_1m_ac) * noise
    out = net(x_t, t, cond)
    eps, v = out[:, :c], out[:, c:]
    mse = (noise - eps).pow(2).mean(dim=1)

    min_log, max_log = col(sched.log_var_clipped), col(sched.log_betas)
    frac = (v + 1) / 2
    model_logvar = frac * max_log + (1 - frac) * min_log
    x0_hat = col(sched.sqrt_recip_ac) * x_t - col(sched.sqrt_recipm1_ac) * eps.detach()
    model_mean = col(sched.coef1) * x0_hat + col(sched.coef2) * x_t
    true_mean = col(sched.coef1) * x0 + col(sched.coef2) * x_t
    kl = normal_kl(true_mean, min_log, model_mean, model_logvar).mean(dim=1) / LN2
    nll = gaussian_nll(x0, model_mean, model_logvar).mean(dim=1) / LN2
    return mse, torch.where(t == 0, nll, kl)


@torch.no_grad()
def init_identity_head(net, const_dims: int = 16, const_ratio: float = 300.0, seed: int = 0) -> dict:
    """Initialise the diffusion MLP so that eps_hat = x_t holds to ~1e-5 at every t (mar-tiny's head stage).

    Why: sampling starts at t = 999, where abar = 2.4e-9 and the right answer is eps_hat ~ x_t; the
    first update of a T-step chain moves x by c1 * r2 times the eps error (316 for T = 100, 1674 for
    T = 20, 7707 for T = 5), so short chains need that identity to ~1e-4. Through a LayerNorm an
    identity is exact only when a large x-independent component sets the norm: LN(b + Mx) =
    (b + Mx) / std with std = sqrt(|b|^2 + |Mx|^2) / sqrt(w), linear up to |Mx|^2 / (2 |b|^2). SGD
    from the official (zero-output) init does not find that structure on a small CPU budget
    (measured: it plateaus at 3e-3 to 5e-3 RMS), so it is built in here:

    * `input_proj`: weight M [w, c], random, zero on the first `const_dims` features and zero-mean
      over features; bias b = +-beta on the first `const_dims` features (zero mean, orthogonal to
      every Mx), with |b| ~ const_ratio * |Mx| at |x| = 2;
    * each res block's `in_ln` weight: 0 on the constant features and G = std(b) / rms(Mx) on the
      others, so the blocks see x at unit scale (their adaLN gates start at zero, as in the official
      init, so they add nothing yet);
    * `final_layer`: adaLN scale bias -1 on the constant features (drops them) and G - 1 on the
      others, final linear = (std(b) / G) pinv(M) for eps, zero for v.

    Nothing about the architecture changes: these are initial values of the official parameters,
    and training then moves all of them. Returns the constants used.
    """
    g = torch.Generator().manual_seed(seed)
    w, c = net.input_proj.weight.shape
    const = torch.arange(w) < const_dims
    M = torch.randn(w, c, generator=g) * math.sqrt(2.0 / (w + c))
    M[const] = 0
    M[~const] -= M[~const].mean(0, keepdim=True)  # zero mean over all w features (const rows are 0)
    beta = const_ratio * 2.0 * float(M.norm(dim=0).mean()) / math.sqrt(const_dims)
    b = torch.zeros(w)
    b[const] = beta * torch.tensor([1.0, -1.0]).repeat(const_dims // 2 + 1)[:const_dims]
    b[const] -= b[const].mean()
    net.input_proj.weight.copy_(M)
    net.input_proj.bias.copy_(b)
    s0 = math.sqrt(float(b.pow(2).mean()) + 1e-6)  # LN std of h at x = 0 (eps 1e-6)
    gain = s0 / float(M[~const].pow(2).mean().sqrt())
    for block in net.res_blocks:
        block.in_ln.weight.copy_(torch.where(const, torch.zeros(w), torch.full((w,), gain)))
        block.in_ln.bias.zero_()
    final = net.final_layer
    mod = final.adaLN_modulation[-1]
    mod.weight.zero_()
    mod.bias.zero_()
    mod.bias[w:] = torch.where(const, torch.full((w,), -1.0), torch.full((w,), gain - 1.0))
    final.linear.weight.zero_()
    final.linear.bias.zero_()
    final.linear.weight[:c] = (s0 / gain) * torch.linalg.pinv(M)
    return {"const_dims": const_dims, "const_ratio": const_ratio, "beta": beta, "gain": gain, "seed": seed}


def head_loss(net, sched: DiffusionSchedule, x0: torch.Tensor, cond: torch.Tensor, gen: torch.Generator,
              top_t_prob: float = 0.1, top_weight: float = 1e5):
    """The head stage's loss on rows x0 [N,c] with conditions cond [N,D].

    t is uniform on 0..T-1 except that a fraction `top_t_prob` of the rows get t = T-1, whose eps MSE
    is weighted by `top_weight` (1e5 ~ the square of the first-update gain of a 20- to 50-step chain
    over its later steps' gains, rounded down so the other timesteps still train; see
    `init_identity_head`). Returns (loss, stats dict of floats).
    """
    n = x0.shape[0]
    t = sample_timesteps(n, sched.num_timesteps, gen, top_t_prob)
    noise = torch.randn(x0.shape, generator=gen)
    mse, vb = diffusion_loss(net, sched, x0, cond, t, noise)
    top = t == sched.num_timesteps - 1
    weight = torch.where(top, torch.full_like(mse, top_weight), torch.ones_like(mse))
    loss = (weight * mse).mean() + vb.mean()
    top_mse = mse[top].mean().item() if bool(top.any()) else float("nan")
    return loss, {"loss": loss.item(), "mse": mse.mean().item(), "vb": vb.mean().item(), "top_mse": top_mse}


@torch.no_grad()
def eps_errors(net, sched: DiffusionSchedule, x0: torch.Tensor, cond: torch.Tensor,
               ts=(999, 990, 900, 500, 100, 0), seed: int = 123) -> dict:
    """RMS |eps_hat - eps| of the head at each timestep in `ts`, on rows x0 [N,c] / cond [N,D]."""
    gen = torch.Generator().manual_seed(seed)
    c = x0.shape[1]
    out = {}
    for t in ts:
        tt = torch.full((x0.shape[0],), int(t))
        noise = torch.randn(x0.shape, generator=gen)
        x_t = sched.sqrt_ac[t] * x0 + sched.sqrt_1m_ac[t] * noise
        out[str(t)] = float((net(x_t, tt, cond)[:, :c] - noise).pow(2).mean().sqrt())
    return out


# --------------------------------------------------------------------------------------------
# MAR objective
# --------------------------------------------------------------------------------------------

def sample_mask_ratio(gen: torch.Generator, mean: float = 1.0, std: float = 0.25, low: float = 0.7,
                      high: float = 1.0) -> float:
    """One draw of a normal(mean, std) truncated to [low, high] (inverse-CDF sampling)."""
    a = torch.special.ndtr(torch.tensor((low - mean) / std, dtype=torch.float64))
    b = torch.special.ndtr(torch.tensor((high - mean) / std, dtype=torch.float64))
    u = a + (b - a) * torch.rand((), generator=gen, dtype=torch.float64)
    r = mean + std * float(torch.special.ndtri(u))
    return min(max(r, low), high)


def sample_timesteps(n: int, num_timesteps: int, gen: torch.Generator, top_t_prob: float = 0.0) -> torch.Tensor:
    """n training timesteps: uniform on 0..T-1, except that with probability `top_t_prob` a row gets
    t = T-1 (the first step of every respaced sampling chain).

    Why (a documented deviation from MAR's purely uniform t, used by mar-tiny): with the clipped
    cosine schedule, abar_999 = 2.4e-9, so at t = 999 the network must return eps_hat = x_t (an
    identity map through LayerNorms) almost exactly: x0_hat = r1 x_t - r2 eps_hat with r2 = 20291,
    and the first reverse step moves x by c1 * r2 = 316 times the eps error. MAR-B learns that with
    ImageNet-scale training; a CPU-budget run with uniform t reached an eps RMS error of only 0.024
    at t = 999 (0.019 at t = 990, where r2 is just 71), which pushed tokens out to |x| ~ 8 on the
    first step and ruined the samples. Oversampling t = 999 costs a few percent of the diffusion rows.
    """
    t = torch.randint(0, num_timesteps, (n,), generator=gen)
    if top_t_prob > 0:
        top = torch.rand(n, generator=gen) < top_t_prob
        t = torch.where(top, torch.full_like(t, num_timesteps - 1), t)
    return t


def masked_conditions(model, tokens: torch.Tensor, labels: torch.Tensor, gen: torch.Generator,
                      label_drop: float = 0.1, mask_ratio: float | None = None):
    """The MAR objective's draws for token grids [B, L, c]: a mask ratio (one per batch), a random
    order per row, label dropout; returns (x0 [B, n, c] masked tokens, z [B, n, D] their conditions, K)."""
    B, L, c = tokens.shape
    if mask_ratio is None:
        mask_ratio = sample_mask_ratio(gen)
    n_masked = min(L, max(1, int(math.ceil(L * mask_ratio))))
    K = L - n_masked
    orders = torch.argsort(torch.rand(B, L, generator=gen), dim=1)
    known = torch.sort(orders[:, :K], dim=1).values
    pred = torch.sort(orders[:, K:], dim=1).values
    drop = torch.rand(B, generator=gen) < label_drop
    class_ids = torch.where(drop, torch.full_like(labels, model.config.num_classes), labels)
    z = model(torch.gather(tokens, 1, known[:, :, None].expand(B, K, c)), known, class_ids, pred)
    return torch.gather(tokens, 1, pred[:, :, None].expand(B, n_masked, c)), z, K


def mar_loss(model, sched: DiffusionSchedule, tokens: torch.Tensor, labels: torch.Tensor,
             gen: torch.Generator, label_drop: float = 0.1, diffusion_batch_mul: int = 4,
             mask_ratio: float | None = None, top_t_prob: float = 0.0):
    """The MAR training loss for a batch of token grids [B, L, c] (scaled latents) and labels [B].

    t is uniform on 0..T-1; with `top_t_prob` > 0 each diffusion row instead gets t = T-1 with that
    probability (see `sample_timesteps`). Returns (loss, stats dict of floats).
    """
    c = tokens.shape[2]
    x0, z, K = masked_conditions(model, tokens, labels, gen, label_drop, mask_ratio)

    x0 = x0.reshape(-1, c).repeat(diffusion_batch_mul, 1)
    z = z.reshape(-1, z.shape[-1]).repeat(diffusion_batch_mul, 1)
    t = sample_timesteps(x0.shape[0], sched.num_timesteps, gen, top_t_prob)
    noise = torch.randn(x0.shape, generator=gen)
    mse, vb = diffusion_loss(model.diffloss.net, sched, x0, z, t, noise)
    loss = (mse + vb).mean()
    return loss, {"loss": loss.item(), "mse": mse.mean().item(), "vb": vb.mean().item(), "known": K}


# --------------------------------------------------------------------------------------------
# Initialisation, optimiser, schedule, EMA
# --------------------------------------------------------------------------------------------

def init_mar_weights(model) -> None:
    """Official MAR init for the backbone (normal(0.02) embeddings, xavier-uniform linears, zero
    biases, unit LayerNorms) and `init_head_weights` for the diffusion MLP. Call after
    torch.manual_seed for a reproducible init."""
    import torch.nn as nn

    for p in (model.class_emb.weight, model.fake_latent, model.mask_token, model.encoder_pos_embed_learned,
              model.decoder_pos_embed_learned, model.diffusion_pos_embed_learned):
        nn.init.normal_(p, std=0.02)
    head = set(model.diffloss.modules())
    _init_linears_and_norms(m for m in model.modules() if m not in head)
    init_head_weights(model.diffloss.net)


def _init_linears_and_norms(modules) -> None:
    """xavier-uniform Linear weights, zero biases, unit affine LayerNorms (timm/MAE defaults)."""
    import torch.nn as nn

    for m in modules:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_head_weights(net) -> None:
    """DiT/ADM-style init of the diffusion MLP: xavier-uniform linears, normal(0.02) time MLP, zero
    adaLN modulations and zero final linear, so the head starts as the zero function."""
    import torch.nn as nn

    _init_linears_and_norms(net.modules())
    nn.init.normal_(net.time_embed.mlp[0].weight, std=0.02)
    nn.init.normal_(net.time_embed.mlp[2].weight, std=0.02)
    for block in net.res_blocks:
        nn.init.zeros_(block.adaLN_modulation[-1].weight)
        nn.init.zeros_(block.adaLN_modulation[-1].bias)
    nn.init.zeros_(net.final_layer.adaLN_modulation[-1].weight)
    nn.init.zeros_(net.final_layer.adaLN_modulation[-1].bias)
    nn.init.zeros_(net.final_layer.linear.weight)
    nn.init.zeros_(net.final_layer.linear.bias)


def make_optimizer(model, lr: float, weight_decay: float, betas=(0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW; as the official script, 1-D parameters (biases, norms) get no weight decay."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)


def lr_at(step: int, total: int, base: float, warmup: int, min_ratio: float = 0.0) -> float:
    """Linear warmup to `base` over `warmup` steps, then cosine decay to base * min_ratio at `total`."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


class EMA:
    """Exponential moving average of a module's state dict.

    The effective decay is min(decay, (1 + n) / (10 + n)) after n updates, so a short run is not
    dominated by the random initialisation; after ~10k updates it equals `decay`.
    """

    def __init__(self, model, decay: float = 0.999):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)
        self.updates += 1

    def state_dict(self) -> dict:
        return {k: v.clone() for k, v in self.shadow.items()}


def latent_scale_factor(latents: torch.Tensor) -> float:
    """1 / std of latents (all elements), MAR's token scaling with no mean shift."""
    return float(1.0 / latents.double().std())

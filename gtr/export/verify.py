"""Verification: each exported graph on onnxruntime CPU against its torch module, at its static shapes.

Which shapes (`check_shapes`): "all" of them, or a "spread" (the default): at most SPREAD shapes per
graph, evenly spaced over the graph's list in first-use order, plus the shape with the largest value
of each symbol (the most memory, the longest sums). One symbolic graph serves every shape, so a spread
exercises the same nodes at the extremes and between; "all" costs one graph run per AR step of every
plan (MAR-H gtr + mar-64: 80 backbone runs, most of an hour on 2 CPU cores).
"""
from __future__ import annotations

import numpy as np

from gtr.errors import ExportError


CHECKS = ("spread", "all", "none")
SPREAD = 8


def check_mode(check) -> str:
    """'spread' | 'all' | 'none' from a check option (True = 'spread', False = 'none'); ExportError otherwise."""
    mode = ("spread" if check else "none") if isinstance(check, bool) else check
    if mode not in CHECKS:
        raise ExportError(f"check must be one of {', '.join(CHECKS)} (or True / False), got {check!r}")
    return mode


def check_shapes(shapes: list[dict], mode: str) -> list[dict]:
    """The static shapes a graph is checked at (see the module docstring), in their list order."""
    if mode == "none":
        return []
    if mode == "all" or len(shapes) <= SPREAD:
        return list(shapes)
    picked = {round(i * (len(shapes) - 1) / (SPREAD - 1)) for i in range(SPREAD)}
    for symbol in shapes[0]:
        picked.add(max(range(len(shapes)), key=lambda i: shapes[i][symbol]))
    return [shapes[i] for i in sorted(picked)]


def verify_inputs(name: str, shape: dict, config, plans, rng: np.random.Generator) -> dict:
    """Random but realistic inputs for one static shape of a graph (numpy, keyed by input name)."""
    c, D, L = config.token_dim, config.decoder_embed_dim, config.seq_len
    if name == "backbone":
        B, K, n = shape["B"], shape["K"], shape["n"]
        perms = np.stack([rng.permutation(L) for _ in range(B)])
        return {"tokens": rng.standard_normal((B, K, c), dtype=np.float32),
                "positions": np.sort(perms[:, :K], axis=1).astype(np.int64),
                "class_ids": rng.integers(0, config.num_classes + 1, B).astype(np.int64),
                "pred_positions": np.sort(perms[:, K:K + n], axis=1).astype(np.int64)}
    if name in ("head", "head_nocfg"):
        from gtr.plan import spaced_schedule, step_table
        from gtr.runtime.sampler import COEF_COLUMNS
        r = shape["r"]
        Ts = sorted({T for p in plans for T in p.diffusion_Ts()}) or [100]
        T = Ts[int(rng.integers(len(Ts)))]
        k = rng.integers(0, T, r)
        k[0] = T - 1  # always include the first reverse step (t = 999: the largest coefficients)
        coef = np.empty((r, len(COEF_COLUMNS)), np.float32)
        coef[:, :-1] = step_table(T)[k]
        coef[:, -1] = np.where(k > 0, 1.0, 0.0)  # noise_scale
        cfgs = [p.cfg for p in plans] or [1.0]
        return {"x": rng.standard_normal((r, c), dtype=np.float32),
                "t": spaced_schedule(T).timesteps[k].astype(np.int64),
                "z": rng.standard_normal((2 * r if name == "head" else r, D), dtype=np.float32),
                "coef": coef,
                "cfg_weight": rng.uniform(1.0, max(cfgs), (r, 1)).astype(np.float32),
                "noise": rng.standard_normal((r, c), dtype=np.float32)}
    if name == "vae_decoder":
        return {"tokens": rng.standard_normal((shape["B"], L, c), dtype=np.float32)}
    raise KeyError(name)


def max_error(got: np.ndarray, ref: np.ndarray, row_gain: np.ndarray | None = None) -> float:
    """max |got - ref| relative to the output scale max(1, max |ref|); inf on a shape mismatch or NaN.

    row_gain (head graphs): per-row amplification of an eps error by the update, 1 + c1 * r2. The
    first reverse step multiplies eps by r2 ~ 2e4 and then by c1, so c1 * r2 reaches ~300-1700 at
    t = 999: fp32 rounding of eps (~1e-7) alone moves x_prev by ~1e-4 there, in torch as in any
    engine. Dividing by the gain measures head errors in eps units, where one tolerance fits every row.
    """
    if got.shape != ref.shape or not np.isfinite(got).all():
        return float("inf")
    diff = np.abs(got.astype(np.float64) - ref)
    if row_gain is not None:
        diff = diff / row_gain.reshape(-1, *([1] * (diff.ndim - 1)))
    return float(diff.max(initial=0.0) / max(1.0, float(np.abs(ref).max(initial=0.0))))


PROGRESS_SECONDS = 30.0  # at most one progress line this often


def verify_graph(name: str, session, module, shapes: list[dict], config, plans, tolerance: float,
                 seed: int = 0, say=None) -> float:
    """Run the graph (an onnxruntime session) and the torch module on random inputs for every static
    shape; return the largest error (see `max_error`), raise ExportError above `tolerance`.
    say: progress lines (shapes done, elapsed), at most one every PROGRESS_SECONDS."""
    import time

    import torch
    rng = np.random.default_rng(seed)
    t0 = last = time.perf_counter()
    in_names = [i.name for i in session.get_inputs()]
    worst, worst_shape = 0.0, None
    for shape in shapes:
        feeds = verify_inputs(name, shape, config, plans, rng)
        with torch.no_grad():
            ref = module(*[torch.from_numpy(v) for v in feeds.values()])  # feeds are in forward() order
        ref = ref.float().numpy()
        got = session.run(None, {k: feeds[k] for k in in_names})[0]
        gain = 1.0 + feeds["coef"][:, 2].astype(np.float64) * feeds["coef"][:, 1] if "coef" in feeds else None
        err = max_error(got, ref, gain)
        if err >= worst:
            worst, worst_shape = err, shape
        if say is not None and time.perf_counter() - last >= PROGRESS_SECONDS:
            last = time.perf_counter()
            say(f"  {name}: shape check {shapes.index(shape) + 1}/{len(shapes)}, max error so far {worst:.2e} "
                f"({last - t0:.0f} s)")
    if not worst <= tolerance:
        raise ExportError(f"{name}: onnxruntime output differs from torch by {worst:.3g} (relative to scale) at "
                          f"shape {worst_shape}, above the tolerance {tolerance:g}")
    return worst


def verify_chain(name: str, step_session, chain_session, steps: int, shape: dict, config, plans, tolerance: float,
                 seed: int = 0) -> float:
    """A head graph's chain (gtr.export.head_chain) against the step graph run `steps` times on the same
    random inputs (x, z and cfg_weight shared, t, coef and noise per step); returns the error (see
    `max_error`: onnxruntime runs the same nodes both ways, so it is 0 unless a fusion differs), raises
    ExportError above `tolerance`."""
    rng = np.random.default_rng(seed)
    per_step = [verify_inputs(name, shape, config, plans, rng) for _ in range(steps)]
    x = per_step[0]["x"]
    step_names = [i.name for i in step_session.get_inputs()]
    for feeds in per_step:
        x = step_session.run(None, {k: (x if k == "x" else per_step[0][k] if k in ("z", "cfg_weight") else feeds[k])
                                    for k in step_names})[0]
    from gtr.runtime.head_inputs import CHAIN_SEQ_INPUTS
    chain_feeds = {**per_step[0], **{seq: np.stack([f[k] for f in per_step]) for k, seq in CHAIN_SEQ_INPUTS.items()}}
    got = chain_session.run(None, {i.name: chain_feeds[i.name] for i in chain_session.get_inputs()})[0]
    # The same nodes run both ways, so the bits should agree; random coefficients compounded over the
    # steps can overflow x (random-weight models), where only equal bits, inf included, mean anything.
    err = 0.0 if np.array_equal(got, x, equal_nan=True) else max_error(got, x)
    if not err <= tolerance:
        raise ExportError(f"{name} chain: {steps} steps in one call differ from {steps} step calls by {err:.3g} "
                          f"(relative to scale) at shape {shape}, above the tolerance {tolerance:g}")
    return err

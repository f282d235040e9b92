"""Which head graph runs a step, and its inputs when a step without CFG runs on the CFG graph; the names
of the chain graph's inputs and output. numpy only.

A bundle exported with --cfg may lack the no-CFG head graph. The CFG graph computes
eps = eps_uncond + w * (eps_cond - eps_uncond); with the same z in both halves and w = 1 that is the
conditional step exactly, so one graph serves both. Every backend (and the calibration recorder) must
feed that case the same way: this module is the one copy of it.
"""
from __future__ import annotations

import numpy as np


def head_graph(has_graph, cfg: bool) -> str | None:
    """The head graph for a step with or without CFG: "head" / "head_nocfg", or None when a CFG step
    has no CFG graph (the caller says so in its own error type)."""
    if cfg:
        return "head" if has_graph("head") else None
    return "head_nocfg" if has_graph("head_nocfg") else "head"


def nocfg_on_cfg_graph(z: np.ndarray) -> tuple[np.ndarray, float]:
    """z [r,D] of a step without CFG as the CFG graph takes it: ([z; z] [2r,D], cfg weight 1.0)."""
    return np.concatenate([z, z]), 1.0


ALIGN = 256  # bytes: rows of the head loop's per-call inputs start this far apart (device addresses too)


def blocks(n: int, elems: int, dtype) -> tuple[np.ndarray, int]:
    """Zeroed [n, S] host array whose rows start ALIGN bytes apart (S >= elems), and that stride in bytes:
    the per-call inputs (t, coef, noise) of a head loop, uploaded or bound once per AR step."""
    itemsize = np.dtype(dtype).itemsize
    stride = -(-elems * itemsize // ALIGN) * ALIGN
    return np.zeros((n, stride // itemsize), dtype), stride


# The chain graph of a head graph (gtr.export.head_chain): a static number of head steps in one call.
CHAIN_SEQ_INPUTS = {"t": "t_seq", "coef": "coef_seq", "noise": "noise_seq"}  # step input -> stacked chain input
CHAIN_OUTPUT = "x_final"

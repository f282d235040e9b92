"""Single graph calls on the CPU: the figures behind the runtime's thread choices (docs/speed.md).

    python benchmarks/calls_cpu.py BUNDLE [--tokens 1,2,4,8,16,32] [--compare-tokens 8] [--batch 32]

1. Head call time against its number of tokens (2 rows each with CFG) on one thread: the intercept of
   the line through the points is the fixed per-call cost, the slope the arithmetic per token.
2. One head call on N threads against N single-threaded calls on equal shares of its rows, at once
   (what OnnxComponents does for graphs up to SHARD_MAX_BYTES).
   Per call, so this measures what sharding does to a big graph's GEMMs (MAR-B); for small graphs the
   shards' gain is in running a whole head loop without a sync per call (benchmarks/ablate_cpu.py).
3. Sampling with the plan at --batch images, interleaved rounds: backbone calls of at most BACKBONE_ROWS
   rows (the default) against one call per thread.
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gtr.runtime import onnx_backend
from gtr.runtime.bundle import read_bundle
from gtr.runtime.onnx_backend import make_session


def best(fn, seconds=1.0) -> float:
    fn()
    times, spent = [], 0.0
    while spent < seconds or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return float(np.median(times))


def head_feeds(r, D, c, rng):
    return dict(x=rng.standard_normal((r, c), dtype=np.float32), t=np.full(r, 500, np.int64),
                z=rng.standard_normal((2 * r, D), dtype=np.float32), coef=np.ones((r, 7), np.float32),
                cfg_weight=np.ones((r, 1), np.float32), noise=np.zeros((r, c), np.float32))


def rows_of(feeds, lo, hi, r):
    out = {k: v[lo:hi] for k, v in feeds.items() if k != "z"}
    out["z"] = np.concatenate([feeds["z"][lo:hi], feeds["z"][r + lo:r + hi]])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--tokens", default="1,2,4,8,16,32")
    ap.add_argument("--compare-tokens", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16, help="images for the backbone comparison (0: skip it)")
    ap.add_argument("--plan", default="gtr")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    b = read_bundle(a.bundle)
    cfg, n = b.config, a.threads
    rng = np.random.default_rng(0)
    pool = ThreadPoolExecutor(n)

    def session(name, threads):
        g = b.graphs[name]
        return make_session(b.member(g["member"]), {g["weights"]: b.member(g["weights"])}, ["CPUExecutionProvider"],
                            threads)

    head1, headn = session("head", 1), session("head", n)
    c, D = cfg.token_dim, cfg.decoder_embed_dim
    print(f"{cfg.name}: head call on 1 thread (CFG: 2 rows per token)")
    pts = []
    for r in (int(x) for x in a.tokens.split(",")):
        f = head_feeds(r, D, c, rng)
        pts.append((r, best(lambda: head1.run(None, f))))
        print(f"  {r:4d} tokens: {pts[-1][1] * 1e6:8.1f} us")
    if len(pts) > 1:
        slope, intercept = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
        print(f"  fit: {intercept * 1e6:.0f} us per call + {slope * 1e6:.1f} us per token")

    r = a.compare_tokens
    f = head_feeds(r, D, c, rng)
    parts = np.array_split(np.arange(r), n)
    shares = [rows_of(f, p[0], p[-1] + 1, r) for p in parts]
    one = best(lambda: headn.run(None, f))
    sharded = best(lambda: [j.result() for j in [pool.submit(head1.run, None, s) for s in shares]])
    print(f"head at {r} tokens: one call on {n} threads {one * 1e3:.2f} ms, {n} single-threaded shards "
          f"{sharded * 1e3:.2f} ms")

    if a.batch:
        from gtr.bench.timing import timed_sample
        plan = b.plans()[a.plan]
        comps = onnx_backend.OnnxComponents(b, providers=["CPUExecutionProvider"], threads=n)
        comps.prepare(plan)
        labels, cap = [1] * a.batch, onnx_backend.BACKBONE_ROWS
        times = {cap: [], 10**9: []}
        for r in range(a.rounds + 1):  # round 0 warms up
            for rows_per_call in times:
                onnx_backend.BACKBONE_ROWS = rows_per_call
                t = timed_sample(comps, plan, labels, r, cfg, decode=False)["backbone"] / a.batch
                if r:
                    times[rows_per_call].append(t)
        onnx_backend.BACKBONE_ROWS = cap
        print(f"backbone per image, plan {plan.name}, batch {a.batch}, median of {a.rounds} interleaved rounds: "
              f"calls of <= {cap} rows {np.median(times[cap]) * 1e3:.1f} ms, one call per thread "
              f"{np.median(times[10**9]) * 1e3:.1f} ms")

if __name__ == "__main__":
    main()

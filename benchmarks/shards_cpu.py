"""How a sharded head loop is cut, timed side by side: the figures behind `onnx_backend.head_shards`.

    python benchmarks/shards_cpu.py BUNDLE [--plan gtr] [--batch 1] [--rounds 7] [--threads 2]

Samples the plan (tokens only, no decode) with three cuts of every head loop, interleaved round by
round on the same threads: always 2 shards, always CPU_SHARDS (4), and the runtime's rule (at least 2,
more only from HEAD_ROWS_PER_SHARD rows a shard). Prints the median seconds per image of each and its
head loop's share (gtr.bench.timing). Only bundles whose head fits SHARD_MAX_BYTES are sharded
(mar-tiny, the fixture config).
"""
from __future__ import annotations

import argparse
import statistics

from gtr.bench.timing import timed_sample
from gtr.runtime import onnx_backend
from gtr.runtime.bundle import read_bundle

RULE = onnx_backend.head_shards
CUTS = {"2 shards": lambda shards, rows: min(shards, 2), "4 shards": lambda shards, rows: shards, "rule": RULE}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--plan", default="gtr")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    bundle = read_bundle(args.bundle)
    plan, config = bundle.plans()[args.plan], bundle.config
    comps = onnx_backend.OnnxComponents(bundle, providers=["CPUExecutionProvider"], threads=args.threads)
    labels = [0] * args.batch

    def run(cut, seed):
        onnx_backend.head_shards = CUTS[cut]  # the loop reads it per call
        return timed_sample(comps, plan, labels, seed, config, decode=False)

    times = {cut: [] for cut in CUTS}
    try:
        for cut in CUTS:
            run(cut, 0)  # warm-up: sessions and caches
        for r in range(args.rounds):
            for cut in CUTS:
                times[cut].append(run(cut, r + 1))
    finally:
        onnx_backend.head_shards = RULE
    per_image = {cut: statistics.median(t["total"] for t in ts) / args.batch for cut, ts in times.items()}
    for cut, ts in times.items():
        head = statistics.median(t["head"] for t in ts) / args.batch
        print(f"{args.plan} batch {args.batch}, {args.threads} threads, {cut:8s}: {per_image[cut]:.4f} s/image, "
              f"head {head:.4f} ({per_image['4 shards'] / per_image[cut]:.2f}x the 4-shard cut)")


if __name__ == "__main__":
    main()

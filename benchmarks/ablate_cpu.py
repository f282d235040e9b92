"""What each CPU runtime change bought, measured side by side in one process (interleaved rounds).

    python benchmarks/ablate_cpu.py OLD.plan NEW.plan --plan gtr --rounds 7

OLD.plan: a bundle exported before the graph changes (head = HeadStep, full last decoder block), e.g.
by `git stash; gtr-export ...` at commit b887c4a; NEW.plan: the same weights exported now. Variants, each
adding one change to the one before: the earlier runtime (one call per graph, intra-op threads,
spinning pools) on OLD; the same on NEW (graphs: timestep table, stacked adaLN, last block on the
predicted slots only); pools that sleep; head row shards; backbone row shards (today's default).
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import onnxruntime as ort

import gtr.runtime.onnx_backend as ob
from gtr.bench.timing import timed_sample
from gtr.plan.options import make_plans
from gtr.runtime.bundle import read_bundle


def session_maker(spin: bool):
    def make(proto, external, providers=None, threads=None):
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads, so.inter_op_num_threads = int(threads), 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        names = list(external)
        bufs = [np.frombuffer(external[n], np.uint8) for n in names]
        if names:
            so.add_external_initializers_from_files_in_memory(names, bufs, [b.nbytes for b in bufs])
        return ort.InferenceSession(bytes(proto), so, providers=list(providers))
    return make


def components(path, threads, spin, head_shards, backbone_shards, plan):
    c = ob.OnnxComponents(read_bundle(path), providers=["CPUExecutionProvider"], threads=threads)
    c.shards.update({k: head_shards for k in c.shards if k.startswith("head")})
    c.shards["backbone"] = backbone_shards
    saved, ob.make_session = ob.make_session, session_maker(spin)
    try:
        c.prepare(plan)  # sessions are made now, with this variant's options
    finally:
        ob.make_session = saved
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--plan", default="gtr")
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    config = read_bundle(a.new).config
    plan = make_plans([a.plan], config, {"cfg": a.cfg})[0]
    n = a.threads
    variants = {"before (old graphs, 1 call/graph, spinning pools)": (a.old, True, 1, 1),
                "+ new graphs (timestep table, stacked adaLN, pruned last block)": (a.new, True, 1, 1),
                "+ pools sleep between calls": (a.new, False, 1, 1),
                "+ head row shards": (a.new, False, n, 1),
                "+ backbone row shards (default)": (a.new, False, n, n)}
    comps = {k: components(p, n, spin, hs, bs, plan) for k, (p, spin, hs, bs) in variants.items()}
    times = {k: [] for k in variants}
    for c in comps.values():
        timed_sample(c, plan, [207], 0, config, decode=False)  # warm-up
    for r in range(a.rounds):
        for k, c in comps.items():
            times[k].append(timed_sample(c, plan, [207], r, config, decode=False))
    first = statistics.median(t["total"] for t in times[next(iter(times))])
    print(f"{config.name}, plan {plan.name}, batch 1, {n} threads, tokens only, median of {a.rounds} interleaved rounds\n")
    print("| variant | s/image | backbone | head | loop | vs before |\n|---|---|---|---|---|---|")
    for k, ts in times.items():
        med = {p: statistics.median(t[p] for t in ts) for p in ("total", "backbone", "head", "loop")}
        print(f"| {k} | {med['total']:.3f} | {med['backbone'] * 1e3:.0f} ms | {med['head'] * 1e3:.0f} ms "
              f"| {med['loop'] * 1e3:.0f} ms | {first / med['total']:.2f}x |")


if __name__ == "__main__":
    main()

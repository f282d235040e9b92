"""Side-by-side CPU benchmark: export a model, then time one image per plan on the onnxruntime bundle
and on the PyTorch reference (same plan, seed and noise), in one run.

    python benchmarks/bench_cpu.py --model mar-b --precision fp16 --plans mar-64,gtr --images 1

Prints export time, bundle size (against the weights' own size at that precision) and a table of
seconds per image; writes the same as JSON with --json. Timings on a shared machine are noisy:
compare ratios measured in the same run, never absolute times across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mar-b")
    ap.add_argument("--precision", default="fp16", choices=["fp32", "fp16"])
    ap.add_argument("--plans", default="mar-64,gtr")
    ap.add_argument("--images", type=int, default=1, help="images per plan and backend (batch size)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference timings")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--bundle", help="reuse this bundle instead of exporting")
    ap.add_argument("--no-verify", action="store_true", help="skip the per-shape export check (saves minutes on big models)")
    ap.add_argument("--json", help="write results here")
    a = ap.parse_args()

    from gtr.cli import make_plans
    from gtr.configs import get_config
    from gtr.export.exporter import export_bundle
    from gtr.export.weights import build_models
    from gtr.models.reference import TorchComponents
    from gtr.runtime.bundle import read_bundle
    from gtr.runtime.onnx_backend import OnnxComponents
    from gtr.runtime.sampler import sample

    torch.set_num_threads(a.threads)
    config = get_config(a.model)
    plans = make_plans(a.plans.split(","), config, {})
    random_weights = config.name != "mar-tiny"
    mar, vae, sources = build_models(config, random_weights=random_weights)
    params = sum(p.numel() for p in mar.parameters()) + sum(p.numel() for p in vae.parameters())
    out = dict(model=config.name, precision=a.precision, images=a.images, threads=a.threads,
               cpu=platform.processor() or platform.machine(), torch=torch.__version__, rows=[])

    tmp = tempfile.TemporaryDirectory(prefix="gtr-bench-")
    path = a.bundle or os.path.join(tmp.name, f"{config.name}-{a.precision}.plan")
    if not a.bundle:
        t0 = time.perf_counter()
        s = export_bundle(config, mar, vae, plans, batch=a.images, precision=a.precision, out_path=path,
                          random_weights=random_weights, sources=sources, log=print, verify=not a.no_verify)
        out["export_s"] = time.perf_counter() - t0
        out["bundle_bytes"] = s["size"]
        out["weight_bytes"] = params * (2 if a.precision == "fp16" else 4)
        print(f"export: {out['export_s']:.1f} s, bundle {s['size'] / 2**20:.1f} MiB, "
              f"weights at {a.precision} {out['weight_bytes'] / 2**20:.1f} MiB ({params:,} parameters)")
    bundle = read_bundle(path)
    backends = {"onnxruntime": OnnxComponents(bundle, providers=["CPUExecutionProvider"], threads=a.threads)}
    if not a.no_torch:
        backends["torch"] = TorchComponents(mar, vae)
    labels = [i % config.num_classes for i in range(a.images)]
    for plan in plans:
        backends["onnxruntime"].prepare(plan)
        for name, comps in backends.items():
            t0 = time.perf_counter()
            r = sample(comps, plan, labels, 0, token_dim=config.token_dim, num_classes=config.num_classes)
            sec = (time.perf_counter() - t0) / a.images
            out["rows"].append(dict(plan=plan.name, backend=name, s_per_image=sec, finite=bool(np.isfinite(r.images).all())))
            print(f"{plan.name:>8} {name:>12}: {sec:8.2f} s/image", flush=True)
    print("\n| plan | backend | s/image |\n|---|---|---|")
    for row in out["rows"]:
        print(f"| {row['plan']} | {row['backend']} | {row['s_per_image']:.2f} |")
    by = {(r["plan"], r["backend"]): r["s_per_image"] for r in out["rows"]}
    names = [p.name for p in plans]
    for backend in backends:
        if len(names) >= 2:
            print(f"{backend}: {names[0]} / {names[1]} = {by[(names[0], backend)] / by[(names[1], backend)]:.2f}x")
    if "torch" in backends:
        for n in names:
            print(f"{n}: torch / onnxruntime = {by[(n, 'torch')] / by[(n, 'onnxruntime')]:.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()

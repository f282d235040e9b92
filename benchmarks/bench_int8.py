"""INT8 against fp32 on ONNX Runtime CPU, side by side in one run: export both bundles from the same
weights, then time one image per round on each, interleaved (fp32, int8, fp32, int8, ...), same plan,
seed and noise, with a per-graph breakdown (backbone, head loop, VAE decoder).

    python benchmarks/bench_int8.py --model mar-b --plan gtr --threads 1 --rounds 2 --json int8.json

Random weights for ImageNet models (speed does not depend on the values; the int8 bundle is then
calibrated on them, as the manifest records). Timings on a shared machine are noisy: compare the
ratio from one run, never absolute times across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


class Timed:
    """Sampler components that add up the seconds spent in each graph (the head loop as one)."""

    def __init__(self, comps):
        self.c, self.seconds = comps, {"backbone": 0.0, "head": 0.0, "vae_decoder": 0.0}

    def _timed(self, key, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        self.seconds[key] += time.perf_counter() - t
        return out

    def backbone(self, *a):
        return self._timed("backbone", self.c.backbone, *a)

    def head_step(self, *a):
        return self._timed("head", self.c.head_step, *a)

    def diffuse(self, *a):
        return self._timed("head", self.c.diffuse, *a)

    def decode(self, *a):
        return self._timed("vae_decoder", self.c.decode, *a)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mar-b")
    ap.add_argument("--plan", default="gtr")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2, help="images per bundle, interleaved")
    ap.add_argument("--calib-classes", default="0", help="int8 calibration classes (default: one class)")
    ap.add_argument("--calib-seeds", type=int, default=1)
    ap.add_argument("--calib-method", default="max")
    ap.add_argument("--verify", action="store_true", help="run the per-shape export check (minutes on MAR-B)")
    ap.add_argument("--dir", help="keep the bundles here (reused when present)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()

    import numpy as np
    import onnxruntime
    import torch

    from gtr.calibration import CalibrationSpec, parse_classes
    from gtr.cli import make_plans
    from gtr.configs import get_config
    from gtr.export.exporter import export_bundle
    from gtr.export.weights import build_models
    from gtr.runtime.onnx_backend import OnnxComponents
    from gtr.runtime.sampler import sample

    torch.set_num_threads(a.threads)
    config = get_config(a.model)
    plans = make_plans([a.plan], config, {})
    random_weights = config.name != "mar-tiny"
    out = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv), "model": config.name,
           "plan": a.plan, "threads": a.threads, "random_weights": random_weights,
           "cpu": platform.processor() or platform.machine(), "onnxruntime": onnxruntime.__version__, "bundles": {}}
    d = a.dir or os.path.join(os.getcwd(), "bench-int8")
    os.makedirs(d, exist_ok=True)
    spec = CalibrationSpec(parse_classes(a.calib_classes), a.calib_seeds, a.calib_method)
    models = None
    for precision in ("fp32", "int8"):
        path = os.path.join(d, f"{config.name}-{a.plan}-{precision}.plan")
        if not os.path.exists(path):
            if models is None:
                models = build_models(config, random_weights=random_weights)
            t = time.perf_counter()
            export_bundle(config, models[0], models[1], plans, batch=1, precision=precision, out_path=path,
                          random_weights=random_weights, sources=models[2], log=print, verify=a.verify,
                          calibration=spec if precision == "int8" else None)
            out["bundles"][precision] = {"export_s": round(time.perf_counter() - t, 1)}
        out["bundles"].setdefault(precision, {}).update(path=path, bytes=os.path.getsize(path))
        print(f"{precision}: {path} {os.path.getsize(path) / 2**20:.1f} MiB", flush=True)
    del models

    comps, runs = {}, {p: [] for p in ("fp32", "int8")}
    for p in ("fp32", "int8"):
        t = time.perf_counter()
        comps[p] = OnnxComponents(out["bundles"][p]["path"], providers=["CPUExecutionProvider"], threads=a.threads)
        comps[p].prepare(plans[0])
        out["bundles"][p]["load_s"] = round(time.perf_counter() - t, 2)
    tokens = {}
    for r in range(a.rounds):
        for p in ("fp32", "int8"):
            timed = Timed(comps[p])
            t = time.perf_counter()
            res = sample(timed, plans[0], [r % config.num_classes], r, token_dim=config.token_dim,
                         num_classes=config.num_classes)
            total = time.perf_counter() - t
            runs[p].append({"s": round(total, 2), **{k: round(v, 2) for k, v in timed.seconds.items()}})
            tokens[p] = res.tokens
            print(f"round {r} {p}: {total:.1f} s/image " + ", ".join(f"{k} {v:.1f} s" for k, v in timed.seconds.items()),
                  flush=True)
    out["runs"] = runs
    med = {p: float(np.median([x["s"] for x in runs[p]])) for p in runs}
    out["median_s_per_image"] = med
    out["speedup"] = round(med["fp32"] / med["int8"], 3)
    out["per_graph_speedup"] = {k: round(float(np.median([x[k] for x in runs["fp32"]])) /
                                         max(1e-9, float(np.median([x[k] for x in runs["int8"]]))), 3)
                                for k in ("backbone", "head", "vae_decoder")}
    out["size_ratio"] = round(out["bundles"]["int8"]["bytes"] / out["bundles"]["fp32"]["bytes"], 3)
    print(json.dumps({k: out[k] for k in ("median_s_per_image", "speedup", "per_graph_speedup", "size_ratio")}))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

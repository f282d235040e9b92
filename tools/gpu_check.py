"""The prepared GPU check (issue 20 item 10): what gtr's GPU paths do on a real GPU, in one run.

    python tools/gpu_check.py                  # on a CUDA GPU (about 6 minutes on one Hopper GPU)
    python tools/gpu_check.py --device cpu     # the same code on the CPU with small sizes (CI, < 1 minute)

It needs torch (CUDA build for the GPU run) and, for (c) on the GPU, CuPy and cuda-python
(cuda-bindings); no TensorRT, onnxruntime-gpu or network. Sections, each recorded as ok / skipped
(with the reason) / failed:

  a  reference: the PyTorch reference on the device against the CPU, on the official fixture
     (tests/fixtures/official_mar) and mar-tiny: token error and image PSNR (gtr.runtime.fidelity).
  b  speed, side by side, warm-up excluded (torch.cuda.Event on the GPU): the official sampler
     (the LTH14/mar checkout $GTR_OFFICIAL_MAR names, imported from there at run time) 64 steps
     against the torch reference's mar-64 and gtr plans; MAR-B/L/H random weights, fp32 and bf16
     autocast, batch 1 and 32. Entries run smallest first until the time budget is spent.
  c  gtr.runtime.trt.cuda and the TensorRT head loop's capture/replay (gtr.runtime.trt.head_loop) with a
     stand-in engine: a CuPy kernel on the GPU (replay must equal eager and numpy), a stand-in on the
     CPU (tests/trt_fakes.py) that also checks the decision logic (a differing replay turns eager).
  d  if onnxruntime's CUDA provider or TensorRT is importable: gtr-run --device cuda / --backend
     tensorrt against the CPU image, and tests/test_tensorrt_gpu.py.

What no longer needs a GPU (run by `make test`, listed in the report as `verified_without_gpu`): gtr's
TensorRT and CUDA code against the real TensorRT 10.1, 10.16 and 11.4 bindings and cuda-bindings 12.9
and 13.4 (every name and call signature it uses, the stand-ins' names, version branches, the no-GPU
errors), onnxruntime-gpu 1.31 without CUDA libraries (the CPU fallback's one note, --device cuda's one
error), and every exported graph against onnx-tensorrt's operator table. What still needs a GPU is what this script
and tests/test_tensorrt_gpu.py do: building and running engines, capture and replay, device numerics.

Writes <out>/gpu_check.json and <out>/gpu_check.md (a table). Exit status 1 if a section failed.
The official sampler needs timm 0.9.12 importable (put its source on --vendor
when it is not installed); tqdm and scipy, imported by that code but not used when sampling, get
stand-ins when missing (said in the JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import types
from pathlib import Path

import numpy as np

from gpu_check_common import ROOT, Skip  # tools/ is sys.path[0] when run as a script; puts ROOT on it too
from gpu_check_head_loop import section_head_loop


# Sizes per device: the CPU run exercises the same code in well under a minute.
SIZES = {
    "cuda": {"speed_models": ["mar-b", "mar-l", "mar-h"], "batches": [1, 32], "mar_steps": 64, "diffusion_steps": 100,
             "gtr": {}, "precisions": ["fp32", "bf16"], "labels": [1, 3, 5, 7], "budget_s": 240,
             "parity_plans": ["gtr", "mar-16"]},
    "cpu": {"speed_models": ["mar-test"], "batches": [1], "mar_steps": 4, "diffusion_steps": 5,
            "gtr": {"t_rec": 2, "t_gen_max": 3, "t_gen_min": 2, "t_detail": 3}, "precisions": ["fp32", "bf16"],
            "labels": [1], "budget_s": 30, "parity_plans": ["mar-4"]},
}


def plans_for(c, sizes: dict) -> dict:
    """The speed section's plans: mar-N (what the official sampler runs) and gtr, at this device's sizes."""
    from gtr.plan import build_plan
    return {"mar": build_plan(f"mar-{sizes['mar_steps']}", c.grid, cfg=c.default_cfg,
                              diffusion_steps=sizes["diffusion_steps"]),
            "gtr": build_plan("gtr", c.grid, cfg=c.default_cfg, **sizes["gtr"])}


class Clock:
    """Wall time on the CPU; torch.cuda.Event on the GPU (the device's own clock, work waited for)."""

    def __init__(self, device: str):
        self.device = device

    def time(self, fn) -> float:
        import torch
        if self.device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t


# ------------------------------------------------------------------------------------------ a: reference

def section_reference(ctx) -> dict:
    import torch

    from gtr.models.checkpoint import load_mar, load_vae
    from gtr.models.reference import TorchComponents
    from gtr.plan import build_plan
    from gtr.runtime.fidelity import image_psnr, sample_passes, token_error
    from gtr.runtime.sampler import sample
    from gtr.tiny.model import load_tiny

    fixtures = ROOT / "tests" / "fixtures" / "official_mar"
    models = {}
    if (fixtures / "mar_small.pth").is_file():
        mar = load_mar("mar-test", fixtures / "mar_small.pth")
        models["official fixture (mar-test)"] = (mar, load_vae(mar.config.vae, fixtures / "kl16_small.ckpt",
                                                                with_encoder=False))
    models["mar-tiny"] = load_tiny()
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 against fp32
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    sizes = ctx["sizes"]
    for name, (mar, vae) in models.items():
        c = mar.config
        kw = dict(token_dim=c.token_dim, num_classes=c.num_classes)
        labels = [x % c.num_classes for x in sizes["labels"]]
        for plan_name in sizes["parity_plans"]:
            extra = {"diffusion_steps": sizes["diffusion_steps"]} if plan_name.startswith("mar-") else sizes["gtr"]
            plan = build_plan(plan_name, c.grid, cfg=c.default_cfg, **extra)
            ref = sample(TorchComponents(mar, vae, "cpu"), plan, labels, 0, **kw)
            got = sample(TorchComponents(mar, vae, ctx["device"]), plan, labels, 0, **kw)
            err, psnr = token_error(got.tokens, ref.tokens), image_psnr(got.images, ref.images)
            rows.append({"model": name, "plan": plan.name, "images": len(labels), "token_error": err,
                         "psnr_db": psnr, "passes_fp32_rule": sample_passes("fp32", psnr, err)})
            mar.to("cpu"), vae.to("cpu")
    if "official fixture (mar-test)" not in models:
        rows.append({"model": "official fixture", "status": f"skipped: no {fixtures}"})
    return {"status": "ok", "rows": rows}


# ----------------------------------------------------------------------------------------------- b: speed

def _official_imports(vendor: Path | None) -> list[str]:
    """Make the official code importable: --vendor on sys.path; stand-ins for tqdm and scipy.stats when
    missing (imported at the top of models/mar.py, unused when sampling). Returns the stand-ins made."""
    import importlib.util
    if vendor is not None and vendor.is_dir() and str(vendor) not in sys.path:
        sys.path.insert(0, str(vendor))
    made = []
    if importlib.util.find_spec("tqdm") is None:
        tqdm = types.ModuleType("tqdm")
        tqdm.tqdm = lambda it=None, *a, **k: it
        sys.modules["tqdm"] = tqdm
        made.append("tqdm")
    if importlib.util.find_spec("scipy") is None:
        scipy, stats = types.ModuleType("scipy"), types.ModuleType("scipy.stats")
        stats.truncnorm = lambda *a, **k: None  # the training mask-ratio generator
        scipy.stats = stats
        sys.modules.update({"scipy": scipy, "scipy.stats": stats})
        made.append("scipy.stats")
    if importlib.util.find_spec("timm") is None:
        raise Skip("timm is not importable: pip install --no-deps timm==0.9.12, or unzip its source (pip download "
                   "timm==0.9.12 --no-deps) into a folder given as --vendor")
    return made


def _random_mar(name: str, device: str):
    import torch

    from gtr.configs import get_config
    from gtr.models.mar import MAR
    g = torch.Generator(device=device).manual_seed(0)
    with torch.device(device):
        mar = MAR(get_config(name))
    with torch.no_grad():
        for p in mar.parameters():
            p.copy_(torch.randn(p.shape, generator=g, device=device) * 0.02)
    return mar.eval()


def section_speed(ctx) -> dict:
    import torch

    from gtr.models.reference import TorchComponents
    from gtr.plan import build_plan
    from gtr.runtime.sampler import sample

    device, sizes, clock = ctx["device"], ctx["sizes"], Clock(ctx["device"])
    deadline = time.perf_counter() + ctx["speed_budget_s"]
    official_path = os.environ.get("GTR_OFFICIAL_MAR")
    try:
        stubs = _official_imports(Path(ctx["vendor"]) if ctx["vendor"] else None)
        from gtr.bench.official import OfficialRunner
        official_why = None if official_path else "set GTR_OFFICIAL_MAR to a checkout of LTH14/mar"
    except Skip as e:
        stubs, official_why = [], str(e)
    rows = []
    for name in sizes["speed_models"]:
        if time.perf_counter() > deadline:
            rows.append({"model": name, "status": "skipped: time budget"})
            continue
        mar = _random_mar(name, device)
        c = mar.config
        plans = plans_for(c, sizes)
        warm_plan = build_plan("mar-2", c.grid, cfg=c.default_cfg, diffusion_steps=5)
        comps = TorchComponents(mar, None, device)
        official = None
        if official_why is None:
            with torch.device(device):  # built on the device: MAR-H's init on the CPU alone takes many seconds
                official = OfficialRunner(str(official_path), c, mar.state_dict(), plans["mar"], None)
            official.model.to(device)
        for precision in sizes["precisions"]:
            for batch in sizes["batches"]:
                labels = [i % c.num_classes for i in range(batch)]
                autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16")
                entry = {"model": name, "precision": precision, "batch": batch}
                runs = {"torch " + plans["mar"].name: lambda p=plans["mar"]: sample(
                            comps, p, labels, 0, token_dim=c.token_dim, num_classes=c.num_classes, decode=False),
                        "torch gtr": lambda: sample(comps, plans["gtr"], labels, 0, token_dim=c.token_dim,
                                                    num_classes=c.num_classes, decode=False)}
                if official is not None:
                    runs = {f"official {sizes['mar_steps']}-step": lambda: official.run(labels, 0), **runs}
                else:
                    entry["official"] = f"skipped: {official_why}"
                for label, fn in runs.items():
                    if time.perf_counter() > deadline:
                        entry[label] = "skipped: time budget"
                        continue
                    with torch.no_grad(), torch.device(device), autocast:
                        if label.startswith("official"):  # warm-up (kernels, allocator, cuBLAS): 2 AR steps
                            official.num_iter = 2
                            official.run(labels, 0)
                            official.num_iter = sizes["mar_steps"]
                        else:
                            sample(comps, warm_plan, labels, 0, token_dim=c.token_dim, num_classes=c.num_classes,
                                   decode=False)
                        entry[label] = round(clock.time(fn), 4)
                base = entry.get(f"official {sizes['mar_steps']}-step")
                if isinstance(base, float) and isinstance(entry.get("torch gtr"), float):
                    entry["speedup gtr vs official"] = round(base / entry["torch gtr"], 2)
                rows.append(entry)
        mar = comps = official = None  # free this model before the next
        if device == "cuda":
            torch.cuda.empty_cache()
    return {"status": "ok", "timer": "torch.cuda.Event" if device == "cuda" else "time.perf_counter",
            "stand_ins_for_official_imports": stubs, "rows": rows}


# ------------------------------------------------------------------------------------- d: GPU backends

def _gtr(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gtr", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _png(path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path), np.float64) / 127.5 - 1.0


def section_backends(ctx) -> dict:
    import importlib.util
    try:
        import onnxruntime as ort
        ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        ort_cuda = False
    have_trt = importlib.util.find_spec("tensorrt") is not None
    if ctx["device"] != "cuda" or not (ort_cuda or have_trt):
        raise Skip("neither onnxruntime's CUDA provider nor TensorRT is importable here" if ctx["device"] == "cuda"
                   else "GPU backends run only with --device cuda")
    import gtr
    from gtr.runtime.fidelity import image_psnr
    out, rows = Path(tempfile.mkdtemp(prefix="gtr-gpu-check-")), []
    bundle = gtr.export("mar-tiny", out / "mar-tiny-fp16.plan", precision="fp16", plans=["gtr"], log=None)
    r = _gtr("run", bundle, "--class", 3, "-o", out / "cpu.png", "--device", "cpu")
    if r.returncode:
        return {"status": "failed", "reason": f"gtr-run --device cpu: {r.stderr.strip()[-300:]}"}
    runs = []
    if ort_cuda:
        runs.append(("onnxruntime CUDA", ["--device", "cuda", "--backend", "onnxruntime"]))
    if have_trt:
        b = _gtr("build", bundle, "--timing-cache", out / "timing.cache", timeout=600)
        rows.append({"what": "gtr-build", "ok": b.returncode == 0, "tail": (b.stdout + b.stderr).strip()[-300:]})
        runs.append(("TensorRT", ["--backend", "tensorrt"]))
    for name, extra in runs:
        png = out / f"{name.split()[0]}.png"
        r = _gtr("run", bundle, "--class", 3, "-o", png, *extra)
        row = {"what": f"gtr-run {' '.join(extra)}", "ok": r.returncode == 0}
        if r.returncode == 0:
            row["psnr_vs_cpu_db"] = image_psnr(_png(png), _png(out / "cpu.png"))
        else:
            row["tail"] = r.stderr.strip()[-300:]
        rows.append(row)
    if have_trt:
        t = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "tests/test_tensorrt_gpu.py"], cwd=ROOT,
                           capture_output=True, text=True, timeout=900)
        rows.append({"what": "pytest tests/test_tensorrt_gpu.py", "ok": t.returncode == 0,
                     "tail": t.stdout.strip().splitlines()[-1] if t.stdout.strip() else t.stderr[-300:]})
    return {"status": "ok" if all(r["ok"] for r in rows) else "failed", "rows": rows}


# ------------------------------------------------------------------------------------------------ report

def _versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("torch", "onnxruntime", "cupy", "tensorrt"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent or broken: say so
            out[mod] = None
    try:
        from importlib import metadata
        out["cuda-bindings"] = metadata.version("cuda-bindings")
    except Exception:  # noqa: BLE001
        out["cuda-bindings"] = None
    return out


# Checked in `make test` without a GPU (tests/real_gpu_packages.py installs the real packages): what this
# script need not repeat, and what its GPU sections add to.
WITHOUT_GPU = {
    "tensorrt 10.1.0 + cuda-bindings 12.9 (tensorrt-cu12-bindings)": "tests/test_gpu_real_packages.py",
    "tensorrt 10.16.1.11 + cuda-bindings 13.4 (tensorrt-cu13-bindings)": "tests/test_gpu_real_packages.py",
    "tensorrt 11.4.0.106 + cuda-bindings 13.4 (tensorrt-cu13-bindings)": "tests/test_gpu_real_packages.py",
    "onnxruntime-gpu 1.31.1 without CUDA libraries: CPU fallback note, --device cuda error":
        "tests/test_gpu_ort_fallback.py",
    "exported graphs vs onnx-tensorrt's operator table (TensorRT 10.1)": "tests/test_trt_onnx_support.py",
}
NEEDS_GPU = ["engines built and run (tests/test_tensorrt_gpu.py, section d)", "CUDA-graph capture and replay "
             "on a device (section c)", "device numerics and speed (sections a, b)"]


def markdown(report: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
    lines = [f"# gtr GPU check: {report['device_name']}", "",
             f"device `{report['device']}`, {report['seconds']:.0f} s, versions: {versions}",
             "", "| section | status | seconds | summary |", "|---|---|---|---|"]
    for name, sec in report["sections"].items():
        summary = sec.get("reason", "")
        if name == "a_reference" and "rows" in sec:
            summary = "; ".join(f"{r['model']}: token err {r['token_error']:.1e}, PSNR {r['psnr_db']:.1f} dB"
                                for r in sec["rows"] if "psnr_db" in r)
        if name == "c_head_loop" and "replay" in sec:
            replay = sec["replay"]
            summary = f"captured {replay['captured']}, replay vs numpy {replay['max_error_vs_numpy']:.1e}"
        lines.append(f"| {name} | {sec['status']} | {sec.get('seconds', 0):.1f} | {summary} |")
    lines += ["", "Checked without a GPU in `make test`: " + "; ".join(WITHOUT_GPU) + ". Needs a GPU: "
              + "; ".join(NEEDS_GPU) + "."]
    speed = report["sections"].get("b_speed", {}).get("rows", [])
    if speed:
        cols = sorted({k for r in speed for k in r if k not in ("model", "precision", "batch")})
        lines += ["", "## Speed (seconds per batch; warm-up excluded)", "",
                  "| model | precision | batch | " + " | ".join(cols) + " |", "|---" * (3 + len(cols)) + "|"]
        for r in speed:
            lines.append(f"| {r['model']} | {r.get('precision', '')} | {r.get('batch', '')} | "
                         + " | ".join(str(r.get(k, "")) for k in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--out", default="gpu-check", help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--vendor", help="folder with timm's source, if not installed")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the speed section (default by device)")
    ap.add_argument("--sections", default="a,b,c,d", help="which of a,b,c,d to run")
    args = ap.parse_args(argv)
    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device for torch here (run with --device cpu for the CPU variant)", file=sys.stderr)
        return 1
    if args.device == "cpu":
        torch.set_num_threads(1)  # side by side on one thread: a busy CI machine makes more threads spin, not help
    sizes = SIZES[args.device]
    ctx = {"device": args.device, "sizes": sizes, "vendor": args.vendor,
           "speed_budget_s": args.budget if args.budget is not None else sizes["budget_s"]}
    t0 = time.perf_counter()
    report = {"device": args.device, "device_name": torch.cuda.get_device_name() if args.device == "cuda"
              else platform.processor() or platform.machine(), "versions": _versions(), "sections": {},
              "verified_without_gpu": WITHOUT_GPU, "needs_gpu": NEEDS_GPU}
    wanted = set(args.sections.split(","))
    for key, name, fn in (("a", "a_reference", section_reference), ("b", "b_speed", section_speed),
                          ("c", "c_head_loop", section_head_loop), ("d", "d_backends", section_backends)):
        if key not in wanted:
            continue
        t = time.perf_counter()
        try:
            sec = fn(ctx)
        except Skip as e:
            sec = {"status": "skipped", "reason": str(e)}
        except Exception as e:  # noqa: BLE001 - a failed section is reported, the others still run
            sec = {"status": "failed", "reason": f"{type(e).__name__}: {str(e).strip()[:300]}",
                   "traceback": traceback.format_exc()[-3000:]}
        sec["seconds"] = round(time.perf_counter() - t, 2)
        report["sections"][name] = sec
        print(f"{name}: {sec['status']} ({sec['seconds']:.1f} s) {sec.get('reason', '')}", file=sys.stderr)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "gpu_check.md").write_text(markdown(report))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}", file=sys.stderr)
    return 1 if any(s["status"] == "failed" for s in report["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Calibration sampling speed: gtr's range collectors against plain sessions and onnxruntime's own calibrator.

    python benchmarks/calib_speed.py --model mar-b --work /tmp/calib-speed      # about 8 min on 2 cores

Exports the model's backbone and head (random weights) once, prepares them for int8 as gtr-export does
(private Identity edges, gtr.calibration.quantize.prepared_graph), then samples the same images along
one plan four ways, each in its own process (so no run inherits another's heap):

* `plain`: plain fp32 sessions of the prepared graphs (gtr.export.exporter.open_session): no ranges,
  the floor;
* `gtr`: gtr's RangeCollector (what gtr-export calibrates with);
* `before`: what RangeCollector was until 2026-12-02: onnxruntime's calibrator as create_calibrator
  builds it for op type Identity (ranges of the Identities' inputs and outputs), its session again
  unoptimized, as onnxruntime's calibrators run it, and without a memory arena, as gtr-export opens
  every session;
* `onnxruntime`: the same calibrator with its own session (unoptimized, memory arena on). For
  reference only: the arena keeps the largest blocks of every shape it sees, which is why gtr-export
  opens its sessions without one (gtr.export.exporter.open_session).

Prints seconds, user/system CPU, minor page faults and peak RSS per way, and the largest relative
difference between the ranges of `gtr` and `onnxruntime` on the tensors both take.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

WAYS = ("plain", "gtr", "before", "onnxruntime")


def prepare(model: str, work: Path) -> None:
    from gtr.calibration.quantize import int8_nodes, prepared_graph
    from gtr.configs import get_config
    from gtr.export.exporter import write_model
    from gtr.export.graphs import export_graph, graph_modules
    from gtr.export.weights import build_models
    config = get_config(model)
    mar, vae = build_models(config, random_weights=True, seed=0)[:2]
    mods = graph_modules(mar, vae, config.grid)
    graphs = {}
    for name in ("backbone", "head"):
        g = export_graph(name, mods[name], config, str(work))
        graphs[name] = {"path": write_model(prepared_graph(g, int8_nodes(g)), str(work / f"calib-{name}")),
                        "inputs": [i["name"] for i in g.inputs]}
    (work / "graphs.json").write_text(json.dumps(graphs))


def _onnxruntime_collector(path: str, inputs, own_session: bool = True):
    """RangeCollector's interface on onnxruntime's calibrator as create_calibrator builds it; with
    own_session=False on a session of its augmented graph as RangeCollector opened it before."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    from gtr.calibration.quantize import CALIBRATED, RangeCollector, _quiet
    c = RangeCollector.__new__(RangeCollector)
    c.model_path, c.names, c.feeds = path, set(inputs), 0
    with _quiet():
        c.calibrator = create_calibrator(Path(path), list(CALIBRATED), augmented_model_path=str(Path(path).parent / "ort.onnx"),
                                         calibrate_method=CalibrationMethod.MinMax, use_external_data_format=True,
                                         extra_options={"symmetric": True})
    c.calibrator.model = None
    if not own_session:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.enable_cpu_mem_arena = False
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        c.calibrator.infer_session = ort.InferenceSession(c.calibrator.augmented_model_path, so,
                                                          providers=["CPUExecutionProvider"])
    c.session = c.calibrator.infer_session
    c.output_args = c.session.get_outputs()
    original = c.calibrator.model_original_outputs
    c.output = next(i for i, o in enumerate(c.output_args) if o.name in original)
    return c


def run_way(way: str, model: str, plan_name: str, images: int, work: Path) -> dict:
    from gtr.calibration.collect import IMAGES_PER_CALL, record
    from gtr.calibration.quantize import RangeCollector
    from gtr.calibration.spec import CalibrationSpec
    from gtr.configs import get_config
    from gtr.export.exporter import open_session
    from gtr.export.progress import MMAP_THRESHOLD, _libc
    from gtr.plan.options import make_plans
    libc = _libc()
    if libc is not None:
        libc.mallopt(-3, MMAP_THRESHOLD)  # as during gtr-export
    config = get_config(model)
    graphs = json.loads((work / "graphs.json").read_text())
    make = {"plain": lambda g: open_session(g["path"]),
            "gtr": lambda g: RangeCollector(g["path"], g["inputs"], "max"),
            "before": lambda g: _onnxruntime_collector(g["path"], g["inputs"], own_session=False),
            "onnxruntime": lambda g: _onnxruntime_collector(g["path"], g["inputs"])}[way]
    sessions = {name: make(g) for name, g in graphs.items()}
    spec = CalibrationSpec(classes=tuple(range(1, images + 1)), seeds=1).resolve(config.num_classes)
    plans = make_plans([plan_name], config, {})
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    record(sessions, plans, spec, config.num_classes, config.token_dim)
    seconds, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
    out = {"way": way, "seconds": seconds, "user_s": r1.ru_utime - r0.ru_utime, "sys_s": r1.ru_stime - r0.ru_stime,
           "minor_faults": r1.ru_minflt - r0.ru_minflt, "peak_rss_gib": r1.ru_maxrss / 2 ** 20,
           "images": images, "images_per_call": IMAGES_PER_CALL, "plan": plan_name}
    if way != "plain":
        out["ranges"] = {name: {k: float(abs(v.range_value[1]).max()) for k, v in s.ranges().data.items()}
                         for name, s in sessions.items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mar-b")
    ap.add_argument("--plan", default="gtr")
    ap.add_argument("--images", type=int, default=2, help="calibration images (classes 1..N, one seed)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gtr-calib-speed"))
    ap.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # one way, in this process
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.way:
        (a.work / f"{a.way}.json").write_text(json.dumps(run_way(a.way, a.model, a.plan, a.images, a.work)))
        return 0
    if not (a.work / "graphs.json").is_file():
        print(f"exporting {a.model}'s backbone and head to {a.work} ...", flush=True)
        prepare(a.model, a.work)
    results = {}
    for way in WAYS:
        subprocess.run([sys.executable, __file__, "--model", a.model, "--plan", a.plan, "--images", str(a.images),
                        "--work", str(a.work), "--way", way], check=True)
        results[way] = r = json.loads((a.work / f"{way}.json").read_text())
        print(f"{way:12s} {r['seconds']:7.1f} s  user {r['user_s']:6.1f} s  sys {r['sys_s']:5.1f} s  "
              f"minor faults {r['minor_faults']:>9d}  peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)
    mine, theirs = results["gtr"]["ranges"], results["onnxruntime"]["ranges"]
    for name in mine:
        common = set(mine[name]) & set(theirs[name])
        diff = max(abs(mine[name][k] - theirs[name][k]) / max(abs(theirs[name][k]), 1e-30) for k in common)
        print(f"{name}: gtr takes {len(mine[name])} ranges, onnxruntime {len(theirs[name])}; "
              f"largest relative difference on the {len(common)} shared: {diff:.1e}")
    t = {way: r["seconds"] for way, r in results.items()}
    print(f"gtr: {t['before'] / t['gtr']:.2f}x faster than before, {t['gtr'] / t['plain']:.2f}x the plain sessions' "
          f"time, {t['gtr'] / t['onnxruntime']:.2f}x onnxruntime's own calibrator's")
    (a.work / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

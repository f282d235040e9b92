"""Full-size exports measured (issue 19): export time, peak RSS, bundle size and gtr s/image on this CPU.

    python benchmarks/full_size.py --model mar-b --model mar-l --precision fp32 --precision int8 \\
        --work /tmp/full_size --bench
    python benchmarks/full_size.py --record mar-h:fp16:/tmp/mar-h-fp16.log:/tmp/mar-h-fp16.plan --bench
    python benchmarks/full_size.py --table          # rewrite the table from results.json only

Each export runs as its own process under `/usr/bin/time -v` (peak RSS = its "Maximum resident set
size", which counts the torch model, the graphs, the sessions and the mapped weight files), with
--random-weights and otherwise the options given after `--` (default: none, i.e. gtr-export's
defaults: plans gtr and mar-64, 10 classes x 1 seed of calibration for int8). `--record` takes a run
made by hand the same way (`/usr/bin/time -v gtr-export ... > LOG 2>&1`) instead of running it.
`--bench` then times each bundle with gtr-bench (onnxruntime, plan gtr, batch 1, one round, no
warm-up run, images decoded) and keeps its s/image. `--torch-ref MODEL` adds gtr-bench's PyTorch
reference (mar-64 and gtr plans) for the same random weights, side by side with the bundles.
`--bench-json MODEL:BENCH.JSON` takes the s/image of a gtr-bench run made by hand on MODEL's bundles
(e.g. with the official sampler beside them) and keeps all its rows as that model's side-by-side run.

Results merge into <outdir>/results.json (one entry per model and precision, newest wins) and the
markdown table <outdir>/full_size.md; the fp32 weight size per model (parameters x 4 bytes, what the
memory goals are relative to) is computed from the model configs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GiB = 2 ** 30


def fp32_weight_bytes(model: str) -> int:
    """Parameters x 4 of the MAR model and the decoder-only VAE (what a fp32 export holds)."""
    import torch

    from gtr.configs import get_config
    from gtr.models.mar import MAR
    from gtr.models.vae import AutoencoderKL
    config = get_config(model)
    with torch.device("meta"):
        mar, vae = MAR(config), AutoencoderKL(config.vae, with_encoder=False)
    return 4 * sum(p.numel() for m in (mar, vae) for p in m.parameters())


def parse_time_log(text: str) -> dict:
    """Peak RSS (bytes), wall seconds and exit status from `/usr/bin/time -v` output."""
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    status = re.search(r"Exit status: (\d+)", text)
    seconds = None
    if wall:
        parts = [float(x) for x in wall.group(1).split(":")]
        seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    return {"peak_rss": int(rss.group(1)) * 1024 if rss else None, "seconds": seconds,
            "exit_status": int(status.group(1)) if status else None}


def export(model: str, precision: str, work: Path, extra: list[str]) -> dict:
    out = work / f"{model}-{precision}.plan"
    log = work / f"{model}-{precision}.log"
    cmd = ["/usr/bin/time", "-v", str(BIN / "gtr-export"), "--model", model, "--random-weights", "--precision",
           precision, "-o", str(out), *extra]
    print(" ".join(cmd), flush=True)
    with open(log, "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
    return record(model, precision, log, out, " ".join(["gtr-export", *cmd[3:]]))


def record(model: str, precision: str, log: Path, bundle: Path, command: str | None = None) -> dict:
    text = Path(log).read_text(errors="replace")
    entry = {"model": model, "precision": precision, **parse_time_log(text),
             "bundle_bytes": Path(bundle).stat().st_size if Path(bundle).is_file() else None,
             "bundle": str(bundle), "log": str(log), "command": command or _command(text),
             "last_line": next((ln for ln in reversed(text.splitlines()) if ln.strip() and not ln.startswith("\t")), ""),
             "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    return entry


def _command(text: str) -> str | None:
    m = re.search(r'Command being timed: "(.*)"', text)
    return m.group(1) if m else None


def bench(entry: dict, work: Path) -> None:
    """gtr-bench s/image of the bundle (onnxruntime, plan gtr, batch 1)."""
    if not entry.get("bundle_bytes"):
        return
    outdir = work / f"bench-{entry['model']}-{entry['precision']}"
    cmd = [str(BIN / "gtr-bench"), entry["bundle"], "--backend", "onnxruntime", "--plan", "gtr", "--batch", "1",
           "--rounds", "1", "--warmup", "0", "-o", str(outdir)]
    print(" ".join(cmd), flush=True)
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        entry["bench_error"] = (r.stderr or r.stdout).strip().splitlines()[-1:]
        return
    rows = json.loads((outdir / "bench.json").read_text())["rows"]
    row = next(x for x in rows if x["backend"] == "onnxruntime" and x["plan"] == "gtr")
    entry["s_per_image"] = row["s_per_image"]
    entry["split_s_per_image"] = row["split_s_per_image"]
    entry["bench_seconds"] = time.perf_counter() - t


def torch_reference(model: str, work: Path, bundles: list[str]) -> dict:
    """gtr-bench of the bundles against torch (same random weights) on gtr and mar-64, side by side."""
    outdir = work / f"bench-{model}-vs-torch"
    cmd = [str(BIN / "gtr-bench"), *bundles, "--backend", "onnxruntime", "--backend", "torch", "--plan", "gtr",
           "--plan", "mar-64", "--batch", "1", "--rounds", "1", "--warmup", "0", "-o", str(outdir)]
    print(" ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return {"error": (r.stderr or r.stdout).strip().splitlines()[-1:]}
    rows = json.loads((outdir / "bench.json").read_text())["rows"]
    return {"rows": [{k: x[k] for k in ("backend", "precision", "plan", "s_per_image")} for x in rows],
            "text": r.stdout}


def table(results: dict, weights: dict) -> str:
    lines = ["| model | fp32 weights | precision | export time | peak RSS | peak / fp32 weights | bundle | "
             "bundle / fp32 bundle | gtr s/image (onnxruntime CPU, batch 1) |",
             "|---|---|---|---|---|---|---|---|---|"]
    models, precisions = ["mar-b", "mar-l", "mar-h"], ["fp32", "fp16", "int8"]

    def order(k):
        e = results[k]
        return (models.index(e["model"]) if e["model"] in models else 9,
                precisions.index(e["precision"]) if e["precision"] in precisions else 9, k)

    for key in sorted(results, key=order):
        e = results[key]
        w = weights.get(e["model"])
        fp32 = results.get(f"{e['model']}:fp32", {}).get("bundle_bytes")
        ok = e.get("exit_status") == 0 and e.get("bundle_bytes")
        cells = [e["model"], f"{w / GiB:.2f} GiB" if w else "?", e["precision"]
                 + ("" if not e.get("note") else f" ({e['note']})"),
                 f"{e['seconds'] / 60:.1f} min" if e.get("seconds") else "?",
                 f"{e['peak_rss'] / GiB:.1f} GiB" if e.get("peak_rss") else "?",
                 f"{e['peak_rss'] / w:.2f}x" if e.get("peak_rss") and w else "?",
                 f"{e['bundle_bytes'] / 2**20:.0f} MiB" if ok else f"failed: {e.get('last_line', '')[:60]}",
                 f"{e['bundle_bytes'] / fp32:.1%}" if ok and fp32 else "-",
                 f"{e['s_per_image']:.1f}" if e.get("s_per_image") else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--precision", action="append", default=[])
    ap.add_argument("--record", action="append", default=[], metavar="MODEL:PRECISION:LOG:BUNDLE")
    ap.add_argument("--note", default=None, help="a note for the entries of this run (e.g. calibration options)")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--torch-ref", default=None, metavar="MODEL")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--bench-json", action="append", default=[], metavar="MODEL:BENCH.JSON",
                    help="take s/image (onnxruntime, plan gtr, batch 1) per precision from a gtr-bench run of "
                         "MODEL's bundles, and keep its rows (torch too) as the side-by-side comparison")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gtr-full-size"))
    ap.add_argument("--outdir", type=Path, default=ROOT / "docs" / "bench" / "full_size")
    ap.add_argument("extra", nargs="*", help="gtr-export options after --")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    a.outdir.mkdir(parents=True, exist_ok=True)
    path = a.outdir / "results.json"
    data = json.loads(path.read_text()) if path.is_file() else {"results": {}, "weights": {}, "machine": {}}
    entries = []
    for m in a.model:
        for p in a.precision or ["fp32"]:
            entries.append(export(m, p, a.work, a.extra))
    for spec in a.record:
        m, p, log, bundle = spec.split(":", 3)
        entries.append(record(m, p, Path(log), Path(bundle)))
    for e in entries:
        if a.note is not None:
            e["note"] = a.note
        if a.bench:
            bench(e, a.work)
        data["results"][f"{e['model']}:{e['precision']}"] = e
        json.dump(data, open(path, "w"), indent=1)
    for spec in a.bench_json:
        m, bj = spec.split(":", 1)
        rows = json.loads(Path(bj).read_text())["rows"]
        for row in rows:
            key = f"{m}:{row['precision']}"
            if row["backend"] == "onnxruntime" and row["plan"] == "gtr" and row["batch"] == 1 and key in data["results"]:
                data["results"][key]["s_per_image"] = row["s_per_image"]
                data["results"][key]["split_s_per_image"] = row["split_s_per_image"]
        data.setdefault("bench_runs", {})[m] = {
            "rows": [{k: x[k] for k in ("backend", "precision", "plan", "batch", "s_per_image")} for x in rows],
            "text": "\n".join(f"{x['backend']:12s} {x['precision'] or '':5s} {x['plan']:7s} batch {x['batch']}: "
                              f"{x['s_per_image']:6.1f} s/image" + ("" if x.get("decode", True) else " (tokens only)")
                              + (f", tokens {x['speedup_tokens']:.1f}x {x['baseline']}" if x.get("speedup_tokens") else "")
                              for x in rows)}
    if a.torch_ref:
        bundles = [e["bundle"] for k, e in sorted(data["results"].items())
                   if e["model"] == a.torch_ref and e.get("bundle_bytes") and Path(e["bundle"]).is_file()]
        data.setdefault("bench_runs", {})[a.torch_ref] = torch_reference(a.torch_ref, a.work, bundles)
    for m in {e["model"] for e in data["results"].values()}:
        if m not in data["weights"]:
            data["weights"][m] = fp32_weight_bytes(m)
    data["machine"] = {"cpus": os.cpu_count(), "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}
    json.dump(data, open(path, "w"), indent=1)
    md = ["# Full-size exports (random weights, official layouts)", "",
          f"Machine: {data['machine']['cpus']} CPUs, {data['machine']['memory_bytes'] / GiB:.0f} GiB; "
          "`benchmarks/full_size.py` (peak RSS from `/usr/bin/time -v`; s/image from gtr-bench, plan gtr, "
          "batch 1, onnxruntime CPU).", "", table(data["results"], data["weights"])]
    for m, run in sorted((data.get("bench_runs") or {}).items()):
        if run.get("text"):
            md += [f"## {m}: gtr-bench, side by side in one run", "", "```", run["text"].strip(), "```", ""]
    (a.outdir / "full_size.md").write_text("\n".join(md))
    print((a.outdir / "full_size.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One gtr-bench run: the bundles and plans, the entries to time, the measurement and its outputs."""
from __future__ import annotations

import os

from gtr.bench.probe import matmul_probe
from gtr.bench.report import plot, table, write_json
from gtr.bench.runner import Entry, component_entry, measure, summarize


def _versions() -> dict:
    import numpy
    import onnxruntime
    from gtr._version import __version__
    out = {"gtr": __version__, "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__}
    try:
        import torch
        out["torch"] = torch.__version__
    except ImportError:
        pass
    return out


class BenchSession:
    def __init__(self, threads: int, device: str, decode: bool, echo=print):
        self.threads, self.device, self.decode, self.echo = threads, device, decode, echo
        self.bundles = []  # gtr.runtime.bundle.Bundle, one per precision
        self.plans = []
        self.cfg = None
        self.config = None
        self.models = None  # (MAR, VAE) of the torch reference, built on first need
        self.entries: list[Entry] = []

    # ---- what to time

    def export(self, model, folder, precisions, plan_names, checkpoint, vae, random_weights, cfg) -> None:
        from gtr.extras import require
        require("gtr-bench --model", "export", "runtime")
        from gtr.configs import get_config
        from gtr.export.api import export
        get_config(model)  # an unknown model fails here, before anything is said or exported
        options = {} if cfg is None else {"cfg": cfg}
        paths = []
        for precision in precisions:
            self.echo(f"exporting {model} at {precision} (export checks skipped: gtr-check and the tests cover parity)")
            paths.append(export(model, os.path.join(folder, f"{model}-{precision}.plan"), precision=precision,
                               plans=list(plan_names), checkpoint=checkpoint, vae=vae,
                               random_weights=random_weights, log=None, verify=False, **options))
        self.open_bundles(paths, plan_names, None)

    def open_bundles(self, paths, plan_names, cfg) -> None:
        from gtr.runtime.bundle import BundleError, read_bundle
        self.bundles = [read_bundle(p) for p in paths]
        self.config = self.bundles[0].config
        for b in self.bundles[1:]:
            if b.config.to_dict() != self.config.to_dict():
                raise BundleError(f"{b.path}: a different model than {self.bundles[0].path}; bench one model at a time")
        names = list(plan_names) or list(self.bundles[0].plans())
        self.cfg = cfg
        # Each plan as the first bundle that holds it defines it (a plan no bundle holds is an error);
        # a bundle is timed on the plans it holds.
        self.plans = [next((b for b in self.bundles if n in b.plans()), self.bundles[0]).plan(n, cfg=cfg)
                      for n in names]

    def _torch_models(self):
        if self.models is None:
            from gtr.export.weights import bundle_models
            mar, vae, _ = bundle_models(self.bundles[0].manifest, self.config)
            self.models = (mar, vae)
        return self.models

    def add_entries(self, backends, official) -> None:
        from gtr.extras import installed
        if backends is None:  # TensorRT by default only where it is installed and the bundle has engines (gtr-build)
            from gtr.runtime.trt.engine_store import engine_entries
            backends = ["onnxruntime"] + (["torch"] if installed("torch") else [])
            if installed("tensorrt") and all(engine_entries(b) for b in self.bundles):
                backends.append("tensorrt")
        for backend in backends:
            if backend == "torch":
                self._add_torch()
            for bundle in self.bundles:
                if backend in ("onnxruntime", "tensorrt"):
                    self._add_bundle(bundle, backend)
        if official:
            self._add_official(official)
        if not self.entries:
            from gtr.bench.official import OfficialError
            raise OfficialError("nothing to time: no backend and plan pair")

    def _add_bundle(self, bundle, backend) -> None:
        from gtr.runtime.backends import make_components
        comps = make_components(bundle, backend, "cuda" if backend == "tensorrt" else self.device, self.threads)
        for name in (p.name for p in self.plans):
            if name not in bundle.plans():
                self.echo(f"note: {bundle.path} has no plan {name!r}; not timed on it")
                continue
            plan = bundle.plan(name, cfg=self.cfg)
            if hasattr(comps, "prepare"):
                comps.prepare(plan)
            self.entries.append(component_entry(backend, bundle.precision, plan, comps, self.config, self.decode))

    def _add_torch(self) -> None:
        from gtr.extras import require
        require("gtr-bench --backend torch", "export")
        import torch

        from gtr.models.reference import TorchComponents
        torch.set_num_threads(self.threads)
        mar, vae = self._torch_models()
        comps = TorchComponents(mar, vae, self.device)
        for plan in self.plans:
            self.entries.append(component_entry("torch", "fp32", plan, comps, self.config, self.decode))

    def _add_official(self, path) -> None:
        from gtr.extras import require
        require("gtr-bench --official", "export")
        from gtr.bench.official import OfficialError, OfficialRunner, official_plan_steps
        plans = [p for p in self.plans if official_plan_steps(p)]
        if not plans:
            raise OfficialError("--official needs a mar-N plan (the official sampler runs only those)")
        mar, _ = self._torch_models()
        for plan in plans:
            runner = OfficialRunner(path, self.config, mar.state_dict(), plan, self.threads)
            self.entries.append(Entry("official", "fp32", plan, runner.run, decodes=False))

    # ---- measure and report

    def baseline(self) -> Entry | None:
        for backend in ("official", "torch"):
            for e in self.entries:
                if e.backend == backend and e.plan.name.startswith("mar-"):
                    return e
        return None

    def run(self, batches, rounds, warmup, classes, seed) -> dict:
        from gtr.runtime.progress import progress_bar
        probe = matmul_probe(self.threads)
        self.echo(f"matmul probe ({probe['engine']} {probe['n']}x{probe['n']}, {self.threads} threads): "
                  f"{probe['gflops']:.0f} GFLOP/s")
        total = len(batches) * len(self.entries) * (rounds + warmup)
        with progress_bar(total, "bench", "run") as bar:  # a bar on a terminal, one line per run elsewhere
            measure(self.entries, batches, rounds, classes, self.config, seed, warmup, progress=bar.update)
        base = self.baseline()
        rows = summarize(self.entries, self.config, probe, base)
        for b in batches:
            self.echo("\n" + table(rows, b, probe))
        return {"model": self.config.name, "bundles": [str(b.path) for b in self.bundles],
                "threads": self.threads, "device": self.device, "decode": self.decode, "batches": list(batches),
                "rounds": rounds, "warmup": warmup, "classes": list(classes), "seed": seed,
                "baseline": base.label if base else None, "probe": probe, "versions": _versions(), "rows": rows}

    def write(self, record: dict, outdir) -> None:
        path = os.path.join(outdir, "bench.json")
        write_json(path, record)
        self.echo(f"\nwrote {path}")
        png = os.path.join(outdir, "bench.png")
        title = (f"gtr-bench {record['model']}: {self.threads} threads, {self.device}"
                 f"{', tokens only' if not self.decode else ''}")
        if plot(png, record["rows"], record["batches"], title):
            self.echo(f"wrote {png}")
        else:
            self.echo("no plot: matplotlib is not installed (pip install matplotlib)")

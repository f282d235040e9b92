"""gtr-bench's measurement: every (backend, precision, plan) side by side, interleaved rounds, a batch sweep.

Each round runs every entry once, in turn, at one batch size, with the round's seed (the same work on
every backend); an entry's figures are those of its median round (by total time; the lower one of two
middle rounds), so a load spike on a shared machine hits all entries alike instead of one, and the time
split adds up to the total reported. FLOPs per image come from the plan's cost model
(gtr.plan.cost: the computation as the official code does it), so GFLOP/s compare like with like
across backends.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from gtr.bench.timing import PARTS, timed_sample
from gtr.plan import plan_cost


@dataclass
class Entry:
    """One timed subject: `run(labels, seed)` -> seconds {'total', 'backbone', 'head', 'decode', 'loop'}."""
    backend: str     # onnxruntime | torch | tensorrt | official
    precision: str   # fp32 | fp16 | int8 (torch and official: fp32)
    plan: object     # SamplingPlan
    run: object      # callable
    decodes: bool = True  # False: tokens only (the official sampler)
    times: dict = field(default_factory=dict)  # batch -> list of split dicts

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision} {self.plan.name}"


def component_entry(backend, precision, plan, components, config, decode: bool) -> Entry:
    """An Entry for sampler components (the bundle on a backend, or the torch reference)."""
    def run(labels, seed):
        return timed_sample(components, plan, labels, seed, config, decode)
    return Entry(backend, precision, plan, run, decodes=decode)


def batch_labels(classes, batch: int, num_classes: int) -> list[int]:
    return [int(classes[i % len(classes)]) % num_classes for i in range(batch)]


def measure(entries: list[Entry], batches, rounds: int, classes, config, seed: int = 0, warmup: int = 1,
            progress=None) -> None:
    """Fill each entry's `times[batch]` with `rounds` interleaved measurements (after `warmup` untimed runs
    per entry at each batch size: sessions, allocators and caches settle first)."""
    for batch in batches:
        labels = batch_labels(classes, batch, config.num_classes)
        for e in entries:
            for w in range(warmup):
                e.run(labels, seed + w)
                if progress:
                    progress()
            e.times[batch] = []
        for r in range(rounds):
            for e in entries:
                e.times[batch].append(e.run(labels, seed + r))
                if progress:
                    progress()


def summarize(entries: list[Entry], config, probe: dict, baseline: Entry | None) -> list[dict]:
    """Rows for the report and the JSON: medians per image, GFLOP/s, throughput, speedup vs `baseline`."""
    rows = []
    for e in entries:
        cost = plan_cost(e.plan, config)
        gflop = {"backbone": cost.backbone_flops / 1e9, "head": cost.head_flops / 1e9}
        for batch, runs in e.times.items():
            median_round = sorted(runs, key=lambda r: r["total"])[(len(runs) - 1) // 2]
            per_image = {p: median_round[p] / batch for p in ("total", *PARTS)}
            rate = {k: gflop[k] / per_image[k] if per_image[k] > 0 else None for k in gflop}
            total_rate = (gflop["backbone"] + gflop["head"]) / (per_image["total"] - per_image["decode"])
            row = {"backend": e.backend, "precision": e.precision, "plan": e.plan.name, "batch": batch,
                   "rounds": len(runs), "decode": e.decodes,
                   "s_per_image": per_image["total"], "images_per_s": 1.0 / per_image["total"],
                   "split_s_per_image": {p: per_image[p] for p in PARTS},
                   "gflop_per_image": gflop,
                   "gflops": {**rate, "tokens": total_rate},
                   "matmul_fraction": {k: (v / probe["gflops"] if v else None) for k, v in {**rate, "tokens": total_rate}.items()},
                   "round_s": [r["total"] for r in runs]}
            if baseline is not None and batch in baseline.times:
                base = statistics.median(r["total"] - r["decode"] for r in baseline.times[batch])
                mine = statistics.median(r["total"] - r["decode"] for r in runs)
                row["speedup_tokens"] = base / mine  # tokens only, so it holds beside a tokens-only baseline
                row["baseline"] = baseline.label
            rows.append(row)
    return rows

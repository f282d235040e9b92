"""gtr-bench's outputs: a markdown table per batch size, the JSON record, and a plot."""
from __future__ import annotations

import json

from gtr.bench.timing import PARTS
from gtr.runtime.files import atomic_write


def _ms(x) -> str:
    return f"{x * 1e3:.0f}" if x >= 0.1 else f"{x * 1e3:.1f}"


def table(rows: list[dict], batch: int, probe: dict) -> str:
    """Markdown table of the rows at one batch size (times per image)."""
    lines = [f"batch {batch} (per image; ms; GFLOP/s and % of the {probe['gflops']:.0f} GFLOP/s matmul probe)",
             "",
             "| backend | prec | plan | s/image | backbone | head | decode | loop | backbone GFLOP/s | head GFLOP/s "
             "| img/s | tokens speedup |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r["batch"] == batch):
        s, g, f = r["split_s_per_image"], r["gflops"], r["matmul_fraction"]
        rate = lambda k: f"{g[k]:.0f} ({100 * f[k]:.0f} %)" if g[k] else "-"  # noqa: E731
        speed = f"{r['speedup_tokens']:.1f}x" if "speedup_tokens" in r else "-"
        decode = _ms(s["decode"]) if r["decode"] else "n/a"
        lines.append(f"| {r['backend']} | {r['precision']} | {r['plan']} | {r['s_per_image']:.3f} | {_ms(s['backbone'])} "
                     f"| {_ms(s['head'])} | {decode} | {_ms(s['loop'])} | {rate('backbone')} | {rate('head')} "
                     f"| {r['images_per_s']:.3g} | {speed} |")
    return "\n".join(lines)


def write_json(path, record: dict) -> None:
    data = (json.dumps(record, indent=2) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def plot(path, rows: list[dict], batches, title: str) -> bool:
    """Left: where each entry's time per image goes at the first batch size; right: images/s over the sweep.
    Returns False (and writes nothing) when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = sorted({(r["backend"], r["precision"], r["plan"]) for r in rows}, key=lambda k: [r for r in rows if
                    (r["backend"], r["precision"], r["plan"]) == k][0]["s_per_image"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.5 * len(labels) + 3))
    first = batches[0]
    by = {(r["backend"], r["precision"], r["plan"], r["batch"]): r for r in rows}
    # Shares of each entry's time per image (stacked to 100 %), the time itself written at the bar's end.
    left = [0.0] * len(labels)
    totals = [by[(*k, first)]["s_per_image"] if (*k, first) in by else 0.0 for k in labels]
    for part, color in zip(PARTS, ("#4c72b0", "#dd8452", "#55a868", "#8c8c8c")):
        widths = [100 * by[(*k, first)]["split_s_per_image"][part] / t if t else 0.0 for k, t in zip(labels, totals)]
        ax1.barh(range(len(labels)), widths, left=left, color=color, label=part)
        left = [a + b for a, b in zip(left, widths)]
    for i, t in enumerate(totals):
        ax1.text(101, i, f"{t:.3g} s", va="center", fontsize=8)
    ax1.set_yticks(range(len(labels)), [" ".join(k) for k in labels])
    ax1.set_xlim(0, 115)
    ax1.set_xlabel(f"share of the time per image at batch {first} (%)")
    ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=4, fontsize=8)
    for k in labels:
        pts = [(b, by[(*k, b)]["images_per_s"]) for b in batches if (*k, b) in by]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=" ".join(k))
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("batch size")
    ax2.set_ylabel("images / s")
    ax2.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return True

"""Reports for gtr-eval: JSON results, per-class sample grids, the quality-vs-cost plot, a table.

Every file is written atomically (temp file + os.replace), so an interrupted run never
leaves a half-written report. matplotlib uses the Agg backend through Figure directly,
without pyplot's global state.
"""
from __future__ import annotations

import json
import math

import numpy as np

from gtr.runtime.files import atomic_write
from gtr.runtime.images import make_grid, save_png


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path, obj) -> None:
    """Pretty JSON (numpy scalars/arrays converted), written atomically."""
    text = (json.dumps(obj, indent=2, default=_jsonable) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))


def class_grid_png(images: np.ndarray, labels, path, per_class: int = 8, pad: int = 2) -> np.ndarray:
    """Save a grid with one row per class (sorted), the first `per_class` images of each.

    Classes with fewer images leave blank cells. Returns the grid array that was written.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
        raise ValueError(f"expected uint8 [N,H,W,3] and N labels, got {images.shape}, {labels.shape}")
    blank = np.zeros(images.shape[1:], dtype=np.uint8)
    cells = []
    for c in np.unique(labels):
        mine = images[labels == c][:per_class]
        cells.extend(list(mine) + [blank] * (per_class - len(mine)))
    grid = make_grid(np.stack(cells), ncol=per_class, pad=pad)
    save_png(grid, path)
    return grid


def _flops_key(rows) -> str:
    for k in ("tflops", "gflops"):
        if all(k in r for r in rows):
            return k
    raise KeyError("every row needs 'tflops' (or every row 'gflops')")


def quality_cost_plot(rows: list[dict], path, title: str | None = None,
                      xlabel: str | None = None) -> None:
    """Two panels, class accuracy and Frechet distance against FLOPs, one labelled point per plan.

    Rows with a "family" key are joined by a line per family (in FLOP order): a frontier per method.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    key = _flops_key(rows)
    fig = Figure(figsize=(10, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    x = [r[key] for r in rows]
    for ax, metric, label in zip(fig.subplots(1, 2), ("accuracy", "frechet"),
                                 ("class accuracy (higher is better)", "Frechet distance (lower is better)")):
        pts = [(xi, r.get(metric), r["plan"]) for xi, r in zip(x, rows)
               if r.get(metric) is not None and math.isfinite(r[metric])]
        families = {}
        for xi, r in zip(x, rows):
            if r.get("family") and r.get(metric) is not None and math.isfinite(r[metric]):
                families.setdefault(r["family"], []).append((xi, r[metric]))
        for family, line in families.items():
            line.sort()
            if len(line) > 1:
                ax.plot([p[0] for p in line], [p[1] for p in line], marker="o", label=family, zorder=2)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="black", s=12, zorder=3)
        if any(len(v) > 1 for v in families.values()):
            ax.legend(fontsize=7)
        for xi, yi, name in pts:
            ax.annotate(str(name), (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(xlabel or ("TFLOPs" if key == "tflops" else "GFLOPs"))
        ax.margins(0.15)  # room for the point labels
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.4g}"
    return "-" if v is None else str(v)


def format_table(rows: list[dict]) -> str:
    """Plain-text table: plan, FLOPs, accuracy, frechet first, then any other keys."""
    if not rows:
        return "(no rows)"
    first = ["plan", "tflops", "gflops", "accuracy", "frechet", "n"]
    keys = [k for k in first if any(k in r for r in rows)]
    for r in rows:  # lists and mappings (per-seed details) stay in the JSON
        keys += [k for k in r if k not in keys and not isinstance(r[k], (list, tuple, dict))]
    cells = [list(keys)] + [[_fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

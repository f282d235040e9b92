"""What a calibration run is asked to do (classes x seeds, method) and the record it leaves in the manifest.

Validated before any export work starts, so a bad request fails in one line and writes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from gtr.errors import CalibrationError  # noqa: F401  (re-exported: defined with the other error types)

# User-facing method name -> onnxruntime.quantization.CalibrationMethod member.
METHODS = {"max": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
DEFAULT_METHOD = "max"  # chosen by measured mar-tiny quality (README, INT8 section)
DEFAULT_SEEDS = 1  # 10 images per plan: full-size int8 calibration is sampling-bound (README, Full-size models)
DEFAULT_CLASSES = 10  # evenly spaced over the model's classes (all of them for a 10-class model)
SEED_BASE = 10_000  # calibration seeds 10000, 10001, ...: disjoint from the seeds evaluations use (0, 1, ...)


@dataclass(frozen=True)
class CalibrationSpec:
    classes: tuple | None = None  # None: DEFAULT_CLASSES evenly spaced
    seeds: int = DEFAULT_SEEDS
    method: str = DEFAULT_METHOD

    def resolve(self, num_classes: int) -> "CalibrationSpec":
        """A copy with the classes filled in; raises CalibrationError on a request that cannot run."""
        if self.method not in METHODS:
            raise CalibrationError(f"unknown calibration method {self.method!r}; use one of {', '.join(METHODS)}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise CalibrationError(f"--calib-seeds must be an integer >= 1 (images per class), got {self.seeds!r}")
        if self.classes is None:
            k = min(DEFAULT_CLASSES, num_classes)
            classes = tuple(sorted({round(i * (num_classes - 1) / max(k - 1, 1)) for i in range(k)}))
        else:
            classes = tuple(int(c) for c in self.classes)
        if not classes:
            raise CalibrationError("the calibration set is empty: give at least one class (--calib-classes)")
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise CalibrationError(f"calibration classes {bad} are out of range: the model has {num_classes} "
                                   f"classes (0..{num_classes - 1})")
        if len(set(classes)) != len(classes):
            raise CalibrationError(f"calibration classes repeat: {list(classes)}")
        return CalibrationSpec(classes, self.seeds, self.method)

    @property
    def seed_values(self) -> list[int]:
        return [SEED_BASE + i for i in range(self.seeds)]


def parse_classes(text: str | None) -> tuple | None:
    """'0,3,7' or '0-9' or '0-4,8' -> (0, 3, 7) ...; None or '' -> None (the default set)."""
    if text is None:
        return None
    out = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
        except (TypeError, ValueError):
            raise CalibrationError(f"--calib-classes: cannot read {part!r} (use e.g. 0,3,7 or 0-9)") from None
    return tuple(out)


def rss_note() -> str:
    """', RSS x.x GiB': this process's resident memory now, for progress lines ('' without /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return f", RSS {int(line.split()[1]) / 2**20:.1f} GiB"
    except (OSError, ValueError):
        pass
    return ""

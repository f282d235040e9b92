"""What a calibration run is asked to do (classes x seeds, method) and the record it leaves in the manifest.

Validated before any export work starts, so a bad request fails in one line and writes nothing.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from gtr.errors import CalibrationError  # noqa: F401  (re-exported: defined with the other error types)
from gtr.inputs import CALIB_OTHER, CALIB_SEEDS, CLASS

# User-facing method name -> onnxruntime.quantization.CalibrationMethod member.
METHODS = {"max": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
DEFAULT_METHOD = "max"  # ONNX Runtime's MinMax; percentile and entropy calibrate several times slower (docs/int8.md)
DEFAULT_SEEDS = 1  # 10 images per plan: full-size int8 calibration is sampling-bound (docs/full-size.md)
DEFAULT_CLASSES = 10  # evenly spaced over the model's classes (all of them for a 10-class model)
MAX_CLASSES = 100_000  # calibration classes of one export (each is sampled)
SEED_BASE = 10_000  # calibration seeds 10000, 10001, ...: disjoint from the seeds evaluations use (0, 1, ...)
# Images of each plan after the first (the bundle's default plan gets the whole set): one sampling call
# (collect.IMAGES_PER_CALL), which visits every static shape of the plan. A long plan (mar-64, 100-step
# chains) cost most of a full-size int8 export's time when it sampled the whole set (docs/int8.md).
DEFAULT_OTHER_IMAGES = 2


@dataclass(frozen=True)
class CalibrationSpec:
    classes: tuple | None = None  # None: DEFAULT_CLASSES evenly spaced
    seeds: int = DEFAULT_SEEDS
    method: str = DEFAULT_METHOD
    other_images: int = DEFAULT_OTHER_IMAGES  # images of each plan after the first; 0: the whole set

    def resolve(self, num_classes: int) -> "CalibrationSpec":
        """A copy with the classes filled in; raises CalibrationError on a request that cannot run."""
        if self.method not in METHODS:
            raise CalibrationError(f"unknown calibration method {self.method!r}; use one of {', '.join(METHODS)}")
        if not CALIB_SEEDS.holds(self.seeds) or not isinstance(self.seeds, int):
            raise CalibrationError(f"--calib-seeds must be {CALIB_SEEDS.describe()} (images per class), "
                                   f"got {self.seeds!r}")
        if not CALIB_OTHER.holds(self.other_images) or not isinstance(self.other_images, int):
            raise CalibrationError(f"--calib-other must be {CALIB_OTHER.describe()} (images of each plan after "
                                   f"the first), got {self.other_images!r}")
        if self.classes is None:
            k = min(DEFAULT_CLASSES, num_classes)
            classes = tuple(sorted({round(i * (num_classes - 1) / max(k - 1, 1)) for i in range(k)}))
        else:
            classes = tuple(int(c) for c in self.classes)
        if not classes:
            raise CalibrationError("the calibration set is empty: give at least one class (--calib-classes)")
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5:,} more" if len(bad) > 5 else "")
            raise CalibrationError(f"calibration classes {shown} are out of range: the model has {num_classes} "
                                   f"classes (0..{num_classes - 1})")
        if len(set(classes)) != len(classes):
            twice = sorted(c for c, n in Counter(classes).items() if n > 1)
            raise CalibrationError(f"calibration classes repeat: {', '.join(map(str, twice[:5]))}")
        return CalibrationSpec(classes, self.seeds, self.method, self.other_images)

    @property
    def seed_values(self) -> list[int]:
        return [SEED_BASE + i for i in range(self.seeds)]

    def images(self, plan_index: int) -> list[tuple[int, int]]:
        """(seed, class) of every image calibration samples along the plan at `plan_index` of the export:
        the whole set (classes x seeds) for the first plan, the first `other_images` of it for the others."""
        full = [(seed, c) for seed in self.seed_values for c in self.classes]
        if plan_index == 0 or not self.other_images:
            return full
        return full[:self.other_images]


def parse_classes(text: str | None) -> tuple | None:
    """'0,3,7' or '0-9' or '0-4,8' -> (0, 3, 7) ...; None or '' -> None (the default set). Every bound is
    checked (class ids in inputs.CLASS, at most MAX_CLASSES in all) before the list is made."""
    if text is None:
        return None
    spans = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            lo, hi = part.split("-", 1) if "-" in part[1:] else (part, part)
            lo, hi = int(lo), int(hi)
        except (TypeError, ValueError):
            raise CalibrationError(f"--calib-classes: cannot read {part!r} (use e.g. 0,3,7 or 0-9)") from None
        for end in (lo, hi):
            if not CLASS.holds(end):
                raise CalibrationError(f"--calib-classes: {end} in {part!r} is not a class id "
                                       f"({CLASS.describe()})")
        if hi < lo:
            raise CalibrationError(f"--calib-classes: {part!r} is an empty range (write LOW-HIGH)")
        spans.append((lo, hi))
        if sum(h - l + 1 for l, h in spans) > MAX_CLASSES:
            raise CalibrationError(f"--calib-classes: more than {MAX_CLASSES:,} classes (each calibration "
                                   f"class is sampled); give fewer")
    return tuple(c for lo, hi in spans for c in range(lo, hi + 1))


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

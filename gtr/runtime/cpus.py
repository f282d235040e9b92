"""How many CPUs this process may use: its affinity mask and its cgroup's CPU quota, not the machine's
core count (`os.cpu_count()` counts every core, so workers under Slurm, taskset or a container quota
would oversubscribe). Threads only decide how many of a call's fixed parts run at once; the parts, and
so the numbers, never depend on them (gtr.runtime.onnx_backend)."""
from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _quota(root: Path = CGROUP) -> float | None:
    """CPUs allowed by the cgroup's quota (v2 cpu.max, else v1 cfs), None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus(root: Path = CGROUP) -> int:
    """The CPUs this process may use: affinity, capped by the cgroup quota (rounded up), at least 1."""
    n = _affinity()
    quota = _quota(root)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)

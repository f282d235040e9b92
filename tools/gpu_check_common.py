"""What the parts of tools/gpu_check.py share: the repository root and the exception of a skipped section."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class Skip(Exception):
    """A section or entry that cannot run here; the message says why."""

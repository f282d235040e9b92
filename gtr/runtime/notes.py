"""Where the runtime's one-line notes go unless the caller passes its own `log` (stderr: stdout may be
a pipe of images or JSON)."""
from __future__ import annotations

import sys


def stderr_line(line: str) -> None:
    print(line, file=sys.stderr)

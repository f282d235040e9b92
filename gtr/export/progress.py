"""Progress lines with elapsed time, honest out-of-memory failures, and cleanup after a killed export.

    with ExportGuard(out_path, say) as guard:         # guard.workdir: the export's temporary folder
        with guard.step("backbone: export", need=3 * 2**30):
            ...

* `step(name)` reports the step to the guard and turns an out-of-memory error inside it (numpy's
  MemoryError, an onnxruntime allocation failure) into one ExportError line naming the step and the
  memory asked for; `need` (bytes, an estimate) is checked against the memory available first, so
  a step that cannot fit stops before it starts, with the same kind of line.
* The guard's watchdog: a small separate process that holds the other end of a pipe. When the
  export process ends in any way, the pipe closes; if the export did not say it finished (killed,
  e.g. by the kernel's out-of-memory killer, which leaves the process no chance to clean up), the
  watchdog removes the temporary folder and the bundle's temporary file, and prints one line with
  the step that was running and the peak resident memory the process had reached.
* Python's and onnxruntime's own temporary files (tempfile) go inside the export's folder while the
  guard is open, so they are removed with it.
* Freed memory goes back to the system (glibc): allocations of MMAP_THRESHOLD bytes or more are
  mapped, not taken from the heap, and the heap is trimmed after each step. Without it the freed
  protobuf copies of a model's weights (onnx.load in onnxruntime.quantization, the exporter's protos)
  stay in the heap, resident, for the rest of the export.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

from gtr.errors import ExportError

GiB = 2 ** 30
MMAP_THRESHOLD = 1 << 20  # bytes: glibc's M_MMAP_THRESHOLD while an export runs (fixed, not adaptive)


def _libc():
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def release_memory() -> None:
    """Give freed heap memory back to the system (glibc malloc_trim; nothing elsewhere)."""
    libc = _libc()
    if libc is not None:
        try:
            libc.malloc_trim(0)
        except AttributeError:
            pass

_WATCHDOG = r"""
import os, select, shutil, sys
pid, workdir, folder, prefix = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
step, peak, done, buf = "start", 0, False, b""
def hwm():
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
while True:
    peak = max(peak, hwm())
    ready, _, _ = select.select([0], [], [], 0.5)
    if not ready:
        continue
    data = os.read(0, 65536)
    if not data:
        break
    buf += data
    *lines, buf = buf.split(b"\n")
    for line in lines:
        if line == b"done":
            done = True
        elif line:
            step = line.decode("utf-8", "replace")
shutil.rmtree(workdir, ignore_errors=True)
try:
    for name in os.listdir(folder):
        if name.startswith(prefix):
            os.remove(os.path.join(folder, name))
except OSError:
    pass
if not done:
    sys.stderr.write(f"gtr-export: the export process was killed during '{step}' (out of memory?): it had "
                     f"reached {peak / 2**30:.1f} GiB resident; its temporary files are removed, no bundle written\n")
"""


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no /proc)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def peak_rss() -> int:
    """This process's peak resident memory so far (bytes)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return type(e).__module__.startswith("onnxruntime") and any(
        s in text for s in ("bad_alloc", "bad allocation", "Failed to allocate memory", "std::bad_alloc"))


class ExportGuard:
    """The export's temporary folder, its watchdog, and its steps (see the module docstring)."""

    def __init__(self, out_path, say=None):
        self.out_path = os.path.abspath(os.fspath(out_path))
        self.say = say or (lambda s: None)
        self.t0 = time.perf_counter()
        self.workdir = None
        self._proc = None
        self._tempdir = None
        self.current = None

    def __enter__(self):
        from gtr.runtime.files import TEMP_PREFIX
        self.workdir = tempfile.mkdtemp(prefix=f"gtr-export-{os.getpid()}-")
        folder = os.path.dirname(self.out_path)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(os.getpid()), self.workdir, folder, f"{TEMP_PREFIX}{os.getpid()}-"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            self._proc = None  # no watchdog: cleanup on normal exits only
        self._tempdir, tempfile.tempdir = tempfile.tempdir, self.workdir
        libc = _libc()
        if libc is not None:
            try:
                libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD: large blocks mapped, returned when freed
            except AttributeError:
                pass
        return self

    def _tell(self, line: str) -> None:
        if self._proc is not None and self._proc.stdin is not None:
            try:
                self._proc.stdin.write(line.encode("utf-8", "replace") + b"\n")
                self._proc.stdin.flush()
            except OSError:
                pass

    def __exit__(self, *exc):
        tempfile.tempdir = self._tempdir
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._proc is not None:
            self._tell("done")
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        return False

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @contextlib.contextmanager
    def step(self, name: str, need: int | None = None):
        """One long step: reported to the watchdog; out of memory in it -> one ExportError line."""
        self.current = name
        self._tell(name)
        avail = available_memory()
        if need is not None and avail is not None and need > avail:
            raise ExportError(f"{name}: needs about {need / GiB:.1f} GiB more memory, {avail / GiB:.1f} GiB are "
                              f"available (peak so far {peak_rss() / GiB:.1f} GiB): free memory or use a machine "
                              f"with more")
        try:
            yield
            release_memory()
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001 - only out-of-memory errors are translated
            if not _is_oom(e):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"{name}: out of memory ({first}); peak so far {peak_rss() / GiB:.1f} GiB, "
                              f"{(available_memory() or 0) / GiB:.1f} GiB available") from e

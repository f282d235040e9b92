"""A killed or out-of-memory export (issue 19): no partial bundle, no temporary files, one line that
names the step. Test model: tests/tiny_export_model.py."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gtr.errors import ExportError
from gtr.export.exporter import export_bundle

from tiny_export_model import TINY  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TESTS = Path(__file__).resolve().parent

CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
import gtr.runtime.bundle as bundle
from gtr.runtime.files import atomic_write
from gtr.plan import build_plan
from gtr.export.exporter import export_bundle
from tiny_export_model import TINY, tiny_models

def stuck_write(path, manifest, members):  # the bundle's temp file is there, half written, when killed
    def write(f):
        f.write(b"x" * 4096)
        f.flush()
        print("WRITING", flush=True)
        time.sleep(600)
    atomic_write(path, write)

bundle.write_bundle = stuck_write
export_bundle(TINY, *tiny_models(), [build_plan("gtr", TINY.grid, cfg=3.0)], batch=1, precision="fp32",
              out_path={out!r}, random_weights=True, sources={{}}, verify=False)
"""


def _ours(folder):
    """What is in the temp folder but the session-id file one of the libraries writes there at import."""
    return [n for n in os.listdir(folder) if n != ".ses"]


def test_a_killed_export_leaves_no_partial_bundle_and_no_temporary_files(tmp_path):
    tmp, out_dir = tmp_path / "tmp", tmp_path / "out"
    tmp.mkdir()
    out_dir.mkdir()
    out = out_dir / "x.plan"
    env = {**os.environ, "TMPDIR": str(tmp)}
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD.format(tests=str(TESTS), out=str(out)))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == "WRITING", (line, p.stderr.read() if p.poll() is not None else "")
        assert any(n.startswith("gtr-export-") for n in os.listdir(tmp))  # the export's folder exists ...
        assert any(n.startswith(".tmp-") for n in os.listdir(out_dir))  # ... and the half-written bundle
        p.send_signal(signal.SIGKILL)  # what the kernel's out-of-memory killer sends: no cleanup in-process
        p.wait(30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (_ours(tmp) or os.listdir(out_dir)):
            time.sleep(0.2)
        assert _ours(tmp) == [] and os.listdir(out_dir) == []
        err = p.stderr.read()
        assert "killed during 'writing the bundle'" in err and "GiB resident" in err, err
    finally:
        if p.poll() is None:
            p.kill()


def test_out_of_memory_in_a_step_is_one_line_naming_it(models, plans, tmp_path, monkeypatch):
    import gtr.export.exporter as exporter

    def no_memory(*a, **k):
        raise MemoryError("Unable to allocate 3.00 GiB for an array with shape (805306368,) and data type float32")

    monkeypatch.setattr(exporter, "export_graph", no_memory)
    with pytest.raises(ExportError) as e:
        export_bundle(TINY, *models, plans[:1], batch=1, precision="fp32", out_path=tmp_path / "x.plan",
                      random_weights=True, sources={})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("backbone: export: out of memory") and "3.00 GiB" in msg, msg
    assert os.listdir(tmp_path) == []


def test_a_step_that_cannot_fit_stops_before_it_starts(models, plans, tmp_path, monkeypatch):
    import gtr.export.progress as progress
    monkeypatch.setattr(progress, "available_memory", lambda: 1000)
    with pytest.raises(ExportError, match=r"^backbone: export: needs about 0\.0 GiB more memory, 0\.0 GiB are available"):
        export_bundle(TINY, *models, plans[:1], batch=1, precision="fp32", out_path=tmp_path / "x.plan",
                      random_weights=True, sources={})
    assert os.listdir(tmp_path) == []


def test_every_long_step_reports_its_time(models, plans, tmp_path):
    lines = []
    export_bundle(TINY, *models, plans[:1], batch=1, precision="fp32", out_path=tmp_path / "x.plan",
                  random_weights=True, sources={}, progress=lines.append)
    text = "\n".join(lines)
    for name in ("backbone", "head", "vae_decoder"):  # one CFG plan: no head_nocfg graph
        assert f"  {name}: exported (" in text and f"  {name}: checked " in text
    for what in ("backbone: exported (", "backbone.weights: packed", "head.weights: packed", "wrote the bundle"):
        assert what in text, what
    assert all(" s" in line and "peak RSS" in line for line in lines), lines

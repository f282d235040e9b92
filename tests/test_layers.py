"""One-way layers (design.md): no import cycles, nothing below the command line imports it, and the
Python API raises only the project's own error types, never click's."""
import subprocess
import sys
from pathlib import Path

import click
import pytest

import gtr
from gtr.errors import (BundleError, CheckpointError, ConfigError, DeviceError, GtrError, PlanError,
                        UnknownPlanError)

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT.parent / "shared" / "tools" / "import_layers.py"


@pytest.mark.skipif(not TOOL.is_file(), reason=f"the layer checker is not at {TOOL}")
def test_imports_run_one_way():
    r = subprocess.run([sys.executable, str(TOOL), "gtr"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 cycles" in r.stdout and "0 facade imports" in r.stdout and "0 upward imports" in r.stdout, r.stdout


def test_cli_exports_only_the_group():
    import gtr.cli
    assert gtr.cli.__all__ == ["main"]
    assert sorted(c for c in gtr.cli.main.commands) == ["bench", "build", "check", "download", "eval", "export",
                                                        "inspect", "plan", "run", "serve"]


def _raises_project_error(expected, fn, *args, **kwargs):
    with pytest.raises(expected) as info:
        fn(*args, **kwargs)
    e = info.value
    assert isinstance(e, GtrError) and not isinstance(e, click.ClickException), type(e).__mro__
    return str(e)


def test_export_raises_project_errors(tmp_path):
    out = tmp_path / "x.plan"
    assert "t_gen" in _raises_project_error(PlanError, gtr.export, "mar-test", out, t_gen=(50,), random_weights=True)
    assert "different name" in _raises_project_error(PlanError, gtr.export, "mar-test", out,
                                                     plans=["gtr", "gtr"], random_weights=True)
    assert "fts_bta" in _raises_project_error(PlanError, gtr.export, "mar-test", out, fts_bta=0.2,
                                              random_weights=True)
    _raises_project_error(ConfigError, gtr.export, "mar-x", out, random_weights=True)
    missing = tmp_path / "none.pth"
    assert "missing weights" in _raises_project_error(CheckpointError, gtr.export, "mar-test", out,
                                                      checkpoint=missing, vae=missing)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_load_raises_project_errors(tmp_path, tiny_bundle_path):
    _raises_project_error(BundleError, gtr.load, tmp_path / "missing.plan")
    _raises_project_error(DeviceError, gtr.load, tiny_bundle_path, device="tpu")
    _raises_project_error(DeviceError, gtr.load, tiny_bundle_path, backend="trt")
    with gtr.load(tiny_bundle_path, device="cpu") as pipe:
        assert "no plan 'nope'" in _raises_project_error(UnknownPlanError, pipe, [1], plan="nope")
        assert "out of range" in _raises_project_error(GtrError, pipe, [5000])


@pytest.fixture(scope="module")
def tiny_bundle_path(tmp_path_factory):
    pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("layers") / "mar-test.plan"
    gtr.export("mar-test", path, plans=["mar-4"], random_weights=True, log=None, verify=False)
    return path

"""One-way layers (docs/architecture.md): the import-linter contracts in pyproject.toml hold, every module
has a layer, the contracts catch a violation; nothing below the command line imports it, and the Python
API raises only the project's own error types, never click's."""
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest

import gtr
from gtr.errors import (BundleError, CheckpointError, ConfigError, DeviceError, GtrError, PlanError,
                        UnknownPlanError)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("importlinter", reason="import-linter is not installed (pip install -e '.[dev]')")
    tool = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(tool), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})


def test_import_contracts_hold():
    r = _lint_imports(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Contracts: {len(CONFIG['contracts'])} kept, 0 broken." in r.stdout, r.stdout


def test_every_module_has_a_layer():
    layers = next(c["layers"] for c in CONFIG["contracts"] if c["type"] == "layers")
    placed = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    top = {f"gtr.{p.stem}" for p in (ROOT / "gtr").glob("*.py") if p.name != "__init__.py"}
    top |= {f"gtr.{p.parent.name}" for p in (ROOT / "gtr").glob("*/__init__.py")}
    assert top - placed == set(), "modules the layers contract does not place (pyproject.toml)"
    assert placed - top == set(), "layers name modules that do not exist"


def test_contracts_catch_violations(tmp_path):
    """A copy of the package with one violation per contract: lint-imports names each broken contract."""
    shutil.copytree(ROOT / "gtr", tmp_path / "gtr", ignore=shutil.ignore_patterns("assets", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    violations = {"runtime/bundle.py": "import gtr.commands.run",  # upward: runtime -> commands
                  "plan/plan.py": "import torch",  # torch in the vocabulary
                  "errors.py": "import gtr",  # the facade from inside
                  "plan/fts.py": "import gtr.plan.builders"}  # a cycle: builders imports fts
    for rel, line in violations.items():
        path = tmp_path / "gtr" / rel
        path.write_text(path.read_text() + f"\n\ndef _violation():\n    {line}\n")
    r = _lint_imports(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"Contracts: 0 kept, {len(CONFIG['contracts'])} broken." in r.stdout, r.stdout
    assert "gtr.runtime.bundle -> gtr.commands.run" in r.stdout and "gtr.plan.plan -> torch" in r.stdout
    assert "No cycles are allowed in gtr.plan" in r.stdout and "gtr.errors is not allowed to import gtr" in r.stdout


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

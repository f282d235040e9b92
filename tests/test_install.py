"""The installs the README offers, on the built wheel: a fresh virtualenv (no system packages, no torch)
gets the bare wheel, then the cpu extra; every command works there or says in one line what to install.

The wheel is built once from a copy of the source; the small bundle comes from this (export) environment.
Runtime dependencies come from the package index; without one the tests skip and say so.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH_STEP = "pip install torch==2.13.0 && "
# pip's words for an index it cannot reach (a missing package on a reachable index is a failure, not a skip)
NO_INDEX = ("NewConnectionError", "ConnectTimeoutError", "ProxyError", "Max retries exceeded",
            "Temporary failure in name resolution", "Network is unreachable")


def _pip(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=timeout)


def _install(python: Path, requirement: str) -> None:
    """pip install into the venv at `python` (pip runs from this environment: the venv has none of its own)."""
    proc = _pip("--python", str(python), "install", "--quiet", requirement)
    if proc.returncode != 0:
        out = proc.stdout + proc.stderr
        # no index at all (offline CI) is a skip; a reachable index without our dependencies is a failure
        probe = _pip("--python", str(python), "install", "--dry-run", "--quiet", "--no-deps", "numpy")
        if any(s in out for s in NO_INDEX) or probe.returncode != 0:
            pytest.skip(f"cannot reach a package index for the runtime dependencies (not even numpy): "
                        f"{out.strip().splitlines()[-1]}")
        pytest.fail(f"pip install {requirement} failed:\n{out[-3000:]}")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built once from a copy of the source (the checkout gets no build/ or egg-info)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "gtr", src / "gtr", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.plan"))
    # with setuptools here, no isolated build environment (and no download) is needed
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    proc = _pip("wheel", "--no-deps", *isolation, "--quiet", "-w", str(out), str(src))
    assert proc.returncode == 0, proc.stderr[-3000:]
    [whl] = out.glob("gtr_mar-*.whl")
    return whl


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A small mar-tiny bundle made by the export install (this environment): one 4-step plan."""
    import gtr
    path = tmp_path_factory.mktemp("bundle") / "tiny.plan"
    gtr.export("mar-tiny", path, plans=["mar-4"], diffusion_steps=5, log=None)
    return path


def _venv(tmp_path_factory, wheel: Path, requirement: str) -> Path:
    """A fresh virtualenv (python -m venv: no system site packages) with `requirement` installed; its bin/."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    _install(bin_dir / "python", requirement.format(wheel=wheel))
    return bin_dir


@pytest.fixture(scope="module")
def bare(tmp_path_factory, wheel) -> Path:
    """`pip install gtr-mar`: the base only (numpy, click, pillow, tqdm)."""
    return _venv(tmp_path_factory, wheel, "{wheel}")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, wheel) -> Path:
    """`pip install 'gtr-mar[cpu]'`: the runtime install."""
    return _venv(tmp_path_factory, wheel, "{wheel}[cpu]")


class Env:
    """Runs a venv's commands in an empty folder of their own, with a private $GTR_HOME and temp folder."""

    def __init__(self, bin_dir: Path, tmp: Path):
        self.bin, self.cwd, self.home, self.tmp = bin_dir, tmp / "work", tmp / "home", tmp / "tmp"
        for d in (self.cwd, self.home, self.tmp):
            d.mkdir()
        drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "GTR_DEBUG")
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env.update(GTR_HOME=str(self.home), TMPDIR=str(self.tmp), TEMP=str(self.tmp), TMP=str(self.tmp))

    def __call__(self, command: str, *args) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / command), *map(str, args)], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=120)

    def files(self) -> set[Path]:
        """What a command may leave: files in its folder and $GTR_HOME, gtr's traceback logs (not other
        libraries' temp files: importing onnxruntime writes $TMPDIR/.ses)."""
        return {p for d in (self.cwd, self.home) for p in d.rglob("*")} | set(self.tmp.glob("gtr-*.log"))

    def works(self, command: str, *args) -> str:
        proc = self(command, *args)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (command, args, proc.stdout, proc.stderr)
        return proc.stdout

    def one_line_error(self, pip_command: str, command: str, *args) -> str:
        """The command fails with exit 1 and one line naming `pip_command`, and writes nothing."""
        before = self.files()
        proc = self(command, *args)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1, (command, args, proc.returncode, out)
        assert "Traceback" not in out and "internal error" not in out, out
        lines = out.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), out
        assert pip_command in lines[0], (pip_command, lines[0])
        assert self.files() == before, f"{command} wrote {self.files() - before}"
        return lines[0]


def test_bare_install_plans_and_inspects_and_names_the_runtime_to_install(bare, bundle, tmp_path):
    run = Env(bare, tmp_path)
    run.works("python", "-c", "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in "
                              "('torch', 'onnx', 'onnxruntime')))")
    assert "plan mar-4 (default)" in run.works("gtr-inspect", bundle, "--no-plans")
    assert "fewer FLOPs" in run.works("gtr-plan", "show", "gtr", "--model", "mar-tiny")
    run.works("gtr-build", bundle, "--dry-run")
    run.works("gtr", "download", "mar-b", "--dry-run")
    run.one_line_error("pip install 'gtr-mar[cpu]' (on a CUDA machine: gpu-cu12 or gpu-cu13 instead of cpu)",
                       "gtr-run", bundle, "--class", "3", "-o", "three.png")
    run.one_line_error(TORCH_STEP + "pip install 'gtr-mar[cpu,export]'", "gtr-export", "--model", "mar-tiny")


def test_runtime_install_runs_bundles_and_every_other_command_says_what_to_install(runtime, bundle, tmp_path):
    t0 = time.perf_counter()
    run = Env(runtime, tmp_path)
    run.works("python", "-c", "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in "
                              "('torch', 'onnx', 'safetensors')))")
    proc = run("gtr-run", bundle, "--class", "3", "-o", "three.png")
    assert proc.returncode == 0 and "wrote three.png: 1 image(s), plan mar-4" in proc.stdout, proc.stderr
    assert "note:" not in proc.stderr, proc.stderr  # one onnxruntime build: nothing to report
    assert (run.cwd / "three.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run.works("gtr", "run", bundle, "-c", "1", "-c", "2", "--grid", "-o", "grid.png")
    assert "plan mar-4" in run.works("gtr-inspect", bundle)
    for command in ("gtr", "gtr-run", "gtr-inspect", "gtr-plan", "gtr-download", "gtr-export", "gtr-check",
                    "gtr-eval", "gtr-build", "gtr-bench"):
        assert "Usage:" in run.works(command, "--help")

    export = TORCH_STEP + "pip install 'gtr-mar[export]'"
    run.one_line_error(export, "gtr-export", "--model", "mar-tiny", "-o", "tiny.plan")
    run.one_line_error(export, "gtr-export", "--model", "mar-b", "--download")  # fetches nothing first
    run.one_line_error(export, "gtr-check", bundle)
    run.one_line_error(TORCH_STEP + "pip install 'gtr-mar[eval]'", "gtr-eval", "--plan", "mar-64", "--per-class", "2")
    run.one_line_error(TORCH_STEP + "pip install 'gtr-mar[eval]'", "gtr-eval", "--bundle", bundle, "--per-class", "2")
    run.one_line_error("pip install 'gtr-mar[tensorrt]'", "gtr-build", bundle)
    run.one_line_error("pip install 'gtr-mar[tensorrt]'", "gtr-run", bundle, "--backend", "tensorrt", "-o", "x.png")
    line = run.one_line_error("pip uninstall -y onnxruntime && pip install onnxruntime-gpu",
                              "gtr-run", bundle, "--device", "cuda", "-o", "cuda.png")
    assert "CPU build" in line
    print(f"runtime install checks: {time.perf_counter() - t0:.1f} s")


def test_two_onnxruntime_builds_are_reported_in_one_line(runtime, bundle, tmp_path):
    """onnxruntime-gpu next to onnxruntime (the clash the alternative extras avoid): a fake record of it."""
    site = next(runtime.parent.glob("lib/python*/site-packages"), None) or runtime.parent / "Lib" / "site-packages"
    record = site / "onnxruntime_gpu-1.32.0.dist-info"
    record.mkdir()
    try:
        (record / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.32.0\n")
        run = Env(runtime, tmp_path)
        fix = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"
        line = run.one_line_error(fix, "gtr-run", bundle, "--device", "cuda", "-o", "cuda.png")
        assert "installed together" in line
        proc = run("gtr-run", bundle, "-c", "3", "-o", "three.png")  # auto: runs on the CPU, with a note
        assert proc.returncode == 0, proc.stderr
        notes = [s for s in proc.stderr.splitlines() if s.startswith("note:")]
        assert len(notes) == 1 and fix in notes[0], proc.stderr
    finally:
        shutil.rmtree(record)

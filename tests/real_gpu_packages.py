"""The real GPU packages, installed from PyPI into folders of their own, for tests that need no GPU.

Each set is a `pip install --no-deps --target` folder under the test cache ($GTR_TEST_CACHE, default
.cache/gpu-packages in the checkout), made once and reused while its specification is unchanged:

    trt10-cu12     TensorRT 10.1 bindings (the oldest gtr supports) + cuda-python / cuda-bindings 12.9
    trt10.16-cu13  TensorRT 10.16 bindings (the newest 10.x) + cuda-python / cuda-bindings 13.4
    trt11-cu13     TensorRT 11.4 bindings (the newest) + cuda-python / cuda-bindings 13.4
    ort-gpu      onnxruntime-gpu 1.31 (a CUDA 13 build), without the CUDA libraries it loads

The TensorRT sets get what the bindings link against: stand-in libnvinfer, libnvinfer_plugin and
libnvonnxparser, compiled here with gcc, whose entry points return NULL / 0 (as far as the bindings
are concerned, a machine whose TensorRT cannot start: every class, enum and method is the real one,
and making a Builder or a Runtime fails), and a two-line `tensorrt` package that re-exports the
bindings module, as the `tensorrt-cuNN` meta package does. The sets are used only in subprocesses
(`run`): the folder first on PYTHONPATH, the stand-in libraries on LD_LIBRARY_PATH, so the test
environment's own onnxruntime and everything else stay as they are.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SETS = {
    "trt10-cu12": {"pip": ["tensorrt-cu12-bindings==10.1.0", "cuda-python==12.9.10", "cuda-bindings~=12.9.10",
                           "cuda-pathfinder==1.9.1"], "tensorrt_major": 10},
    "trt10.16-cu13": {"pip": ["tensorrt-cu13-bindings==10.16.1.11", "cuda-python==13.4.4", "cuda-bindings~=13.4.4",
                              "cuda-pathfinder==1.9.1"], "tensorrt_major": 10},
    "trt11-cu13": {"pip": ["tensorrt-cu13-bindings==11.4.0.106", "cuda-python==13.4.4", "cuda-bindings~=13.4.4",
                           "cuda-pathfinder==1.9.1"], "tensorrt_major": 11},
    "ort-gpu": {"pip": ["onnxruntime-gpu==1.31.1"]},
}
TENSORRT_SETS = [name for name, s in SETS.items() if "tensorrt_major" in s]

# What tensorrt_bindings/tensorrt.so imports from TensorRT's libraries (nm -D --undefined-only): all of
# them answer "nothing here", so creating a Builder, Runtime, Refitter or OnnxParser fails.
STAND_IN_C = """
#include <stddef.h>
void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
void *getPluginRegistry(void) { return NULL; }
int getInferLibVersion(void) { return 0; }
int initLibNvInferPlugins(void *logger, const char *ns) { return 0; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
"""
STAND_IN_LIBS = ("nvinfer", "nvinfer_plugin", "nvonnxparser")
META_PACKAGE = "from tensorrt_bindings import *  # noqa: F401,F403\nfrom tensorrt_bindings import __version__  # noqa: F401\n"


def cache_root() -> Path:
    return Path(os.environ.get("GTR_TEST_CACHE") or ROOT / ".cache" / "gpu-packages")


def _digest(name: str) -> str:
    spec = {"set": SETS[name], "c": STAND_IN_C, "meta": META_PACKAGE, "python": sys.version_info[:2]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


class Unavailable(Exception):
    """The set cannot be made here (no network, no gcc, a package gone): the reason, in one line."""


def _build(name: str, folder: Path) -> None:
    spec = SETS[name]
    site, lib = folder / "site", folder / "lib"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--target", str(site), *spec["pip"]],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        lines = [line for line in r.stderr.splitlines() if line.startswith("ERROR")] or r.stderr.splitlines()
        raise Unavailable(f"pip could not install {' '.join(spec['pip'])}: {(lines or ['?'])[-1]}")
    major = spec.get("tensorrt_major")
    if major is None:
        return
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise Unavailable("no C compiler (gcc) for the stand-in TensorRT libraries")
    lib.mkdir(parents=True)
    source = folder / "stand_in.c"
    source.write_text(STAND_IN_C)
    for n in STAND_IN_LIBS:
        so = f"lib{n}.so.{major}"
        r = subprocess.run([gcc, "-shared", "-fPIC", "-o", str(lib / so), f"-Wl,-soname,{so}", str(source)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise Unavailable(f"gcc could not build {so}: {(r.stderr.splitlines() or ['?'])[0]}")
    (site / "tensorrt").mkdir()
    (site / "tensorrt" / "__init__.py").write_text(META_PACKAGE)


def prepare(name: str) -> Path:
    """The folder of set `name`, made now unless the cache has it; Unavailable when it cannot be made."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{name}-{_digest(name)}"
    failed = folder.with_suffix(".failed")
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others wait and reuse its folder
        if (folder / "ready").is_file():
            return folder
        work = folder.with_suffix(".partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            _build(name, work)
        except (Unavailable, OSError, subprocess.TimeoutExpired) as e:
            shutil.rmtree(work, ignore_errors=True)
            failed.write_text(str(e))
            raise Unavailable(str(e).splitlines()[0]) from None
        (work / "ready").write_text(" ".join(SETS[name]["pip"]) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        work.rename(folder)
        failed.unlink(missing_ok=True)
    return folder


def environment(folder: Path) -> dict:
    """os.environ with the set's packages first on the path and its stand-in libraries loadable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder / "site"), env.get("PYTHONPATH")) if p)
    if (folder / "lib").is_dir():
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(folder / "lib"), env.get("LD_LIBRARY_PATH")) if p)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run(folder: Path, args, timeout: float = 300, env_extra: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """`python ARGS...` of this environment with the set's packages (see `environment`), from the checkout."""
    env = {**environment(folder), **(env_extra or {})}
    return subprocess.run([sys.executable, *map(str, args)], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


def require(name: str) -> Path:
    """For tests: the set's folder, or skip with the reason it cannot be installed here."""
    try:
        return prepare(name)
    except Unavailable as e:
        pytest.skip(f"real {name} packages (TensorRT, cuda-python, onnxruntime-gpu) not installable from the "
                    f"package index here: {e}")

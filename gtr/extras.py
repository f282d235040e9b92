"""Optional parts of gtr: what each needs, and the one-line error that says what to install.

    base        numpy, click, pillow, tqdm: gtr-plan, gtr-inspect, gtr download, gtr-build --dry-run
    cpu | gpu   ONNX Runtime, CPU or CUDA build (pick one): gtr-run, gtr.load
    export      torch, onnx, safetensors: gtr-export, gtr-check, gtr.export
    eval        torch, scikit-learn, matplotlib: gtr-eval
    tensorrt    TensorRT + cuda-python of one CUDA major (tensorrt-cu12 | tensorrt-cu13; tensorrt = cu13):
                gtr-build, --backend tensorrt
    serve       FastAPI, uvicorn: gtr serve (with cpu or gpu)

The cpu and gpu extras are alternatives because onnxruntime and onnxruntime-gpu install the same
module: with both installed, whichever was installed last owns the files.
"""
from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path
from gtr.errors import MissingExtra  # noqa: F401  (re-exported: defined with the other error types)

# The torch the project is tested with; installed before the extras so pip does not choose a torch itself.
TORCH_PIN = "torch==2.13.0"

# Modules gtr imports from each extra. "runtime" is ONNX Runtime, which the cpu or the gpu extra provides.
EXTRAS = {
    "runtime": ("onnxruntime",),
    "export": ("torch", "onnx", "safetensors"),
    "eval": ("torch", "safetensors", "sklearn", "matplotlib"),
    "tensorrt": ("tensorrt", "cuda"),
    "serve": ("fastapi", "uvicorn"),
}
_PIP_NAMES = {"sklearn": "scikit-learn"}

# Distributions that all install the module `onnxruntime`.
ORT_BUILDS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")


def installed(module: str) -> bool:
    """Whether `module` can be found, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a blocked import, or a module left half-initialised
        return False


def ort_builds() -> list[str]:
    """The onnxruntime distributions installed beside the `onnxruntime` module that imports (more than
    one means they overwrote each other; one in another folder of the path is shadowed, not mixed in)."""
    spec = importlib.util.find_spec("onnxruntime") if installed("onnxruntime") else None
    home = Path(spec.origin).resolve().parents[1] if spec is not None and spec.origin else None
    found = []
    for name in ORT_BUILDS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if home is None or Path(dist.locate_file("")).resolve() == home:
            found.append(name)
    return found


def require(what: str, *extras: str) -> None:
    """Raise MissingExtra naming the pip command if a module of `extras` is missing; `what` needs them."""
    missing = {extra: [m for m in EXTRAS[extra] if not installed(m)] for extra in extras}
    missing = {extra: modules for extra, modules in missing.items() if modules}
    if missing:
        modules = list(dict.fromkeys(m for ms in missing.values() for m in ms))
        raise MissingExtra(f"{what} needs {', '.join(_PIP_NAMES.get(m, m) for m in modules)} (not installed): "
                           f"{install_command(list(missing), with_torch='torch' in modules)}")


def install_command(extras: list[str], with_torch: bool = False) -> str:
    """The pip command that installs `extras` ("runtime": the cpu build, with a word on the gpu one)."""
    names = ["cpu"] * ("runtime" in extras) + [e for e in extras if e != "runtime"]
    command = ("pip install " + TORCH_PIN + " && " if with_torch else "") + f"pip install 'gtr-mar[{','.join(names)}]'"
    return command + (" (on a CUDA machine: gpu-cu12 or gpu-cu13 instead of cpu)" if "runtime" in extras else "")


def import_onnxruntime(what: str | None = None):
    """The onnxruntime module, or MissingExtra naming the install (`what`: default the running command)."""
    if what is None:
        import click
        ctx = click.get_current_context(silent=True)
        what = ctx.command_path if ctx is not None else "gtr.load()"
    require(what, "runtime")
    import onnxruntime
    return onnxruntime


def ort_clash() -> str | None:
    """One line when several onnxruntime builds are installed (they share one module), else None."""
    builds = ort_builds()
    if len(builds) < 2:
        return None
    keep = "onnxruntime-gpu" if "onnxruntime-gpu" in builds else builds[0]
    return (f"{' and '.join(builds)} are installed together and overwrite each other's files; keep one: "
            f"pip uninstall -y {' '.join(builds)} && pip install {keep}")

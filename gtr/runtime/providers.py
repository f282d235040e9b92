"""Which onnxruntime execution providers a device name means (auto | cpu | cuda), for this install, and
why onnxruntime-gpu's CUDA provider did not start where it did not."""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

from gtr.errors import DeviceError

DEVICES = ("auto", "cpu", "cuda")


def providers(device: str) -> list[str]:
    """onnxruntime execution providers for `device`; DeviceError (one line, naming the fix) when this
    install cannot run there, MissingExtra when onnxruntime is not installed at all."""
    from gtr.extras import import_onnxruntime, ort_builds, ort_clash
    if device not in DEVICES:
        raise DeviceError(f"device must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, got {device!r}")
    ort = import_onnxruntime()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    # Two onnxruntime builds in one environment overwrite each other's files: the CUDA provider may be gone.
    clash = ort_clash()
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not cuda:
        if clash:
            raise DeviceError(f"device cuda: onnxruntime has no CUDA provider: {clash}")
        if "onnxruntime-gpu" in ort_builds():
            raise DeviceError("device cuda: onnxruntime-gpu is installed but has no CUDA provider; reinstall it: "
                              "pip install --force-reinstall onnxruntime-gpu")
        raise DeviceError("device cuda: the installed onnxruntime is the CPU build (no CUDA provider); replace it: "
                          "pip uninstall -y onnxruntime && pip install onnxruntime-gpu")
    if clash:
        print(f"note: {clash}", file=sys.stderr)
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]


def cuda_provider_problem(ort) -> str:
    """Why onnxruntime's CUDA provider did not start, in a few words: the library it cannot load (e.g.
    "libcublasLt.so.13: cannot open shared object file"), else no usable GPU and driver. Asked only after
    a session fell back to the CPU: onnxruntime's own log lines, which say it, are silenced."""
    lib = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if lib.is_file():
        try:
            ctypes.CDLL(str(lib), mode=getattr(ctypes, "RTLD_LOCAL", 0))
        except OSError as e:
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return text.split(": No such file")[0]
    return "no usable NVIDIA GPU and driver"

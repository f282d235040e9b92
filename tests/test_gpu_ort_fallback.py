"""The real onnxruntime-gpu (1.31, a CUDA 13 build) without its CUDA libraries, here without a GPU: gtr-run
falls back to the CPU with gtr's one note and none of onnxruntime's own log lines, and --device cuda is
one error line. The CLI runs in a subprocess with onnxruntime-gpu first on the path
(tests/real_gpu_packages.py), so the test environment keeps its CPU onnxruntime. Also: the gpu extras
admit one CUDA major each, and the documented GPU test install holds one onnxruntime build."""
import mmap
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib not installed (Python 3.11 or newer)")
Requirement = pytest.importorskip("packaging.requirements", reason="packaging not installed").Requirement

from real_gpu_packages import require, run

ROOT = Path(__file__).resolve().parents[1]
ORT_LOG = re.compile(r"\x1b\[|\[[EWIV]:onnxruntime|onnxruntime_src|CreateExecutionProviderFactoryInstance")


@pytest.fixture(scope="module")
def ort_gpu():
    return require("ort-gpu")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    pytest.importorskip("torch")
    import gtr
    path = tmp_path_factory.mktemp("ortgpu") / "mar-tiny.plan"
    gtr.export("mar-tiny", path, plans=["mar-4"], log=None, verify=False)
    return path


def test_auto_falls_back_to_the_cpu_with_one_note(ort_gpu, bundle, tmp_path):
    r = run(ort_gpu, ["-m", "gtr", "run", bundle, "--class", 3, "--device", "auto", "-o", tmp_path / "a.png"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "onnxruntime 1.31.1 CPU" in r.stdout and (tmp_path / "a.png").is_file()
    assert not ORT_LOG.search(r.stderr), r.stderr[-3000:]
    notes = [line for line in r.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, r.stderr
    assert "cannot start its CUDA provider (libcublasLt.so.13: cannot open shared object file)" in notes[0]
    assert notes[0].endswith("running on the CPU")


def test_device_cuda_is_one_error_line(ort_gpu, bundle, tmp_path):
    r = run(ort_gpu, ["-m", "gtr", "run", bundle, "--class", 3, "--device", "cuda", "-o", tmp_path / "c.png"])
    assert r.returncode == 1 and not (tmp_path / "c.png").exists()
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("gtr:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert lines[0].startswith("Error: device cuda: onnxruntime 1.31.1 cannot start its CUDA provider (libcublasLt")
    code = ("import gtr, sys\nfrom gtr.errors import DeviceError\ntry:\n    gtr.load(sys.argv[1], device='cuda')\n"
            "except DeviceError as e:\n    print('load:', e)\n")
    r = run(ort_gpu, ["-c", code, bundle])  # gtr.load says so when it loads, not at the first call
    assert r.stdout.startswith("load: device cuda: onnxruntime 1.31.1 cannot start its CUDA provider"), r.stdout + r.stderr
    assert not ORT_LOG.search(r.stderr), r.stderr[-2000:]


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_session_creation_restores_the_logger(monkeypatch):
    """onnxruntime's default logger is silenced only while a session that asks for CUDA is created."""
    import onnxruntime as ort
    from gtr.runtime import onnx_backend
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    levels = []
    monkeypatch.setattr(ort, "set_default_logger_severity", levels.append)
    onnx_backend.make_session(proto, {}, ["CPUExecutionProvider"])
    assert levels == []
    onnx_backend.make_session(proto, {}, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert levels == [4, 2]


# ---- the extras: one onnxruntime build, of one CUDA major, per install

def _extras() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _closure(extra: str, extras: dict) -> list[Requirement]:
    out = []
    for text in extras[extra]:
        req = Requirement(text)
        if req.name == "gtr-mar":
            for inner in sorted(req.extras):
                out += _closure(inner, extras)
        else:
            out.append(req)
    return out


def test_gpu_extras_admit_one_cuda_major_each(ort_gpu):
    """onnxruntime-gpu 1.31's CUDA provider links libcublasLt.so.13: a CUDA 13 build. Only the CUDA 13
    sets (and plain gpu, the CUDA 13 one like plain tensorrt) admit it; every set that holds onnxruntime-gpu
    names its CUDA major, and its TensorRT and cuda-python are of the same major."""
    lib = next((ort_gpu / "site" / "onnxruntime" / "capi").glob("libonnxruntime_providers_cuda.so"))
    with open(lib, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        assert data.find(b"libcublasLt.so.13\0") >= 0 and data.find(b"libcublasLt.so.12\0") < 0
    extras = _extras()
    admits = {name for name in extras for req in _closure(name, extras)
              if req.name == "onnxruntime-gpu" and req.specifier.contains("1.31.1")}
    holds = {name for name in extras for req in _closure(name, extras) if req.name == "onnxruntime-gpu"}
    assert admits == {name for name in holds if not name.endswith("cu12")} and "gpu-cu13" in admits
    assert {"gpu", "gpu-cu12", "gpu-cu13"} <= holds
    for name in holds - {"gpu"}:
        major = re.search(r"cu(\d+)$", name).group(1)
        for req in _closure(name, extras):
            if req.name.startswith("tensorrt-cu"):
                assert req.name == f"tensorrt-cu{major}", (name, req)
            if req.name == "cuda-python":
                assert req.specifier.contains(f"{major}.9") and not req.specifier.contains(f"{int(major) + 1}.0")
    # The CUDA major of PyPI's onnxruntime-gpu wheels (cp311, manylinux), read from the libcublasLt their
    # CUDA provider links, as 1.31.1 above: 1.18 is still a CUDA 11 build.
    built_for = {"1.18.1": "11", "1.19.0": "12", "1.26.0": "12", "1.27.0": "13", "1.31.1": "13"}
    for name in ("gpu-cu12", "gpu-cu13"):
        spec = Requirement(extras[name][0]).specifier
        assert {v for v in built_for if spec.contains(v)} == {v for v, m in built_for.items() if name.endswith(m)}


def test_gpu_test_install_holds_one_onnxruntime_build():
    """The GPU test install that docs/tensorrt.md gives names extras whose packages hold exactly one
    onnxruntime build (onnxruntime and onnxruntime-gpu install the same module and overwrite each other)."""
    extras = _extras()
    text = (ROOT / "docs" / "tensorrt.md").read_text()
    commands = re.findall(r"pip install (?:-e )?'\.\[([\w,-]+)\]'", text)
    assert commands, "docs/tensorrt.md gives no pip install '.[...]' command"
    for names in commands:
        builds = {req.name for extra in names.split(",") for req in _closure(extra, extras)
                  if req.name in ("onnxruntime", "onnxruntime-gpu")}
        assert len(builds) == 1, (names, builds)

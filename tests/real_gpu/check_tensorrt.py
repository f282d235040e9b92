"""gtr's TensorRT and CUDA code against the REAL tensorrt bindings and cuda-bindings, without a GPU.

Not collected by the main run (the name is not test_*.py): tests/test_gpu_real_packages.py runs this
file with `python -m pytest` in each real package set (tests/real_gpu_packages.py), where `tensorrt`
is the real bindings module over stand-in libraries and `cuda.bindings` the real cuda-bindings.
GTR_REAL_SET names the set.
"""
import os
import threading

import numpy as np
import pytest
import tensorrt as trt
from cuda.bindings import runtime as rt

import trt_builder_fakes
import trt_fakes
import trt_names
from real_gpu_packages import SETS
from trt_names import CUDA_FILES, TENSORRT_FILES, Uses, check_cuda, check_tensorrt

SET = SETS[os.environ["GTR_REAL_SET"]]
CUDA_MAJOR = int(next(p for p in SET["pip"] if p.startswith("cuda-python")).split("==")[1].split(".")[0])


def test_the_real_packages_are_the_ones_asked_for():
    pinned = next(p for p in SET["pip"] if p.startswith("tensorrt-")).split("==")[1]
    assert trt.__version__ == pinned and hasattr(trt.Builder, "create_network")
    assert rt.cudaRuntimeGetVersion()[1] // 1000 == CUDA_MAJOR


# ---- names, read from gtr's code

def test_every_tensorrt_name_gtr_uses_exists():
    uses = Uses().scan_files(TENSORRT_FILES)
    assert len(uses.members) >= 25 and len(uses.trt_chains) >= 8 and len(uses.calls) >= 25  # the walk found them
    assert check_tensorrt(trt, uses) == []


def test_the_name_check_finds_what_is_wrong():
    """The walker and the check are not vacuous: a misspelled method, a removed enum member, a wrong
    arity, an unknown keyword and a variable holding another class than its name says are all found."""
    source = ("def f(trt, engine, ctx, builder):\n"
              "    engine.get_tensor_nmae(0)\n"
              "    ctx.set_input_shape('x')\n"
              "    ctx.set_tensor_address('x', memory=0, stream=1)\n"
              "    trt.BuilderFlag.FP61\n"
              "    network = builder.create_builder_config()\n")
    problems = check_tensorrt(trt, Uses().scan(source, "x.py"))
    assert len(problems) == 5, problems
    for part in ("ICudaEngine.get_tensor_nmae", "set_input_shape takes no call with 1", "keywords ['memory', 'stream']",
                 "trt.BuilderFlag.FP61", "holds a IBuilderConfig, not a INetworkDefinition"):
        assert any(part in p for p in problems), (part, problems)


def test_every_cuda_name_gtr_uses_exists():
    uses = Uses().scan_files(CUDA_FILES)
    assert len(uses.cuda_chains) >= 20
    assert check_cuda(rt, uses) == []
    assert check_cuda(rt, Uses().scan("def f(rt):\n    rt.cudaMallocc(1)\n", "x.py")) == \
        ["cudaMallocc does not exist in cuda.bindings.runtime"]


def test_numpy_dtypes_name_real_tensorrt_types():
    from gtr.runtime.trt.backend import _DTYPES, _numpy_dtype
    for name in _DTYPES:
        assert _numpy_dtype(getattr(trt.DataType, name)) == np.dtype(_DTYPES[name])


# ---- the stand-ins of tests/trt_fakes.py offer nothing the real modules lack

def _public(cls) -> set:
    return {n for n in vars(cls) if not n.startswith("_")}


def test_tensorrt_stand_ins_have_only_real_names():
    fake = trt_fakes.fake_tensorrt(trt_fakes.FakeCudart())
    builder = trt_builder_fakes.stub_builder_tensorrt()
    for module in (fake, builder):
        for name, value in vars(module).items():
            if name.startswith("_") or name in trt_fakes.KNOBS | trt_builder_fakes.KNOBS:
                continue
            assert hasattr(trt, name), f"the stand-in tensorrt has {name}; TensorRT {trt.__version__} does not"
            if isinstance(value, trt_fakes._Enum):
                missing = [m for m in vars(value) if not hasattr(getattr(trt, name), m)]
                assert not missing, f"trt.{name} has no {missing} in TensorRT {trt.__version__}"
            elif isinstance(value, type):
                extra = _public(value) - set(dir(getattr(trt, name)))
                assert not extra, f"stand-in trt.{name} offers {sorted(extra)}, which TensorRT {trt.__version__} lacks"
    for fakes in (trt_fakes, trt_builder_fakes):
        for fake_name, real_name in fakes.REAL_CLASSES.items():
            extra = _public(getattr(fakes, fake_name)) - set(dir(getattr(trt, real_name)))
            assert not extra, f"{fake_name} offers {sorted(extra)}, which {real_name} lacks in TensorRT {trt.__version__}"


def test_cuda_stand_in_answers_like_the_real_bindings():
    """Every call of FakeCudart exists in cuda-bindings and answers with a tuple of the same length (here
    with the real no-device error); its enum values and error names are the real ones."""
    fake = trt_fakes.FakeCudart()
    handles = {"stream": rt.cudaStream_t(0), "graph": rt.cudaGraph_t(), "exec": rt.cudaGraphExec_t()}
    args = {"cudaGetErrorName": (rt.cudaError_t.cudaErrorNoDevice,), "cudaSetDevice": (0,),
            "cudaGetDeviceProperties": (0,), "cudaMalloc": (256,), "cudaFree": (0,),
            "cudaMemcpyAsync": (0, 0, 0, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, handles["stream"]),
            "cudaStreamCreateWithFlags": (rt.cudaStreamNonBlocking,), "cudaStreamDestroy": (handles["stream"],),
            "cudaStreamSynchronize": (handles["stream"],),
            "cudaStreamBeginCapture": (handles["stream"], rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
            "cudaStreamEndCapture": (handles["stream"],), "cudaGraphInstantiate": (handles["graph"], 0),
            "cudaGraphLaunch": (handles["exec"], handles["stream"]), "cudaGraphExecDestroy": (handles["exec"],),
            "cudaGraphDestroy": (handles["graph"],)}
    stream = fake.cudaStreamCreateWithFlags(1)[1]
    fake.cudaStreamBeginCapture(stream, 1)
    graph = fake.cudaStreamEndCapture(stream)[1]
    fake_handles = {"stream": stream, "graph": graph, "exec": fake.cudaGraphInstantiate(graph, 0)[1]}
    swap = {id(v): fake_handles[k] for k, v in handles.items()}
    calls = sorted((n for n in dir(fake) if n.startswith("cuda") and callable(getattr(fake, n))),
                   key=lambda n: ("Destroy" in n, n))  # handles are released last
    assert len(calls) >= 20
    for name in calls:
        assert hasattr(rt, name), f"FakeCudart.{name} is not in cuda-bindings {CUDA_MAJOR}"
        real = getattr(rt, name)(*args.get(name, ()))
        assert isinstance(real, tuple) and isinstance(real[0], rt.cudaError_t), (name, real)
        mine = getattr(fake, name)(*[swap.get(id(a), a) for a in args.get(name, ())])
        assert len(mine) == len(real), (name, mine, real)
    for enum in ("cudaError_t", "cudaMemcpyKind", "cudaStreamCaptureMode"):
        for member, value in vars(getattr(fake, enum)).items():
            assert int(getattr(getattr(rt, enum), member)) == value, (enum, member)
    assert int(rt.cudaStreamNonBlocking) == fake.cudaStreamNonBlocking
    for code, name in trt_fakes.ERROR_NAMES.items():
        assert rt.cudaGetErrorName(rt.cudaError_t(code))[1] == name


# ---- version branches, taken from the installed version

def test_network_flags_follow_the_installed_version():
    from gtr.engines.build import network_flags
    major = int(trt.__version__.split(".")[0])
    assert major == SET["tensorrt_major"]
    if major >= 11:
        assert network_flags(trt) == 0
        assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.BuilderFlag, "INT8")
    else:
        assert network_flags(trt) == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        assert hasattr(trt.BuilderFlag, "FP16")


# ---- no GPU here: every path says so in one line

def test_cuda_without_a_device():
    from gtr.errors import CudaError
    from gtr.runtime.trt import cuda
    cuda._RT = None
    assert cuda.runtime() is rt
    assert cuda.device_count() == 0
    driver, built = cuda.versions()
    assert driver == 0 and built // 1000 == CUDA_MAJOR
    for make in (cuda.Stream, lambda: cuda.Buffer(1024), cuda.free_memory, lambda: cuda.set_device(0)):
        with pytest.raises(CudaError) as e:
            make()
        assert "\n" not in str(e.value) and ("CUDA error cuda" in str(e.value) or "no CUDA device 0" in str(e.value))


def test_target_and_components_without_a_gpu(tmp_path):
    from gtr.errors import EngineError
    from gtr.runtime.trt import engine_store
    assert engine_store.import_tensorrt() is trt
    assert engine_store.tensorrt_cuda_major() == CUDA_MAJOR
    with pytest.raises(EngineError, match="^no CUDA GPU found: TensorRT engines need an NVIDIA GPU and its driver$"):
        engine_store.current_target()


def test_builder_and_runtime_that_cannot_start_are_one_line(tmp_path, monkeypatch):
    """Where TensorRT cannot start (here its libraries create nothing), gtr-build and the backend say so
    in one line instead of pybind11's TypeError."""
    from gtr.engines.build import TimingCache, build_engine, engine_loads
    from gtr.errors import EngineError
    from gtr.runtime.trt import backend, engine_store
    from gtr.runtime.bundle import read_bundle
    monkeypatch.setattr(engine_store, "_LOGGER", None)
    path = _bundle(tmp_path)
    with pytest.raises(EngineError, match=r"^TensorRT could not create a builder \(.*nullptr\)$"):
        build_engine(trt, read_bundle(path), "head", [], None, TimingCache(tmp_path / "t.cache"))
    assert engine_loads(trt, b"anything") is False
    monkeypatch.setattr(engine_store, "current_target", lambda device=None: engine_store.Target("x", "GPU", "9.0"))
    monkeypatch.setattr(backend.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(backend.cuda, "Stream", lambda: None)
    with pytest.raises(EngineError, match=r"^TensorRT could not create its runtime \(.*nullptr\)$"):
        backend.TensorRTComponents(read_bundle(path), engines={"head": {"member": "head.onnx"}})


def _bundle(tmp_path):
    from gtr.configs import get_config
    from gtr.plan import build_plan
    from gtr.runtime.bundle import write_bundle
    config = get_config("mar-test")
    plan = build_plan("gtr", config.grid, cfg=3.0)
    manifest = {"config": config.to_dict(), "plans": {plan.name: plan.to_dict()}, "precision": "fp16",
                "graphs": {"head": {"member": "head.onnx", "inputs": [], "static_shapes": [{"r": 1}]}}}
    write_bundle(tmp_path / "b.plan", manifest, {"head.onnx": b"graph"})
    return tmp_path / "b.plan"


def test_commands_without_a_gpu_are_one_line(tmp_path):
    from cli_helpers import one_line_error, run
    path = _bundle(tmp_path)
    line = one_line_error(run("build", path))
    assert line == "Error: no CUDA GPU found: TensorRT engines need an NVIDIA GPU and its driver"
    r = run("build", path, "--dry-run")
    assert r.exit_code == 0 and "target unknown here (no CUDA GPU found" in r.output


def test_set_device_in_a_thread_without_a_gpu():
    """The per-thread device call of the backend, in a fresh thread, against the real bindings."""
    from gtr.errors import CudaError
    from gtr.runtime.trt import cuda
    errors = []

    def worker():
        try:
            cuda.set_device(0)
        except CudaError as e:
            errors.append(str(e))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert errors == ["no CUDA device 0 (this machine has 0)"]


def test_cuda_values_gtr_reads():
    """What gtr.runtime.trt.cuda reads from results: a device's name, major and minor; a stream handle as
    the integer TensorRT takes; an error as something gtr compares with cudaSuccess."""
    prop = rt.cudaDeviceProp()
    assert all(hasattr(prop, a) for a in ("name", "major", "minor"))
    assert int(rt.cudaStream_t(0)) == 0 and isinstance(rt.cudaStream_t(0), rt.cudaStream_t)
    err = rt.cudaGetDeviceCount()[0]
    assert err != rt.cudaError_t.cudaSuccess and isinstance(rt.cudaGetErrorName(err)[1], bytes)

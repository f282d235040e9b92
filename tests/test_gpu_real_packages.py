"""gtr's TensorRT and CUDA code against the real packages, without a GPU: tests/real_gpu/check_tensorrt.py
runs in each real set of tests/real_gpu_packages.py (TensorRT 10.1 + cuda-python 12.9, TensorRT 10.16 and
11.4 + cuda-python 13.4), in a subprocess with that set first on the path. The first run installs the sets
from the package index (about a minute); later runs reuse them."""
import pytest

from real_gpu_packages import TENSORRT_SETS, require, run


@pytest.mark.parametrize("name", TENSORRT_SETS)
def test_tensorrt_and_cuda_code_against_the_real_packages(name):
    folder = require(name)
    r = run(folder, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/real_gpu/check_tensorrt.py"],
            env_extra={"GTR_REAL_SET": name})
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout and "failed" not in r.stdout, r.stdout[-2000:]


@pytest.mark.parametrize("name", TENSORRT_SETS)
def test_gpu_tests_get_as_far_as_the_missing_gpu(name):
    """tests/test_tensorrt_gpu.py with the real TensorRT and cuda-bindings imports, checks the version and
    skips for the one thing missing here: the GPU."""
    folder = require(name)
    r = run(folder, ["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_tensorrt_gpu.py"])
    assert r.returncode in (0, 5), r.stdout[-3000:] + r.stderr[-2000:]  # 5: pytest ran no test (all skipped)
    assert "1 skipped" in r.stdout and "no NVIDIA GPU (CUDA device) here" in r.stdout, r.stdout[-2000:]

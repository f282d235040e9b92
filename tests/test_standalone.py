"""The repository stands on its own: nothing reads a folder beside the checkout, the official fixtures are the
files their README lists, their tool re-makes them from an official checkout, and GTR_STRICT_SKIPS=1 fails a
session whose skips are not about absent hardware or optional packages (tests/skips.py)."""
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "official_mar"
TOOL = ROOT / "tools" / "make_official_fixtures.py"
OUTSIDE = re.compile(r"(\.\./|/work/)shared\b|\bshared/(fixtures|anchors|tools|vendor)\b")


def _tracked_text_files():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in files.decode().split("\0"):
        path = ROOT / rel
        if rel and path.is_file() and path.suffix not in {".pth", ".ckpt", ".npz", ".png", ".onnx", ".bin"}:
            yield rel, path


def test_nothing_reads_a_folder_beside_the_checkout():
    hits = []
    for rel, path in _tracked_text_files():
        if rel == "tests/test_standalone.py":
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        hits += [f"{rel}:{n}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert hits == []


def test_fixtures_are_the_files_their_readme_lists():
    rows = re.findall(r"^\| `([\w.]+)` \| ([\d,]+) \| `([0-9a-f]{64})` \|$", (FIXTURES / "README.md").read_text(),
                      re.MULTILINE)
    assert sorted(name for name, _, _ in rows) == sorted(p.name for p in FIXTURES.iterdir() if p.suffix != ".md")
    for name, size, sha in rows:
        data = (FIXTURES / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (int(size.replace(",", "")), sha), name


def _tool(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_fixture_tool_bad_input_is_one_line(tmp_path):
    r = _tool(tmp_path / "missing", "--commit", "abc", "-o", tmp_path / "out")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "not a checkout of the official MAR code" in r.stderr
    r = _tool(tmp_path, "-o", tmp_path / "out")  # not a git work tree and no --commit
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--commit" in r.stderr
    assert not (tmp_path / "out").exists()


def _same_within_tolerance(got: np.ndarray, ref: np.ndarray) -> bool:
    """Bit-exact, or (outputs the CPU's kernels change in the last bits) within 1e-5 of the array's max-abs,
    the tolerances of the fixtures' README §5 at their tightest."""
    if got.dtype != ref.dtype or got.shape != ref.shape:
        return False
    if got.dtype.kind != "f" or np.array_equal(got, ref):
        return np.array_equal(got, ref)
    return float(np.abs(got.astype(np.float64) - ref).max()) <= 1e-5 * max(1.0, float(np.abs(ref).max()))


def test_fixture_tool_remakes_the_fixtures(tmp_path):
    checkout = os.environ.get("GTR_OFFICIAL_MAR")
    if not checkout:
        pytest.skip("set GTR_OFFICIAL_MAR to a checkout of LTH14/mar to re-make the official fixtures")
    if not (Path(checkout) / "models" / "vae.py").is_file():
        pytest.skip(f"GTR_OFFICIAL_MAR={checkout} has no models/vae.py; re-making the fixtures needs all of LTH14/mar")
    if importlib.util.find_spec("timm") is None:  # (importing it needs torchvision, which the tool stands in for)
        pytest.skip("timm is not installed (pip install --no-deps timm==0.9.12)")
    r = _tool(checkout, "-o", tmp_path, "--commit", "fe470ac24afbee924668d8c5c83e9fec60af3a73")
    assert r.returncode == 0, r.stderr
    for name in ("mar_small.pth", "kl16_small.ckpt"):  # weights: seeded, byte-identical anywhere
        assert (tmp_path / name).read_bytes() == (FIXTURES / name).read_bytes(), name
    for name in ("mar_small_io.npz", "kl16_small_io.npz"):
        with np.load(tmp_path / name) as got, np.load(FIXTURES / name) as ref:
            assert got.files == ref.files
            differ = [k for k in ref.files if not _same_within_tolerance(got[k], ref[k])]
            assert differ == [], name
            assert all(np.array_equal(got[k], ref[k]) for k in ref.files if k.startswith("in_")), name


STRICT_CONFTEST = f"""
import sys
sys.path.insert(0, {str(ROOT / "tests")!r})
pytest_plugins = ["skips"]
"""


def _run_session(tmp_path, reasons, strict: bool):
    tests = "import pytest\n" + "".join(
        f"\ndef test_{i}():\n    pytest.skip({reason!r})\n" for i, reason in enumerate(reasons))
    (tmp_path / "conftest.py").write_text(STRICT_CONFTEST)
    (tmp_path / "test_some.py").write_text(tests + "\ndef test_runs():\n    assert True\n")
    env = {k: v for k, v in os.environ.items() if k != "GTR_STRICT_SKIPS"}
    if strict:
        env["GTR_STRICT_SKIPS"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


HARDWARE_OR_OPTIONAL = ["no NVIDIA GPU (CUDA device) here",
                        "TensorRT is not installed (pip install 'gtr-mar[tensorrt]')",
                        "Ray Serve is not installed (pip install 'ray[serve]')",
                        "no chromium / chromedriver here (apt-get install chromium chromium-driver)",
                        "set GTR_OFFICIAL_MAR to a checkout of LTH14/mar to time the official sampler"]


def test_strict_skips_allow_absent_hardware_and_optional_packages(tmp_path):
    r = _run_session(tmp_path, HARDWARE_OR_OPTIONAL, strict=True)
    assert r.returncode == 0 and "1 passed, 5 skipped" in r.stdout, r.stdout


def test_strict_skips_fail_on_any_other_reason(tmp_path):
    missing = "official MAR fixtures not found at /somewhere/shared/fixtures/official_mar"
    r = _run_session(tmp_path, [HARDWARE_OR_OPTIONAL[0], missing], strict=True)
    assert r.returncode == 1, r.stdout
    assert f"test_some.py::test_1: {missing}" in r.stdout and "test_some.py::test_0:" not in r.stdout
    assert _run_session(tmp_path, [missing], strict=False).returncode == 0  # only with GTR_STRICT_SKIPS=1


def test_strict_skips_apply_to_module_level_skips(tmp_path):
    (tmp_path / "test_module.py").write_text(textwrap.dedent("""
        import pytest
        pytest.skip("weights are not shipped yet", allow_module_level=True)
    """))
    r = _run_session(tmp_path, [], strict=True)
    assert r.returncode == 1 and "weights are not shipped yet" in r.stdout, r.stdout

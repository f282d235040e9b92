"""gtr-export / gtr-run / gtr-inspect / gtr-check as a user runs them.

The command mechanics run on `mar-test` with random weights (the official fixture layout, 16x16 grid);
the image-quality check runs on the shipped mar-tiny when its weights are in the package.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gtr.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r):
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    errors = [l for l in r.output.splitlines() if l.startswith("Error")]
    assert len(errors) == 1, r.output
    return errors[0]


def tiny_shipped() -> bool:
    from gtr.tiny.model import ASSET_DIR, MAR_FILE, VAE_FILE
    return (ASSET_DIR / MAR_FILE).is_file() and (ASSET_DIR / VAE_FILE).is_file()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "mar-test-fp32.plan"
    r = run("export", "--model", "mar-test", "--random-weights", "--plan", "gtr", "--plan", "mar-16", "-o", path)
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and path.is_file()
    return path


def test_run_writes_pngs(bundle, tmp_path):
    out = tmp_path / "grid.png"
    r = run("run", bundle, "--class", 3, "--class", 88, "-n", 2, "--grid", "-o", out)
    assert r.exit_code == 0, r.output
    assert "s/image" in r.output and "plan gtr" in r.output and "RANDOM" in r.output
    grid = np.asarray(Image.open(out))
    assert grid.dtype == np.uint8 and grid.shape == (2 + 2 * 258, 2 + 2 * 258, 3)


@pytest.mark.skipif(not tiny_shipped(), reason="mar-tiny weights are not shipped in gtr/assets/tiny yet")
def test_mar_tiny_writes_a_recognisable_digit(tmp_path):
    bundle = tmp_path / "mar-tiny-fp32.plan"
    assert run("export", "--model", "mar-tiny", "--plan", "mar-64", "-o", bundle).exit_code == 0
    out = tmp_path / "three.png"
    r = run("run", bundle, "--class", 3, "-n", 4, "--grid", "-o", out, "--seed", 0)
    assert r.exit_code == 0, r.output
    assert "s/image" in r.output and "plan mar-64" in r.output
    grid = np.asarray(Image.open(out))
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    # The four 32x32 digits are read back by the shipped classifier.
    from gtr.eval.classifier import embed, load_classifier
    tiles = [grid[2:34, 2 + i * 34:34 + i * 34] for i in range(4)]
    images = np.stack([t.transpose(2, 0, 1) for t in tiles]).astype(np.float32) / 127.5 - 1
    logits, _ = embed(load_classifier(), images)
    assert (logits.argmax(1) == 3).sum() >= 3


def test_run_outdir_and_plan_choice(bundle, tmp_path):
    r = run("run", bundle, "-c", 1, "-c", 7, "--plan", "mar-16", "--outdir", tmp_path / "samples")
    assert r.exit_code == 0, r.output
    files = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert files == ["0000_class1.png", "0001_class7.png"]


def test_same_seed_same_image(bundle, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for path in (a, b):
        assert run("run", bundle, "-c", 5, "-o", path, "--seed", 11).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_inspect(bundle):
    r = run("inspect", bundle)
    assert r.exit_code == 0, r.output
    assert "model mar-test" in r.output and "precision fp32" in r.output and "RANDOM WEIGHTS" in r.output
    assert "plan gtr" in r.output and "plan mar-16" in r.output and "backbone" in r.output


def test_check_passes(bundle):
    r = run("check", bundle, "--plan", "gtr")
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output


def test_run_bad_input_keeps_existing_output(bundle, tmp_path):
    out = tmp_path / "keep.png"
    out.write_bytes(b"previous")
    assert "out of range" in one_line_error(run("run", bundle, "--class", 1000, "-o", out))
    assert "no plan 'nope'" in one_line_error(run("run", bundle, "--class", 1, "--plan", "nope", "-o", out))
    assert "--grid" in one_line_error(run("run", bundle, "-c", 1, "-c", 2, "-o", out))
    assert out.read_bytes() == b"previous"
    assert "no such bundle file" in one_line_error(run("run", tmp_path / "missing.plan"))
    damaged = tmp_path / "damaged.plan"
    data = bytearray(bundle.read_bytes())
    damaged.write_bytes(bytes(data[: len(data) // 2]))
    assert "truncated" in one_line_error(run("run", damaged, "-c", 1))
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert "checksum" in one_line_error(run("run", damaged, "-c", 1))
    foreign = tmp_path / "foreign.plan"
    foreign.write_bytes(b"PK\x03\x04 not a bundle" * 10)
    assert "not a gtr bundle" in one_line_error(run("run", foreign, "-c", 1)).lower()


def test_export_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("GTR_HOME", str(tmp_path / "cache"))
    r = run("export", "--model", "mar-b", "-o", tmp_path / "b.plan")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "checkpoint-last.pth" in r.output and "dropbox" in r.output and "--random-weights" in r.output
    assert "int8" in one_line_error(run("export", "--model", "mar-test", "--random-weights", "--precision", "int8",
                                        "-o", tmp_path / "x.plan"))
    assert "unknown plan" in one_line_error(run("export", "--model", "mar-test", "--random-weights", "--plan", "gtr-64",
                                                "-o", tmp_path / "x.plan"))
    assert "unknown model" in one_line_error(run("export", "--model", "mar-xxl", "-o", tmp_path / "x.plan"))
    assert not (tmp_path / "x.plan").exists()


def test_gtr_run_cli_needs_no_torch(bundle, tmp_path):
    """The gtr-run command itself, in a fresh interpreter where torch cannot be imported."""
    out = tmp_path / "nt.png"
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "onnx", "safetensors"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        sys.argv = ["gtr-run", {str(bundle)!r}, "--class", "2", "-o", {str(out)!r}]
        from gtr.cli import run_cmd
        try:
            run_cmd()
        except SystemExit as e:
            assert not any(m.split(".")[0] == "torch" for m in sys.modules)
            raise
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.is_file()

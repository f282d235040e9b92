"""gtr-export / gtr-run / gtr-inspect / gtr-check as a user runs them, and their error behaviour.

The command mechanics run on `mar-test` with random weights (the official fixture layout, 16x16 grid);
the image-quality check and gtr-check run on the shipped mar-tiny, whose tokens and images have real
magnitudes (random mar-test weights give tokens ~1e5 and flat images, where no tolerance binds).
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import one_line_error, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _traceback_files_in_tmp(tmp_path, monkeypatch):
    """Internal errors save their traceback in the temp folder: keep those of these tests in tmp_path."""
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


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


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    if not tiny_shipped():
        pytest.skip("mar-tiny weights are not shipped in gtr/assets/tiny yet")
    path = tmp_path_factory.mktemp("tiny") / "mar-tiny-fp32.plan"
    r = run("export", "--model", "mar-tiny", "--plan", "mar-64", "--plan", "mar-16", "-o", path)
    assert r.exit_code == 0, r.output
    return path


def test_mar_tiny_writes_a_recognisable_digit(tiny_bundle, tmp_path):
    out = tmp_path / "three.png"
    r = run("run", tiny_bundle, "--class", 3, "-n", 4, "--grid", "-o", out, "--seed", 0)
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
    assert files == ["class0001_00000.png", "class0007_00000.png", "gtr-run.json"]


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


def test_check_passes_and_its_tolerances_bind(tiny_bundle, tmp_path):
    """gtr-check passes the mar-tiny bundle (token error ~7e-6, PSNR ~120 dB) and fails it against
    weights perturbed by 0.1 % (token error ~1e-2 > 1e-3)."""
    import torch
    from gtr.models.checkpoint import read_file, save_safetensors
    from gtr.tiny.model import ASSET_DIR, MAR_FILE, VAE_FILE
    r = run("check", tiny_bundle, "--plan", "mar-16")
    assert r.exit_code == 0, r.output
    assert "mar-16: token max error" in r.output and "PASS" in r.output
    g = torch.Generator().manual_seed(0)
    weights = read_file(ASSET_DIR / MAR_FILE)
    perturbed = {k: v * (1 + 1e-3 * torch.randn(v.shape, generator=g)) for k, v in weights.items()}
    save_safetensors(tmp_path / "perturbed.safetensors", perturbed)
    r = run("check", tiny_bundle, "--plan", "mar-16", "--checkpoint", tmp_path / "perturbed.safetensors",
            "--vae", ASSET_DIR / VAE_FILE)
    assert r.exit_code == 1 and "FAIL" in r.output, r.output


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
    line = one_line_error(run("export", "--model", "mar-b", "-o", tmp_path / "b.plan"))
    assert "checkpoint-last.pth" in line and "gtr download mar-b" in line and "--random-weights" in line
    assert not (tmp_path / "b.plan").exists()
    assert "calibration set is empty" in one_line_error(run("export", "--model", "mar-test", "--random-weights",
                                                            "--precision", "int8", "--calib-classes", "",
                                                            "-o", tmp_path / "x.plan"))
    assert "unknown plan" in one_line_error(run("export", "--model", "mar-test", "--random-weights", "--plan", "gtr-64",
                                                "-o", tmp_path / "x.plan"))
    assert not (tmp_path / "x.plan").exists()


def test_unknown_model_is_a_one_line_error(tmp_path):
    # Needs gtr.configs.get_config to raise the project's ConfigError (a KeyError subclass), not KeyError.
    assert "unknown model" in one_line_error(run("export", "--model", "mar-xxl", "-o", tmp_path / "x.plan"))


def test_mutated_bundles_are_one_line_errors(bundle, tmp_path):
    from test_fuzz import _assemble  # a crafted manifest with a valid checksum
    data = bundle.read_bytes()
    mlen = int.from_bytes(data[12:20], "little")
    manifest = json.loads(data[52:52 + mlen])
    start = -(-(52 + mlen) // 64) * 64
    member = next(iter(manifest["members"]))
    bogus = [dict(manifest, members={**manifest["members"], member: {**manifest["members"][member], key: value}})
             for key, value in (("offset", -64), ("length", 2**63), ("offset", 64.0), ("sha256", None))]
    flipped = bytearray(data)
    flipped[13] ^= 0x10  # manifest length
    mutants = [bytes(flipped), data + b"\0" * 10, data[:start + 1000]] + [_assemble(m, data[start:]) for m in bogus]
    out = tmp_path / "out.png"
    for i, mutant in enumerate(mutants):
        path = tmp_path / f"m{i}.plan"
        path.write_bytes(mutant)
        for args in (("run", path, "-c", 1, "-o", out), ("inspect", path)):
            line = one_line_error(run(*args))
            assert any(word in line for word in ("damaged", "truncated", "malformed")), line
    assert not out.exists()


@pytest.mark.skipif(not tiny_shipped(), reason="uses the shipped mar-tiny weights as the undamaged VAE file")
def test_damaged_checkpoints_are_one_line_errors(tmp_path):
    from gtr.tiny.model import ASSET_DIR, MAR_FILE, VAE_FILE
    good_vae = ASSET_DIR / VAE_FILE
    for name, data in (("cut.pth", b"PK\x03\x04" + bytes(100)), ("garbage.ckpt", os.urandom(3000)),
                       ("cut.safetensors", (ASSET_DIR / MAR_FILE).read_bytes()[:5000])):
        path = tmp_path / name
        path.write_bytes(data)
        line = one_line_error(run("export", "--model", "mar-test", "--checkpoint", path, "--vae", good_vae,
                                  "-o", tmp_path / "x.plan"))
        assert str(path) in line and ("checkpoint" in line or "safetensors" in line), line
    assert not (tmp_path / "x.plan").exists()


def test_bugs_are_reported_as_internal_errors(bundle, tmp_path, monkeypatch):
    """A bug (here: the sampler raising KeyError) is not a one-line 'Error: fts_rest': it says it is an
    internal error and where the full traceback went, exits with 70, and writes no output."""
    import gtr.runtime.sampler as sampler

    def broken(*args):
        raise KeyError("fts_rest")

    monkeypatch.setattr(sampler, "step_calls", broken)
    out = tmp_path / "out.png"
    r = run("run", bundle, "-c", 1, "-o", out)
    assert r.exit_code == 70 and not out.exists()
    [line] = [l for l in r.output.splitlines() if l.startswith("Error")]
    assert "internal error" in line and "KeyError: fts_rest" in line and "--debug" in line
    [log] = tmp_path.glob("gtr-run-*.log")
    assert str(log) in line
    text = log.read_text()
    assert "Traceback" in text and "KeyError: 'fts_rest'" in text
    # --debug (or GTR_DEBUG=1) shows the traceback instead: the exception propagates.
    r = run("run", bundle, "-c", 1, "-o", out, "--debug")
    assert isinstance(r.exception, KeyError) and r.exit_code != 0
    monkeypatch.setenv("GTR_DEBUG", "1")
    r = run("inspect", tmp_path / "missing.plan")  # expected errors show their traceback too
    assert r.exception is not None and r.exception.__class__.__name__ == "BundleError"
    assert not out.exists()


def test_os_errors_on_user_paths_are_one_line_errors(bundle, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    line = one_line_error(run("run", bundle, "-c", 1, "-o", blocker / "out.png"))  # its folder is a file
    assert str(blocker) in line
    line = one_line_error(run("plan", "show", "gtr", "--json", blocker / "sub" / "p.json"))
    assert str(blocker) in line


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
        from gtr.commands.run import run_cmd
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

"""gtr.load / gtr.export and gtr-run's long-run options (--outdir resume, --shard, --npz), on the small
test model of tests/tiny_export_model.py (8x8 tokens, 32x32 images, realistic magnitudes)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gtr
from cli_helpers import one_line_error, run
from gtr.pipeline import PipelineError

from tiny_export_model import TINY  # noqa: E402  (tests/ is on sys.path under pytest)
from torch_free import run_without_torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle(models, tmp_path_factory):
    """Exported with gtr.export(...) from checkpoint files: the Python twin of gtr-export."""
    from safetensors.torch import save_file

    from gtr.configs import register
    register(TINY)
    d = tmp_path_factory.mktemp("pipe")
    mar, vae = models
    for module, name in ((mar, "mar.safetensors"), (vae, "vae.safetensors")):
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, d / name)
    path = gtr.export(TINY.name, d / "tiny.plan", checkpoint=d / "mar.safetensors", vae=d / "vae.safetensors",
                      plans=["mar-16", "gtr"], batch=2, cfg=3.0, log=None)
    assert path == d / "tiny.plan" and path.is_file()
    return path


@pytest.fixture(scope="module")
def pipe(bundle):
    return gtr.load(bundle, device="cpu")


def pngs(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("class*.png"))}


def test_pipeline_call(pipe):
    assert list(pipe.plans) == ["mar-16", "gtr"] and pipe.config == TINY and pipe.batch == 2
    images = pipe([3, 5], seed=0, num_images=3)
    assert len(images) == 6 and all(im.size == (32, 32) and im.mode == "RGB" for im in images)
    pixels = np.stack([np.asarray(im) for im in images])
    assert pixels.std() > 10  # real images, not a constant
    assert np.array_equal(pixels, pipe.generate([3, 5], seed=0, num_images=3))  # seeded: same again
    # class-major, and an image depends on (seed, class, index), not on the other classes asked for
    assert np.array_equal(pixels[3:], pipe.generate(5, seed=0, num_images=3))
    assert not np.array_equal(pixels[:3], pipe.generate(3, seed=1, num_images=3))
    other = pipe.generate([3], seed=0, plan="gtr", cfg=1.5, temperature=0.9, batch=1, progress=False)
    assert other.shape == (1, 32, 32, 3)
    assert len(pipe(None, num_images=2)) == 2  # unconditional


def test_an_image_does_not_depend_on_its_batch(pipe):
    """One noise stream per image: alone, in a batch of other classes and seeds (a server's merged
    call), or at another --batch, an image is the same up to float rounding of the batch shape."""
    from gtr.runtime.sampler import sample
    alone = pipe.generate([3], seed=4, num_images=3, batch=1)  # three calls of one image
    batched = pipe.generate([3], seed=4, num_images=3, batch=3)  # one call of three
    assert np.abs(alone.astype(int) - batched).max() <= 1
    merged = pipe.generate_items([(5, 9, 0), (3, 4, 2), (None, 1, 0), (3, 4, 0)])
    assert np.abs(merged[1].astype(int) - alone[2]).max() <= 1 and np.abs(merged[3].astype(int) - alone[0]).max() <= 1
    assert np.abs(merged[0].astype(int) - pipe.generate([5], seed=9)[0]).max() <= 1
    # tokens within 1e-4 of their scale, and bit-identical for the same batch shape
    plan = pipe.plan()
    kw = dict(token_dim=TINY.token_dim, num_classes=TINY.num_classes, decode=False)
    from gtr.plan import image_seed
    one = sample(pipe.components, plan, [3], [image_seed(4, 3, 2)], **kw).tokens[0]
    four = sample(pipe.components, plan, [5, 3, None, 3], [image_seed(9, 5, 0), image_seed(4, 3, 2),
                                                             image_seed(1, None, 0), image_seed(4, 3, 0)], **kw).tokens
    assert np.abs(one - four[1]).max() <= 1e-4 * np.abs(one).max()
    again = sample(pipe.components, plan, [3], [image_seed(4, 3, 2)], **kw).tokens[0]
    assert np.array_equal(one, again)
    with pytest.raises(PipelineError):
        pipe.generate_items([])


def test_pipeline_errors(pipe, bundle):
    with pytest.raises(PipelineError, match="no plan 'nope'"):
        pipe(1, plan="nope")
    with pytest.raises(PipelineError, match="out of range"):
        pipe([1, 10])
    with pytest.raises(PipelineError, match="more than once"):
        pipe([1, 1])
    with pytest.raises(PipelineError, match="batch"):
        pipe(1, batch=0)
    with pytest.raises(PipelineError, match="backend 'onnx' is not available"):
        gtr.load(bundle, backend="onnx")
    with pytest.raises(PipelineError, match="device"):
        gtr.load(bundle, device="gpu")


def test_load_needs_no_torch(bundle, pipe, tmp_path):
    """The issue's one-liner, in a fresh interpreter where torch (and onnx) cannot be imported."""
    out = tmp_path / "x.png"
    run_without_torch(f"""
        import gtr
        p = gtr.load({str(bundle)!r})
        p([3, 5], seed=0)[0].save({str(out)!r})
    """)
    assert np.array_equal(np.asarray(Image.open(out)), pipe.generate([3, 5], seed=0)[0])


def test_shards_write_the_unsharded_run_byte_for_byte(bundle, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    r = run("run", bundle, "-c", 1, "-c", 2, "-n", 6, "--outdir", whole)
    assert r.exit_code == 0, r.output
    assert "12 PNG(s)" in r.output and "s/image" in r.output
    expected = pngs(whole)
    assert sorted(expected) == [f"class{c:04d}_{i:05d}.png" for c in (1, 2) for i in range(6)]
    r0 = run("run", bundle, "-c", 1, "-c", 2, "-n", 6, "--outdir", split, "--shard", "0/2")
    assert r0.exit_code == 0, r0.output
    first = pngs(split)
    assert len(first) == 6  # 6 chunks of batch 2, three per shard
    r1 = run("run", bundle, "-c", 2, "-c", 1, "-n", 6, "--outdir", split, "--shard", "1/2")  # class order is free
    assert r1.exit_code == 0, r1.output
    assert "6 PNG(s)" in r1.output and "shard 1/2" in r1.output
    assert pngs(split) == expected
    # a rerun writes nothing new and touches nothing
    mtimes = {p.name: p.stat().st_mtime_ns for p in split.iterdir()}
    for shard in ("0/2", "1/2"):
        r = run("run", bundle, "-c", 1, "-c", 2, "-n", 6, "--outdir", split, "--shard", shard)
        assert r.exit_code == 0 and "0 PNG(s)" in r.output and "(6 already there" in r.output, r.output
    assert {p.name: p.stat().st_mtime_ns for p in split.iterdir()} == mtimes
    # -o / --grid run the same code path: the same pixels
    grid = tmp_path / "grid.png"
    assert run("run", bundle, "-c", 1, "-c", 2, "-n", 6, "--grid", "-o", grid).exit_code == 0
    cell = np.asarray(Image.open(grid))[2 + 34:34 + 34, 2 + 3 * 34:34 + 3 * 34]  # row 1 (class 2), column 3
    assert np.array_equal(cell, np.asarray(Image.open(whole / "class0002_00003.png")))


def test_resume_rewrites_only_missing_or_broken_files(bundle, tmp_path):
    d = tmp_path / "d"
    args = ("run", bundle, "-c", 4, "-n", 5, "--batch", 3, "--plan", "gtr", "--outdir", d)
    assert run(*args).exit_code == 0
    before = pngs(d)
    (d / "class0004_00001.png").unlink()
    (d / "class0004_00004.png").write_bytes(before["class0004_00004.png"][:100])  # truncated
    (d / ".tmp-left-by-a-crash.png").write_bytes(b"x")  # not one of the run's names: ignored
    r = run(*args)
    assert r.exit_code == 0 and "2 PNG(s)" in r.output and "(3 already there" in r.output, r.output
    assert pngs(d) == before


def test_outdir_refuses_a_run_with_other_settings(bundle, tmp_path):
    d = tmp_path / "d"
    assert run("run", bundle, "-c", 1, "-n", 2, "--outdir", d).exit_code == 0
    for other in (("--seed", 1), ("--batch", 1), ("-n", 4), ("--cfg", 2.0), ("--plan", "gtr")):
        msg = one_line_error(run("run", bundle, "-c", 1, "-n", 2, "--outdir", d, *other))
        assert "other settings" in msg, other
    assert run("run", bundle, "-c", 7, "-n", 2, "--outdir", d).exit_code == 0  # more classes: same run


def test_two_workers_with_other_settings_cannot_share_a_fresh_folder(bundle, tmp_path):
    """Both start at once on a new folder: the claim is one step under a lock, so exactly one is accepted
    and the folder holds only its images."""
    import subprocess
    import sys
    d = tmp_path / "d"
    procs = [subprocess.Popen([sys.executable, "-m", "gtr", "run", str(bundle), "-c", "1", "-n", "6", "--batch", "1",
                               "--seed", str(seed), "--outdir", str(d), "--device", "cpu"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for seed in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    loser = outs[[p.returncode for p in procs].index(1)]
    assert "other settings" in loser and "Traceback" not in loser, loser
    winner = [0, 1][[p.returncode for p in procs].index(0)]
    assert json.loads((d / "gtr-run.json").read_text())["seed"] == winner
    assert len(pngs(d)) == 6
    # a first run that died before its first image does not pin its settings
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "gtr-run.json").write_text(json.dumps({"seed": 99}))
    assert run("run", bundle, "-c", 1, "-n", 1, "--outdir", fresh).exit_code == 0
    assert json.loads((fresh / "gtr-run.json").read_text())["seed"] == 0


def test_npz_packs_the_run(bundle, tmp_path):
    d, npz = tmp_path / "d", tmp_path / "samples.npz"
    r = run("run", bundle, "-c", 0, "-c", 9, "-n", 3, "--outdir", d, "--npz", npz)
    assert r.exit_code == 0, r.output
    assert "packed 6 images" in r.output
    arr = np.load(npz)["arr_0"]
    assert arr.dtype == np.uint8 and arr.shape == (6, 32, 32, 3)
    files = [d / f"class{c:04d}_{i:05d}.png" for c in (0, 9) for i in range(3)]
    assert np.array_equal(arr, np.stack([np.asarray(Image.open(f)) for f in files]))


def test_run_bad_long_run_options(bundle, tmp_path):
    d = tmp_path / "d"
    assert "0 <= I < N" in one_line_error(run("run", bundle, "-c", 1, "--outdir", d, "--shard", "2/2"))
    assert "I/N" in one_line_error(run("run", bundle, "-c", 1, "--outdir", d, "--shard", "x"))
    assert "with --outdir" in one_line_error(run("run", bundle, "-c", 1, "--shard", "0/2"))
    assert "with --outdir" in one_line_error(run("run", bundle, "-c", 1, "--npz", tmp_path / "a.npz"))
    assert "without --shard" in one_line_error(run("run", bundle, "-c", 1, "--outdir", d, "--shard", "0/2",
                                                   "--npz", tmp_path / "a.npz"))
    assert "more than once" in one_line_error(run("run", bundle, "-c", 1, "-c", 1, "--outdir", d))
    assert not d.exists()


def test_all_classes(bundle, tmp_path):
    r = run("run", bundle, "--all-classes", "--outdir", tmp_path / "d", "--shard", "3/4")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "d").glob("*.png")) == ["class0003_00000.png", "class0007_00000.png"]
    assert "not both" in one_line_error(run("run", bundle, "--all-classes", "-c", 1, "--outdir", tmp_path / "e"))

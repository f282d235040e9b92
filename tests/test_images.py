import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gtr.runtime import images as gi
from gtr.runtime.images import atomic_write, make_grid, save_png, to_uint8


def test_to_uint8_exact_values():
    x = np.array([-1.0, 1.0, 0.0, -3.0, 3.0, 0.5, -0.5], np.float32)
    out = to_uint8(np.broadcast_to(x, (3, 7)).reshape(1, 3, 1, 7))
    assert out.dtype == np.uint8 and out.shape == (1, 1, 7, 3)
    # 0.0 -> 127.5 -> 128 (np.round: half to even); 0.5 -> 191.25 -> 191; -0.5 -> 63.75 -> 64
    assert out[0, 0, :, 0].tolist() == [0, 255, 128, 0, 255, 191, 64]
    assert np.array_equal(out[..., 0], out[..., 2])


def test_to_uint8_layout():
    x = np.zeros((2, 3, 4, 5), np.float32)
    x[1, 2, 3, 4] = 1.0  # batch 1, blue, row 3, col 4
    out = to_uint8(x)
    assert out.shape == (2, 4, 5, 3) and out[1, 3, 4, 2] == 255 and out[1, 3, 4, 0] == 128
    with pytest.raises(ValueError):
        to_uint8(np.zeros((2, 4, 4, 3), np.float32))


def test_make_grid_shape_and_placement():
    imgs = np.stack([np.full((4, 6, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    g = make_grid(imgs, ncol=3, pad=2, pad_value=7)
    assert g.shape == (2 + 2 * (4 + 2), 2 + 3 * (6 + 2), 3) and g.dtype == np.uint8
    for i in range(5):
        r, c = divmod(i, 3)
        y, x = 2 + r * 6, 2 + c * 8
        assert np.all(g[y:y + 4, x:x + 6] == 10 * (i + 1))
    assert np.all(g[:2] == 7) and np.all(g[:, :2] == 7)  # outer padding
    assert np.all(g[8:12, 18:24] == 7)  # the empty 6th cell
    assert make_grid(imgs, ncol=1, pad=0).shape == (20, 6, 3)


def test_save_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    path = tmp_path / "a" / "b" / "x.png"  # parents are created
    save_png(img, path)
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), img)
    assert os.listdir(path.parent) == ["x.png"]
    with pytest.raises(ValueError):
        save_png(img.astype(np.float32), path)


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "out.png"

    def boom(f):
        f.write(b"\x89PNG partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert os.listdir(tmp_path) == []

    # an existing file survives a failed overwrite through save_png
    old = np.zeros((2, 2, 3), np.uint8)
    save_png(old, path)

    def bad_save(self, fp, *a, **k):
        fp.write(b"\x89PNG partial")
        raise OSError("encoder failed")

    monkeypatch.setattr(gi.Image.Image, "save", bad_save)
    with pytest.raises(OSError):
        save_png(np.full((2, 2, 3), 255, np.uint8), path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["out.png"]
    assert np.array_equal(np.asarray(Image.open(path)), old)


def test_images_module_needs_no_torch():
    code = "import sys, gtr.runtime.images; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

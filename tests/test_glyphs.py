"""mar-glyphs: the font data, the resumable training loop, the config and the eval data set."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from gtr.glyphs import data as G

FONTS_REASON = ("the font packages of gtr/glyphs/font_packages.txt are not installed "
                "(apt-get install $(grep -v '^#' gtr/glyphs/font_packages.txt))")


def _fonts_installed() -> bool:
    return len(G._font_files()) >= G.MIN_FACES


needs_fonts = pytest.mark.skipif(not _fonts_installed(), reason=FONTS_REASON)


@pytest.fixture(scope="module")
def faces():
    return G.load_faces()


def test_package_list_is_debian_font_packages():
    names = G.font_packages()
    assert len(names) == len(set(names)) >= 50
    assert all(n.startswith("fonts-") and n == n.strip().lower() for n in names)


@needs_fonts
def test_faces_are_a_few_hundred_and_split_by_family(faces):
    names, held = list(faces["names"]), faces["heldout"]
    assert len(names) == len(set(n.lower() for n in names)) >= 300
    assert 0.08 < held.mean() < 0.3
    by_family = {}
    for family, h in zip(faces["families"], held):
        by_family.setdefault(str(family), set()).add(bool(h))
    assert len(by_family) >= 100
    assert all(len(v) == 1 for v in by_family.values()), "a family on both sides of the split"


@needs_fonts
def test_glyphs_are_centred_and_scaled_by_their_box(faces):
    g = faces["glyphs"][:50].astype(np.float32) / 255  # [F, 26, 64, 64]
    assert g.shape[1:] == (26, 64, 64) and faces["glyphs"].dtype == np.uint8
    for letters in g:
        for x in letters:
            ys, xs = np.nonzero(x > 0.1)
            h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
            assert G.BOX - 3 <= max(h, w) <= G.BOX + 2  # the longer side of the ink box is BOX
            cy, cx = (ys.max() + ys.min()) / 2, (xs.max() + xs.min()) / 2
            assert abs(cy - 31.5) <= 2 and abs(cx - 31.5) <= 2
    # white ink on black: the corners are background
    assert g[..., :3, :3].max() < 0.05


@needs_fonts
def test_splits_are_images_in_letter_order(faces):
    x, y = G.load_split("heldout")
    assert x.shape == (len(y), 3, 64, 64) and x.dtype == np.float32
    assert len(y) == 26 * int(faces["heldout"].sum())
    assert np.array_equal(y[:27], np.r_[np.arange(26), 0])
    assert x.min() == -1.0 and x.max() == 1.0 and np.array_equal(x[:, 0], x[:, 2])
    with pytest.raises(ValueError, match="split"):
        G.load_split("test")


@needs_fonts
def test_a_cached_set_is_found_without_rendering(faces, monkeypatch):
    def render_everything(*a, **k):
        raise AssertionError("rendered again although the set is cached")

    monkeypatch.setattr(G, "find_faces", render_everything)
    with np.load(G.build()) as cached:
        assert np.array_equal(cached["glyphs"], faces["glyphs"])


def test_no_fonts_is_one_clear_error(tmp_path):
    with pytest.raises(G.FontsMissing, match="apt-get install"):
        G.build(dirs=(str(tmp_path),), cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_config_registers_without_torch():
    code = ("import sys; import gtr.glyphs.model as m; from gtr.configs import REGISTRY; "
            "assert 'torch' not in sys.modules, 'torch imported'; c = REGISTRY['mar-glyphs']; "
            "assert c is m.MAR_GLYPHS and c.grid == (16, 16) and c.seq_len == 256 and c.num_classes == 26; "
            "assert c.buffer_size == 64 and c.vae.stride == 4 and c.img_size == 64")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_eval_data_set_follows_the_model():
    from gtr.configs import get_config
    from gtr.errors import EvalError
    from gtr.eval.datasets import DIGITS, GLYPHS, for_config
    from gtr.glyphs.model import MAR_GLYPHS

    assert for_config(get_config("mar-tiny")) is DIGITS and for_config(MAR_GLYPHS) is GLYPHS
    with pytest.raises(EvalError, match="no classifier for mar-b"):
        for_config(get_config("mar-b"))


def test_interrupted_mar_training_resumes_to_the_same_weights(tmp_path):
    """train_mar with a state file: a run stopped after a checkpoint and started again ends with the
    weights of an uninterrupted run (same batches, same draws, same optimiser state)."""
    from gtr.tiny.fit import train_mar
    from test_tiny_training import SMALL

    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(24, 4, 8, 8, generator=g), torch.full((24, 4, 8, 8), -2.0)
    labels = torch.arange(24) % 10
    kw = dict(steps=6, batch_size=8, lr=1e-3, weight_decay=0.02, ema_decay=0.9, seed=3, top_t_prob=0.1,
              log=lambda s: None, checkpoint_every=2)
    _, whole, _ = train_mar(SMALL, mean, logvar, labels, **kw)

    class Stop(Exception):
        pass

    def stop_at_4(ema_sd, step):
        if step == 4:
            raise Stop

    state = tmp_path / "state.pt"
    with pytest.raises(Stop):
        train_mar(SMALL, mean, logvar, labels, checkpoint=stop_at_4, state_path=state, **kw)
    assert state.is_file()
    resumed_log = []
    _, resumed, _ = train_mar(SMALL, mean, logvar, labels, state_path=state, **{**kw, "log": resumed_log.append})
    assert any("resumed at step 4/6" in line for line in resumed_log)
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_export_and_run_write_a_recognisable_letter_a(tmp_path):
    """As a user: gtr-export --model mar-glyphs, then gtr-run --class 0; the shipped letter classifier
    (trained on faces the generator never saw) reads the four 64x64 samples as A."""
    from PIL import Image

    from cli_helpers import run
    from gtr.eval.classifier import embed, load_classifier
    from gtr.eval.datasets import GLYPHS

    path = tmp_path / "glyphs.plan"
    r = run("export", "--model", "mar-glyphs", "--plan", "gtr", "-o", path)
    assert r.exit_code == 0, r.output
    out = tmp_path / "a.png"
    r = run("run", path, "--class", 0, "-n", 4, "--grid", "-o", out, "--seed", 0)
    assert r.exit_code == 0, r.output
    grid = np.asarray(Image.open(out))
    tiles = [grid[2:66, 2 + i * 66:66 + i * 66] for i in range(4)]
    images = np.stack([t.transpose(2, 0, 1) for t in tiles]).astype(np.float32) / 127.5 - 1
    logits, _ = embed(load_classifier(GLYPHS.classifier), images)
    assert (logits.argmax(1) == 0).sum() >= 3

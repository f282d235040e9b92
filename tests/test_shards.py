"""How a run is cut, seeded and sharded (gtr.runtime.shards) and its folder (gtr.runtime.outdir): pure
logic and small files, no model."""
import json

import numpy as np
import pytest
from PIL import Image

from gtr.runtime import outdir, shards
from gtr.runtime.shards import Chunk


def test_chunks_are_per_class_blocks_of_batch():
    assert list(shards.chunks([1, 2], num_images=6, batch=4)) == [Chunk(1, 0, 4), Chunk(1, 4, 2), Chunk(2, 0, 4), Chunk(2, 4, 2)]
    assert list(shards.chunks([None], num_images=2, batch=8)) == [Chunk(None, 0, 2)]
    assert list(Chunk(3, 4, 2).indices) == [4, 5]


def test_image_seed_depends_on_seed_class_and_index_only():
    from gtr.plan.noise import image_seed, image_seeds
    values = {image_seed(s, c, i) for s in (0, 1) for c in (None, 0, 1) for i in (0, 1)}
    assert len(values) == 12  # every (seed, class, index) differs
    assert all(0 <= v < 2**63 for v in values)
    # stable across versions: documented as the first 63 bits of sha256("seed/class/index")
    import hashlib
    assert image_seed(5, None, 10) == int.from_bytes(hashlib.sha256(b"5/uncond/10").digest()[:8], "big") >> 1
    # one call's images are numbered per class, as gtr-run -c C -n N numbers them
    assert image_seeds(3, [7, 2, 7]) == [image_seed(3, 7, 0), image_seed(3, 2, 0), image_seed(3, 7, 1)]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
def test_shards_are_disjoint_and_cover_the_run(n):
    labels = list(range(10)) + [None]
    run = list(shards.chunks(labels, num_images=5, batch=2))
    parts = [list(shards.shard(labels, 5, 2, i, n)) for i in range(n)]
    flat = [c for p in parts for c in p]
    assert sorted(flat, key=repr) == sorted(run, key=repr) and len(flat) == len(run)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
    assert [shards.shard_images(labels, 5, 2, i, n) for i in range(n)] == [sum(c.count for c in p) for p in parts]
    # the class order given does not change which shard makes a chunk
    reordered = [None] + list(range(9, -1, -1))
    assert [list(shards.shard(reordered, 5, 2, i, n)) for i in range(n)] == parts


def test_a_huge_run_is_lazy():
    """10^12 images: the chunks are made as they are needed, and a shard's size is arithmetic."""
    first = next(iter(shards.shard([3, 1], 10**12, 7, 1, 4)))
    assert first == Chunk(1, 7, 7)
    assert shards.shard_images([3, 1], 10**12, 7, 0, 1) == 2 * 10**12


def test_parse_shard():
    assert shards.parse_shard("0/2") == (0, 2) and shards.parse_shard("3/4") == (3, 4)
    for bad in ("2/2", "x", "1", "-1/2", "0/0", "1/2/3", ""):
        with pytest.raises(ValueError, match="shard"):
            shards.parse_shard(bad)


def write_png(path, size=8, value=0):
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


def test_image_names_and_completeness(tmp_path):
    assert outdir.image_name(88, 12) == "class0088_00012.png"
    assert outdir.image_name(None, 0) == "uncond_00000.png"
    good = tmp_path / "good.png"
    write_png(good)
    assert outdir.is_complete(good, 8)
    assert not outdir.is_complete(good, 16)  # another size
    assert not outdir.is_complete(tmp_path / "missing.png", 8)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:-20])
    assert not outdir.is_complete(cut, 8)
    gray = tmp_path / "gray.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(gray)
    assert not outdir.is_complete(gray, 8)  # not RGB
    (tmp_path / "text.png").write_text("hello")
    assert not outdir.is_complete(tmp_path / "text.png", 8)


def test_run_record(tmp_path):
    record, other = {"seed": 0, "batch": 2, "plan": {"name": "gtr"}}, {"seed": 1, "batch": 4, "plan": {"name": "gtr"}}
    new = tmp_path / "new"
    with outdir.claim(new, record):
        assert json.loads((new / outdir.RECORD).read_text()) == record
        with outdir.claim(new, dict(record)):  # a second worker of the same run joins
            pass
        with pytest.raises(outdir.FolderTaken) as e:  # a run with other settings is writing it now
            with outdir.claim(new, other):
                pass
        assert e.value.differ == ["batch", "seed"] and e.value.live
    # the first run ended before its first image: its record gives way to new settings
    with outdir.claim(new, other):
        assert json.loads((new / outdir.RECORD).read_text()) == other
    write_png(new / "class0001_00000.png")
    with pytest.raises(outdir.FolderTaken) as e:  # but not once the folder holds its images
        with outdir.claim(new, record):
            pass
    assert not e.value.live and json.loads((new / outdir.RECORD).read_text()) == other


def test_pack_npz(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for i, p in enumerate(paths):
        write_png(p, value=40 * i)
    out = tmp_path / "s.npz"
    assert outdir.pack_npz(paths, out, 8) == 3
    arr = np.load(out)["arr_0"]
    assert arr.dtype == np.uint8 and arr.shape == (3, 8, 8, 3)
    assert [int(a.max()) for a in arr] == [0, 40, 80]
    with pytest.raises(FileNotFoundError, match="nothing was packed"):
        outdir.pack_npz(paths + [tmp_path / "missing.png"], tmp_path / "t.npz", 8)
    assert not (tmp_path / "t.npz").exists() and not list(tmp_path.glob(".tmp-*"))

"""The scale-out recipe run for real: shards as tasks on a local Ray cluster, two workers with other
--threads, writing the same folder, byte for byte, as one unsharded run (mar-tiny, and the fixture
config at 256x256 where float differences reach the pixels)."""
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed here (pip install 'gtr-mar[scale]')")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def files(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("*.png"))}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, fixtures_dir):
    import gtr
    d = tmp_path_factory.mktemp("ray")
    tiny = gtr.export("mar-tiny", d / "tiny.plan", plans=["gtr"], log=None, verify=False)
    fixture = gtr.export("mar-test", d / "fixture.plan", plans=["mar-8"], checkpoint=fixtures_dir / "mar_small.pth",
                         vae=fixtures_dir / "kl16_small.ckpt", cfg=3.0, log=None, verify=False)
    return {"tiny": (tiny, [1, 7], 3), "fixture": (fixture, [207], 2)}


@pytest.mark.parametrize("which", ["tiny", "fixture"])
def test_ray_shards_write_the_unsharded_run_byte_for_byte(cluster, bundles, tmp_path, which):
    from gtr.pipeline import Pipeline
    from gtr.scale import run_on_ray
    bundle, classes, n = bundles[which]
    with Pipeline(bundle, device="cpu", threads=1) as pipe:
        pipe.save(tmp_path / "one", classes, seed=3, num_images=n, batch=1, progress=False)
    out = run_on_ray(bundle, tmp_path / "ray", classes, num_images=n, shards=2, seed=3, batch=1, device="cpu",
                     threads=[1, 2], npz=tmp_path / "run.npz")
    assert out["written"] == len(classes) * n and out["packed"] == len(classes) * n
    assert files(tmp_path / "ray") == files(tmp_path / "one") and len(files(tmp_path / "one")) == len(classes) * n

"""The same image on every machine: how work is cut into graph calls depends only on the bundle and the
request, so the same seed gives identical tokens whatever the threads or the CPU affinity."""
import os
import subprocess
import sys

import numpy as np
import pytest



@pytest.fixture(scope="module")
def fixture_bundle(fixtures_dir, tmp_path_factory):
    """The fixture config (official layout, 256x256) with the official fixture weights: where float
    differences reach the pixels."""
    import gtr
    path = tmp_path_factory.mktemp("numerics") / "mar-test.plan"
    gtr.export("mar-test", path, plans=["gtr", "mar-8"], checkpoint=fixtures_dir / "mar_small.pth",
               vae=fixtures_dir / "kl16_small.ckpt", cfg=3.0, log=None, verify=False)
    return path


def tokens(bundle, plan, batch, threads, seed=5):
    from gtr.runtime.bundle import read_bundle
    from gtr.runtime.onnx_backend import OnnxComponents
    from gtr.runtime.sampler import sample
    b = read_bundle(bundle)
    comps = OnnxComponents(b, providers=["CPUExecutionProvider"], threads=threads)
    labels = [(3 + 7 * i) % b.config.num_classes for i in range(batch)]
    out = sample(comps, b.plan(plan), labels, seed, token_dim=b.config.token_dim, num_classes=b.config.num_classes,
                 decode=False).tokens
    comps.close()
    return out


@pytest.mark.parametrize("plan", ["mar-8", "gtr"])
@pytest.mark.parametrize("batch", [1, 4])
def test_threads_do_not_change_the_numbers(fixture_bundle, plan, batch):
    ref = tokens(fixture_bundle, plan, batch, threads=1)
    for threads in (2, 4):
        assert np.array_equal(tokens(fixture_bundle, plan, batch, threads), ref), (plan, batch, threads)


def test_one_cpu_affinity_gives_the_same_numbers(fixture_bundle, tmp_path):
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    ref = tokens(fixture_bundle, "gtr", 4, threads=None)
    out = tmp_path / "t.npy"
    code = ("import os, sys, numpy as np; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "sys.path.insert(0, sys.argv[3]); from test_thread_numerics import tokens; "
            "np.save(sys.argv[2], tokens(sys.argv[1], 'gtr', 4, threads=None))")
    subprocess.run([sys.executable, "-c", code, str(fixture_bundle), str(out), os.path.dirname(__file__)], check=True)
    assert np.array_equal(np.load(out), ref)


def test_big_graphs_keep_their_numbers_at_any_intra_op_threads(fixture_bundle, monkeypatch):
    """Graphs too big to shard (MAR-B and up) run as one call on intra-op threads: still the same bits."""
    from gtr.runtime import onnx_backend
    monkeypatch.setattr(onnx_backend, "SHARD_MAX_BYTES", 0)
    ref = tokens(fixture_bundle, "mar-8", 2, threads=1)
    assert np.array_equal(tokens(fixture_bundle, "mar-8", 2, threads=2), ref)

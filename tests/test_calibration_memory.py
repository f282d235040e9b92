"""Bounded-memory calibration (issue 19): the streamed ranges equal the unbounded computation, and the
calibration's traced peak does not grow with the number of calibration images.

Test model: tests/tiny_export_model.py (8x8 grid). tracemalloc traces numpy's allocations (every
recorded feed is a numpy array), not onnxruntime's own arena, which does not depend on the number of
images either (one feed at a time).
"""
import gc
import tracemalloc

import numpy as np
import pytest

from gtr.calibration import CalibrationSpec, calibrate_graphs
from gtr.calibration.collect import has_data, record
from gtr.calibration.quantize import RangeCollector, _reader, int8_nodes, prepared_graph
from gtr.export.exporter import fp32_sessions, open_session, static_shapes, write_model

from tiny_export_model import TINY, tiny_graphs  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAMES = ("backbone", "head", "head_nocfg")


@pytest.fixture(scope="module")
def graphs(models, tmp_path_factory):
    d = tmp_path_factory.mktemp("calib-mem")
    return tiny_graphs(models, d, NAMES)[1], d


def _same_feed(a: dict, b: dict) -> bool:
    """Equal up to float32 rounding: the collectors' augmented graphs are fused a little differently
    by onnxruntime's optimizer than the plain graphs (measured: at most 2.4e-7 on O(1) tokens)."""
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
                                        for k in a)


def _collectors(g, folder, method="max") -> dict:
    out = {}
    for n in NAMES:
        nodes = int8_nodes(g[n])
        out[n] = RangeCollector(write_model(prepared_graph(g[n], nodes), str(folder / n)),
                                [i["name"] for i in g[n].inputs], method)
    return out


def _plain_sessions(collectors) -> dict:
    """Plain sessions of the same prepared graphs, as the exporter opens its sessions."""
    return {n: open_session(c.model_path) for n, c in collectors.items()}


def test_collectors_sample_exactly_like_plain_sessions(graphs, plans, tmp_path):
    """Sampling on the collectors (the augmented graphs) gives the sampler the graphs' own outputs:
    the same calls and the same inputs as plain sessions of the same graphs (up to float rounding)."""
    g, _ = graphs
    spec = CalibrationSpec(classes=(0, 3), seeds=1).resolve(TINY.num_classes)
    collectors = _collectors(g, tmp_path)
    got = record(collectors, plans, spec, TINY.num_classes, TINY.token_dim, keep=True)
    want = record(_plain_sessions(collectors), plans, spec, TINY.num_classes, TINY.token_dim, keep=True)
    assert got.shapes == want.shapes and got.images == want.images
    for n in NAMES:
        assert len(got.feeds[n]) == len(want.feeds[n]) > 1, n
        assert all(_same_feed(a, b) for a, b in zip(got.feeds[n], want.feeds[n])), n
        # every feed with data went into the ranges; K = 0 calls were run but left out of them
        assert collectors[n].feeds == sum(map(has_data, got.feeds[n])), n
    assert any(not has_data(f) for f in got.feeds["backbone"])


def test_collected_ranges_equal_the_unbounded_computation(graphs, plans, tmp_path):
    """Ranges merged call by call while sampling == onnxruntime's calibrator over the whole recorded
    list at once (the unbounded way: every feed and intermediate tensor in memory)."""
    g, _ = graphs
    spec = CalibrationSpec(classes=(0, 3), seeds=1).resolve(TINY.num_classes)
    collectors = _collectors(g, tmp_path / "streamed")
    kept = record(collectors, plans, spec, TINY.num_classes, TINY.token_dim, keep=True)
    for n in ("backbone", "head"):
        nodes = int8_nodes(g[n])
        names = [i["name"] for i in g[n].inputs]
        feeds = [f for f in kept.feeds[n] if has_data(f)]
        whole = RangeCollector(write_model(prepared_graph(g[n], nodes), str(tmp_path / f"whole-{n}")), names, "max")
        whole.calibrator.collect_data(_reader(feeds, names))  # all feeds in one collection
        whole.feeds = len(feeds)
        a, b = collectors[n].ranges().data, whole.ranges().data
        assert a.keys() == b.keys() and len(a) >= len(nodes)
        for k in a:
            assert np.array_equal(a[k].range_value, b[k].range_value), (n, k)


@pytest.mark.parametrize("method", ["max", "percentile", "entropy"])
def test_collectors_take_ranges_of_the_int8_inputs_only(graphs, plans, tmp_path, method):
    """One finite range per int8 node's activation input (its private edge), none of any other tensor."""
    g, _ = graphs
    spec = CalibrationSpec(classes=(0,), seeds=1).resolve(TINY.num_classes)
    collectors = _collectors(g, tmp_path, method)
    record(collectors, plans, spec, TINY.num_classes, TINY.token_dim)
    for n in NAMES:
        nodes = set(int8_nodes(g[n]))
        edges = {node.input[0] for node in prepared_graph(g[n], nodes).model.graph.node if node.name in nodes}
        ranges = collectors[n].ranges().data
        assert set(ranges) == edges and len(edges) == len(nodes), n
        assert all(np.all(np.isfinite(r.range_value)) and np.abs(r.range_value[1]).max() > 0
                   for r in ranges.values()), n


def _calibration_peak(g, d, plans, seeds: int) -> int:
    """tracemalloc peak (bytes) of one calibrate_graphs run (sampling, range collection, quantization)."""
    graphs = {n: g[n] for n in NAMES}
    spec = CalibrationSpec(classes=(0, 3), seeds=seeds, other_images=0)
    shapes = static_shapes(plans, 1)
    work = d / f"peak-{seeds}"
    work.mkdir()
    gc.collect()
    tracemalloc.start()
    try:
        calibrate_graphs(graphs, TINY, plans, 1, spec, shapes, True, str(work),
                         write_model=write_model)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def _unbounded_peak(g, d, plans, seeds: int) -> int:
    spec = CalibrationSpec(classes=(0, 3), seeds=seeds, other_images=0).resolve(TINY.num_classes)
    sessions = fp32_sessions(g, str(d))
    gc.collect()
    tracemalloc.start()
    try:
        rec = record(sessions, plans, spec, TINY.num_classes, TINY.token_dim, keep=True)
        _, peak = tracemalloc.get_traced_memory()
        del rec
    finally:
        tracemalloc.stop()
    return peak


def test_calibration_peak_does_not_grow_with_the_number_of_images(graphs, plans, tmp_path):
    g, _ = graphs
    small, large = _calibration_peak(g, tmp_path, plans, 2), _calibration_peak(g, tmp_path, plans, 8)
    assert large <= 1.10 * small, (small, large)
    # What it replaced grows with the images (the recorded inputs), so this comparison can fail:
    old_small, old_large = _unbounded_peak(g, tmp_path, plans, 2), _unbounded_peak(g, tmp_path, plans, 8)
    assert old_large >= 2.5 * old_small, (old_small, old_large)
    assert large < old_large


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histograms_stay_bounded_when_the_range_grows(method):
    """onnxruntime's histogram collector keeps its first feed's bin width and adds bins for larger
    values: a first feed 1e6 times smaller than the later ones would need ~2e9 bins. Coarsened before
    each feed, the bins stay within BIN_GROWTH x the initial count and every value is still counted."""
    from types import SimpleNamespace

    from onnxruntime.quantization.calibrate import HistogramCollector

    from gtr.calibration.quantize import BIN_GROWTH, _bound_histograms
    collector = HistogramCollector(method, True, 2048, 128, 99.999, "same")
    rng = np.random.default_rng(0)
    args, count = [SimpleNamespace(name="x")], 0
    for scale in (1e-4, 1e-2, 1.0, 1e2):
        value = (rng.standard_normal(5000) * scale).astype(np.float32)
        _bound_histograms(collector, args, [value])
        collector.collect({"x": value})
        count += value.size
        hist, edges = collector.histogram_dict["x"][:2]
        assert len(hist) <= BIN_GROWTH * 2048 + 2 and len(edges) == len(hist) + 1
        assert hist.sum() == count and edges[-1] >= np.abs(value).max()
    if method == "entropy":  # its bins stay symmetric about zero
        assert np.isclose(edges[0], -edges[-1])

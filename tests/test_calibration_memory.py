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
from gtr.calibration.collect import FeedStream, HeadPacker, pack, record
from gtr.calibration.quantize import RangeCollector, int8_nodes, prepared_graph
from gtr.export.exporter import fp32_sessions, open_session, static_shapes, write_model
from gtr.export.graphs import export_graph, graph_modules

from tiny_export_model import TINY  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAMES = ("backbone", "head", "head_nocfg")


@pytest.fixture(scope="module")
def graphs(models, tmp_path_factory):
    d = tmp_path_factory.mktemp("calib-mem")
    mods = graph_modules(*models, TINY.grid)
    return {n: export_graph(n, mods[n], TINY, str(d)) for n in NAMES}, d


def _same_feed(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_stream_hands_the_collectors_exactly_the_packed_feeds(graphs, plans):
    """The stream sees what `pack` makes of the recorded list: the same feeds in the same order."""
    g, d = graphs
    spec = CalibrationSpec(classes=(0, 3), seeds=1).resolve(TINY.num_classes)
    kept = record(fp32_sessions(g, str(d)), plans, spec, TINY.num_classes, TINY.token_dim)
    got = {n: [] for n in NAMES}
    stream = FeedStream({n: got[n].append for n in NAMES})
    streamed = record(fp32_sessions(g, str(d)), plans, spec, TINY.num_classes, TINY.token_dim, sink=stream)
    stream.finish()
    assert streamed.feeds == {} and streamed.shapes == kept.shapes and streamed.images == kept.images
    for n in NAMES:
        want = pack(n, kept.feeds[n])
        assert len(got[n]) == len(want) == stream.feeds[n] > 1, n
        assert all(_same_feed(a, b) for a, b in zip(got[n], want)), n
    assert any(f["tokens"].shape[1] == 0 for f in kept.feeds["backbone"])  # K = 0 calls exist ...
    assert all(f["tokens"].size for f in got["backbone"])  # ... and are left out, as pack does


def test_head_packer_flushes_at_the_row_limit():
    out = []
    p = HeadPacker(out.append, max_rows=5)
    feed = lambda r, v: {"x": np.full((r, 2), v, np.float32), "z": np.full((2 * r, 3), v, np.float32)}  # noqa: E731
    for r, v in ((2, 1), (3, 2), (1, 3), (4, 4)):
        p.add(feed(r, v))
    p.flush()
    assert [f["x"].shape[0] for f in out] == [5, 5]
    assert out[0]["z"][:5, 0].tolist() == [1, 1, 2, 2, 2]  # [cond of each call; uncond of each call]
    assert out[0]["z"][5:, 0].tolist() == [1, 1, 2, 2, 2]


def test_streamed_ranges_equal_the_unbounded_computation(graphs, plans, tmp_path):
    """Ranges from one feed at a time (as sampling makes them) == onnxruntime's calibrator over the whole
    recorded list at once (the unbounded way: every feed and intermediate tensor in memory)."""
    g, d = graphs
    spec = CalibrationSpec(classes=(0, 3), seeds=1).resolve(TINY.num_classes)
    kept = record(fp32_sessions(g, str(d)), plans, spec, TINY.num_classes, TINY.token_dim)
    for n in ("backbone", "head"):
        nodes = int8_nodes(g[n])
        names = [i["name"] for i in g[n].inputs]
        feeds = pack(n, kept.feeds[n])
        path = write_model(prepared_graph(g[n], nodes), str(tmp_path / f"stream-{n}"))
        streamed = RangeCollector(path, names, "max")
        for f in feeds:
            streamed.add(f)
        whole = RangeCollector(write_model(prepared_graph(g[n], nodes), str(tmp_path / f"whole-{n}")), names, "max")
        from gtr.calibration.quantize import _reader
        whole.calibrator.collect_data(_reader(feeds, names))  # all feeds in one collection
        whole.feeds = len(feeds)
        a, b = streamed.ranges().data, whole.ranges().data
        assert a.keys() == b.keys() and len(a) >= len(nodes)
        for k in a:
            assert np.array_equal(a[k].range_value, b[k].range_value), (n, k)


def _calibration_peak(g, d, plans, seeds: int) -> int:
    """tracemalloc peak (bytes) of one calibrate_graphs run (sampling, range collection, quantization)."""
    graphs = {n: g[n] for n in NAMES}
    spec = CalibrationSpec(classes=(0, 3), seeds=seeds)
    shapes = static_shapes(plans, 1)
    work = d / f"peak-{seeds}"
    work.mkdir()
    paths = {n: write_model(graphs[n], str(work / f"fp32-{n}")) for n in NAMES}
    gc.collect()
    tracemalloc.start()
    try:
        calibrate_graphs(graphs, TINY, plans, 1, spec, shapes, True, str(work),
                         open_sessions=lambda: {n: open_session(p) for n, p in paths.items()}, write_model=write_model)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def _unbounded_peak(g, d, plans, seeds: int) -> int:
    spec = CalibrationSpec(classes=(0, 3), seeds=seeds).resolve(TINY.num_classes)
    sessions = fp32_sessions(g, str(d))
    gc.collect()
    tracemalloc.start()
    try:
        rec = record(sessions, plans, spec, TINY.num_classes, TINY.token_dim)
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

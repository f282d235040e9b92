"""The head chain graph (gtr.export.head_chain): CHAIN_STEPS head steps in one onnxruntime call.

The chain repeats the step graph's nodes, so onnxruntime computes the same thing in the same order:
its output is compared bit for bit with the step graph run step by step, and sampling with it with
sampling without it. The test model is tests/tiny_export_model.py.
"""

import numpy as np
import onnx
import pytest

from gtr.calibration import CalibrationSpec
from gtr.errors import BundleError
from gtr.export.exporter import export_bundle
from gtr.export.head_chain import CHAIN_STEPS, chain_model, chain_proto
from gtr.export.packing import EMBED_BELOW
from gtr.export.verify import verify_inputs
from gtr.runtime import onnx_backend
from gtr.runtime.bundle import read_bundle, write_bundle
from gtr.runtime.onnx_backend import OnnxComponents, make_session
from gtr.runtime.sampler import head_calls, run_head, sample

from tiny_export_model import TINY  # noqa: E402  (tests/ is on sys.path under pytest)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KW = dict(token_dim=TINY.token_dim, num_classes=TINY.num_classes)
LABELS = [1, None, 7]


@pytest.fixture(scope="module")
def bundles(models, plans, tmp_path_factory):
    d = tmp_path_factory.mktemp("chain")
    out = {}
    for precision in ("fp32", "fp16", "int8"):
        out[precision] = d / f"{precision}.plan"
        export_bundle(TINY, *models, plans, batch=1, precision=precision, out_path=out[precision], random_weights=True,
                      sources={"random_seed": 0}, calibration=CalibrationSpec(classes=(0, 3), seeds=1)
                      if precision == "int8" else None)
    return out


def step_and_chain(bundle, name):
    """CPU sessions of a bundle's head graph and of its chain (made from the step graph when the bundle has none)."""
    g = bundle.graphs[name]
    weights = {g["weights"]: bundle.member(g["weights"])}
    chain = bundle.member(g["chain"]["member"]) if "chain" in g else chain_proto(bundle.member(g["member"]))
    cpu = ["CPUExecutionProvider"]
    return make_session(bundle.member(g["member"]), weights, cpu, 1), make_session(chain, weights, cpu, 1)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("name", ["head", "head_nocfg"])
def test_chain_equals_the_step_graph_run_step_by_step(bundles, plans, precision, name):
    """Same bits as CHAIN_STEPS step calls, for the float and the quantized (Q/DQ) step graphs."""
    bundle = read_bundle(bundles[precision])
    step, chain = step_and_chain(bundle, name)
    rng = np.random.default_rng(1)
    for r in (1, 5):
        feeds = [verify_inputs(name, {"r": r}, TINY, plans, rng) for _ in range(CHAIN_STEPS)]
        x = x0 = feeds[0]["x"]
        for f in feeds:
            x = step.run(None, {i.name: x if i.name == "x" else feeds[0][i.name] if i.name in ("z", "cfg_weight")
                                else f[i.name] for i in step.get_inputs()})[0]
        stacked = {f"{k}_seq": np.stack([f[k] for f in feeds]) for k in ("t", "coef", "noise")}
        got = chain.run(None, {i.name: {**feeds[0], **stacked}[i.name] for i in chain.get_inputs()})[0]
        assert np.array_equal(got, x) and not np.allclose(got, x0)


def test_fp32_bundle_holds_chains_that_share_the_step_weights(bundles):
    """The chain is a small graph member reading the head's weight blob: no second copy of the weights.
    fp16 and int8 bundles hold none (measured slower there, docs/speed.md)."""
    b = read_bundle(bundles["fp32"])
    for name in ("head", "head_nocfg"):
        entry = b.graphs[name]["chain"]
        assert entry["steps"] == CHAIN_STEPS and [i["name"] for i in entry["outputs"]] == ["x_final"]
        assert entry["max_error"] == 0.0
        proto = onnx.load_from_string(bytes(b.member(entry["member"])))
        stored = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
        assert stored == {b.graphs[name]["weights"]}
        assert all(len(t.raw_data) < EMBED_BELOW for t in proto.graph.initializer)  # only shape constants inside
    assert sorted(m for m in b.member_names if m.endswith(".weights")) == \
        ["backbone.weights", "head.weights", "vae_decoder.weights"]
    for precision in ("fp16", "int8"):
        assert not any("chain" in g for g in read_bundle(bundles[precision]).graphs.values())


def test_chain_model_rejects_other_graphs():
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(ValueError, match="not a head-step graph"):
        chain_model(helper.make_model(g))


def count_chain_calls(comps):
    """Wrap the components' chain sessions so that their calls are counted; returns the counter."""
    calls = []
    real = comps.chain

    def chain(name):
        found = real(name)
        if found is None:
            return None

        class Counted:
            def __init__(self, session):
                self.session = session

            def io_binding(self):
                return self.session.io_binding()

            def run_with_iobinding(self, io):
                calls.append(name)
                return self.session.run_with_iobinding(io)

        return Counted(found[0]), found[1]

    comps.chain = chain
    return calls


@pytest.mark.parametrize("plan_index", [0, 1], ids=["gtr-cfg3", "mar16-nocfg"])
def test_sampling_with_the_chain_gives_the_same_images(bundles, plans, plan_index):
    plan = plans[plan_index]
    with_chain = OnnxComponents(bundles["fp32"], threads=1)
    calls = count_chain_calls(with_chain)
    without = OnnxComponents(bundles["fp32"], threads=1)
    without.chain = lambda name: None
    a = sample(with_chain, plan, LABELS, 0, **KW)
    b = sample(without, plan, LABELS, 0, **KW)
    assert calls, "the chain graph was not used"
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.images, b.images)


def test_chain_bits_do_not_depend_on_threads(bundles, plans):
    one, two = OnnxComponents(bundles["fp32"], threads=1), OnnxComponents(bundles["fp32"], threads=2)
    calls = count_chain_calls(two)
    a, b = sample(one, plans[0], LABELS, 5, **KW), sample(two, plans[0], LABELS, 5, **KW)
    assert calls and np.array_equal(a.tokens, b.tokens)


def test_which_calls_are_chained_follows_the_rows(bundles, monkeypatch):
    """Runs of CHAIN_STEPS calls of the same rows, up to CHAIN_MAX_ROWS a shard, go to the chain; the rest
    (a run's remainder, wider calls) to the step graph, with the same result."""
    rng = np.random.default_rng(2)
    sizes, Ts = (3, 9), (35, 20)  # 15 calls of 3 rows, then 20 of 12; 2 shards of 2 + 7 and 1 + 5 rows
    R = sum(sizes)
    z = rng.standard_normal((2 * R, 32)).astype(np.float32)
    x = rng.standard_normal((R, 4)).astype(np.float32)
    noise = [rng.standard_normal((T - 1, n, 4)).astype(np.float32) for n, T in zip(sizes, Ts)]
    calls = head_calls(Ts, sizes, 1.0)
    results = {}
    for max_rows, chained in ((16, 2 * (1 + 2)), (4, 2 * 1), (0, 0)):
        monkeypatch.setattr(onnx_backend, "CHAIN_MAX_ROWS", max_rows)
        comps = OnnxComponents(bundles["fp32"], threads=1)
        counted = count_chain_calls(comps)
        results[max_rows] = run_head(comps, x.copy(), z, calls, 2.5, noise, 4)
        assert len(counted) == chained, max_rows
    assert np.array_equal(results[16], results[0]) and np.array_equal(results[4], results[0])


def test_a_bad_chain_entry_is_a_bundle_error(bundles, tmp_path):
    b = read_bundle(bundles["fp32"])
    members = {name: bytes(b.member(name)) for name in b.member_names}
    for bad, message in (({"member": "missing.onnx", "steps": 10}, "needs member 'missing.onnx'"),
                         ({"member": "head_chain.onnx", "steps": 0}, "malformed chain entry")):
        manifest = dict(b.manifest)
        manifest["graphs"] = {**b.graphs, "head": {**b.graphs["head"], "chain": bad}}
        write_bundle(tmp_path / "bad.plan", manifest, members)
        with pytest.raises(BundleError, match=message):
            read_bundle(tmp_path / "bad.plan")

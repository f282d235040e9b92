"""TensorRT engines, everything that needs no TensorRT: profile derivation for every preset plan and batch,
engine cache keys, engine members in the bundle, backend selection and its fallbacks, and the one-line
errors of gtr-build / gtr-run / gtr-check where TensorRT is missing.

No test here builds or runs an engine (tests/test_tensorrt_gpu.py does, where TensorRT and a GPU are).
The engine bytes below are placeholders: they are only stored, looked up and checksummed, never run.
"""
import importlib.util

import numpy as np
import pytest

from gtr.configs import get_config
from gtr.export.exporter import static_shapes
from gtr.export.onnx_export import io_specs
from gtr.plan import build_plan, preset_names
from gtr.runtime.trt import engine_store
from gtr.errors import DeviceError
from gtr.runtime.bundle import BundleError, read_bundle, write_bundle
from gtr.runtime.trt.engine_store import (ENGINE_MEMBER, EngineError, Target, engine_entries, engine_key, find_engines,
                                      graph_digest, key_id, write_with_engines)
from gtr.runtime.trt.profiles import MAX_PROFILES, Profile, derive_profiles, input_dims, profile_dims

from tiny_export_model import TINY  # noqa: E402  (tests/ is on sys.path under pytest)
from cli_helpers import one_line_error, run
from trt_builder_fakes import stub_builder_tensorrt

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_no_tensorrt = pytest.mark.skipif(HAVE_TENSORRT, reason="checks the errors where TensorRT is NOT installed")
ORIN = Target("10.3.0", "Orin", "8.7")
RTX = Target("10.3.0", "NVIDIA GeForce RTX 4090", "8.9")


def manifest_inputs(config, graph):
    """A graph's inputs as the manifest lists them (gtr.export.onnx_export.io_specs)."""
    return [{"name": n, "dtype": d, "shape": s} for n, d, s in io_specs(config)[graph][0]]


def select(profiles, symbols):
    """The runtime's rule (gtr.runtime.trt.backend._Engine.profile_for), on symbols: exact opt first, else spanning."""
    for i, p in enumerate(profiles):
        if p.opt == symbols:
            return i
    return next((i for i, p in enumerate(profiles) if p.covers(symbols)), None)


# ------------------------------------------------------------------------------------------- profiles

@pytest.mark.parametrize("batch", [1, 2, 4])
@pytest.mark.parametrize("preset", preset_names())
def test_profiles_cover_every_static_shape(preset, batch):
    config = get_config("mar-b")  # the ImageNet 16x16 grid; shapes do not depend on widths
    plans = [build_plan(preset, config.grid, cfg=config.default_cfg), build_plan(preset, config.grid, cfg=1.0)
             .replace(name=preset + "-nocfg")]
    for graph, shapes in static_shapes(plans, batch).items():
        inputs = manifest_inputs(config, graph)
        profiles = derive_profiles(shapes)
        unique = {tuple(sorted(s.items())) for s in shapes}
        assert 1 <= len(profiles) <= MAX_PROFILES
        # issue 20 item 4: a shape with an empty dimension (K = 0) is never inside a range profile
        assert all(p.exact for p in profiles if 0 in p.min.values())
        if len(unique) <= MAX_PROFILES:  # one exact profile per shape
            assert len(profiles) == len(unique) and all(p.exact for p in profiles)
        for p in profiles:
            assert p.opt in shapes  # opt is always a real shape of the plans
            assert all(p.min[k] <= p.opt[k] <= p.max[k] for k in p.opt)
            for name, (lo, opt, hi) in profile_dims(inputs, p).items():
                assert all(a <= b <= c for a, b, c in zip(lo, opt, hi)), (graph, name)
        for s in shapes:
            i = select(profiles, s)
            assert i is not None and profiles[i].covers(s), (graph, s)
            dims = input_dims(inputs, s)
            assert dims["x" if graph.startswith("head") else "tokens"][0] == s.get("r", s.get("B"))


def test_grouping_of_many_shapes():
    shapes = static_shapes([build_plan("mar-256", (16, 16), cfg=3.0)], 1)["backbone"]
    assert len(shapes) == 256
    profiles = derive_profiles(shapes)
    assert len(profiles) == MAX_PROFILES
    # the first AR step (K = 0, empty tensors) has its own exact profile; the other 255 shapes are runs of
    # consecutive AR steps (K grows), every shape inside its run's span
    assert profiles[0].exact and profiles[0].opt["K"] == 0
    assert not any(p.exact for p in profiles[1:])
    assert [p.min["K"] for p in profiles] == sorted(p.min["K"] for p in profiles)
    assert all(sum(p.covers(s) for p in profiles) >= 1 for s in shapes)
    assert all(select(profiles, p.opt) == i for i, p in enumerate(profiles))
    assert [len(derive_profiles(shapes, m)) for m in (1, 2, 7, 300)] == [2, 2, 7, 256]
    empty, rest = derive_profiles(shapes, 1)
    assert empty.exact and empty.opt["K"] == 0
    assert rest.min["K"] == 1 and rest.max["K"] == max(s["K"] for s in shapes)
    with pytest.raises(ValueError):
        derive_profiles(shapes, 0)
    p = Profile({"r": 2, "r2": 4}, {"r": 3, "r2": 6}, {"r": 5, "r2": 10})
    assert Profile.from_dict(p.to_dict()) == p and "opt r=3 r2=6" in p.describe()


# ------------------------------------------------------------------------------------- engine members

def _fake_bundle(path, shapes=({"B": 2, "K": 0, "n": 4}, {"B": 2, "K": 4, "n": 4})):
    """A bundle with placeholder graph and weight members (never parsed) and real manifest entries."""
    config = get_config("mar-test")
    inputs, head_inputs = manifest_inputs(config, "backbone"), manifest_inputs(config, "head")
    plan = build_plan("gtr", config.grid, cfg=3.0)
    manifest = {"config": config.to_dict(), "plans": {plan.name: plan.to_dict()}, "precision": "fp16",
                "graphs": {"backbone": {"member": "backbone.onnx", "weights": "backbone.weights", "inputs": inputs,
                                        "static_shapes": list(shapes)},
                           "head": {"member": "head.onnx", "weights": "head.weights", "inputs": head_inputs,
                                    "static_shapes": [{"r": 4, "r2": 8}]}}}
    members = {"backbone.onnx": b"graph" * 10, "backbone.weights": np.arange(100, dtype=np.float32),
               "head.onnx": b"head" * 10, "head.weights": np.arange(10, dtype=np.float32)}
    write_bundle(path, manifest, members)
    return path


def _engines_for(bundle, target, payload=b"engine"):
    built = []
    for comp in ("backbone", "head"):
        profiles = derive_profiles(bundle.graphs[comp]["static_shapes"])
        key = engine_key(bundle, comp, profiles, target)
        ident = key_id(comp, key)
        built.append(({"component": comp, "member": ENGINE_MEMBER.format(component=comp, id=ident), "id": ident,
                       "key": key, "profiles": [p.to_dict() for p in profiles]}, payload + comp.encode()))
    return built


def test_cache_key_parts(tmp_path):
    b = read_bundle(_fake_bundle(tmp_path / "a.plan"))
    profiles = derive_profiles(b.graphs["backbone"]["static_shapes"])
    digest = graph_digest(b, "backbone", profiles)
    assert len(digest) == 64 and digest == graph_digest(b, "backbone", profiles)
    assert digest != graph_digest(b, "backbone", profiles[:1])  # profiles are part of what is built
    other = read_bundle(_fake_bundle(tmp_path / "b.plan", shapes=({"B": 2, "K": 0, "n": 8},)))
    assert graph_digest(other, "backbone", profiles) == digest  # same members, same profiles: same graph key
    keys = {key_id("backbone", engine_key(b, "backbone", profiles, t)) for t in (ORIN, RTX, Target("10.4.0", "Orin", "8.7"))}
    assert len(keys) == 3  # GPU and TensorRT version are part of the key
    assert ORIN.slug() == "trt10.3.0-Orin-sm8.7" and "/" not in RTX.slug()


def test_cache_key_records_the_cuda_major_of_tensorrt(tmp_path):
    """Risk: tensorrt-cu12 and tensorrt-cu13 share version strings; an engine built with one is not used
    with the other (its key records the CUDA major), and the run's message says which it was built for."""
    cu12, cu13 = (Target("10.16.1.11", "NVIDIA H100", "9.0", cuda) for cuda in ("12", "13"))
    b = read_bundle(_fake_bundle(tmp_path / "a.plan"))
    profiles = derive_profiles(b.graphs["backbone"]["static_shapes"])
    k12, k13 = (engine_key(b, "backbone", profiles, t) for t in (cu12, cu13))
    assert k12["cuda"] == "12" and key_id("backbone", k12) != key_id("backbone", k13)
    ident = key_id("backbone", k12)
    entry = {"component": "backbone", "member": ENGINE_MEMBER.format(component="backbone", id=ident), "id": ident,
             "key": k12, "profiles": [p.to_dict() for p in profiles]}
    path = tmp_path / "cu12.plan"
    write_with_engines(b, [(entry, b"engine")], path)
    assert engine_store.usable_engine(read_bundle(path), "backbone", cu12)["id"] == ident
    assert engine_store.usable_engine(read_bundle(path), "backbone", cu13) is None
    found, reason = find_engines(read_bundle(path), cu13)
    assert found == {} and "TensorRT 10.16.1.11 (CUDA 12), not for this" in reason and "(CUDA 13)" in reason
    assert cu12.slug() != cu13.slug()


def test_engines_round_trip_and_lookup(tmp_path):
    src = _fake_bundle(tmp_path / "a.plan")
    b = read_bundle(src)
    assert engine_entries(b) == [] and "no TensorRT engines" in find_engines(b, ORIN)[1]
    out = tmp_path / "with.plan"
    write_with_engines(b, _engines_for(b, ORIN), out)
    w = read_bundle(out)
    assert bytes(w.member("backbone.onnx")) == bytes(b.member("backbone.onnx"))  # original members kept
    found, reason = find_engines(w, ORIN)
    assert reason is None and set(found) == {"backbone", "head"}
    assert bytes(w.member(found["head"]["member"])) == b"enginehead"
    found, reason = find_engines(w, RTX)
    assert found == {} and "Orin (sm 8.7) with TensorRT 10.3.0" in reason and "RTX 4090" in reason
    assert "gtr-build" in reason and "\n" not in reason

    # engines for a second GPU join the first; rebuilding for the same GPU replaces, never duplicates
    write_with_engines(w, _engines_for(w, RTX), out)
    w = read_bundle(out)
    assert len(engine_entries(w)) == 4 and find_engines(w, RTX)[1] is None and find_engines(w, ORIN)[1] is None
    write_with_engines(w, _engines_for(w, ORIN, payload=b"newer"), out)  # in place, over its own file
    w = read_bundle(out)
    assert len(engine_entries(w)) == 4 and len(w.member_names) == 8
    assert bytes(w.member(find_engines(w, ORIN)[0]["backbone"]["member"])) == b"newerbackbone"

    # an engine for another graph (other members or profiles) does not match
    other = _fake_bundle(tmp_path / "c.plan", shapes=({"B": 2, "K": 0, "n": 8},))
    o = read_bundle(other)
    stale = _engines_for(read_bundle(src), ORIN)
    write_with_engines(o, stale, other)
    found, reason = find_engines(read_bundle(other), ORIN)
    assert found == {} and "none for backbone" in reason


def test_damaged_or_malformed_engine_entries_are_bundle_errors(tmp_path):
    src = _fake_bundle(tmp_path / "a.plan")
    b = read_bundle(src)
    out = tmp_path / "e.plan"
    write_with_engines(b, _engines_for(b, ORIN, payload=b"x" * 500), out)
    w = read_bundle(out)
    member = find_engines(w, ORIN)[0]["backbone"]["member"]
    data = bytearray(out.read_bytes())
    data[w.data_start + w._members[member][0] + 7] ^= 0xFF  # flip a byte inside the engine member
    damaged = tmp_path / "damaged.plan"
    damaged.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"checksum mismatch in member '{member}'"):
        read_bundle(damaged)

    manifest = {k: v for k, v in w.manifest.items() if k not in ("format", "format_version", "members")}
    members = {n: w.member(n) for n in w.member_names}
    for bad, match in ((dict(manifest, engines="x"), "malformed engine table"),
                       (dict(manifest, engines=[{"component": "nope", "member": member}]), "not a graph"),
                       (dict(manifest, engines=[{"component": "head", "member": "gone"}]), "member 'gone'")):
        p = tmp_path / "bad.plan"
        write_bundle(p, bad, members)
        with pytest.raises(BundleError, match=match):
            read_bundle(p)
    entry = dict(manifest["engines"][0], key={"gpu": 3})
    p = tmp_path / "badkey.plan"
    write_bundle(p, dict(manifest, engines=[entry]), members)
    with pytest.raises(BundleError, match="malformed engine entry"):
        engine_entries(read_bundle(p))


# ------------------------------------------------------------------- backends, fallbacks and errors

@pytest.fixture(scope="module")
def tiny_bundle(models, plans, tmp_path_factory):
    """A real bundle of the small test model (graphs run on onnxruntime), exported without the check."""
    from gtr.export.exporter import export_bundle
    mar, vae = models
    path = tmp_path_factory.mktemp("trt") / "tiny.plan"
    export_bundle(TINY, mar, vae, plans, batch=1, precision="fp16", out_path=path, random_weights=True,
                  verify=False)
    return path


@pytest.fixture()
def with_engines(tiny_bundle, tmp_path):
    """The tiny bundle plus placeholder engines 'built' for an Orin."""
    b = read_bundle(tiny_bundle)
    built = []
    for comp in engine_store.components(b):
        profiles = derive_profiles(b.graphs[comp]["static_shapes"])
        key = engine_key(b, comp, profiles, ORIN)
        ident = key_id(comp, key)
        built.append(({"component": comp, "member": ENGINE_MEMBER.format(component=comp, id=ident), "id": ident,
                       "key": key, "profiles": [p.to_dict() for p in profiles]}, b"not a real engine"))
    path = tmp_path / "tiny-engines.plan"
    write_with_engines(b, built, path)
    return path


def test_backend_selection(tiny_bundle, with_engines, monkeypatch):
    from gtr.runtime.backends import make_components
    from gtr.runtime.onnx_backend import OnnxComponents
    notes = []
    for path, backend in ((tiny_bundle, "onnxruntime"), (tiny_bundle, "auto"), (with_engines, "onnxruntime")):
        comps = make_components(read_bundle(path), backend, "cpu", log=notes.append)
        assert isinstance(comps, OnnxComponents) and comps.bundle.path == path
    comps = make_components(read_bundle(tiny_bundle), "auto", "auto", log=notes.append)
    assert isinstance(comps, OnnxComponents) and notes == []  # no engines: onnxruntime, nothing to say
    with pytest.raises(EngineError, match="cannot run with --device cpu"):
        make_components(read_bundle(with_engines), "tensorrt", "cpu")
    with pytest.raises(DeviceError):
        make_components(read_bundle(with_engines), "trt")

    # TensorRT "there" (its target faked; nothing is built or run): engines for another GPU are not used
    monkeypatch.setattr(engine_store, "current_target", lambda device=None: RTX)
    comps = make_components(read_bundle(with_engines), "auto", "auto", log=notes.append)
    assert isinstance(comps, OnnxComponents)
    assert len(notes) == 1 and "not for this NVIDIA GeForce RTX 4090" in notes[0] and "ONNX Runtime" in notes[0]
    with pytest.raises(EngineError, match="has TensorRT engines for Orin .sm 8.7. with TensorRT 10.3.0, not for"):
        make_components(read_bundle(with_engines), "tensorrt", "auto")
    with pytest.raises(EngineError, match="has no TensorRT engines .build them with: gtr-build"):
        make_components(read_bundle(tiny_bundle), "tensorrt", "auto")


@needs_no_tensorrt
def test_without_tensorrt(tiny_bundle, with_engines, tmp_path):
    from gtr.runtime.backends import make_components
    from gtr.runtime.onnx_backend import OnnxComponents
    with pytest.raises(EngineError, match=r"TensorRT is not installed: pip install 'gtr-mar\[tensorrt\]'"):
        make_components(read_bundle(tiny_bundle), "tensorrt")
    notes = []
    comps = make_components(read_bundle(with_engines), "auto", log=notes.append)
    assert isinstance(comps, OnnxComponents) and len(notes) == 1 and "gtr-mar[tensorrt]" in notes[0]

    # gtr-run --backend tensorrt: one line, nothing written
    out = tmp_path / "x.png"
    for extra in ((), ("--rebuild",)):
        line = one_line_error(run("run", tiny_bundle, "--class", 1, "-o", out, "--backend", "tensorrt", *extra))
        assert "pip install 'gtr-mar[tensorrt]'" in line
        assert not out.exists()
    # auto with engines that cannot run here: a note, then onnxruntime makes the image
    r = run("run", with_engines, "--class", 1, "-o", out)
    assert r.exit_code == 0, r.output
    assert "note: not using TensorRT" in r.output and out.is_file() and "onnxruntime" in r.output

    # gtr-build: one line, neither the bundle nor -o touched
    before = tiny_bundle.read_bytes()
    for args in ((), ("-o", tmp_path / "out.plan")):
        line = one_line_error(run("build", tiny_bundle, *args))
        assert "pip install 'gtr-mar[tensorrt]'" in line
    assert tiny_bundle.read_bytes() == before and not (tmp_path / "out.plan").exists()
    assert list(tmp_path.glob(".tmp-*")) == []


def test_build_dry_run_and_inspect(tiny_bundle, with_engines):
    r = run("build", tiny_bundle, "--dry-run")
    assert r.exit_code == 0, r.output
    b = read_bundle(tiny_bundle)
    for comp in engine_store.components(b):
        assert f"{comp}: {len(b.graphs[comp]['static_shapes'])} static shape(s) ->" in r.output
        for i in range(len(derive_profiles(b.graphs[comp]["static_shapes"]))):
            assert f"profile {i}: " in r.output
    assert r.output.count("cache key: graph") == len(engine_store.components(b))
    small = run("build", tiny_bundle, "--dry-run", "--max-profiles", 2)
    assert small.exit_code == 0 and "(grouped, at most 2)" in small.output and "| opt " in small.output
    one_line_error(run("build", tiny_bundle, "--dry-run", "--max-profiles", 0))
    r = run("inspect", with_engines, "--no-plans")
    assert r.exit_code == 0, r.output
    assert "engine backbone: TensorRT 10.3.0, Orin (sm 8.7)" in r.output


def test_engines_do_not_change_the_run_record(tiny_bundle, with_engines):
    """A folder of images made before gtr-build resumes after it: engines are not part of the record."""
    from gtr.pipeline import Pipeline
    a = Pipeline(tiny_bundle, device="cpu", backend="onnxruntime")
    b = Pipeline(with_engines, device="cpu", backend="onnxruntime")
    assert a.fingerprint() == b.fingerprint()


def test_engine_check_uses_the_bundle_rule(tiny_bundle, plans):
    """gtr-check --backend tensorrt's comparison, exercised with onnxruntime runners (one skewed): the rule is
    gtr.runtime.fidelity's for the bundle's precision (issue 20 item 8), so an image offset of 0.08 (about
    28 dB) fails an fp16 bundle (30 dB) and passes an int8 one (25 dB), as on ONNX Runtime."""
    from gtr.engines.check import compare_backends
    from gtr.runtime.fidelity import image_psnr, sample_passes
    from gtr.runtime.onnx_backend import OnnxComponents
    from gtr.runtime.sampler import sample
    b = read_bundle(tiny_bundle)
    plan = build_plan("gtr", TINY.grid, cfg=3.0, t_rec=2, t_gen_max=3, t_gen_min=2, t_detail=3)

    class Skewed(OnnxComponents):
        def decode(self, tokens):
            return super().decode(tokens) + 0.08

    ort = OnnxComponents(b, providers=["CPUExecutionProvider"])
    skewed = Skewed(b, providers=["CPUExecutionProvider"])
    kw = dict(token_dim=b.config.token_dim, num_classes=b.config.num_classes)
    psnr = image_psnr(sample(ort, plan, [1], 0, **kw).images, sample(skewed, plan, [1], 0, **kw).images)
    assert 25 <= psnr < 30, psnr  # between the int8 and the fp16 bar
    for precision in ("fp16", "int8"):
        lines = []
        ok = compare_backends({"a": ort, "b": ort, "skewed": skewed}, [plan], [1], 0, b.config, precision,
                              echo=lines.append)
        assert ok == sample_passes(precision, psnr) == (precision == "int8") and len(lines) == 2
        assert lines[0].startswith("gtr: a vs b: PSNR inf dB") and lines[0].endswith("PASS")
        assert "a vs skewed" in lines[1] and f"{psnr:.1f} dB" in lines[1]
        assert lines[1].endswith("PASS" if precision == "int8" else "FAIL")


@needs_no_tensorrt
def test_check_tensorrt_without_tensorrt(tiny_bundle):
    line = one_line_error(run("check", tiny_bundle, "--backend", "tensorrt", "--plan", "gtr"))
    assert "pip install 'gtr-mar[tensorrt]'" in line


# ------------------------------------------------------------------------ gtr-build with a stub builder

def _stub_build(monkeypatch, target=ORIN):
    """gtr.engines.build with TensorRT and the GPU stubbed: build_engine returns placeholder bytes and
    records which components it was asked to build."""
    from gtr.engines import build
    asked = []

    def build_engine(trt, bundle, comp, profiles, workspace_mb, cache):
        asked.append(comp)
        return b"stub engine " + comp.encode()

    monkeypatch.setattr(build, "import_tensorrt", lambda: stub_builder_tensorrt())
    monkeypatch.setattr(build, "current_target", lambda device=None: target)
    monkeypatch.setattr(build, "build_engine", build_engine)
    return build, asked


def test_build_skips_only_engines_that_would_run(tiny_bundle, with_engines, tmp_path, monkeypatch):
    """Issue 20 item 2: "in the bundle already" means the runtime would use it (key names this target and
    it fits), not that an entry with the expected id exists. Engines whose key says another GPU (with
    the id left as it was) or a stale graph digest are rebuilt; afterwards the run finds them all."""
    build, asked = _stub_build(monkeypatch)
    lines = []
    summary = build.build_engines(with_engines, tmp_path / "same.plan", cache_dir=tmp_path, log=lines.append)
    assert asked == [] and summary["built"] == [] and len(summary["cached"]) == len(engine_store.components(
        read_bundle(with_engines)))

    for change in (lambda e: dict(e, key=dict(e["key"], gpu="Some Other GPU")),   # another GPU, same id
                   lambda e: dict(e, key=dict(e["key"], graph="0" * 64))):        # a stale graph, same id
        b = read_bundle(with_engines)
        manifest = {k: v for k, v in b.manifest.items() if k not in ("format", "format_version", "members")}
        manifest["engines"] = [change(e) for e in manifest["engines"]]
        path = tmp_path / "changed.plan"
        write_bundle(path, manifest, {n: b.member(n) for n in b.member_names})
        assert find_engines(read_bundle(path), ORIN)[1] is not None  # the run refuses them
        asked.clear()
        lines.clear()
        summary = build.build_engines(path, cache_dir=tmp_path, log=lines.append)
        assert asked == engine_store.components(b) and summary["cached"] == []
        assert not any("up to date" in line for line in lines)
        found, reason = find_engines(read_bundle(path), ORIN)
        assert reason is None and all(bytes(read_bundle(path).member(e["member"])).startswith(b"stub engine")
                                      for e in found.values())


def test_build_rebuilds_a_stored_engine_that_does_not_load(tiny_bundle, with_engines, tmp_path, monkeypatch):
    """An entry whose key and digest match but whose engine this TensorRT cannot deserialize (damaged) is
    rebuilt, not kept: the run's message for such an engine says to rebuild it with gtr-build, and then
    gtr-build must change something."""
    build, asked = _stub_build(monkeypatch)
    b = read_bundle(with_engines)
    manifest = {k: v for k, v in b.manifest.items() if k not in ("format", "format_version", "members")}
    head = next(e for e in manifest["engines"] if e["component"] == "head")
    members = {n: b.member(n) for n in b.member_names}
    members[head["member"]] = b"damaged engine"
    path = tmp_path / "damaged.plan"
    write_bundle(path, manifest, members)
    lines = []
    summary = build.build_engines(path, cache_dir=tmp_path, log=lines.append)
    assert asked == ["head"] and summary["built"] == ["head"]
    assert any("does not load here; rebuilding it" in line for line in lines)
    found, reason = find_engines(read_bundle(path), ORIN)
    assert reason is None and bytes(read_bundle(path).member(found["head"]["member"])) == b"stub engine head"


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_fp32_and_int8_engines_build_without_tf32(tiny_bundle, tmp_path, precision, monkeypatch):
    """TensorRT allows TF32 for fp32 tensors by default; fp32 and int8 bundles' engines are built with it
    cleared (their fp32 parts, int8's attention and VAE decoder too, are checked against fp32
    arithmetic); fp16 leaves the flags alone."""
    from gtr.engines.build import TimingCache, build_engine
    monkeypatch.setattr(engine_store, "_LOGGER", None)
    b = read_bundle(tiny_bundle)
    manifest = {k: v for k, v in b.manifest.items() if k not in ("format", "format_version", "members")}
    path = tmp_path / f"{precision}.plan"
    write_bundle(path, dict(manifest, precision=precision), {n: b.member(n) for n in b.member_names})
    b = read_bundle(path)
    trt = stub_builder_tensorrt([i["name"] for i in b.graphs["head"]["inputs"]])
    data = build_engine(trt, b, "head", derive_profiles(b.graphs["head"]["static_shapes"]), None,
                        TimingCache(tmp_path / "t.cache"))
    assert data == b"serialized" and len(trt.configs) == 1
    assert trt.configs[0].cleared == (["TF32"] if precision in ("fp32", "int8") else [])


@pytest.mark.parametrize("version, flags", [("10.1.0", 1), ("10.16.1.11", 1), ("11.4.0.106", 0)])
def test_strongly_typed_flag_only_where_tensorrt_takes_it(tiny_bundle, tmp_path, version, flags, monkeypatch):
    """TensorRT 11 builds every network strongly typed and deprecates the flag: it is passed to 10 only
    (tests/real_gpu/check_tensorrt.py checks the same against the real 10.1 and 11.4 modules)."""
    from gtr.engines.build import TimingCache, build_engine
    monkeypatch.setattr(engine_store, "_LOGGER", None)
    b = read_bundle(tiny_bundle)
    trt = stub_builder_tensorrt([i["name"] for i in b.graphs["head"]["inputs"]], version=version)
    build_engine(trt, b, "head", derive_profiles(b.graphs["head"]["static_shapes"]), None,
                 TimingCache(tmp_path / "t.cache"))
    assert trt.network_flags == [flags]

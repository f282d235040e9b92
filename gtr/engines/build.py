"""gtr-build: one TensorRT engine per component of a bundle, written back into the bundle.

For each graph (backbone, head, head_nocfg when present, vae_decoder): parse the bundle's ONNX graph
with its weights, as a strongly typed network (precision comes from the graph's own types and casts:
TensorRT 11 has no builder precision flags and builds every network strongly typed, its STRONGLY_TYPED
flag deprecated and ignored, so the flag is passed to TensorRT 10 only), add the optimization profiles
derived from the manifest's static shapes (gtr.runtime.trt.profiles), build, and store the engine in the
bundle under its cache key (gtr.runtime.trt.engine_store). An engine the bundle already has is kept only
when the runtime would use it: its key names this TensorRT and GPU, it fits the bundle's graph and
shapes (engine_store.usable_engine, the rule the run applies; a stored id alone proves nothing), and
this TensorRT deserializes it (a damaged engine is rebuilt, not kept); `force` rebuilds it. fp32 and
int8 bundles build with TF32 off: TensorRT allows TF32 for fp32 tensors by default, and their fp32
parts (all of fp32; int8's attention and VAE decoder) are checked against fp32 arithmetic. The timing cache (kernel timings, the slow part of a build) is
loaded before and saved after every engine, one file per TensorRT version and GPU.

TensorRT is imported lazily; `describe` (gtr-build --dry-run) needs neither TensorRT nor a GPU.
"""
from __future__ import annotations

import datetime
import os
import tempfile
import time
from pathlib import Path

from gtr.errors import first_line
from gtr.runtime.bundle import Bundle, read_bundle
from gtr.runtime.trt.engine_store import (ENGINE_MEMBER, EngineError, Target, components, current_target, engine_key,
                                      graph_digest, import_tensorrt, key_id, logger, usable_engine,
                                      write_with_engines)
from gtr.runtime.files import atomic_write_bytes
from gtr.runtime.trt.profiles import MAX_PROFILES, Profile, derive_profiles, profile_dims


def plan_profiles(bundle: Bundle, max_profiles: int = MAX_PROFILES) -> dict[str, list[Profile]]:
    """{component: its optimization profiles}, for every graph that gets an engine."""
    out = {}
    for comp in components(bundle):
        shapes = bundle.graphs[comp].get("static_shapes") or []
        if not shapes:
            raise EngineError(f"{bundle.path}: graph {comp!r} lists no static shapes to build profiles from "
                              f"(re-export the bundle with this gtr)")
        out[comp] = derive_profiles(shapes, max_profiles)
    return out


def probe_target(device: int | None = None) -> tuple[Target | None, str | None]:
    """(this machine's target, None), or (None, why it is not known) without failing."""
    try:
        return current_target(device), None
    except EngineError as e:
        return None, str(e)


def describe(bundle: Bundle, max_profiles: int = MAX_PROFILES, device: int | None = None, echo=print) -> None:
    """What a build would do (gtr-build --dry-run): per component its profiles and engine cache key."""
    target, why = probe_target(device)
    profiles = plan_profiles(bundle, max_profiles)
    echo(f"{bundle.path}: {len(profiles)} engine(s), {bundle.precision} graphs, strongly typed; "
         f"target {target.describe() if target else 'unknown here (' + why + ')'}")
    for comp, profs in profiles.items():
        shapes = len(bundle.graphs[comp]["static_shapes"])
        grouped = "one per shape" if len(profs) == shapes else f"grouped, at most {max_profiles}"
        echo(f"{comp}: {shapes} static shape(s) -> {len(profs)} profile(s) ({grouped})")
        for i, p in enumerate(profs):
            echo(f"  profile {i}: {p.describe()}")
        digest = graph_digest(bundle, comp, profs)
        if target is None:
            echo(f"  cache key: graph {digest[:16]}, TensorRT ?, GPU ? (known where TensorRT and the GPU are)")
            continue
        key = engine_key(bundle, comp, profs, target)
        ident = key_id(comp, key)
        present = usable_engine(bundle, comp, target)
        state = f"in the bundle already as {present['id']}" if present else "to build"
        echo(f"  cache key: graph {digest[:16]}, TensorRT {target.tensorrt}, {target.gpu} "
             f"(sm {target.compute_capability}) -> engine {ident} ({state})")


class TimingCache:
    """The builder's timing cache, persisted in a file (kept across builds and bundles)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.data = self.path.read_bytes() if self.path.is_file() else b""

    def attach(self, config) -> None:
        cache = None
        try:
            cache = config.create_timing_cache(self.data)
        except Exception:  # noqa: BLE001 - a damaged file: start afresh rather than fail the build
            cache = None
        if cache is None or not config.set_timing_cache(cache, False):  # False: refuse a foreign cache
            config.set_timing_cache(config.create_timing_cache(b""), False)

    def save(self, config) -> None:
        self.data = bytes(memoryview(config.get_timing_cache().serialize()))
        atomic_write_bytes(self.path, self.data)


def _plain_name(name: str) -> str:
    """Member names become temp file names: refuse anything that is not a plain file name."""
    if not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", ".."):
        raise EngineError(f"refusing to build from a member named {name!r}")
    return name


NO_TF32 = ("fp32", "int8")  # precisions whose fp32 tensors must not run in TF32


def tensorrt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def network_flags(trt) -> int:
    """create_network's flags: STRONGLY_TYPED on TensorRT 10; none on 11, where every network is strongly
    typed and the flag is deprecated."""
    if tensorrt_major(trt) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def engine_loads(trt, data) -> bool:
    """Whether this TensorRT deserializes `data` (what a run will do with a stored engine)."""
    try:
        runtime = trt.Runtime(logger(trt))
        engine = runtime.deserialize_cuda_engine(data)
    except Exception:  # noqa: BLE001 - some versions raise instead of returning None
        return False
    loads = engine is not None
    del engine  # before its runtime
    return loads


def build_engine(trt, bundle: Bundle, comp: str, profiles, workspace_mb: int | None, cache: TimingCache) -> bytes:
    """Parse, configure and build one component's engine; returns the serialized engine."""
    g = bundle.graphs[comp]
    try:
        builder = trt.Builder(logger(trt))
    except Exception as e:  # noqa: BLE001 - pybind11 raises TypeError when TensorRT cannot start
        raise EngineError(f"TensorRT could not create a builder ({first_line(e)})") from None
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger(trt))
    # The parser reads external weights from files beside the graph: write both to a temp folder that
    # lives until the build is done (the parser may refer to the weights until then).
    with tempfile.TemporaryDirectory(prefix="gtr-build-") as folder:
        graph_path = Path(folder) / _plain_name(g["member"])
        graph_path.write_bytes(bundle.member(g["member"]))
        if g.get("weights"):
            (Path(folder) / _plain_name(g["weights"])).write_bytes(bundle.member(g["weights"]))
        if not parser.parse_from_file(str(graph_path)):
            errors = [str(parser.get_error(i)).strip() for i in range(parser.num_errors)]
            raise EngineError(f"TensorRT cannot parse the {comp!r} graph: "
                              f"{(errors[0].splitlines() or ['?'])[0] if errors else 'no error given'}")
        config = builder.create_builder_config()
        if bundle.precision in NO_TF32:
            config.clear_flag(trt.BuilderFlag.TF32)  # on by default; fp32 tensors mean fp32 arithmetic
        if workspace_mb:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        cache.attach(config)
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        for p in profiles:
            dims = profile_dims(g["inputs"], p)
            missing = [n for n in names if n not in dims]
            if missing:
                raise EngineError(f"the {comp!r} graph has input(s) {missing} that its manifest entry does not list")
            prof = builder.create_optimization_profile()
            for n in names:
                prof.set_shape(n, *dims[n])
            if config.add_optimization_profile(prof) < 0:
                raise EngineError(f"TensorRT rejects the {comp!r} profile {p.describe()}")
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineError(f"TensorRT could not build the {comp!r} engine (its log above says why)")
        cache.save(config)
    return bytes(memoryview(serialized))


def build_engines(path, out=None, *, workspace_mb: int | None = None, timing_cache=None, cache_dir=None,
                  device: int = 0, max_profiles: int = MAX_PROFILES, force: bool = False, log=print) -> dict:
    """Build the engines of the bundle at `path` that it lacks for this machine; write the bundle with
    them to `out` (default: `path` itself, replaced atomically). Nothing is written when TensorRT, a
    GPU or a build is missing. Returns a summary: out, built, cached, target, timing_cache, seconds."""
    t0 = time.perf_counter()
    out = Path(out or path)
    bundle = read_bundle(path)
    trt = import_tensorrt()
    target = current_target(device)
    if cache_dir is None:
        from gtr.paths import cache_dir as gtr_home  # $GTR_HOME, where gtr keeps its caches
        cache_dir = gtr_home() / "tensorrt"
    cache_path = Path(timing_cache) if timing_cache else Path(cache_dir) / f"{target.slug()}.timing-cache"
    cache = TimingCache(cache_path)
    built, cached = [], []
    try:
        for comp, profiles in plan_profiles(bundle, max_profiles).items():
            key = engine_key(bundle, comp, profiles, target)
            ident = key_id(comp, key)
            present = None if force else usable_engine(bundle, comp, target)
            if present is not None and not engine_loads(trt, bundle.member(present["member"])):
                log(f"{comp}: engine {present['id']} is in the bundle but does not load here; rebuilding it")
                present = None
            if present is not None:
                cached.append(comp)
                log(f"{comp}: engine {present['id']} is in the bundle already (--force rebuilds it)")
                continue
            log(f"{comp}: building {len(profiles)} profile(s) for {target.describe()} ...")
            t = time.perf_counter()
            data = build_engine(trt, bundle, comp, profiles, workspace_mb, cache)
            seconds = time.perf_counter() - t
            entry = {"component": comp, "member": ENGINE_MEMBER.format(component=comp, id=ident), "id": ident,
                     "key": key, "profiles": [p.to_dict() for p in profiles], "max_profiles": max_profiles,
                     "workspace_mb": workspace_mb, "build_seconds": round(seconds, 3),
                     "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            built.append((entry, data))
            log(f"{comp}: built in {seconds:.1f} s, {len(data) / 2**20:.2f} MiB")
        if built or out.resolve() != Path(path).resolve():
            size = write_with_engines(bundle, built, out)
            log(f"wrote {out} ({size / 2**20:.1f} MiB): {len(built)} engine(s) built, {len(cached)} kept; "
                f"timing cache {cache_path}")
        else:
            log(f"{out}: every engine is up to date for {target.describe()}")
    finally:
        bundle.close()
    return {"out": out, "built": [e["component"] for e, _ in built], "cached": cached, "target": target,
            "timing_cache": cache_path, "seconds": time.perf_counter() - t0}

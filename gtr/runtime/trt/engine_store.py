"""TensorRT engines stored in a bundle: their cache keys, manifest entries, lookup and writing.

Engines are extra members of the bundle (`<component>.<id>.engine`), so a bundle with engines is still
one .plan file. `manifest["engines"]` lists one entry per engine:

    {"component": "backbone", "member": "backbone.3f2a….engine", "id": "3f2a…",
     "key": {"graph": sha256, "tensorrt": "10.3.0", "cuda": "12", "gpu": "NVIDIA Orin", "compute_capability": "8.7"},
     "profiles": [{"min": {...}, "opt": {...}, "max": {...}}, ...], "built": ..., "build_seconds": ...}

An engine runs only with the TensorRT build and the GPU model it was built for, so those are its key
together with the graph digest: the TensorRT version and the CUDA major of its wheels (tensorrt-cu12 and
-cu13 share version strings; "" where not known, e.g. JetPack's system TensorRT), and the sha256 of the graph and weight members it was parsed from
and of its profiles. A bundle holds at most one engine per component and target (TensorRT version +
GPU): engines for other GPUs stay, so one file can carry engines for a desktop GPU and a Jetson.
The reader of the bundle (gtr.runtime.bundle) checks that every entry's member exists and its sha256;
this module checks the rest of an entry. TensorRT and cuda-python are imported only where the
machine's target is asked for.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from gtr.runtime.bundle import Bundle, BundleError, write_bundle
from gtr.runtime.trt.profiles import Profile
from gtr.errors import EngineError  # noqa: F401  (re-exported: defined with the other error types)

INSTALL_HINT = "pip install 'gtr-mar[tensorrt]'"
MIN_TENSORRT = (10, 1)  # the runtime shares one block of device memory between contexts (10.1 API)
ENGINE_MEMBER = "{component}.{id}.engine"


@dataclass(frozen=True)
class Target:
    """What an engine is tied to: the TensorRT version, the CUDA major of its build ("" where not known)
    and the GPU model (name, compute capability)."""
    tensorrt: str
    gpu: str
    compute_capability: str
    cuda: str = ""

    def describe(self) -> str:
        cuda = f" (CUDA {self.cuda})" if self.cuda else ""
        return f"{self.gpu} (sm {self.compute_capability}) with TensorRT {self.tensorrt}{cuda}"

    def slug(self) -> str:
        """File-name-safe form, e.g. for the timing cache."""
        text = f"trt{self.tensorrt}{'-cu' + self.cuda if self.cuda else ''}-{self.gpu}-sm{self.compute_capability}"
        return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def import_tensorrt():
    """The tensorrt module, or EngineError with the install hint."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError(f"TensorRT is not installed: {INSTALL_HINT} (on Jetson: JetPack's TensorRT)") from None
    except Exception as e:  # noqa: BLE001 - a broken install (missing libnvinfer, a stub package) raises anything
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EngineError(f"TensorRT does not import ({first}); reinstall it: {INSTALL_HINT}") from None
    version = getattr(trt, "__version__", "")
    numbers = tuple(int(v) for v in re.findall(r"\d+", version)[:2])
    if not hasattr(trt, "Builder") or len(numbers) < 2:
        raise EngineError(f"the installed tensorrt package is not TensorRT (a placeholder?); reinstall it: "
                          f"{INSTALL_HINT}")
    if numbers < MIN_TENSORRT:
        raise EngineError(f"TensorRT {version} is too old: gtr needs TensorRT "
                          f"{'.'.join(map(str, MIN_TENSORRT))} or newer ({INSTALL_HINT})")
    return trt


_LOGGER = None


def logger(trt):
    """The process's one TensorRT logger (TensorRT wants a single one): warnings and errors."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


def tensorrt_cuda_major() -> int | None:
    """The CUDA major version the installed TensorRT wheels are built for (tensorrt-cu12, -cu13, ...);
    None where not known (JetPack's system TensorRT, a local build)."""
    from importlib import metadata
    for major in (11, 12, 13, 14, 15):
        for dist in (f"tensorrt-cu{major}-libs", f"tensorrt-cu{major}", f"tensorrt-cu{major}-bindings"):
            try:
                metadata.version(dist)
                return major
            except metadata.PackageNotFoundError:
                pass
    return None


def current_target(device: int | None = None) -> Target:
    """This machine's target (TensorRT version, GPU of `device`, default the current one)."""
    trt = import_tensorrt()
    from gtr.runtime.trt import cuda
    try:
        cuda.runtime()
        count = cuda.device_count()
    except cuda.CudaError as e:  # gtr's TensorRT backend manages device memory through cuda-python
        raise EngineError(f"{e}; gtr needs it beside TensorRT") from None
    if count == 0:
        raise EngineError("no CUDA GPU found: TensorRT engines need an NVIDIA GPU and its driver")
    driver, _ = cuda.versions()
    major = tensorrt_cuda_major()
    if major and driver and driver // 1000 < major:  # TensorRT would fail later with "CUDA initialization failure"
        raise EngineError(cuda.driver_mismatch(driver, major * 1000, f"TensorRT {trt.__version__}",
                                               f"tensorrt-cu{driver // 1000}"))
    try:
        if device is not None:
            cuda.set_device(device)
        name, cc = cuda.device_info()
    except cuda.CudaError as e:
        raise EngineError(str(e)) from None
    return Target(trt.__version__, name, cc, str(major or ""))


def components(bundle: Bundle) -> list[str]:
    """The graphs that get an engine, in build order."""
    order = ("backbone", "head", "head_nocfg", "vae_decoder")
    return [g for g in order if g in bundle.graphs] + [g for g in bundle.graphs if g not in order]


def graph_digest(bundle: Bundle, component: str, profiles) -> str:
    """sha256 of what an engine is built from: the graph and weight members (by their sha256) and the profiles."""
    g = bundle.graphs[component]
    members = bundle.manifest["members"]
    text = json.dumps({"graph": members[g["member"]]["sha256"],
                       "weights": members[g["weights"]]["sha256"] if g.get("weights") else None,
                       "profiles": [p.to_dict() for p in profiles]}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def engine_key(bundle: Bundle, component: str, profiles, target: Target) -> dict:
    return {"graph": graph_digest(bundle, component, profiles), "tensorrt": target.tensorrt, "cuda": target.cuda,
            "gpu": target.gpu, "compute_capability": target.compute_capability}


def key_id(component: str, key: dict) -> str:
    text = json.dumps({"component": component, **key}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _target_of(key: dict) -> Target:
    return Target(key["tensorrt"], key["gpu"], key["compute_capability"], key.get("cuda", ""))


def engine_entries(bundle: Bundle) -> list[dict]:
    """The bundle's engine entries, each checked to be well formed (BundleError otherwise)."""
    entries = bundle.manifest.get("engines") or []
    for e in entries:
        key = e.get("key")
        ok = (isinstance(key, dict) and all(isinstance(key.get(k), str) for k in
                                            ("graph", "tensorrt", "gpu", "compute_capability"))
              and isinstance(key.get("cuda", ""), str)
              and isinstance(e.get("profiles"), list) and isinstance(e.get("id"), str))
        if ok:
            try:
                [Profile.from_dict(p) for p in e["profiles"]]
            except (KeyError, TypeError, AttributeError, ValueError):
                ok = False
        if not ok:
            raise BundleError(f"{bundle.path}: manifest has a malformed engine entry for {e.get('component')!r}")
    return entries


def _fits(bundle: Bundle, comp: str, entry: dict) -> bool:
    """Built from this graph and weights, with profiles spanning every static shape the bundle lists
    (a re-export with more plans keeps the graph bytes but adds shapes)."""
    profiles = [Profile.from_dict(p) for p in entry["profiles"]]
    shapes = bundle.graphs[comp].get("static_shapes") or []
    return entry["key"]["graph"] == graph_digest(bundle, comp, profiles) \
        and all(any(p.covers(s) for p in profiles) for s in shapes)


def usable_engine(bundle: Bundle, comp: str, target: Target) -> dict | None:
    """The bundle's engine entry for `comp` that runs here: its key names this target and it fits the
    bundle's graph and shapes (the stored id is not trusted on its own). None when there is none."""
    for e in engine_entries(bundle):
        if e["component"] == comp and _target_of(e["key"]) == target and _fits(bundle, comp, e):
            return e
    return None


def find_engines(bundle: Bundle, target: Target) -> tuple[dict, str | None]:
    """({component: entry} of engines that run here, None), or ({}, the reason in one line)."""
    entries = engine_entries(bundle)
    name = bundle.path
    if not entries:
        return {}, f"{name} has no TensorRT engines (build them with: gtr-build {name})"
    found, missing = {}, []
    for comp in components(bundle):
        e = usable_engine(bundle, comp, target)
        if e is None:
            missing.append(comp)
        else:
            found[comp] = e
    if not missing:
        return found, None
    built_for = sorted({_target_of(e["key"]).describe() for e in entries})
    if target.describe() in built_for:
        return {}, (f"{name} has TensorRT engines for this {target.describe()}, but none for "
                    f"{', '.join(missing)} of its graphs (rebuild with: gtr-build {name})")
    return {}, (f"{name} has TensorRT engines for {'; '.join(built_for)}, not for this {target.describe()} "
                f"(build them with: gtr-build {name}, or run with --rebuild)")


def write_with_engines(bundle: Bundle, built: list[tuple[dict, bytes]], out) -> int:
    """Write `bundle` plus the engines `built` ([(entry, engine bytes)]) to `out`, atomically (out may be
    the bundle's own path). A new engine replaces the bundle's engine for the same component and
    target; other engines stay. Returns the file size."""
    new_slots = {(e["component"], _target_of(e["key"])) for e, _ in built}
    kept = [e for e in engine_entries(bundle) if (e["component"], _target_of(e["key"])) not in new_slots]
    dropped = {e["member"] for e in engine_entries(bundle)} - {e["member"] for e in kept}
    members = {name: bundle.member(name) for name in bundle.member_names if name not in dropped}
    for entry, data in built:
        members[entry["member"]] = data
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("format", "format_version", "members")}
    manifest["engines"] = kept + [e for e, _ in built]
    return write_bundle(out, manifest, members)

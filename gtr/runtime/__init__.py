"""The torch-free runtime: bundle reader, the shared sampling loop, the onnxruntime backend.

Names are imported lazily, so `import gtr.runtime` costs nothing and never needs torch:

    from gtr.runtime import load_bundle, OnnxComponents, sample
    b = load_bundle("mar-tiny-fp32.plan")
    result = sample(OnnxComponents(b), b.plans()["gtr"], [3], seed=0,
                    token_dim=b.config.token_dim, num_classes=b.config.num_classes)
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "load_bundle": "gtr.runtime.bundle", "read_bundle": "gtr.runtime.bundle", "write_bundle": "gtr.runtime.bundle",
    "Bundle": "gtr.runtime.bundle", "BundleError": "gtr.runtime.bundle",
    "OnnxComponents": "gtr.runtime.onnx_backend",
    "sample": "gtr.runtime.sampler", "SampleResult": "gtr.runtime.sampler",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gtr.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

"""torch -> ONNX export: one graph per component, graph precision, checks, the bundle writer.

    from gtr.export import export_bundle, ExportError
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "export_bundle": "gtr.export.exporter", "static_shapes": "gtr.export.exporter",
    "ExportError": "gtr.errors", "export_graph": "gtr.export.graphs",
    "to_fp16": "gtr.export.precision", "check_precision": "gtr.export.precision",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gtr.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

"""The export's parts under their old module name: graph export (gtr.export.graphs), weight packing
(gtr.export.packing), the ONNX checker (gtr.export.checker) and verification against torch
(gtr.export.verify). New code imports from those modules; this one keeps old imports working."""
from __future__ import annotations

from gtr.errors import ExportError
from gtr.export.checker import check_graph, write_graph
from gtr.export.graphs import (COMPONENT, OPSET, OnnxGraph, export_graph, graph_modules, io_specs, reference_module,
                               trace_args)
from gtr.export.packing import EMBED_BELOW, pack_component
from gtr.export.verify import max_error, verify_graph, verify_inputs

__all__ = ["COMPONENT", "EMBED_BELOW", "OPSET", "ExportError", "OnnxGraph", "check_graph", "export_graph",
           "graph_modules", "io_specs", "max_error", "pack_component", "reference_module", "trace_args",
           "verify_graph", "verify_inputs", "write_graph"]

"""The ONNX checker (full check, strict shape inference) on each graph as it will be written."""
from __future__ import annotations

import os

from gtr.errors import ExportError


def write_graph(folder: str, name: str, proto: bytes, location: str, blob=None) -> str:
    """Write a graph proto as `folder/<name>.onnx` next to its external data `folder/<location>`
    (written from `blob` unless that file is already there, as `pack_component(..., path=)` leaves it).
    Returns the graph's path: what the checker and onnxruntime sessions read."""
    os.makedirs(folder, exist_ok=True)
    data = os.path.join(folder, location)
    if blob is not None and not os.path.exists(data):
        with open(data, "wb") as f:
            f.write(memoryview(blob).cast("B") if len(blob) else b"")
    path = os.path.join(folder, f"{name}.onnx")
    with open(path, "wb") as f:
        f.write(proto)
    return path


def check_graph(name: str, proto: bytes, location: str, blob, workdir: str) -> str:
    """onnx.checker full check (with strict shape inference) on the graph as written, external data included.

    The graph is written into `workdir` next to its weights (see `write_graph`); returns its path."""
    import onnx
    path = write_graph(workdir, name, proto, location, blob)
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{name}: onnx checker failed: {str(e).strip().splitlines()[0]}") from e
    return path

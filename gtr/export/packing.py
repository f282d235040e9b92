"""Weight packing: the graphs of one component against ONE shared weight blob (ONNX external data).

The head and head_nocfg graphs share one copy of the MLP weights (deduplicated by content). With
`path`, the blob is written to that file tensor by tensor as it is built and returned as a read-only
memory map of it: packing then holds one tensor's bytes at a time besides the graphs' own arrays,
never a second in-memory copy of the whole blob (a MAR-H backbone blob is 3.4 GB), and the bundle
writer reads the blob back from the file.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np

EMBED_BELOW = 1024  # tensors smaller than this many bytes stay inside the graph proto (shape constants etc.)
ALIGN = 64


class _Sink:
    """Where blob bytes go: a list of chunks (no path) or a file."""

    def __init__(self, path):
        self.path, self.size = path, 0
        self.chunks = [] if path is None else None
        self.file = open(path, "wb") if path is not None else None

    def write(self, data: bytes) -> None:
        if self.file is not None:
            self.file.write(data)
        else:
            self.chunks.append(data)
        self.size += len(data)

    def result(self):
        if self.file is None:
            return b"".join(self.chunks)
        self.file.close()
        if self.size == 0:
            return b""
        return np.memmap(self.path, dtype=np.uint8, mode="r")


def pack_component(graphs: list, location: str, path: str | os.PathLike | None = None) -> tuple[dict, object, dict]:
    """Serialize graphs (OnnxGraph) of ONE component against one shared weight blob.

    Every initializer of EMBED_BELOW bytes or more goes into the blob once per distinct content
    (dtype, shape, bytes), 64-byte aligned, and is referenced from each graph as ONNX external data
    with `location` (the bundle member name). Returns ({graph: proto bytes}, blob, stats); blob is
    bytes, or with `path` a read-only np.memmap of the file written there (same bytes).
    """
    import onnx
    from onnx import helper

    sink = _Sink(None if path is None else os.fspath(path))
    index = {}
    protos, referenced = {}, 0
    try:
        for g in graphs:
            m = onnx.ModelProto()
            m.CopyFrom(g.model)
            for name, arr in g.weights.items():
                arr = np.ascontiguousarray(arr)
                if arr.dtype.byteorder == ">":
                    arr = arr.astype(arr.dtype.newbyteorder("<"))
                t = m.graph.initializer.add()
                t.name = name
                t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
                t.dims.extend(arr.shape)
                if arr.nbytes < EMBED_BELOW:
                    t.raw_data = arr.tobytes()
                    continue
                raw = memoryview(arr).cast("B")  # no copy
                referenced += arr.nbytes
                key = (t.data_type, arr.shape, hashlib.sha256(raw).digest())
                if key not in index:
                    pad = -sink.size % ALIGN
                    if pad:
                        sink.write(b"\0" * pad)
                    index[key] = sink.size
                    sink.write(raw)
                t.data_location = onnx.TensorProto.EXTERNAL
                for k, v in (("location", location), ("offset", str(index[key])), ("length", str(arr.nbytes))):
                    e = t.external_data.add()
                    e.key, e.value = k, v
            protos[g.name] = m.SerializeToString()
        size = sink.size
        blob = sink.result()
    except BaseException:
        if sink.file is not None:
            sink.file.close()
        raise
    return protos, blob, {"blob_bytes": size, "referenced_bytes": referenced}

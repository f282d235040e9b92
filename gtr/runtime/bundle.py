"""The single-file bundle: manifest + members (ONNX graph protos, weight blobs). numpy + stdlib only.

Layout (all integers little-endian):

    offset 0   magic            8 bytes   b"GTRPLAN\\x00"
    offset 8   format version   uint32    (FORMAT_VERSION)
    offset 12  manifest length  uint64    bytes of UTF-8 JSON
    offset 20  manifest sha256  32 bytes  of the manifest bytes
    offset 52  manifest         JSON, UTF-8
    ...        zero padding up to the data start (the next multiple of 64)
    data       members, each at a 64-byte aligned offset

`manifest["members"][name] = {"offset", "length", "sha256"}`; offsets are relative to the data start
(itself 64-aligned), so every member is 64-byte aligned in the file and can be mapped zero-copy.
`manifest["graphs"][name]` names a graph's member and weight member, and for a head graph optionally
its "chain" (member and steps per call, gtr.export.head_chain), which reads the same weight member.

Reading maps the file (mmap) and never executes anything from it: the manifest is JSON and members
are raw bytes handed to onnxruntime (no pickle anywhere). The reader accepts exactly what the writer
produces: member offsets and lengths must lie inside the data area without overlapping, the file must
end at the last member, and all padding must be zero. Every failure is a `BundleError` with a
one-line message.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from pathlib import Path

from gtr.runtime.files import atomic_write
from gtr.errors import BundleError  # noqa: F401  (re-exported: defined with the other error types)

MAGIC = b"GTRPLAN\x00"
FORMAT = "gtr-bundle"
FORMAT_VERSION = 1
ALIGN = 64
_HEADER = struct.Struct("<8sIQ32s")  # magic, format version, manifest length, manifest sha256
HEADER_SIZE = _HEADER.size  # 52


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _as_buffer(data) -> memoryview:
    """bytes / bytearray / memoryview / numpy array -> flat byte memoryview (no copy)."""
    mv = memoryview(data)
    return mv.cast("B") if mv.c_contiguous else memoryview(mv.tobytes())


class _FileMember:
    """A member given as a file path: hashed and copied in chunks with plain reads, so that a
    multi-GB weight blob never becomes this process's memory (a memory map of it would count in its
    resident set as its pages are read)."""
    CHUNK = 8 << 20

    def __init__(self, path):
        self.path = os.fspath(path)
        self.nbytes = os.path.getsize(self.path)

    def chunks(self):
        with open(self.path, "rb") as f:
            while chunk := f.read(self.CHUNK):
                yield chunk

    def sha256(self) -> str:
        h = hashlib.sha256()
        for chunk in self.chunks():
            h.update(chunk)
        return h.hexdigest()


def write_bundle(path, manifest: dict, members: dict) -> int:
    """Write `manifest` (JSON-able dict) and `members` {name: bytes-like, or the path of a file whose
    bytes are the member} to one file, atomically.

    The manifest gets `format`, `format_version` and `members` (offset, length, sha256 of each) filled
    in; the caller's dict is not modified. Returns the file size in bytes.
    """
    bufs = {name: _FileMember(data) if isinstance(data, os.PathLike) else _as_buffer(data)
            for name, data in members.items()}
    table, offset = {}, 0
    for name, buf in bufs.items():
        if not isinstance(name, str) or not name:
            raise BundleError(f"bad member name {name!r}")
        digest = buf.sha256() if isinstance(buf, _FileMember) else hashlib.sha256(buf).hexdigest()
        table[name] = {"offset": offset, "length": buf.nbytes, "sha256": digest}
        offset = _align(offset + buf.nbytes)
    m = dict(manifest)
    m["format"], m["format_version"], m["members"] = FORMAT, FORMAT_VERSION, table
    text = json.dumps(m, indent=1, sort_keys=False, allow_nan=False).encode("utf-8")
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(text), hashlib.sha256(text).digest())
    data_start = _align(HEADER_SIZE + len(text))
    total = data_start + (max((e["offset"] + e["length"] for e in table.values()), default=0))

    def write(f):
        f.write(header)
        f.write(text)
        f.write(b"\0" * (data_start - HEADER_SIZE - len(text)))
        pos = 0
        for name, buf in bufs.items():
            start = table[name]["offset"]
            f.write(b"\0" * (start - pos))
            for chunk in (buf.chunks() if isinstance(buf, _FileMember) else (buf,)):
                f.write(chunk)
            pos = start + buf.nbytes

    atomic_write(path, write)
    return total


def _member_entry(entry):
    """(offset, length, sha256) of a well-formed member entry, else None. Offsets are relative to the
    data start: >= 0 and 64-aligned; lengths >= 0; sha256 as 64 lowercase hex digits."""
    if not isinstance(entry, dict):
        return None
    offset, length, digest = (entry.get(k) for k in ("offset", "length", "sha256"))
    sizes_ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (offset, length))
    digest_ok = isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef")
    return (offset, length, digest) if sizes_ok and offset % ALIGN == 0 and digest_ok else None


def _member_table(name: str, members: dict) -> dict[str, tuple[int, int, str]]:
    table = {}
    for key, entry in members.items():
        table[key] = _member_entry(entry)
        if table[key] is None:
            raise BundleError(f"{name}: manifest has a malformed entry for member {key!r}")
    return table


class Bundle:
    """A bundle opened for reading: `.manifest`, `.member(name)` (zero-copy memoryview of the mapped
    file), `.plans()`, `.config`. Keep it alive while sessions built from its members run.

    Opening checks the file's whole structure whatever `verify` says: header, manifest checksum,
    every member inside the data area (64-aligned, no overlaps, the file ending at the last member),
    zero padding between them, and the graphs' member references. So every byte of the file is
    checked except member contents, which `verify` (on by default) covers with their sha256.
    """

    def __init__(self, path, verify: bool = True):
        self.path = Path(path)
        self._mmap = None
        name = str(path)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise BundleError(f"{name}: no such bundle file") from None
        except IsADirectoryError:
            raise BundleError(f"{name}: is a directory, not a bundle file") from None
        except OSError as e:
            raise BundleError(f"{name}: cannot open bundle: {e.strerror or e}") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEADER_SIZE)
            if len(head) < len(MAGIC) or head[:len(MAGIC)] != MAGIC:
                raise BundleError(f"{name}: not a gtr bundle (wrong magic bytes)")
            if len(head) < HEADER_SIZE:
                raise BundleError(f"{name}: truncated file ({size} bytes, the header alone is {HEADER_SIZE})")
            _, version, mlen, mhash = _HEADER.unpack(head)
            if version > FORMAT_VERSION:
                raise BundleError(f"{name}: written by a newer gtr (format {version}); "
                                  f"this gtr reads up to {FORMAT_VERSION}")
            if version < 1:
                raise BundleError(f"{name}: bad bundle format version {version}")
            if HEADER_SIZE + mlen > size:
                raise BundleError(f"{name}: truncated file ({size} bytes, the manifest ends at byte "
                                  f"{HEADER_SIZE + mlen})")
            text = f.read(mlen)
            if hashlib.sha256(text).digest() != mhash:
                raise BundleError(f"{name}: damaged bundle (manifest checksum mismatch)")
            try:
                manifest = json.loads(text.decode("utf-8"))
            except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, or absurdly deep nesting
                raise BundleError(f"{name}: manifest is not valid JSON ({e.__class__.__name__})") from None
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
                    or not isinstance(manifest.get("members"), dict):
                raise BundleError(f"{name}: manifest is not a gtr bundle manifest")
            self.manifest = manifest
            self.format_version = version
            self.data_start = _align(HEADER_SIZE + mlen)
            self.size = size
            self._members = _member_table(name, manifest["members"])
            end = max((self.data_start + o + n for o, n, _ in self._members.values()), default=self.data_start)
            if end > size:
                raise BundleError(f"{name}: truncated file ({size} bytes, expected {end})")
            if end < size:
                raise BundleError(f"{name}: damaged bundle ({size - end} unexpected bytes after the last member)")
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # size > 0: the header is there
        self._view = memoryview(self._mmap)
        try:
            self._check_padding(name, HEADER_SIZE + mlen)
            self._check_graphs(name)
            self._check_engines(name)
            if verify:
                self.verify()
        except BaseException:
            self.close()
            raise

    def _check_padding(self, name: str, manifest_end: int) -> None:
        """Between the manifest and the members, and between members, the writer leaves only alignment
        padding: fewer than 64 zero bytes."""
        spans = sorted((self.data_start + o, self.data_start + o + n) for o, n, _ in self._members.values() if n)
        pos = manifest_end
        for start, stop in spans + [(self.size, self.size)]:
            if start < pos:
                raise BundleError(f"{name}: damaged bundle (members overlap at byte {start})")
            if start - pos >= ALIGN or any(self._view[pos:start]):
                raise BundleError(f"{name}: damaged bundle (bytes {pos}..{start - 1} are not alignment padding)")
            pos = stop

    def _check_graphs(self, name: str) -> None:
        graphs = self.manifest.get("graphs", {})
        if not isinstance(graphs, dict) or not all(isinstance(g, dict) for g in graphs.values()):
            raise BundleError(f"{name}: manifest has a malformed graph table")
        for graph, g in graphs.items():
            for key in ("member", "weights"):
                ref = g.get(key)
                if (ref is not None or key == "member") and (not isinstance(ref, str) or ref not in self._members):
                    raise BundleError(f"{name}: damaged bundle: graph {graph!r} needs member {ref!r}, "
                                      f"which is missing")
            chain = g.get("chain")  # a head graph's chain (several steps per call), reading the same weights
            if chain is not None:
                steps = chain.get("steps") if isinstance(chain, dict) else None
                ref = chain.get("member") if isinstance(chain, dict) else None
                if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
                    raise BundleError(f"{name}: manifest has a malformed chain entry for graph {graph!r}")
                if not isinstance(ref, str) or ref not in self._members:
                    raise BundleError(f"{name}: damaged bundle: the chain of graph {graph!r} needs member {ref!r}, "
                                      f"which is missing")

    def _check_engines(self, name: str) -> None:
        """TensorRT engines (optional, gtr.runtime.trt.engine_store): a list of entries, each naming a graph
        of the bundle and a member that holds the engine."""
        engines = self.manifest.get("engines", [])
        if not isinstance(engines, list) or not all(isinstance(e, dict) for e in engines):
            raise BundleError(f"{name}: manifest has a malformed engine table")
        for e in engines:
            component = e.get("component")
            if not isinstance(component, str) or component not in self.graphs:
                raise BundleError(f"{name}: manifest has an engine for {component!r}, which is not a graph")
            if not isinstance(e.get("member"), str) or e["member"] not in self._members:
                raise BundleError(f"{name}: damaged bundle: the {component!r} engine needs member "
                                  f"{e.get('member')!r}, which is missing")

    # ---- members

    @property
    def member_names(self) -> list[str]:
        return list(self._members)

    def member(self, name: str) -> memoryview:
        """The bytes of a member: a read-only memoryview into the mapped file (no copy)."""
        try:
            offset, length, _ = self._members[name]
        except KeyError:
            raise BundleError(f"{self.path}: missing member {name!r} (the bundle has: "
                              f"{', '.join(self._members) or 'none'})") from None
        if self._mmap is None:
            raise BundleError(f"{self.path}: the bundle is closed")
        start = self.data_start + offset
        return self._view[start:start + length]

    def verify(self, names=None) -> None:
        """Check the sha256 of members (all by default); BundleError naming the first bad one."""
        for name in (names if names is not None else self._members):
            digest = hashlib.sha256(self.member(name)).hexdigest()
            if digest != self._members[name][2]:
                raise BundleError(f"{self.path}: checksum mismatch in member {name!r} (the file is damaged)")

    # ---- typed views of the manifest (torch-free)

    @property
    def config(self):
        from gtr.configs import MARConfig
        try:
            return MARConfig.from_dict(self.manifest["config"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BundleError(f"{self.path}: bad model config in the manifest: {e}") from None

    def plans(self) -> dict:
        """{name: SamplingPlan} in export order; the first is the default."""
        from gtr.plan import PlanError, SamplingPlan
        try:
            return {name: SamplingPlan.from_dict(d) for name, d in self.manifest["plans"].items()}
        except (KeyError, AttributeError, TypeError, PlanError) as e:
            raise BundleError(f"{self.path}: bad plan in the manifest: {e}") from None

    def plan(self, name: str | None = None, cfg: float | None = None, temperature: float | None = None):
        """One of `plans()` by name (default: the first), with cfg / temperature overridden if given
        (the CFG head graph is always exported, so any scale runs). UnknownPlanError if it has none such."""
        from gtr.errors import UnknownPlanError
        plans = self.plans()
        name = name or next(iter(plans))
        if name not in plans:
            raise UnknownPlanError(f"the bundle has no plan {name!r}; it has: {', '.join(plans)}")
        plan = plans[name]
        if cfg is not None:
            plan = plan.replace(cfg=cfg)
        if temperature is not None:
            plan = plan.replace(temperature=temperature)
        return plan

    @property
    def graphs(self) -> dict:
        return self.manifest.get("graphs") or {}

    @property
    def precision(self) -> str:
        return self.manifest.get("precision", "fp32")

    # ---- lifetime

    def close(self) -> bool:
        """Let go of the file. `member()` raises BundleError from now on.

        Returns True when the file was unmapped now. While memoryviews from `member()` (or arrays on
        them) are still alive it cannot be: they keep the map, and so their bytes, valid, and the file
        is unmapped when the last of them is released or garbage-collected; close() returns False.
        """
        if self._mmap is None:
            return True
        mapped, self._mmap = self._mmap, None
        try:
            self._view.release()  # our whole-file view; member views hold the map on their own
            mapped.close()
        except BufferError:  # member views are alive
            return False
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Bundle({str(self.path)!r}, {len(self._members)} members, {self.size} bytes)"


def read_bundle(path, verify: bool = True) -> Bundle:
    """Open a bundle file (mmap). verify=True checks every member's sha256 first."""
    return Bundle(path, verify=verify)


load_bundle = read_bundle

"""The single-file bundle format: round trip, alignment, and one clear error per kind of bad file."""
import hashlib
import json
import os
import struct

import numpy as np
import pytest

from gtr.configs import get_config
from gtr.plan import build_plan
from gtr.runtime.bundle import (ALIGN, FORMAT_VERSION, HEADER_SIZE, MAGIC, BundleError, read_bundle,
                                write_bundle)


def _manifest():
    config = get_config("mar-test")
    plans = [build_plan("gtr", config.grid, cfg=3.0), build_plan("mar-16", config.grid)]
    return {"config": config.to_dict(), "plans": {p.name: p.to_dict() for p in plans}, "precision": "fp32",
            "graphs": {"g": {"member": "g.onnx", "weights": "g.weights"}}}, plans, config


@pytest.fixture()
def bundle_file(tmp_path):
    manifest, plans, config = _manifest()
    members = {"g.onnx": b"graph-bytes" * 7, "g.weights": np.arange(1000, dtype=np.float32),
               "empty": b""}
    path = tmp_path / "x.plan"
    size = write_bundle(path, manifest, members)
    assert size == path.stat().st_size
    return path, members, plans, config


def _one_line_error(path, match, **kw):
    with pytest.raises(BundleError, match=match) as info:
        read_bundle(path, **kw)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_round_trip(bundle_file):
    path, members, plans, config = bundle_file
    b = read_bundle(path)
    assert b.format_version == FORMAT_VERSION and b.manifest["format"] == "gtr-bundle"
    assert bytes(b.member("g.onnx")) == members["g.onnx"]
    w = np.frombuffer(b.member("g.weights"), np.float32)  # zero-copy view of the mapped file
    np.testing.assert_array_equal(w, members["g.weights"])
    assert bytes(b.member("empty")) == b""
    assert list(b.plans()) == ["gtr", "mar-16"]  # order kept: the first is the default
    assert list(b.plans().values()) == plans
    assert b.config == config
    for name, entry in b.manifest["members"].items():
        assert (b.data_start + entry["offset"]) % ALIGN == 0, name
    assert b.member_names == ["g.onnx", "g.weights", "empty"]
    del w
    b.close()


def test_a_member_given_as_a_file_is_streamed_in(bundle_file, tmp_path):
    """The exporter hands its weight blobs over as file paths (chunked reads, not a memory map): the
    bundle is byte for byte the one written from the bytes, chunk boundaries included."""
    from pathlib import Path

    import gtr.runtime.bundle as bundle_module
    path, members, _, _ = bundle_file
    blob = tmp_path / "g.weights.file"
    blob.write_bytes(np.asarray(members["g.weights"]).tobytes())
    manifest, _, _ = _manifest()
    old = bundle_module._FileMember.CHUNK
    bundle_module._FileMember.CHUNK = 1000  # several chunks, the last one short
    try:
        write_bundle(tmp_path / "f.plan", manifest, {**members, "g.weights": Path(blob)})
    finally:
        bundle_module._FileMember.CHUNK = old
    assert (tmp_path / "f.plan").read_bytes() == path.read_bytes()


def test_atomic_write_leaves_no_temp_files(tmp_path):
    manifest, _, _ = _manifest()
    path = tmp_path / "a.plan"
    write_bundle(path, manifest, {"g.onnx": b"1", "g.weights": b"2"})
    with pytest.raises(TypeError):  # a bad member fails before anything replaces the old file
        write_bundle(path, manifest, {"g.onnx": object()})
    assert read_bundle(path).member("g.onnx") == b"1"
    assert sorted(os.listdir(tmp_path)) == ["a.plan"]


def test_missing_file(tmp_path):
    msg = _one_line_error(tmp_path / "nope.plan", "no such bundle file")
    assert "nope.plan" in msg


def test_directory(tmp_path):
    _one_line_error(tmp_path, "is a directory")


def test_foreign_file(tmp_path):
    p = tmp_path / "foreign.plan"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    _one_line_error(p, r"not a gtr bundle \(wrong magic bytes\)")
    p.write_bytes(b"")
    _one_line_error(p, "not a gtr bundle")


@pytest.mark.parametrize("cut", ["header", "manifest", "member"])
def test_truncated(bundle_file, cut):
    path, _, _, _ = bundle_file
    data = path.read_bytes()
    mlen = struct.unpack_from("<Q", data, 12)[0]
    keep = {"header": HEADER_SIZE - 5, "manifest": HEADER_SIZE + mlen // 2, "member": len(data) - 100}[cut]
    path.write_bytes(data[:keep])
    _one_line_error(path, r"truncated file \(\d+ bytes")


def test_corrupted_member_names_it(bundle_file):
    path, _, _, _ = bundle_file
    b = read_bundle(path, verify=False)
    start = b.data_start + b.manifest["members"]["g.weights"]["offset"] + 17
    b.close()
    data = bytearray(path.read_bytes())
    data[start] ^= 0xFF
    path.write_bytes(bytes(data))
    _one_line_error(path, r"checksum mismatch in member 'g.weights'")
    read_bundle(path, verify=False)  # opening without verification works (for inspection)


def test_corrupted_manifest(bundle_file):
    path, _, _, _ = bundle_file
    data = bytearray(path.read_bytes())
    data[HEADER_SIZE + 10] ^= 0x01
    path.write_bytes(bytes(data))
    _one_line_error(path, "manifest checksum mismatch")


def _rewrite(path, version=FORMAT_VERSION, manifest_bytes=None):
    data = path.read_bytes()
    mlen = struct.unpack_from("<Q", data, 12)[0]
    text = data[HEADER_SIZE:HEADER_SIZE + mlen] if manifest_bytes is None else manifest_bytes
    rest = data[HEADER_SIZE + mlen:]
    header = struct.pack("<8sIQ32s", MAGIC, version, len(text), hashlib.sha256(text).digest())
    path.write_bytes(header + text + rest)


def test_newer_version(bundle_file):
    path, _, _, _ = bundle_file
    _rewrite(path, version=FORMAT_VERSION + 1)
    msg = _one_line_error(path, "written by a newer gtr")
    assert f"(format {FORMAT_VERSION + 1}); this gtr reads up to {FORMAT_VERSION}" in msg


def test_manifest_not_json(bundle_file):
    path, _, _, _ = bundle_file
    _rewrite(path, manifest_bytes=b"{not json")
    _one_line_error(path, "manifest is not valid JSON")
    _rewrite(path, manifest_bytes=b'{"format": "something-else", "members": {}}')
    _one_line_error(path, "not a gtr bundle manifest")


def test_missing_member(tmp_path):
    manifest, _, _ = _manifest()
    path = tmp_path / "m.plan"
    write_bundle(path, manifest, {"g.onnx": b"graph"})  # the graph's weights member is absent
    _one_line_error(path, r"needs member 'g.weights', which is missing")
    manifest["graphs"] = {}
    write_bundle(path, manifest, {"g.onnx": b"graph"})
    b = read_bundle(path)
    with pytest.raises(BundleError, match="missing member 'nope'"):
        b.member("nope")


def test_bad_plan_and_config_are_bundle_errors(tmp_path):
    manifest, _, _ = _manifest()
    manifest["graphs"] = {}
    manifest["plans"]["gtr"]["steps"] = []
    manifest["config"]["bogus"] = 1
    path = tmp_path / "p.plan"
    write_bundle(path, manifest, {})
    b = read_bundle(path)
    with pytest.raises(BundleError, match="bad plan in the manifest"):
        b.plans()
    with pytest.raises(BundleError, match="bad model config"):
        b.config


def test_manifest_is_plain_json(bundle_file):
    """The manifest is readable with nothing but json (no pickle, no code)."""
    path, _, _, _ = bundle_file
    data = path.read_bytes()
    assert data[:8] == MAGIC
    mlen = struct.unpack_from("<Q", data, 12)[0]
    m = json.loads(data[HEADER_SIZE:HEADER_SIZE + mlen])
    assert m["format_version"] == FORMAT_VERSION and set(m["members"]) == {"g.onnx", "g.weights", "empty"}

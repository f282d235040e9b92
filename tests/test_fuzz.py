"""Seeded fuzz tests: damaged bundles give a BundleError and damaged checkpoints a CheckpointError,
never another exception, a hang or a crash (each case runs in this process).

Bundles: mutants of a small bundle, raw (bit flips in the header, the manifest and anywhere, truncations,
zeroed and random runs, appended bytes) and crafted (member offsets, lengths, checksums and entries,
graph references, config and plans made bogus, with the manifest checksum recomputed so the reader's
own checks are reached). Checkpoints: truncated, garbage and damaged .pth / .safetensors / .ckpt files.
"""
import hashlib
import json
import struct
from collections import Counter

import numpy as np
import pytest

from gtr.configs import MARConfig, VAEConfig
from gtr.plan import build_plan
from gtr.runtime.bundle import ALIGN, HEADER_SIZE, MAGIC, BundleError, read_bundle, write_bundle

SEED = 13
BUNDLE_MUTANTS = 4000  # each opened twice (verify on and off)
CHECKPOINT_MUTANTS = 300  # per format

CONFIG = MARConfig(name="fuzz", img_size=16, vae_stride=2, encoder_embed_dim=16, encoder_depth=1,
                   encoder_num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2,
                   diffloss_d=1, diffloss_w=16, buffer_size=2, num_classes=3, token_dim=4,
                   vae=VAEConfig(ch=32, ch_mult=(1, 1), num_res_blocks=1, embed_dim=4))


# ---------------------------------------------------------------------------------------------- bundles

@pytest.fixture(scope="module")
def original(tmp_path_factory):
    plans = [build_plan("gtr", CONFIG.grid, cfg=2.0), build_plan("mar-4", CONFIG.grid)]
    manifest = {"config": CONFIG.to_dict(), "plans": {p.name: p.to_dict() for p in plans},
                "graphs": {"g": {"member": "g.onnx", "weights": "g.weights"}, "h": {"member": "h.onnx"}}}
    rng = np.random.default_rng(0)
    members = {"g.onnx": rng.bytes(77), "g.weights": rng.standard_normal(1000).astype(np.float32),
               "empty": b"", "h.onnx": rng.bytes(200)}
    path = tmp_path_factory.mktemp("fuzz") / "original.plan"
    write_bundle(path, manifest, members)
    data = path.read_bytes()
    mlen = struct.unpack_from("<Q", data, 12)[0]
    text = data[HEADER_SIZE:HEADER_SIZE + mlen]
    data_area = data[-(-(HEADER_SIZE + mlen) // ALIGN) * ALIGN:]
    return data, json.loads(text), data_area


def _assemble(manifest, data_area: bytes) -> bytes:
    """A file with a crafted manifest and a valid manifest checksum (the reader's later checks run)."""
    text = json.dumps(manifest).encode() if not isinstance(manifest, bytes) else manifest
    start = -(-(HEADER_SIZE + len(text)) // ALIGN) * ALIGN
    header = struct.pack("<8sIQ32s", MAGIC, 1, len(text), hashlib.sha256(text).digest())
    return header + text + b"\0" * (start - HEADER_SIZE - len(text)) + data_area


BOGUS = [-1, -64, 1, 63, 65, 2**31, 2**63, 2**64 + 64, 10**30, 0.5, 64.0, "64", None, True, [], {}]


def _crafted(rng, manifest, data_area, size):
    m = json.loads(json.dumps(manifest))
    kind = str(rng.choice(["member_field", "member_entry", "graph_ref", "manifest"]))
    # The zero-length member is left alone: moving or dropping it gives another valid bundle.
    names = [n for n, e in m["members"].items() if e["length"] > 0]
    name = names[rng.integers(len(names))]
    entry = m["members"][name]
    if kind == "member_field":
        field = ["offset", "length", "sha256"][rng.integers(3)]
        choices = BOGUS + [entry["offset"] + 64, entry["length"] + 64, entry["length"] - 1, size,
                           len(data_area), hashlib.sha256(b"x").hexdigest(), entry["sha256"].upper(),
                           entry["sha256"][:-1]]
        entry[field] = choices[rng.integers(len(choices))]
    elif kind == "member_entry":
        what = rng.integers(4)
        if what == 0:
            del m["members"][name]
        elif what == 1:
            m["members"][name] = BOGUS[rng.integers(len(BOGUS))]
        elif what == 2:
            m["members"]["extra"] = {"offset": int(rng.integers(0, 8)) * ALIGN, "length": int(rng.integers(1, 300)),
                                     "sha256": hashlib.sha256(b"extra").hexdigest()}
        else:
            m["members"] = list(m["members"])
    elif kind == "graph_ref":
        what = rng.integers(3)
        if what == 0:
            m["graphs"]["g"]["weights"] = ["missing.weights", 7, None, ["g.weights"], {}][rng.integers(5)]
            if m["graphs"]["g"]["weights"] is None:
                del m["graphs"]["g"]  # None means "no weights", which is fine: drop a needed graph instead
                m["graphs"]["x"] = {"member": "nope.onnx"}
        elif what == 1:
            m["graphs"]["h"] = BOGUS[rng.integers(len(BOGUS))]
        else:
            m["graphs"] = [1, 2]
    else:
        what = rng.integers(5)
        if what == 0:
            m = [m]
        elif what == 1:
            m["format"] = "gtr-bundl"
        elif what == 2:
            m["config"] = [5, "x", [], {"name": "x"}, {**m["config"], "bogus": 1}][rng.integers(5)]
        elif what == 3:
            m["plans"] = [[], {"p": 5}, {"p": {}}, {"p": {**m["plans"]["gtr"], "grid": [4, 4]}}][rng.integers(4)]
        else:
            del m["config"]
    return kind, _assemble(m, data_area)


def _raw(rng, data):
    mlen = struct.unpack_from("<Q", data, 12)[0]
    out = bytearray(data)
    kind = str(rng.choice(["header_bitflip", "manifest_bitflip", "bitflip", "truncate", "zero_run", "random_run",
                           "append"]))
    if kind.endswith("bitflip"):
        lo, hi = {"header_bitflip": (0, HEADER_SIZE), "manifest_bitflip": (HEADER_SIZE, HEADER_SIZE + mlen),
                  "bitflip": (0, len(data))}[kind]
        out[rng.integers(lo, hi)] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        del out[rng.integers(len(data)):]
    elif kind in ("zero_run", "random_run"):
        start, n = int(rng.integers(len(data))), int(rng.integers(1, 300))
        n = min(n, len(data) - start)
        out[start:start + n] = bytes(n) if kind == "zero_run" else rng.bytes(n)
    else:
        out += bytes(int(rng.integers(1, 300))) if rng.random() < 0.5 else rng.bytes(int(rng.integers(1, 300)))
    return kind, bytes(out)


def _open_everything(path, verify):
    """Everything a command reads from a bundle: header, manifest, members, config, plans."""
    b = read_bundle(path, verify=verify)
    try:
        for name in b.member_names:
            view = b.member(name)
            assert len(view) == b.manifest["members"][name]["length"]
        b.config
        b.plans()
    finally:
        b.close()


def test_fuzzed_bundles_give_bundle_errors(original, tmp_path):
    data, manifest, data_area = original
    rng = np.random.default_rng(SEED)
    path = tmp_path / "mutant.plan"
    counts, unchanged, opened_unverified = Counter(), 0, 0
    for i in range(BUNDLE_MUTANTS):
        kind, mutant = _crafted(rng, manifest, data_area, len(data)) if i % 3 == 2 else _raw(rng, data)
        if mutant == data:
            unchanged += 1  # e.g. a zeroed run over padding: nothing to detect
            continue
        counts[kind] += 1
        path.write_bytes(mutant)
        try:
            _open_everything(path, verify=True)
        except BundleError as e:
            assert str(e) and "\n" not in str(e), (kind, str(e))
        else:
            pytest.fail(f"mutant {i} ({kind}) opened without an error")
        try:  # without verification, member contents are not checked; everything else is
            _open_everything(path, verify=False)
            opened_unverified += 1
        except BundleError:
            pass
    print(f"\n{sum(counts.values())} bundle mutants ({unchanged} no-ops skipped), verify=False opened "
          f"{opened_unverified}: {dict(sorted(counts.items()))}")
    assert sum(counts.values()) >= 0.95 * BUNDLE_MUTANTS and len(counts) == 11
    # Unverified opens can only succeed where member bytes changed, not the structure.
    assert opened_unverified < 0.2 * BUNDLE_MUTANTS


def test_unmodified_bundle_opens(original, tmp_path):
    data, _, _ = original
    path = tmp_path / "same.plan"
    path.write_bytes(data)
    _open_everything(path, verify=True)


def test_close_contract(original, tmp_path):
    data, _, _ = original
    path = tmp_path / "c.plan"
    path.write_bytes(data)
    b = read_bundle(path)
    assert b.close() is True  # no views alive: unmapped now
    with pytest.raises(BundleError, match="closed"):
        b.member("g.onnx")
    b = read_bundle(path)
    view = b.member("g.weights")
    arr = np.frombuffer(view, np.float32)
    assert b.close() is False  # views alive: they keep the map, and their bytes, valid
    assert arr.sum() == np.frombuffer(bytes(view), np.float32).sum()
    with pytest.raises(BundleError, match="closed"):
        b.member("g.onnx")
    assert b.close() is True  # closing again is harmless


# ------------------------------------------------------------------------------------------ checkpoints

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    import torch
    from gtr.export.weights import random_models
    from gtr.models.checkpoint import save_mar_checkpoint, save_safetensors
    mar, vae = random_models(CONFIG, 0)
    from gtr.models.vae import AutoencoderKL
    vae = AutoencoderKL(CONFIG.vae)  # with the encoder, like the official kl16.ckpt
    d = tmp_path_factory.mktemp("ckpt")
    save_mar_checkpoint(d / "mar.pth", mar.state_dict())
    save_safetensors(d / "mar.safetensors", mar.state_dict())
    torch.save({"model": vae.state_dict()}, d / "vae.ckpt")
    return {suffix: (d / f"{name}{suffix}").read_bytes()
            for name, suffix in (("mar", ".pth"), ("mar", ".safetensors"), ("vae", ".ckpt"))}


def _load(path):
    from gtr.models.checkpoint import load_mar, load_vae
    if path.suffix == ".ckpt":
        return load_vae(CONFIG.vae, path, with_encoder=False)
    return load_mar(CONFIG, path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".ckpt"])
def test_fuzzed_checkpoints_give_checkpoint_errors(checkpoints, tmp_path, suffix):
    from gtr.models.checkpoint import CheckpointError
    data = checkpoints[suffix]
    path = tmp_path / f"mutant{suffix}"
    path.write_bytes(data)
    _load(path)  # the undamaged file loads
    rng = np.random.default_rng(SEED)
    counts = Counter()
    for i in range(CHECKPOINT_MUTANTS):
        kind = ["truncate", "garbage", "bitflip", "zero_run", "random_run", "append"][i % 6]
        out = bytearray(data)
        if kind == "truncate":
            del out[rng.integers(len(data)):]
        elif kind == "garbage":
            out = bytearray(rng.bytes(int(rng.integers(0, 2000))) if i % 12 else data[:64] + rng.bytes(500))
        elif kind == "bitflip":
            out[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        elif kind == "append":
            out += rng.bytes(int(rng.integers(1, 300)))
        else:
            start = int(rng.integers(len(data)))
            n = min(int(rng.integers(1, 300)), len(data) - start)
            out[start:start + n] = bytes(n) if kind == "zero_run" else rng.bytes(n)
        path.write_bytes(bytes(out))
        try:
            _load(path)
            outcome = "loaded"  # damage inside tensor data (or a tolerated trailer) is not detectable
        except CheckpointError as e:
            assert "\n" not in str(e)
            outcome = "CheckpointError"
        counts[kind, outcome] += 1
        if kind in ("truncate", "garbage"):
            assert outcome == "CheckpointError", kind
    print(f"\n{suffix}: {dict(sorted(counts.items()))}")


# ------------------------------------------------------------------------------- run records, plan files

FILE_MUTANTS = 600


def _mutate(rng, data: bytes) -> bytes:
    out = bytearray(data)
    kind = rng.integers(5)
    if kind == 0:
        out[rng.integers(len(out))] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        del out[rng.integers(len(out)):]
    elif kind == 2:
        start = int(rng.integers(len(out)))
        out[start:start + int(rng.integers(1, 40))] = rng.bytes(int(rng.integers(1, 40)))
    elif kind == 3:
        out += rng.bytes(int(rng.integers(1, 40)))
    else:
        out = bytearray(rng.bytes(int(rng.integers(0, 200))))
    return bytes(out)


def _crafted_json(rng, d):
    """A JSON value with one field somewhere replaced by a bogus value (numbers huge, NaN-like, wrong types)."""
    d = json.loads(json.dumps(d))
    node = d
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return d
        key = keys[rng.integers(len(keys))]
        if isinstance(node[key], (dict, list)) and node[key] and rng.random() < 0.6:
            node = node[key]
            continue
        node[key] = (BOGUS + [10 ** 20, -(10 ** 20), 1e308, "nan", "", [10 ** 6] * 3])[rng.integers(len(BOGUS) + 6)]
        return d


def test_fuzzed_run_records_give_input_errors(tmp_path):
    from gtr.inputs import InputError
    from gtr.runtime.outdir import read_record
    record = {"batch": 2, "bundle": "656c793304114de4", "num_images": 3, "seed": 0,
              "plan": build_plan("mar-4", CONFIG.grid).to_dict()}
    data = json.dumps(record, indent=1, sort_keys=True).encode()
    assert read_record(data, "r.json") == record and read_record(b"", "r.json") is None
    rng = np.random.default_rng(SEED)
    outcomes = Counter()
    for i in range(FILE_MUTANTS):
        mutant = _mutate(rng, data) if i % 2 else json.dumps(_crafted_json(rng, record)).encode()
        try:
            got = read_record(mutant, "D/gtr-run.json")
            outcomes["read"] += 1
            assert got is None or isinstance(got, dict)
        except InputError as e:
            assert str(e).startswith("D/gtr-run.json: ") and "\n" not in str(e), str(e)
            outcomes["InputError"] += 1
    print(f"\nrun records: {dict(outcomes)}")
    assert outcomes["InputError"] > FILE_MUTANTS // 4


def test_fuzzed_plan_files_give_plan_errors(tmp_path):
    from gtr.plan import PlanError
    from gtr.plan.builders import build_plan as build
    plan = build_plan("gtr", CONFIG.grid, cfg=2.0, cache_every=2)
    data = plan.to_json().encode()
    path = tmp_path / "plan.json"
    rng = np.random.default_rng(SEED)
    outcomes = Counter()
    for i in range(FILE_MUTANTS):
        path.write_bytes(_mutate(rng, data) if i % 2 else json.dumps(_crafted_json(rng, plan.to_dict())).encode())
        try:
            build(str(path), CONFIG.grid)
            outcomes["read"] += 1
        except PlanError as e:
            assert "\n" not in str(e), str(e)
            outcomes["PlanError"] += 1
    print(f"\nplan files: {dict(outcomes)}")
    assert outcomes["PlanError"] > FILE_MUTANTS // 2

"""gtr-bench: runs on a tiny model in seconds; its JSON holds what the README's tables are made of."""
import importlib.util
import json
import os

import pytest

from cli_helpers import one_line_error, run

from gtr.bench.official import ENV as OFFICIAL_ENV, TIMM_HINT

OFFICIAL = os.environ.get(OFFICIAL_ENV)  # a checkout of LTH14/mar, to time the official sampler against


@pytest.fixture(scope="module")
def tiny_bundle(models, plans, tmp_path_factory):
    from gtr.export.exporter import export_bundle
    from tiny_export_model import TINY
    path = tmp_path_factory.mktemp("bench") / "tiny.plan"
    export_bundle(TINY, *models, plans, batch=1, precision="fp32", out_path=path, random_weights=True,
                  sources={"random_seed": 0}, verify=False)
    return path


def _rows(outdir):
    record = json.loads((outdir / "bench.json").read_text())
    return record, {(r["backend"], r["plan"], r["batch"]): r for r in record["rows"]}


def test_bench_tiny_model(tmp_path, one_torch_thread):
    out = tmp_path / "bench"
    r = run("bench", "--model", "mar-tiny", "--plan", "gtr", "--plan", "mar-8", "--backend", "onnxruntime",
            "--backend", "torch", "--batch", "1,2", "--rounds", "2", "--warmup", "0", "--threads", "1", "-o", out)
    assert r.exit_code == 0, r.output
    record, rows = _rows(out)
    assert set(rows) == {(b, p, n) for b in ("onnxruntime", "torch") for p in ("gtr", "mar-8") for n in (1, 2)}
    assert record["baseline"] == "torch fp32 mar-8" and record["probe"]["gflops"] > 0
    assert record["model"] == "mar-tiny" and record["threads"] == 1 and record["decode"] is True
    for row in rows.values():
        split = row["split_s_per_image"]
        assert set(split) == {"backbone", "head", "decode", "loop"}
        assert split["backbone"] > 0 and split["head"] > 0 and split["decode"] > 0
        assert sum(split.values()) == pytest.approx(row["s_per_image"], rel=1e-9)  # the split of the median round
        assert row["images_per_s"] == pytest.approx(1 / row["s_per_image"])
        assert len(row["round_s"]) == 2 and row["rounds"] == 2
        assert row["gflop_per_image"]["head"] > 0 and row["gflops"]["head"] > 0
        assert 0 < row["matmul_fraction"]["backbone"]
        assert row["speedup_tokens"] > 0
    # FLOPs per image come from the plan, not from the backend.
    assert rows[("onnxruntime", "gtr", 1)]["gflop_per_image"] == rows[("torch", "gtr", 2)]["gflop_per_image"]
    assert rows[("torch", "mar-8", 1)]["speedup_tokens"] == pytest.approx(1.0)
    assert (out / "bench.png").stat().st_size > 10_000
    assert "| onnxruntime | fp32 | gtr |" in r.output and "batch 2" in r.output


def test_bench_bundles_tokens_only(tmp_path, tiny_bundle, models, plans):
    """Several bundles (e.g. fp32 and int8 of one model): each is timed on the plans it holds."""
    from gtr.export.exporter import export_bundle
    from tiny_export_model import TINY
    one = tmp_path / "one.plan"
    export_bundle(TINY, *models, plans[1:], batch=1, precision="fp16", out_path=one, random_weights=True,
                  sources={"random_seed": 0}, verify=False)
    out = tmp_path / "b"
    r = run("bench", tiny_bundle, one, "--backend", "onnxruntime", "--batch", "1", "--rounds", "1", "--warmup", "0",
            "--tokens-only", "-o", out)
    assert r.exit_code == 0, r.output
    record, _ = _rows(out)
    assert sorted((row["precision"], row["plan"]) for row in record["rows"]) == \
        sorted([("fp32", plans[0].name), ("fp32", plans[1].name), ("fp16", plans[1].name)])
    assert f"has no plan {plans[0].name!r}" in r.output
    assert record["decode"] is False and record["baseline"] is None
    assert all(row["split_s_per_image"]["decode"] == 0 and "speedup_tokens" not in row for row in record["rows"])


@pytest.fixture
def official_checkout():
    if not OFFICIAL:
        pytest.skip(f"set {OFFICIAL_ENV} to a checkout of LTH14/mar to time the official sampler")
    if importlib.util.find_spec("timm") is None:
        pytest.skip(f"timm is not installed; the official MAR code imports it ({TIMM_HINT})")
    return OFFICIAL


def test_bench_official_sampler(tmp_path, fixtures_dir, official_checkout, one_torch_thread):
    out = tmp_path / "o"
    r = run("bench", "--model", "mar-test", "--checkpoint", fixtures_dir / "mar_small.pth", "--vae",
            fixtures_dir / "kl16_small.ckpt", "--plan", "mar-4", "--cfg", "3", "--backend", "onnxruntime",
            "--official", official_checkout, "--batch", "1", "--rounds", "1", "--warmup", "0", "--threads", "1",
            "--tokens-only", "-o", out)
    assert r.exit_code == 0, r.output
    record, rows = _rows(out)
    official = rows[("official", "mar-4", 1)]
    assert record["baseline"] == "official fp32 mar-4" and official["speedup_tokens"] == pytest.approx(1.0)
    assert official["split_s_per_image"]["backbone"] > 0 and official["split_s_per_image"]["head"] > 0
    assert rows[("onnxruntime", "mar-4", 1)]["speedup_tokens"] > 0


def test_bench_errors(tmp_path, tiny_bundle):
    assert "BUNDLE" in one_line_error(run("bench"))
    assert "--batch" in one_line_error(run("bench", tiny_bundle, "--batch", "0"))
    assert "not a checkout" in one_line_error(run("bench", tiny_bundle, "--backend", "onnxruntime",
                                                  "--official", tmp_path, "--batch", "1", "-o", tmp_path / "x"))
    assert "mar-N" in one_line_error(run("bench", tiny_bundle, "--plan", "gtr", "--backend", "onnxruntime",
                                         "--official", tmp_path, "-o", tmp_path / "x"))
    assert not (tmp_path / "x").exists()  # nothing written on an error

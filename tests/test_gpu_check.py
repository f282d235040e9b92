"""tools/gpu_check.py --device cpu: the prepared GPU check runs its code on the CPU in well under a minute
and writes its JSON and table (issue 20 item 10). On a GPU the same script times and checks for real."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_on_cpu(tmp_path):
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--device", "cpu", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and report["seconds"] < 60
    sec = report["sections"]
    assert [s for s in sec] == ["a_reference", "b_speed", "c_head_loop", "d_backends"]

    # a: the reference on the "device" (the CPU here) against the CPU: identical
    rows = [row for row in sec["a_reference"]["rows"] if "psnr_db" in row]
    assert sec["a_reference"]["status"] == "ok" and any(row["model"] == "mar-tiny" for row in rows)
    assert all(row["token_error"] == 0 and row["passes_fp32_rule"] for row in rows)

    # b: every entry timed (or said why not), the torch reference at least once
    speed = sec["b_speed"]
    assert speed["status"] == "ok" and speed["timer"] == "time.perf_counter"
    assert any(isinstance(row.get("torch gtr"), float) and row["torch gtr"] > 0 for row in speed["rows"])
    assert all(isinstance(v, float) or str(v).startswith("skipped: ")
               for row in speed["rows"] for k, v in row.items() if k.startswith(("official", "torch")))

    # c: the head loop's capture/replay decisions on the stand-in runtime
    c = sec["c_head_loop"]
    assert c["status"] == "ok"
    good, bad = c["replay"], c["differing_replay"]
    assert good["captured"] and good["graph_launches"] == 3 and good["max_error_vs_numpy"] == 0
    assert good["own_contexts"] == good["calls"] and not good["notes"]
    assert not bad["captured"] and bad["graph_launches"] == 1 and bad["max_error_vs_numpy"] == 0
    assert len(bad["notes"]) == 1 and "differs from the eager run" in bad["notes"][0]

    # d: GPU backends are skipped with the reason; the table exists
    assert sec["d_backends"]["status"] == "skipped" and sec["d_backends"]["reason"]
    # what make test checks without a GPU: named tests that exist, and the versions they install
    without = report["verified_without_gpu"]
    assert all((ROOT / path).is_file() for path in without.values())
    from real_gpu_packages import SETS
    pinned = [p.split("==")[1] for s in SETS.values() for p in s["pip"] if p.startswith(("tensorrt-", "onnxruntime"))]
    assert all(any(v in k for k in without) for v in pinned), (pinned, list(without))
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| c_head_loop | ok |" in md and "## Speed" in md

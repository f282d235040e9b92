"""gtr-plan as a user runs it."""
import json

from gtr.plan import SamplingPlan

from cli_helpers import run


def test_plan_show_gtr_on_mar_h_prints_table_cost_and_ratio():
    r = run("plan", "show", "gtr", "--model", "mar-h")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert any(l.split()[:5] == ["14", "3", "128", "64", "7@50+57@20"] for l in lines)
    assert "16.21 TFLOP" in r.output and "vs mar-64 (65.23 TFLOP): 4.02x fewer FLOPs" in r.output
    assert "7,304" in r.output


def test_plan_show_mar64_and_overrides():
    r = run("plan", "show", "mar-64", "--model", "mar-b")
    assert r.exit_code == 0 and "14.67 TFLOP" in r.output
    r = run("plan", "show", "gtr", "--model", "mar-b", "--no-fts")
    assert r.exit_code == 0 and "3.59 TFLOP" in r.output and "fts_top" not in r.output


def test_plan_json_round_trip(tmp_path):
    out = tmp_path / "p.json"
    r = run("plan", "show", "gtr", "--grid", "8x8", "--gtr-steps", "6,8,2", "--t-rec", "10", "--json", str(out))
    assert r.exit_code == 0, r.output
    plan = SamplingPlan.from_json(out.read_text())
    assert [s.predict for s in plan.steps[:6]] == [2, 2, 3, 3, 3, 3] and plan.grid == (8, 8)
    assert json.loads(out.read_text())["format"] == "gtr-plan"
    r2 = run("plan", "show", str(out), "--grid", "8x8")
    assert r2.exit_code == 0 and "16 AR steps" in r2.output


def test_plan_errors_are_one_line():
    for args in (["plan", "show", "nope"], ["plan", "show", "gtr", "--grid", "8x8", "--gtr-steps", "24,6,2"],
                 ["plan", "show", "gtr", "--model", "mar-xl"], ["plan", "show", "gtr", "--grid", "big"],
                 ["plan", "show", "/nonexistent/plan.json"]):
        r = run(*args)
        assert r.exit_code != 0, args
        assert "Traceback" not in r.output and r.output.strip().count("\n") <= 3, r.output
        assert "Error" in r.output


def test_plan_list():
    r = run("plan", "list")
    assert r.exit_code == 0 and "gtr-32" in r.output and "mar-64" in r.output

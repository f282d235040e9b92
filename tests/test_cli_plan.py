"""gtr-plan as a user runs it."""
import json

from gtr.plan import SamplingPlan

from cli_helpers import one_line_error, run


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


def test_plan_show_help_example_writes_a_plan_that_export_takes(tmp_path, monkeypatch):
    """The help's example lines, run as written: the plan file it writes makes a mar-tiny bundle."""
    import shlex
    monkeypatch.chdir(tmp_path)
    text = run("plan", "show", "--help").output
    lines = [l.split("#")[0].strip() for l in text.splitlines() if l.strip().startswith(("gtr-plan", "gtr-export"))]
    writes = [l for l in lines if "--json" in l]
    assert writes and any(l.startswith("gtr-export") for l in lines), text
    for line in lines:
        command, *args = shlex.split(line)
        r = run(*command.split("-", 1)[1:], *args)
        assert r.exit_code == 0, (line, r.output)
    bundle = tmp_path / "mar-tiny-fp32.plan"
    assert bundle.is_file()
    from gtr.runtime.bundle import read_bundle
    assert list(read_bundle(bundle).plans()) == ["gtr"]


def test_plan_show_says_the_grid_it_assumes():
    r = run("plan", "show", "gtr")
    assert r.exit_code == 0
    first = r.output.splitlines()[0]
    assert "no --model" in first and "16x16 grid" in first and "cfg 1" in first
    r = run("plan", "show", "gtr", "--cfg", "3")
    assert "16x16 grid" in r.output.splitlines()[0] and "cfg 1" not in r.output.splitlines()[0]
    for args in (["--model", "mar-tiny"], ["--grid", "8x8"]):
        r = run("plan", "show", "gtr", *args)
        assert r.exit_code == 0 and "no --model" not in r.output and "8x8 grid" in r.output


def test_a_plan_file_for_another_grid_says_how_to_write_one(tmp_path):
    out = tmp_path / "p.json"
    assert run("plan", "show", "gtr", "--json", out).exit_code == 0
    line = one_line_error(run("plan", "show", out, "--model", "mar-tiny"))
    assert "16x16 grid, the model has 8x8" in line and "--model MODEL --json" in line


def test_plan_list_names_the_variants():
    r = run("plan", "list")
    names = [l.split()[0] for l in r.output.splitlines()]
    assert {"gtr-no-fts", "gtr-8", "mar-64-anneal", "gtr-lazy", "mar-N"} <= set(names)

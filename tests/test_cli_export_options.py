"""gtr-export --no-check: the bundle without the per-shape check (what full-size exports need)."""
from cli_helpers import run


def test_no_check_skips_the_shape_check(tmp_path):
    out = tmp_path / "t.plan"
    r = run("export", "--model", "mar-test", "--random-weights", "--plan", "mar-4", "--no-check", "-o", out)
    assert r.exit_code == 0, r.output
    assert out.is_file() and "checked" not in r.output
    r = run("export", "--model", "mar-test", "--random-weights", "--plan", "mar-4", "-o", tmp_path / "c.plan")
    assert r.exit_code == 0 and "checked" in r.output, r.output

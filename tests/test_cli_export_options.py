"""gtr-export --check spread|all|none (and --no-check): which static shapes the export check runs."""
import pytest

from cli_helpers import one_line_error, run
from gtr.errors import ExportError
from gtr.export.verify import SPREAD, check_mode, check_shapes
from gtr.runtime.bundle import read_bundle


def test_spread_is_evenly_spaced_and_keeps_the_extremes():
    shapes = [{"B": 2, "K": k, "n": n} for k, n in zip(range(0, 240, 3), [1 + (i * 7) % 13 for i in range(80)])]
    got = check_shapes(shapes, "spread")
    assert SPREAD <= len(got) <= SPREAD + 3 and len(got) < len(shapes)
    assert got[0] == shapes[0] and got[-1] == shapes[-1]  # the first (K = 0) and the last step
    assert max(s["n"] for s in got) == max(s["n"] for s in shapes)  # the largest of each symbol
    assert [shapes.index(s) for s in got] == sorted(shapes.index(s) for s in got)  # list order kept
    assert check_shapes(shapes, "all") == shapes and check_shapes(shapes, "none") == []
    assert check_shapes(shapes[:5], "spread") == shapes[:5]  # short lists: every shape
    assert check_mode(True) == "spread" and check_mode(False) == "none"
    with pytest.raises(ExportError, match="check must be one of"):
        check_mode("some")


def test_check_modes_on_the_command_line(tmp_path):
    base = ("export", "--model", "mar-test", "--random-weights", "--plan", "mar-16")
    r = run(*base, "--no-check", "-o", tmp_path / "n.plan")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "n.plan").is_file() and "checked" not in r.output
    from gtr.export.exporter import static_shapes
    from gtr.plan import build_plan
    spread = len(check_shapes(static_shapes([build_plan("mar-16", (16, 16))], 1)["backbone"], "spread"))
    assert spread < 16
    r = run(*base, "-o", tmp_path / "s.plan")  # default: a spread of the 16 backbone shapes
    assert r.exit_code == 0 and f"backbone: checked {spread} of 16 shape(s)" in r.output, r.output
    assert read_bundle(tmp_path / "s.plan").manifest["graphs"]["backbone"]["checked_shapes"] == spread
    r = run(*base, "--check", "all", "-o", tmp_path / "a.plan")
    assert r.exit_code == 0 and "backbone: checked 16 of 16 shape(s)" in r.output, r.output
    r = run(*base, "--check", "all", "--no-check", "-o", tmp_path / "x.plan")
    assert "different checks" in one_line_error(r) and r.exit_code == 2 and not (tmp_path / "x.plan").exists()

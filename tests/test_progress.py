"""Progress where the output is not a terminal: one plain line per step (no bar redrawn with carriage
returns, and not silence), and still a bar on a terminal."""
import io
import subprocess
import sys

import pytest

import gtr
from gtr.runtime.progress import LineProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_not_a_terminal_one_line_per_update():
    out = io.StringIO()
    with progress_bar(3, "gtr", "img", file=out) as bar:
        assert isinstance(bar, LineProgress)
        for _ in range(3):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert [l.split(" (")[0] for l in lines] == ["gtr: 1/3 img", "gtr: 2/3 img", "gtr: 3/3 img"]
    assert "\r" not in out.getvalue() and all(l.endswith(" s)") for l in lines)


def test_a_terminal_gets_a_bar_and_disabled_prints_nothing():
    term = Terminal()
    with progress_bar(3, "gtr", "img", file=term) as bar:
        assert not isinstance(bar, LineProgress)
        bar.update(3)
    assert "\r" in term.getvalue()
    quiet = io.StringIO()
    with progress_bar(3, "gtr", "img", enabled=False, file=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""


def test_throttled_lines_still_end_with_the_last_count_and_show_bytes_in_mib():
    out = io.StringIO()
    with progress_bar(None, "kl16", "B", initial=2**20, every=3600, file=out) as bar:
        for _ in range(4):
            bar.update(2**19)  # held back by `every`: no line until close
        assert out.getvalue() == ""
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[0]]
    assert out.getvalue().startswith("kl16: 3.0 MiB (")


def test_a_status_shows_in_the_next_line_and_alone_after_quiet_seconds():
    out = io.StringIO()
    bar = LineProgress(2, "gtr", "img", quiet=0.0, file=out)
    bar.set_postfix_str("step 3/16", refresh=False)
    bar.update(1)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("gtr: 0/2 img (") and lines[0].endswith(", step 3/16)")
    assert lines[1].startswith("gtr: 1/2 img (") and lines[1].endswith(", step 3/16)")


def test_a_closed_output_does_not_fail_the_work():
    out = io.StringIO()
    out.close()
    bar = LineProgress(2, "gtr", "img", file=out)
    bar.update(2)
    bar.close()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "mar-test.plan"
    gtr.export("mar-test", path, plans=["mar-4"], random_weights=True, log=None, verify=False)
    return path


def test_gtr_run_into_a_pipe_prints_one_line_per_sampling_call(bundle, tmp_path):
    r = subprocess.run([sys.executable, "-m", "gtr", "run", str(bundle), "-c", "1", "-n", "3", "--batch", "1",
                        "--outdir", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.startswith("mar-4 ")]
    assert [l.split(": ", 1)[1].split(" (")[0] for l in lines] == ["1/3 img", "2/3 img", "3/3 img"], r.stderr
    assert "\r" not in r.stderr


def test_gtr_check_shows_each_step_time(bundle):
    """gtr-check says how long each step took: the reference build, each backend's sampling, in all."""
    import re
    pytest.importorskip("torch")
    from cli_helpers import run
    r = run("check", bundle, "-c", 1)
    assert r.exit_code == 0, r.output
    assert re.search(r"^built the reference in \d+\.\d s$", r.output, re.M), r.output
    assert re.search(r"^mar-4: token max error .* -> PASS \(ONNX Runtime \d+\.\d s, PyTorch reference \d+\.\d s\)$",
                     r.output, re.M), r.output
    assert re.search(r"^checked 1 plan\(s\) in \d+\.\d s \(building the reference \d+\.\d s\)$", r.output, re.M)

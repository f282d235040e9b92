"""The condition cache as a user runs it: gtr-plan show prints the modes and FLOPs; a mar-tiny bundle
with gtr-lazy lists its shapes and matches the PyTorch reference on the same seed (gtr-check)."""
import json

import pytest

from cli_helpers import one_line_error, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_plan_show_prints_the_cache_and_its_flops():
    r = run("plan", "show", "gtr-lazy", "--model", "mar-b")
    assert r.exit_code == 0, r.output
    assert "condition cache: 10 of 16 steps cached" in r.output and "5 refresh steps" in r.output
    assert "   2     1    16       8  8@45                    1.1781  cached" in r.output
    ratio = float(r.output.split("vs mar-64")[1].split("x fewer FLOPs")[0].split(":")[-1])
    assert ratio >= 5.0  # issue 23's done-when figure on MAR-B
    r = run("plan", "show", "gtr", "--model", "mar-b", "--cache-every", "4", "--cache-stages", "1,2")
    assert r.exit_code == 0 and "condition cache: 9 of 16 steps cached" in r.output, r.output
    r = run("plan", "show", "gtr-lazy", "--model", "mar-b", "--cfg", "1")
    assert r.exit_code == 0 and "no effect: the plan has no CFG" in r.output, r.output


def test_plan_show_option_errors_are_one_line():
    assert "--cache-from = 16 leaves no step to cache" in one_line_error(
        run("plan", "show", "gtr-lazy", "--cache-from", "16"))
    assert "--cache-stages must name stages in 1..3, got [4]" in one_line_error(
        run("plan", "show", "gtr-lazy", "--cache-stages", "4"))
    assert "'--cache-stages'" in one_line_error(run("plan", "show", "gtr-lazy", "--cache-stages", "0"))


def test_plan_json_file_keeps_the_cache(tmp_path):
    path = tmp_path / "lazy.json"
    assert run("plan", "show", "gtr-lazy", "--json", path).exit_code == 0
    assert json.loads(path.read_text())["version"] == 2
    r = run("plan", "show", path, "--model", "mar-b")
    assert r.exit_code == 0 and "10 of 16 steps cached" in r.output, r.output


@pytest.fixture(scope="module")
def lazy_bundle(tmp_path_factory):
    from gtr.tiny.model import ASSET_DIR, MAR_FILE, VAE_FILE
    if not ((ASSET_DIR / MAR_FILE).is_file() and (ASSET_DIR / VAE_FILE).is_file()):
        pytest.skip("mar-tiny weights are not shipped in gtr/assets/tiny")
    path = tmp_path_factory.mktemp("lazy") / "mar-tiny-lazy.plan"
    r = run("export", "--model", "mar-tiny", "--plan", "gtr-lazy", "-o", path)
    assert r.exit_code == 0, r.output
    return path


def test_bundle_lists_the_cache_shapes_and_matches_the_reference(lazy_bundle):
    from gtr.configs import get_config
    from gtr.export.exporter import static_shapes
    from gtr.plan import build_plan
    from gtr.runtime.bundle import read_bundle
    manifest = read_bundle(lazy_bundle).manifest
    config = get_config("mar-tiny")
    plan = build_plan("gtr-lazy", config.grid, cfg=config.default_cfg)
    listed = manifest["graphs"]["backbone"]["static_shapes"]
    assert listed == static_shapes([plan], manifest["batch"])["backbone"]
    assert manifest["plans"]["gtr-lazy"]["version"] == 2
    K = plan.steps[2].known_before
    assert {"B": 1, "K": K, "n": plan.steps[2].predict} in listed  # a cached step: conditional rows only
    ahead = plan.steps[2].predict + plan.steps[3].predict  # step 1 refreshes for the cached steps 2 and 3
    assert {"B": 2, "K": plan.steps[1].known_before, "n": plan.steps[1].predict + ahead} in listed
    r = run("check", lazy_bundle, "--plan", "gtr-lazy")
    assert r.exit_code == 0, r.output
    assert "gtr-lazy: token max error" in r.output and "PASS" in r.output

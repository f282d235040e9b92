"""gtr-eval suites: the paper's comparison plans and the quality-vs-FLOPs sweep."""
import pytest
from click.testing import CliRunner

from gtr.eval.suites import SUITES, suite_plans
from gtr.plan import plan_cost


@pytest.mark.parametrize("name", sorted(SUITES))
def test_suite_plans_build_on_the_tiny_grid(name):
    from gtr.configs import get_config
    config = get_config("mar-tiny")
    pairs = suite_plans(name, config.grid, cfg=2.0)
    names = [p.name for p, _ in pairs]
    assert len(set(names)) == len(names) and all(p.cfg == 2.0 for p, _ in pairs)
    assert any(family for _, family in pairs)
    cost = {p.name: plan_cost(p, config).total_flops for p, _ in pairs}
    assert cost["gtr"] < cost["mar-16"] < cost["mar-32"] < cost["mar-64"]


def test_paper_suite_ablations_change_one_thing():
    from gtr.configs import get_config
    config = get_config("mar-tiny")
    plans = {p.name: p for p, _ in suite_plans("paper", config.grid, cfg=2.0)}
    gtr = plans["gtr"]
    counts = lambda p: [s.predict for s in p.steps]  # noqa: E731
    for name in ("gtr-no-fts", "gtr-fts-random", "gtr-fts-low", "gtr-fts-all", "gtr-uniform-T",
                 "gtr-order-random", "gtr-order-raster"):
        assert counts(plans[name]) == counts(gtr), name  # same AR steps and tokens per step
    assert plans["gtr-fts-random"].fts_select == "random" and plans["gtr-fts-low"].fts_select == "low"
    assert {g.T for s in plans["gtr-uniform-T"].steps for g in s.groups} == {100}
    assert plans["gtr-order-random"].stages == (tuple(range(config.seq_len)),)
    Ts = [s.groups[0].T for s in plans["mar-64-anneal"].steps]
    assert (Ts[0], Ts[-1]) == (50, 5)
    assert {g.T for s in plans["mar-64-T20"].steps for g in s.groups} == {20}


def test_eval_suite_option_errors_are_one_line():
    from gtr.commands.eval import eval_cmd
    runner = CliRunner()
    r = runner.invoke(eval_cmd, ["--suite", "paper", "--plan", "gtr"])
    assert r.exit_code != 0 and "either --suite or --plan" in r.output and "Traceback" not in r.output
    r = runner.invoke(eval_cmd, ["--suite", "paper", "--t-rec", "10"])
    assert r.exit_code != 0 and "--t-rec" in r.output and "Traceback" not in r.output


def test_plot_joins_families(tmp_path):
    from PIL import Image

    from gtr.eval.report import quality_cost_plot
    rows = [dict(plan=n, gflops=g, accuracy=a, frechet=f, family=fam) for n, g, a, f, fam in
            [("mar-16", 10, 0.9, 80, "mar"), ("mar-64", 40, 0.95, 60, "mar"), ("gtr", 10, 0.96, 62, "gtr")]]
    quality_cost_plot(rows, tmp_path / "p.png", title="t")
    assert Image.open(tmp_path / "p.png").size[0] > 500

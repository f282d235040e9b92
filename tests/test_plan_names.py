"""Every plan name the README and docs/ use is a plan: gtr-plan show, gtr-export --plan and gtr-eval --plan
take it and gtr-plan list lists it, so a table cannot name a plan a reader then cannot run.

Names are collected from the text: `--plan X` and `gtr-plan show X` arguments, and `gtr...`/`mar...`
words in backticks or in a table's first cell. Words that are not plan names are recognised by
what they are: a command (pyproject's [project.scripts]) or the distribution, a model (gtr.configs),
a folder beside the page (benchmark records), or a placeholder (`mar-N`, upper-case words).
"""
import re
import tomllib
from pathlib import Path

import pytest

from gtr.configs import ConfigError, get_config
from gtr.eval.suites import SUITES

from cli_helpers import one_line_error, run

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
WORD = r"(?:gtr|mar)(?:-[A-Za-z0-9]+)*"
PATTERNS = (
    rf"--plan[ =]([^\s`|\]\)\"',;]+)",                       # --plan X
    rf"gtr-plan show ([^\s`|\]\)\"',;-][^\s`|\]\)\"',;]*)",   # gtr-plan show X
    rf"`({WORD})`",                                           # `gtr-no-fts`
    rf"^\|\s*\**({WORD})\**\s*\|",                            # | gtr-8 | ... (a table's first cell)
)


def names_in(text: str) -> set[str]:
    return {m.group(1) for p in PATTERNS for m in re.finditer(p, text, re.M)}


def _not_a_plan(name: str, page: Path) -> bool:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    command = name in project["scripts"] and name != "gtr"  # `gtr` is the command and the default plan
    if command or name == project["name"] or name == "mar-N" or name.isupper():
        return True
    if (page.parent / name).exists() or name.endswith((".json", ".plan")):  # a folder or a file, not a name
        return True
    try:
        get_config(name)
        return True  # a model
    except ConfigError:
        return False


def doc_plan_names() -> dict[str, str]:
    """{plan name: the first page that uses it}."""
    found = {}
    for page in PAGES:
        for name in sorted(names_in(page.read_text(encoding="utf-8"))):
            if not _not_a_plan(name, page):
                found.setdefault(name, str(page.relative_to(ROOT)))
    return found


NAMES = doc_plan_names()


def test_the_collector_finds_names_in_commands_backticks_and_tables():
    text = ("gtr-eval --plan gtr-no-fts --plan=mar-4\n`gtr-plan show mar-64-anneal --model mar-b`\n"
            "| gtr-8 | 7.78 |\n| **gtr-lazy** | 8.66 |\nthe `gtr-run` command, `mar-tiny`, `mar-N`\n")
    assert {"gtr-no-fts", "mar-4", "mar-64-anneal", "gtr-8", "gtr-lazy"} <= names_in(text)
    assert all(_not_a_plan(n, ROOT / "README.md") for n in ("gtr-run", "mar-tiny", "mar-N", "gtr-mar", "PLAN"))
    assert "gtr" in NAMES and "mar-64" in NAMES  # the pages are read


def test_every_doc_plan_name_is_listed_and_shown():
    listed = run("plan", "list")
    assert listed.exit_code == 0, listed.output
    listed_names = {line.split()[0] for line in listed.output.splitlines() if line.strip()}
    for name, page in NAMES.items():
        assert name in listed_names or re.fullmatch(r"mar-\d+", name), f"{name} ({page}) is not in gtr-plan list"
        r = run("plan", "show", name, "--model", "mar-b")
        assert r.exit_code == 0, f"{name} ({page}): {r.output}"
        assert f"plan {name}:" in r.output


@pytest.mark.parametrize("command", ["export", "eval"])
def test_every_doc_plan_name_is_accepted_by_export_and_eval(command, tmp_path):
    """The plans are built before any weights are read: with a checkpoint that does not exist, the
    command gets past the plans (one unknown name would stop it there) and fails on the weights."""
    plans = [a for name in NAMES for a in ("--plan", name)]
    where = ["-o", tmp_path / "b.plan"] if command == "export" else ["--outdir", tmp_path / "out"]
    line = one_line_error(run(command, "--model", "mar-b", *plans, "--checkpoint", tmp_path / "none.pth", *where))
    assert "missing weights" in line and "plan" not in line.split("missing weights")[0], line


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_every_suite_row_is_a_named_plan(suite):
    """The eval suites' rows are what the docs' tables print: each is a plan of its own name."""
    listed = run("plan", "list").output
    for name, _ in SUITES[suite]:
        assert re.fullmatch(r"mar-\d+", name) or re.search(rf"^{re.escape(name)}\s", listed, re.M), name
        r = run("plan", "show", name, "--model", "mar-tiny")
        assert r.exit_code == 0 and f"plan {name}:" in r.output, r.output


def test_an_unknown_name_says_where_the_names_are():
    line = one_line_error(run("plan", "show", "gtr-nope"))
    assert "unknown plan 'gtr-nope'" in line and "gtr-plan list" in line


def test_the_commands_page_lists_every_named_plan():
    from gtr.plan.builders import NAMED
    page = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    assert not [name for name in NAMED if f"`{name}`" not in page]

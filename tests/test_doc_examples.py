"""The examples of the README, docs/, examples/ and every command's --help do not write into one another's folders: a gtr-run --outdir folder
belongs to one run (a second, different run there is refused), so two examples that share a folder
fail for whoever runs both. The same run's workers and its --npz step may share it."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "examples").rglob("*.py"))]
# options that do not change the run (the folder is the key)
SAME_RUN = {"--shard": 1, "--npz": 1, "--device": 1, "--threads": 1, "--backend": 1, "--outdir": 1}


def runs_by_folder(text: str) -> dict[str, set[str]]:
    """{folder: {the runs that write there}} for gtr-run --outdir and Pipeline.save examples."""
    text = text.replace("\\\n", " ")
    found: dict[str, set[str]] = {}
    for m in re.finditer(r"gtr-run [^\s`-][^`\n#]*", text):  # gtr-run BUNDLE ..., not prose about options
        args = m.group(0).split()
        if "--outdir" not in args:
            continue
        run, i = [], 1
        while i < len(args):
            if args[i] in SAME_RUN:
                i += 1 + SAME_RUN[args[i]]
                continue
            run.append(args[i])
            i += 1
        folder = args[args.index("--outdir") + 1]
        found.setdefault(folder.rstrip("/"), set()).add(" ".join(run))
    for m in re.finditer(r"\.save\(\s*[\"']([^\"']+)[\"']\s*,[^\n#]*", text):  # Pipeline.save(folder, classes, ...)
        found.setdefault(m.group(1).rstrip("/"), set()).add(re.sub(r",?\s*shard=\([^)]*\)", "", m.group(0)).strip())
    return found


def test_the_collector_tells_runs_apart():
    text = ("gtr-run a.plan -c 7 -n 16 --outdir samples/ --seed 4\n"
            "`gtr-run a.plan --all-classes -n 50 --outdir fid/ --shard 3/8`\n"
            "gtr-run a.plan --all-classes -n 50 --outdir fid --npz fid.npz\n"
            "pipe.save(\"samples/\", range(10), num_images=50, shard=(0, 4))\n")
    found = runs_by_folder(text)
    assert len(found["fid"]) == 1 and len(found["samples"]) == 2


def _texts():
    """(where, text) of every page and of every command's --help (its examples)."""
    from gtr.cli import main
    from cli_helpers import run
    for page in PAGES:
        yield str(page.relative_to(ROOT)), page.read_text(encoding="utf-8")
    for name in main.commands:
        yield f"gtr-{name} --help", run(name, "--help").output


def test_no_two_examples_share_a_folder():
    owners: dict[str, dict[str, str]] = {}
    for where, text in _texts():
        for folder, runs in runs_by_folder(text).items():
            for run in runs:
                owners.setdefault(folder, {}).setdefault(run, where)
    shared = {folder: runs for folder, runs in owners.items() if len(runs) > 1}
    assert not shared, f"examples that write into the same folder: {shared}"
    assert owners, "no --outdir example found: the collector is broken"

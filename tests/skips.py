"""Strict skips: with GTR_STRICT_SKIPS=1 (as .ci/run sets it) the session fails when a test skips for any
reason other than absent hardware or an absent optional package or tool, so a fresh clone cannot quietly
skip what it should run. conftest.py imports these hooks."""
import os
import re

# What a skip may be about: hardware, optional packages (named with their install command) and tools, the
# official MAR checkout, and a network to reach a package index.
ALLOWED = re.compile(r"\b(GPU|CUDA|NVIDIA|TensorRT|onnxruntime-gpu|Ray|chromium|chromedriver|browser|timm|"
                     r"GTR_OFFICIAL_MAR|CPU affinity|package index)\b|pip install|not installed", re.IGNORECASE)

_skips: list[tuple[str, str]] = []  # (test id, reason)


def _reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _record(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skips.append((report.nodeid, _reason(report)))


def pytest_runtest_logreport(report):
    _record(report)


def pytest_collectreport(report):
    _record(report)


def unexplained_skips() -> list[tuple[str, str]]:
    return [(nodeid, reason) for nodeid, reason in _skips if not ALLOWED.search(reason)]


def _strict() -> bool:
    return os.environ.get("GTR_STRICT_SKIPS") == "1"


def pytest_sessionfinish(session, exitstatus):
    if _strict() and unexplained_skips() and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    bad = unexplained_skips() if _strict() else []
    if bad:
        terminalreporter.section("GTR_STRICT_SKIPS: skips that are not about absent hardware or optional packages",
                                 red=True)
        for nodeid, reason in bad:
            terminalreporter.write_line(f"{nodeid}: {reason}")

"""A compliance run carries nothing it has no use for: the development extras' pytest plugins (property tests,
benchmarks) and pytest-html, whose hooks on every test were a quarter of a 2,000-row run. What a run costs is
measured by unit/bench_scale.py."""

from __future__ import annotations

from conftest import build_org

PROBE = """
import pytest


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    names = ("hypothesispytest", "benchmark", "html")
    loaded = sorted(name for name in names if session.config.pluginmanager.has_plugin(name))
    print(f"PLUGINS {loaded}")
"""


def test_a_compliance_run_leaves_out_the_plugins_it_has_no_use_for(suite, pytester):
    pytester.makepyfile(plugin_probe=PROBE)
    run = suite(build_org(1), "-p", "plugin_probe", "-s")
    assert run.ret == 0, run.stdout + run.stderr
    assert "PLUGINS []" in run.stdout
    # --html names where the suite's own report goes; pytest-html writes none.
    run = suite(build_org(1), "-p", "plugin_probe", "-s", "--html", str(pytester.path / "own.html"))
    assert "PLUGINS []" in run.stdout and "exchange-compliance: " in (pytester.path / "own.html").read_text()

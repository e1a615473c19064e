"""A compliance run carries nothing it has no use for: the development extras' pytest plugins (property tests,
benchmarks), whose hooks on every test were a quarter of a 2,000-row run, and pytest-html anywhere but where it
writes the report (the controller; an xdist worker only sends its reports there). What a run costs is measured by
unit/bench_scale.py."""

from __future__ import annotations

import json

from conftest import build_org

PROBE = """
import json, os

import pytest


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    names = ("hypothesispytest", "benchmark", "html")
    loaded = sorted(name for name in names if session.config.pluginmanager.has_plugin(name))
    where = os.environ.get("PYTEST_XDIST_WORKER", "controller")
    with open(os.path.join(os.environ["PROBE_DIR"], where + ".json"), "w") as out:
        json.dump(loaded, out)
"""


def loaded(pytester) -> dict[str, list[str]]:
    return {path.stem: json.loads(path.read_text()) for path in (pytester.path / "probe").glob("*.json")}


def test_a_compliance_run_leaves_out_the_plugins_it_has_no_use_for(suite, pytester):
    pytester.makepyfile(plugin_probe=PROBE)
    (pytester.path / "probe").mkdir()
    env = {"PROBE_DIR": str(pytester.path / "probe")}
    run = suite(build_org(1), "-p", "plugin_probe", env=env)
    assert run.ret == 0, run.stdout + run.stderr
    assert loaded(pytester) == {"controller": ["html"]}  # pytest-html writes the report, nothing else loaded
    assert "exchange-compliance: " in (run.reports / "latest.html").read_text()
    # Under xdist, pytest-html is the controller's alone; --html names where its report goes.
    run = suite(build_org(1), "-p", "plugin_probe", "-n", "2", "--html", str(pytester.path / "own.html"), env=env)
    assert run.ret == 0, run.stdout + run.stderr
    assert loaded(pytester) == {"controller": ["html"], "gw0": [], "gw1": []}
    assert "exchange-compliance: " in (pytester.path / "own.html").read_text()

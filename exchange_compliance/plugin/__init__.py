"""The pytest plugin: `pytest tests_env --org NAME`.

The controller collects the org's facts once (or reads `--org-snapshot`), writes them as the run's evidence
file, and hands the file to xdist workers, so a parallel run judges exactly the same facts as a serial one.
Tests in tests_env/ are requirements: `@requirement("ID")`, fixtures for the facts, one assertion.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from ..catalog import catalog
from ..facts import Directory, ExchangeServer, Handshake, OrgFacts, ServerProbe, Unavailable
from ..judge.verdict import Verdict
from . import html, results
from .run import RUN, ComplianceRun

VERDICT = pytest.StashKey[Verdict]()


def requirement(requirement_id: str) -> pytest.MarkDecorator:
    """Mark a test as the live check of a catalog requirement."""
    if requirement_id not in catalog():
        raise ValueError(f"{requirement_id} is not in the requirement catalog (exchange_compliance/catalog.toml)")
    return pytest.mark.requirement(requirement_id)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("exchange-compliance")
    group.addoption("--org", help="the org to check: NAME for orgs/NAME.toml, or a path to an org .toml file")
    group.addoption(
        "--org-snapshot", metavar="FILE", help="judge the facts of an evidence file instead of collecting them live"
    )
    group.addoption("--reports-dir", default="reports", help="where reports/<org>/ is written (default: reports)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requirement(id): the catalog requirement a tests_env test checks")
    run = ComplianceRun.from_options(config)
    if run is None:
        return
    config.stash[RUN] = run
    config.pluginmanager.register(run, "exchange-compliance-run")
    # Before pytest-html's own pytest_configure, which reads these: the report is written with no extra flags.
    if not getattr(config.option, "htmlpath", None):
        config.option.htmlpath = str(run.report_dir / "latest.html")
        config.option.self_contained_html = True
    config.pluginmanager.register(html, "exchange-compliance-html")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if RUN not in config.stash and any(item.get_closest_marker("requirement") for item in items):
        raise pytest.UsageError("tests_env checks an org: give --org NAME (orgs/NAME.toml) or --org-snapshot FILE")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "server" not in metafunc.fixturenames or metafunc.definition.get_closest_marker("requirement") is None:
        return
    run = metafunc.config.stash.get(RUN, None)
    servers = run.facts.checked_servers() if run is not None and run.facts is not None else ()
    metafunc.parametrize("server", servers, ids=[s.name for s in servers])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    marker = item.get_closest_marker("requirement")
    if marker is not None and (report.when == "call" or report.outcome != "passed"):
        server = item.callspec.params.get("server") if hasattr(item, "callspec") else None
        row = results.row(marker.args[0], server, report, call, item.stash.get(VERDICT, None))
        report.user_properties.append((results.ROW_KEY, row))
        html.add_evidence(report, row)
    return report


# --- fixtures: the org's facts -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def org(request: pytest.FixtureRequest) -> OrgFacts:
    run = request.config.stash.get(RUN, None)
    if run is None or run.facts is None:
        raise pytest.UsageError("no org: give --org NAME or --org-snapshot FILE")
    return run.facts


@pytest.fixture(scope="session")
def directory(org: OrgFacts) -> Directory:
    return org.directory


@pytest.fixture(scope="session")
def now(org: OrgFacts) -> datetime:
    """The time the facts were collected: certificates are judged as of then, so a replay judges the same."""
    return org.collected_at


@pytest.fixture(scope="session")
def settings(org: OrgFacts) -> dict[str, object]:
    """The org config's judging settings (hybrid, thresholds), as recorded with the facts."""
    return org.settings


@pytest.fixture(scope="session")
def probes(org: OrgFacts) -> dict[str, ServerProbe | Unavailable]:
    return org.probes


@pytest.fixture(scope="session")
def servers(org: OrgFacts) -> tuple[ExchangeServer, ...]:
    """The servers this run checks."""
    return org.checked_servers()


@pytest.fixture
def probe(org: OrgFacts, server: ExchangeServer) -> ServerProbe | Unavailable:
    return org.probes.get(server.name) or Unavailable("winrm", server.name, "the server was not probed")


@pytest.fixture
def handshake(org: OrgFacts, server: ExchangeServer) -> Handshake | Unavailable:
    return org.handshakes.get(server.name) or Unavailable("tls", server.name, "no TLS handshake was made")


@pytest.fixture
def judge(request: pytest.FixtureRequest) -> Callable[[Verdict], Verdict]:
    """Record a verdict for the report (evidence, fix) and return it; a not-applicable verdict skips the row."""

    def record(verdict: Verdict) -> Verdict:
        request.node.stash[VERDICT] = verdict
        if not verdict.applicable:
            pytest.skip(f"not applicable: {verdict.evidence}")
        return verdict

    return record

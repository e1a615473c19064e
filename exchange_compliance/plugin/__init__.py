"""The pytest plugin: `pytest tests_env --org NAME`.

The controller collects the org's facts once (or reads `--org-snapshot`), writes them as the run's evidence
file, and hands the file to xdist workers, so a parallel run judges exactly the same facts as a serial one.
Tests in tests_env/ are requirements: `@requirement("ID")`, fixtures for the facts, one assertion.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from ..catalog import Requirement, catalog, severity_rank
from ..facts import (
    Directory,
    ExchangeServer,
    Handshake,
    JudgingSettings,
    OrgFacts,
    ServerProbe,
    Unavailable,
    Version,
)
from ..judge.verdict import Verdict
from . import html, results, waivers
from .options import add_options
from .reports import ToolOutputs
from .run import RUN, ComplianceRun
from .terminal import failure_text, headline

VERDICT = pytest.StashKey[Verdict]()
DEFAULT_REPORTCHARS = "fE"  # pytest's default for -r
IDLE_PLUGINS = ("hypothesispytest", "benchmark")


def requirement(requirement_id: str) -> pytest.MarkDecorator:
    """Mark a test as the live check of a catalog requirement."""
    if requirement_id not in catalog():
        raise ValueError(f"{requirement_id} is not in the requirement catalog (exchange_compliance/catalog.toml)")
    return pytest.mark.requirement(requirement_id)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requirement(id): the catalog requirement a tests_env test checks")
    run = ComplianceRun.from_config(config)
    if run is None:
        return
    config.stash[RUN] = run
    config.pluginmanager.register(run, "exchange-compliance-run")
    # A compliance run is not a test suite: the development extras' plugins (property tests, benchmarks) have
    # nothing to do in it, and their hooks on every test were a quarter of a 2,000-row run. pytest-html makes the
    # report on the controller alone: an xdist worker has no use for its hooks either.
    for name in (*IDLE_PLUGINS, *(() if run.is_controller else ("html",))):
        if config.pluginmanager.has_plugin(name):
            config.pluginmanager.set_blocked(name)
    if config.option.reportchars == DEFAULT_REPORTCHARS:
        # pytest's short summary would name every failure again, by test function: the failures are said above in
        # the report's words and the verdict line names what blocks. `-r` given on the command line still counts.
        config.option.reportchars = "N"
    if run.listing:
        return  # --collect-only: no verdict, no report (latest.html and latest.xml stay the last run's)
    # Before pytest-html's and junitxml's own pytest_configure, which read these: the report and the JUnit XML are
    # written with no extra flags, into a private directory, then published as reports/<org>/latest.html and .xml.
    if run.is_controller:
        html_loaded = config.pluginmanager.has_plugin("html")
        run.tool_outputs = ToolOutputs.redirect(config.option, html_loaded)
        if html_loaded:
            config.pluginmanager.register(html.ReportHooks(), "exchange-compliance-html")


@pytest.hookimpl(optionalhook=True)
def pytest_metadata(metadata: dict, config: pytest.Config) -> None:
    """pytest-metadata's (pytest-html's environment table, `-v`'s header, an xdist worker's output): the versions
    alone. It would copy a CI system's variables there (BUILD_URL, a token in a URL) and --metadata's values."""
    for key in [key for key in metadata if key not in ("Python", "Platform", "Packages", "Plugins")]:
        del metadata[key]


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> tuple[str, str, str] | None:
    # The terminal counts rows in the suite's words. A row that could not be checked is not listed under FAILURES
    # one by one: the run says each reason once, for all the servers that gave it (terminal.not_checked_lines).
    row = results.row_of(report)
    if row is not None and row.outcome == "waived":
        return "waived", "w", "WAIVED"
    if row is not None and row.outcome == "not_applicable":
        return "not applicable", "n", "N/A"
    if row is not None and row.outcome == "error" and report.failed and not row.details.get("exception"):
        return "not checked", "!", "NOT CHECKED"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if RUN not in config.stash and any(item.get_closest_marker("requirement") for item in items):
        raise pytest.UsageError("tests_env checks an org: give --org NAME (orgs/NAME.toml) or --org-snapshot FILE")
    # The most severe requirements run first, so the report lists their failures first within each result.
    items.sort(key=lambda item: -severity_rank(found.severity) if (found := _requirement_of(item)) else 0)
    run = config.stash.get(RUN, None)
    if run is not None and run.not_checked:
        # Nothing to judge (no DC answered, or no server is checked): the run ends with the reason in its report
        # and exit status 6.
        config.hook.pytest_deselected(items=items[:])
        items.clear()
        return
    if run is not None and run.options.target is None:
        # Requirements about a target version (GATE-02) exist only in a CU gate run.
        gated = [item for item in items if "target_version" in getattr(item, "fixturenames", ())]
        if gated:
            config.hook.pytest_deselected(items=gated)
            items[:] = [item for item in items if item not in gated]


def _requirement_of(item: pytest.Item) -> Requirement | None:
    marker = item.get_closest_marker("requirement")
    return catalog().get(marker.args[0]) if marker else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "server" not in metafunc.fixturenames or metafunc.definition.get_closest_marker("requirement") is None:
        return
    run = metafunc.config.stash.get(RUN, None)
    servers = run.facts.checked_servers() if run is not None and run.facts is not None else ()
    metafunc.parametrize("server", servers, ids=[s.name for s in servers])


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport | None:
    """A requirement's report, made here with its row: no traceback for a verdict or an unavailable fact, so the
    error path costs what the pass path does. None leaves the report to pytest (a check that broke)."""
    requirement_id = _marked(item)
    if requirement_id is None:
        return None
    server = _server_of(item)
    found = catalog()[requirement_id]
    title = headline(requirement_id, server.name if server else None, found.severity, found.title)
    report = results.plain_report(item, call, item.stash.get(VERDICT, None), title)
    if report is not None and (report.when == "call" or report.outcome != "passed"):
        _record_row(item, report, call, requirement_id, server)
    return report


@pytest.hookimpl(wrapper=True, specname="pytest_runtest_makereport")  # pytest registers pytest_* names only
def pytest_runtest_makereport_by_pytest(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """The row of a requirement's report that pytest made (a check that broke, a failing fixture)."""
    report = yield
    requirement_id = _marked(item)
    needs_row = report.when == "call" or report.outcome != "passed"
    if requirement_id is not None and needs_row and results.row_of(report) is None:
        _record_row(item, report, call, requirement_id, _server_of(item))
    return report


def _marked(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("requirement")
    return marker.args[0] if marker is not None else None


def _server_of(item: pytest.Item) -> ExchangeServer | None:
    return item.callspec.params.get("server") if hasattr(item, "callspec") else None


def _record_row(
    item: pytest.Item,
    report: pytest.TestReport,
    call: pytest.CallInfo,
    requirement_id: str,
    server: ExchangeServer | None,
) -> None:
    row = results.from_test(requirement_id, server, report, call, item.stash.get(VERDICT, None))
    run = item.config.stash.get(RUN, None)
    if run is not None:
        row = waivers.apply(row, run.options.waivers, run.today)
    if row.outcome == "waived":
        # A known, acknowledged finding: pytest counts it as an expected failure, so it fails nothing.
        waiver: dict = row.details["waiver"]  # type: ignore[assignment]
        report.outcome = "skipped"
        report.wasxfail = f"waived until {waiver['expires']}: {waiver['justification']}"  # type: ignore[attr-defined]
    if results.is_verdict(call, item.stash.get(VERDICT, None)) and report.when == "call":
        report.longrepr = failure_text(row)  # in the report's words, for the terminal and JUnit alike
    # As a dict: xdist carries user_properties from the workers to the controller.
    report.user_properties.append((results.ROW_KEY, row.as_dict()))
    # On the item, not this report: junitxml takes a test case's properties from its last report.
    for name in ("requirement", "title", "server", "severity", "outcome"):
        item.user_properties.append((name, getattr(row, name) or ""))


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
def settings(org: OrgFacts) -> JudgingSettings:
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


@pytest.fixture(scope="session")
def target_version(request: pytest.FixtureRequest) -> Version:
    """The build a CU gate run checks against (--gate --target-version); tests using it run only then."""
    target = request.config.stash[RUN].options.target
    if target is None:
        raise pytest.UsageError("this requirement needs --gate --target-version")
    return target.version


@pytest.fixture
def judge(request: pytest.FixtureRequest) -> Callable[[Verdict], Verdict]:
    """Record a verdict for the report (evidence, fix) and return it; a not-applicable verdict skips the row."""

    def record(verdict: Verdict) -> Verdict:
        request.node.stash[VERDICT] = verdict
        if not verdict.applicable:
            pytest.skip(f"not applicable: {verdict.evidence}")
        return verdict

    return record

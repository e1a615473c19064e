"""One compliance run, as pytest hooks: a thin coordinator of the modules that do the work.

Registered as a pytest plugin object by exchange_compliance.plugin when `--org` or `--org-snapshot` is given.
options reads the command line; evidence loads the facts (the controller collects them, workers read the
evidence file workers hands them); the rows come from the tests' reports; run_verdict judges the run and sets
its exit status (0 pass, 1 fail, 6 not checked; pytest's 4 for a usage or config error); history reads the
org's earlier runs once, at the start (since last run, each row's failing streak, the trend); reports writes
reports/<org>/, metrics latest.prom, and terminal says it; notify tells someone, last. pytest-html (with
html's hooks) and junitxml write the report and the JUnit XML into a private directory, from which reports
publishes latest.html and latest.xml. A partial run (run_verdict.Selection) writes no latest.prom
and tells nobody, and later runs' history passes it over.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Generator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ..catalog import catalog
from ..config import REPORTS_KEEP
from ..facts import OrgFacts
from . import coverage, evidence, history, metrics, notify, reports, terminal, waivers, workers
from .options import RunOptions, read_options
from .results import Row, row_of, set_row, sort_key
from .run_verdict import JudgedRun, exit_status, fit, judge_rows

# Reports between two freezes of what the garbage collector need not walk again (pytest_collection_finish).
FREEZE_EVERY = 1000


STAMP = "%Y%m%d-%H%M%S"


def run_stamp(started: datetime, report_dir: Path) -> str:
    """The stamp of a run's files: when it started, to the second, and later than every run already in the
    directory. Two runs within one second (a small org takes less) would otherwise write the same files, and the
    second would take the first for no earlier run."""
    stamp = started.strftime(STAMP)
    newest = next(iter(history.stamps(report_dir)), None)
    if newest is not None and newest >= stamp:
        stamp = (datetime.strptime(newest, STAMP) + timedelta(seconds=1)).strftime(STAMP)
    return stamp


class ComplianceRun:
    def __init__(
        self,
        options: RunOptions,
        replayed: OrgFacts | None,
        handoff: workers.Handoff | None,
        listing: bool = False,
    ) -> None:
        self.options = options
        # --collect-only: the tests are listed, nothing is judged, no server is contacted, nothing is written
        self.listing = listing
        self.replayed = replayed  # --org-snapshot's facts, read with the options
        self.handoff = handoff  # on an xdist worker, what the controller sent
        self.started = datetime.now(UTC)
        self.stamp = run_stamp(self.started, options.report_dir) if handoff is None else self.started.strftime(STAMP)
        # Waivers expire by the calendar of whoever runs the suite; workers take the controller's day.
        self.today = handoff.today if handoff is not None else date.today()
        self.loaded = evidence.LoadedFacts(replayed)
        self.history = history.History((), None)  # the org's kept history, read once at the session's start
        self._streaks: dict[history.Key, history.Streak] | None = None
        self.rows: list[Row] = []
        self.broken: list[str] = []  # tests that failed without a requirement row: a bug in tests_env
        self.results_path: Path | None = None  # latest.json, once written
        self.write_error: str | None = None  # the reports could not be written at the end of the run
        self.tool_outputs: reports.ToolOutputs | None = None  # pytest-html's and junitxml's, on the controller
        self._clock = time.monotonic()
        self._reports = 0
        self._judged: JudgedRun | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> ComplianceRun | None:
        found = read_options(config)
        if found is None:
            return None
        options, replayed = found
        handoff = workers.received(config)
        listing = bool(config.option.collectonly)
        if handoff is None:
            coverage.check_whole_directories(config)  # before anything is written
            try:
                if not listing:
                    reports.check_writable(options.report_dir)
            except reports.ReportsError as exc:
                raise pytest.UsageError(str(exc)) from None
        return cls(options, replayed, handoff, listing)

    @property
    def is_controller(self) -> bool:
        return self.handoff is None

    @property
    def facts(self) -> OrgFacts | None:
        return self.loaded.facts

    @property
    def keep(self) -> int:
        """How many runs' files reports/<org>/ keeps: --keep-reports, else the org config's, else the default."""
        return self.options.keep or self.loaded.keep or REPORTS_KEEP

    @property
    def not_checked(self) -> str | None:
        """Why the org could not be checked at all, known before any test: no domain controller answered, or the
        facts name no server to check."""
        facts = self.facts
        return self.loaded.unreachable or (facts.nothing_checked() if facts is not None else None)

    # --- facts ----------------------------------------------------------------------------------------------

    # Not tryfirst: the project's conftest may prepare the org first (the lab), and xdist's own sessionstart,
    # which hands the evidence file to the workers, is trylast.
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.handoff is not None:
            self.loaded = evidence.load_on_worker(self.handoff, self.replayed)
            gc.freeze()  # see pytest_collection_finish
            return
        config = session.config
        if not self.listing:
            passed_over: list[str] = []
            self.history = history.read(self.options.report_dir, self.options.org_name, self.stamp, passed_over)
            for line in passed_over:
                terminal.say(config, line, yellow=True)
        self.loaded = evidence.load(
            self.options,
            self.replayed,
            self.stamp,
            say=lambda message: terminal.say(config, message),
            warn=lambda message: terminal.say(config, message, red=True),
            listing=self.listing,
        )
        gc.freeze()  # see pytest_collection_finish

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # The facts, the collected tests and their reports live as long as the run. Frozen, they are left out of
        # the garbage collector's full passes, which walk every live object each time enough new ones have piled
        # up: with them, a third of a 2,000-row run's CPU time went to those passes. (An xdist controller collects
        # nothing: there, the facts are frozen once loaded and the reports as they come.)
        gc.freeze()

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: object) -> None:
        workers.send(node, self.loaded.evidence_path, self.today)

    # --- results --------------------------------------------------------------------------------------------

    # tryfirst: the report's other readers see the row with its failing streak.
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._reports += 1
        if self._reports % FREEZE_EVERY == 0:
            gc.freeze()  # the reports so far: pytest's terminal and junitxml keep every one to the end
        # On the controller this sees the workers' reports too, with their user_properties.
        if not self.is_controller:
            return
        row = row_of(report)
        if row is not None:
            if self._streaks is None:  # once: the org config's [reports] keep is known by now
                self._streaks = self.history.streaks(self.keep)
            row = history.mark(row, self._streaks, self.started.isoformat())
            set_row(report, row)
            self.rows.append(row)
        elif report.failed:
            self.broken.append(report.nodeid)

    def finish(self) -> JudgedRun:
        """Judge the run (once): the verdict, the waivers' fate, the changes since the last run."""
        if self._judged is not None:
            return self._judged
        options, facts = self.options, self.facts
        unreachable = self.not_checked or (facts.no_server_answered() if facts is not None else None)
        gate = options.target is not None
        expected = expected_rows(facts, gate) if facts is not None else None
        servers = len(facts.checked) if facts is not None else 0
        reasons = dict(facts.unreachable_groups()) if facts is not None else {}
        verdict = judge_rows(self.rows, options.fail_on, gate, self.broken, unreachable, expected, servers, reasons)
        self._judged = JudgedRun(
            org_name=options.org_name,
            display_name=self.loaded.display_name,
            started=self.started,
            duration=time.monotonic() - self._clock,
            target=options.target,
            facts=facts,
            source=options.snapshot_path,
            rows=sorted(self.rows, key=sort_key),
            verdict=verdict,
            line=_line(options.org_name, verdict.line(options.target), whole=self.loaded.unreachable is not None),
            waivers=waivers.status(options.waivers, self.rows, self.today),
            changes=history.compare(previous, self.rows) if (previous := self.history.previous) and facts else None,
            fix_plan=options.report_dir / f"{self.stamp}-fixes.ps1" if facts else None,
            trend=self.history.trend(self.keep, self.started.isoformat(), verdict.status, self.rows),
            insecure=self.loaded.insecure,
        )
        return self._judged

    # The innermost wrapper: after every other plugin's sessionfinish (pytest-html and junitxml write their files
    # there), before the terminal reporter's summary (an outer wrapper) names the published files.
    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None, None, None]:
        yield
        if not self.is_controller or self.listing:
            return
        _without_worker_lines(session.config)
        judged = self.finish()
        try:
            partial = self.history.partial_stamps  # pruned apart
            results = reports.write(
                judged, self.options.report_dir, self.stamp, self.loaded.evidence_path, self.keep, partial
            )
            metrics.write(judged, self.options.report_dir)
            if self.tool_outputs is not None:
                self.tool_outputs.publish(session.config, self.options.report_dir, self.stamp)
            self.results_path = results  # the terminal's lines name the files only once they all are written
        except reports.ReportsError as exc:
            # Said as the run's last line (pytest_unconfigure), not raised: out of this hook, pytest would print
            # it as an INTERNALERROR traceback. Exit 4: the reports directory is the operator's to fix.
            self.write_error = str(exc)
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        session.exitstatus = exit_status(judged, session.exitstatus)

    def pytest_terminal_summary(self, terminalreporter: object, config: pytest.Config) -> None:
        if not self.is_controller or self.results_path is None:
            return
        facts = self.facts
        reasons = dict(facts.unreachable_groups()) if facts is not None else {}
        unchecked = terminal.not_checked_lines(self.rows, len(facts.checked) if facts is not None else 0, reasons)
        if unchecked:
            terminalreporter.write_sep("=", "NOT CHECKED", yellow=True)  # type: ignore[attr-defined]
            for line in unchecked:
                terminalreporter.write_line(line)  # type: ignore[attr-defined]
        unreachable_servers = list(facts.unreachable()) if facts is not None else []
        line = terminal.counts_line(self.options.org_name, self.rows, unreachable_servers, bool(self.not_checked))
        terminalreporter.write_sep("-", terminal.PREFIX + line)  # type: ignore[attr-defined]
        for detail in terminal.detail_lines(self.finish(), config, self.results_path, self.loaded.evidence_path):
            terminalreporter.write_line(detail)  # type: ignore[attr-defined]

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # pytest then collects garbage five times over to report what it finalizes; the run's objects are not
        # garbage until the process ends, so they need not be walked five times more.
        gc.freeze()
        if self.tool_outputs is not None:
            self.tool_outputs.remove()
        if not self.is_controller or (self.results_path is None and self.write_error is None):
            return
        if self.write_error is not None:
            terminal.last_line(config, f"ERROR: {self.write_error}", red=True)
            return
        self.send_notification(config)
        terminal.last_line(config, self.finish().line, bold=True)

    def send_notification(self, config: pytest.Config) -> None:
        """[notify]: tell someone, once every report is written (the message names the report's stamped copy)."""
        report = self.options.report_dir / f"{self.stamp}.html"
        if not report.is_file():  # --html elsewhere: no stamped copy
            report = Path(config.option.htmlpath).resolve() if getattr(config.option, "htmlpath", None) else None
        notify.after_run(
            self.loaded.notify,
            self.finish(),
            self.history.last,
            report.resolve() if report is not None else None,
            say=lambda line: terminal.say(config, line),
            warn=lambda line: terminal.say(config, line, yellow=True),
        )


def _without_worker_lines(config: pytest.Config) -> None:
    """Under xdist, pytest heads each failure with the worker's platform and Python ("[gw0] linux -- Python 3.11"):
    not for a requirement's failure, which is about Exchange. Done once every report is logged (junitxml tells a
    test's reports apart by their worker until then), before the terminal prints the failures."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for report in getattr(reporter, "stats", {}).get("failed", []):
        if row_of(report) is not None:
            vars(report).pop("node", None)


def _line(org: str, said: str, whole: bool) -> str:
    """The run's verdict line, cut to a length whatever the org's size; `whole` for why the directory could not be
    read (each DC listed and why, with what to do): that is the config's length, not the org's, and keeps its advice.
    """
    line = f"{org}: {said}"
    return line if whole else fit(line)


def expected_rows(facts: OrgFacts, gate: bool) -> int:
    """How many rows a run of every requirement gives: one per checked server for a server-scoped requirement, one
    for an org-wide one; a requirement about a CU target only in a gate run. Fewer rows judged is a partial run."""
    servers = len(facts.checked_servers())
    wanted = [r for r in catalog().values() if gate or not r.needs_target]
    return sum(servers if r.scope == "server" else 1 for r in wanted)


RUN = pytest.StashKey[ComplianceRun]()

"""One compliance run: where its facts come from, where its outputs go, the rows it produced and its verdict.

Registered as a pytest plugin object by exchange_compliance.plugin when `--org` or `--org-snapshot` is given.
The controller collects the facts, judges nothing itself, and at the end writes reports/<org>/: latest.json
(+ a timestamped copy), the fix plan, and sets the exit status (0 pass, 1 fail, 6 unreachable; pytest's 4 for
a usage or config error). pytest-html and junitxml write latest.html and latest.xml; their copies are made here.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from .. import __version__, snapshot
from ..collect import collect_org
from ..collect.kerberos import KerberosFailed
from ..collect.ldap import DirectoryError, DirectoryUnreachable
from ..config import REPORTS_KEEP, ConfigError, load_org_config, resolve_org_path
from ..facts import OrgFacts
from ..snapshot import SnapshotError
from . import fixplan, gate, history, results, waivers
from .gate import Target
from .summary import terminal_lines

# Beside pytest's own exit codes (0 passed, 1 failed, 4 usage or config error): nothing could be checked.
EXIT_ORG_UNREACHABLE = 6
WORKER_FACTS_KEY = "exchange_compliance_facts"
WORKER_TODAY_KEY = "exchange_compliance_today"


class ReportsError(Exception):
    """The reports directory cannot be written: one line naming the path."""


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError while writing reports into a ReportsError naming the file (or `path`) and why."""
    try:
        yield
    except OSError as exc:
        where = exc.filename2 or exc.filename or path  # copyfile names the destination second
        raise ReportsError(f"{where}: cannot write the run's reports: {exc.strerror or exc}") from None


def check_writable(folder: Path) -> None:
    """Before anything is collected: a nightly run must not spend its minutes on facts it cannot write."""
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass


@dataclass(frozen=True)
class Outcome:
    """The run, judged: computed once, after the last test, for the JSON, the HTML and the terminal."""

    rows: list[dict]
    verdict: gate.Verdict
    line: str
    waivers: list[waivers.WaiverStatus]
    changes: history.Changes | None
    fix_plan: Path | None
    duration: float

    @property
    def unreachable(self) -> bool:
        return self.verdict.unreachable is not None


class ComplianceRun:
    def __init__(
        self,
        org_name: str,
        config_path: Path | None,
        snapshot_path: Path | None,
        reports: Path,
        *,
        fail_on: str = gate.DEFAULT_FAIL_ON,
        target: Target | None = None,
        waivers_path: Path | None = None,
        keep: int | None = None,
    ) -> None:
        self.org_name = org_name
        self.config_path = config_path
        self.snapshot_path = snapshot_path
        self.report_dir = reports / org_name
        self.fail_on = fail_on
        self.target = target
        self.waivers_path = waivers_path
        self.waivers = waivers.load(waivers_path) if waivers_path else ()
        self.keep = keep
        self.started = datetime.now(UTC)
        self.stamp = self.started.strftime("%Y%m%d-%H%M%S")
        # Waivers expire by the calendar of whoever runs the suite; workers take the controller's day.
        self.today = date.today()
        self.facts: OrgFacts | None = None
        self.display_name: str | None = None  # the org config's, when the facts are collected live
        self.evidence_path: Path | None = None
        self.results_path: Path | None = None
        self.previous: dict | None = None
        self.unreachable_reason: str | None = None
        self.rows: list[dict] = []
        self.broken: list[str] = []  # tests that failed without a requirement row: a bug in tests_env
        self.write_error: str | None = None  # the reports could not be written at the end of the run
        self.is_controller = True
        self._clock = time.monotonic()
        self._outcome: Outcome | None = None

    @classmethod
    def from_options(cls, config: pytest.Config) -> ComplianceRun | None:
        org = config.getoption("org")
        snapshot_option = config.getoption("org_snapshot")
        if not org and not snapshot_option:
            return None
        reports = config.rootpath / config.getoption("reports_dir")
        worker = getattr(config, "workerinput", {})
        config_path = resolve_org_path(org, config.rootpath / "orgs") if org else None
        snapshot_path = Path(snapshot_option) if snapshot_option else None
        keep = config.getoption("keep_reports")
        if keep is not None and keep < 1:
            raise pytest.UsageError("--keep-reports: keep at least 1 run (the current one)")
        try:
            # The evidence file is read once, here: its org names the run, and the same facts are judged.
            replayed = snapshot.read(snapshot_path) if snapshot_path is not None else None
            name = config_path.stem if config_path is not None else replayed.org  # type: ignore[union-attr]
            target = gate.target_from_options(config.getoption("gate"), config.getoption("target_version"))
            orgs = config_path.parent if config_path is not None else config.rootpath / "orgs"
            waivers_path = waivers.locate(config.getoption("waivers"), orgs / f"{name}.waivers.toml")
            run = cls(
                name,
                config_path,
                snapshot_path,
                reports,
                fail_on=config.getoption("fail_on") or gate.DEFAULT_FAIL_ON,
                target=target,
                waivers_path=waivers_path,
                keep=keep,
            )
            run.facts = replayed
            if not worker:
                check_writable(run.report_dir)
        except (SnapshotError, ConfigError, gate.TargetError, ReportsError) as exc:
            raise pytest.UsageError(str(exc)) from None
        if worker:
            # An xdist worker judges the controller's evidence file; none when the org could not be reached.
            run.is_controller = False
            run.snapshot_path = Path(worker[WORKER_FACTS_KEY]) if worker.get(WORKER_FACTS_KEY) else None
            run.today = date.fromisoformat(worker[WORKER_TODAY_KEY])
        return run

    # --- facts ----------------------------------------------------------------------------------------------

    # Not tryfirst: the project's conftest may prepare the org first (the lab), and xdist's own sessionstart,
    # which hands the evidence file to the workers, is trylast.
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.is_controller:
            if self.snapshot_path is None:
                self.unreachable_reason = "the controller could not reach the org"
            elif self.facts is None:  # with --org-snapshot, the facts read in from_options are the evidence's
                self.facts = snapshot.read(self.snapshot_path)
            return
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        passed_over: list[str] = []
        self.previous = history.previous_run(self.report_dir, self.org_name, self.stamp, passed_over)
        if reporter is not None:
            for line in passed_over:
                reporter.write_line(f"exchange-compliance: {line}", yellow=True)
        try:
            self.facts = self._load_facts(session.config)
        except (ConfigError, SnapshotError, ReportsError) as exc:
            raise pytest.UsageError(str(exc)) from None
        except (DirectoryUnreachable, DirectoryError, KerberosFailed) as exc:
            # Not pytest.exit: the session goes on with no test, so the report and latest.json say why, and
            # yesterday's report is not left looking like today's.
            self.unreachable_reason = str(exc)
            if reporter is not None:
                reporter.write_line(f"exchange-compliance: the org could not be checked: {exc}", red=True)

    def _load_facts(self, config: pytest.Config) -> OrgFacts:
        if self.facts is not None:
            facts = self.facts  # --org-snapshot, read in from_options
        else:
            org_config = load_org_config(self.config_path, self.org_name)  # type: ignore[arg-type]
            self.display_name = org_config.display_name
            if self.keep is None:
                self.keep = org_config.reports_keep
            reporter = config.pluginmanager.get_plugin("terminalreporter")

            def progress(message: str) -> None:
                if reporter is not None:
                    reporter.write_line(f"exchange-compliance: {message}")

            facts = collect_org(org_config, progress)
        with writing(self.report_dir):
            self.evidence_path = snapshot.write(facts, self.report_dir / f"{self.stamp}-facts.json")
            shutil.copyfile(self.evidence_path, self.report_dir / "latest-facts.json")
        return facts

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: object) -> None:
        # xdist workers judge the controller's evidence file: the same facts, collected once.
        node.workerinput[WORKER_FACTS_KEY] = str(self.evidence_path or "")  # type: ignore[attr-defined]
        node.workerinput[WORKER_TODAY_KEY] = self.today.isoformat()  # type: ignore[attr-defined]

    # --- results --------------------------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # On the controller this sees the workers' reports too, with their user_properties.
        if not self.is_controller:
            return
        found = [value for key, value in report.user_properties if key == results.ROW_KEY]
        self.rows.extend(found)
        if report.failed and not found:
            self.broken.append(report.nodeid)

    def finish(self) -> Outcome:
        """Judge the run (once): the verdict, the waivers' fate, the changes since the last run."""
        if self._outcome is not None:
            return self._outcome
        unreachable = self.unreachable_reason or (self.facts and self.facts.no_server_answered())
        verdict = gate.judge(self.rows, self.fail_on, self.target is not None, self.broken, unreachable or None)
        self._outcome = Outcome(
            rows=sorted(self.rows, key=results.sort_key),
            verdict=verdict,
            line=f"{self.org_name}: {verdict.line(self.target)}",
            waivers=waivers.status(self.waivers, self.rows, self.today),
            changes=history.compare(self.previous, self.rows) if self.previous and self.facts else None,
            fix_plan=self.report_dir / f"{self.stamp}-fixes.ps1" if self.facts else None,
            duration=time.monotonic() - self._clock,
        )
        return self._outcome

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.is_controller:
            return
        outcome = self.finish()
        try:
            with writing(self.report_dir):
                self._write(outcome)
        except ReportsError as exc:
            # Said as the run's last line (pytest_unconfigure), not raised: out of this hook, pytest would print
            # it as an INTERNALERROR traceback. Exit 4: the reports directory is the operator's to fix.
            self.write_error = str(exc)
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        if outcome.unreachable and session.exitstatus != pytest.ExitCode.INTERRUPTED:
            session.exitstatus = EXIT_ORG_UNREACHABLE
        elif session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            # pytest fails the run on any failed test; the gate fails it only at or above --fail-on.
            session.exitstatus = int(outcome.verdict.failed)

    def _write(self, outcome: Outcome) -> None:
        run = {
            "fail_on": self.fail_on,
            "verdict": {
                "status": "unreachable" if outcome.unreachable else "fail" if outcome.verdict.failed else "pass",
                "line": outcome.line,
                "blocking": [results.where(r) for r in outcome.verdict.blocking] + outcome.verdict.broken,
            },
            "gate": {"target": str(self.target.version), "label": self.target.label} if self.target else None,
            "waivers": [s.as_dict() for s in outcome.waivers],
            "since_last_run": outcome.changes.as_dict() if outcome.changes else None,
            "fix_plan": outcome.fix_plan.name if outcome.fix_plan else None,
        }
        stamped = self.report_dir / f"{self.stamp}.json"
        if self.facts is None:  # the org could not be reached: a document with the reason and no rows
            document = {"schema": results.SCHEMA, "org": self.org_name, "started": self.started.isoformat(), **run}
            results.write({**document, "suite_version": __version__, "rows": []}, stamped)
        else:
            evidence = self.evidence_path.name if self.evidence_path else None
            document = results.document(
                rows=self.rows,
                org=self.facts,
                started=self.started,
                duration=outcome.duration,
                suite_version=__version__,
                evidence=evidence,
                **run,
            )
            results.write(document, stamped)
            text = fixplan.powershell(
                self.rows,
                org=self.org_name,
                started=self.started.isoformat(),
                results_name=stamped.name,
                version=__version__,
            )
            fixplan.write(outcome.fix_plan, text)  # type: ignore[arg-type]
            shutil.copyfile(outcome.fix_plan, self.report_dir / "latest-fixes.ps1")  # type: ignore[arg-type]
        shutil.copyfile(stamped, self.report_dir / "latest.json")
        self.results_path = self.report_dir / "latest.json"
        history.prune(self.report_dir, self.keep or REPORTS_KEEP, self.stamp)

    def pytest_terminal_summary(self, terminalreporter: object, config: pytest.Config) -> None:
        if not self.is_controller or self.results_path is None:
            return
        terminalreporter.write_sep("-", f"exchange-compliance: {self.summary_line()}")  # type: ignore[attr-defined]
        for line in terminal_lines(self, config):
            terminalreporter.write_line(line)  # type: ignore[attr-defined]

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if not self.is_controller or (self.results_path is None and self.write_error is None):
            return
        # pytest-html and junitxml write their files at session finish; keep timestamped copies beside them.
        try:
            with writing(self.report_dir):
                for option, suffix in (("htmlpath", ".html"), ("xmlpath", ".xml")):
                    written = Path(getattr(config.option, option, "") or "")
                    if self.write_error is None and written.is_file() and written.parent == self.report_dir:
                        shutil.copyfile(written, self.report_dir / f"{self.stamp}{suffix}")
        except ReportsError as exc:
            self.write_error = str(exc)
        # The last line of the run, after pytest's own counts: what a change manager or a CI log reader needs.
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if self.write_error is not None:
            line, markup = f"exchange-compliance: ERROR: {self.write_error}", {"red": True}
        else:
            line, markup = f"exchange-compliance: {self.finish().line}", {"bold": True}
        if reporter is not None:
            reporter.write_line(line, **markup)
        else:
            print(line)

    def summary_line(self) -> str:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        unreachable = self.unreachable_servers()
        parts = [f"{n} {outcome}" for outcome, n in sorted(counts.items())]
        if unreachable:
            parts.append(f"unreachable: {', '.join(unreachable)}")
        return f"{self.org_name}: " + ", ".join(parts or ["not checked" if self.unreachable_reason else "no rows"])

    def unreachable_servers(self) -> list[str]:
        return list(self.facts.unreachable()) if self.facts is not None else []


RUN = pytest.StashKey[ComplianceRun]()

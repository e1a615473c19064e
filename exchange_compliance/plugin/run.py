"""One compliance run: where its facts come from, where its outputs go, and the rows it produced.

Registered as a pytest plugin object by exchange_compliance.plugin when `--org` or `--org-snapshot` is given.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from .. import __version__, snapshot
from ..collect import collect_org
from ..collect.ldap import DirectoryError, DirectoryUnreachable
from ..config import ConfigError, load_org_config, resolve_org_path
from ..facts import OrgFacts, Unavailable
from ..snapshot import SnapshotError
from . import results

# Beside pytest's own exit codes (0 passed, 1 failed, 4 usage or config error): nothing could be checked.
EXIT_ORG_UNREACHABLE = 6
WORKER_FACTS_KEY = "exchange_compliance_facts"


class ComplianceRun:
    def __init__(self, org_name: str, config_path: Path | None, snapshot_path: Path | None, reports: Path) -> None:
        self.org_name = org_name
        self.config_path = config_path
        self.snapshot_path = snapshot_path
        self.report_dir = reports / org_name
        self.started = datetime.now(UTC)
        self.stamp = self.started.strftime("%Y%m%d-%H%M%S")
        self.facts: OrgFacts | None = None
        self.evidence_path: Path | None = None
        self.results_path: Path | None = None
        self.rows: list[dict] = []
        self.is_controller = True
        self._clock = time.monotonic()

    @classmethod
    def from_options(cls, config: pytest.Config) -> ComplianceRun | None:
        org = config.getoption("org")
        snapshot_option = config.getoption("org_snapshot")
        if not org and not snapshot_option:
            return None
        reports = config.rootpath / config.getoption("reports_dir")
        worker_facts = getattr(config, "workerinput", {}).get(WORKER_FACTS_KEY)
        config_path = resolve_org_path(org, config.rootpath / "orgs") if org else None
        snapshot_path = Path(snapshot_option) if snapshot_option else None
        if config_path is not None:
            name = config_path.stem
        else:
            try:
                name = snapshot.read(snapshot_path).org  # type: ignore[arg-type]
            except SnapshotError as exc:
                raise pytest.UsageError(str(exc)) from None
        run = cls(name, config_path, snapshot_path, reports)
        if worker_facts:
            run.is_controller = False
            run.snapshot_path = Path(worker_facts)
        return run

    # --- facts ----------------------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        try:
            self.facts = self._load_facts(session.config)
        except (ConfigError, SnapshotError) as exc:
            raise pytest.UsageError(str(exc)) from None
        except (DirectoryUnreachable, DirectoryError) as exc:
            pytest.exit(f"the org could not be checked: {exc}", returncode=EXIT_ORG_UNREACHABLE)

    def _load_facts(self, config: pytest.Config) -> OrgFacts:
        if self.snapshot_path is not None:
            facts = snapshot.read(self.snapshot_path)
            if not self.is_controller:
                return facts
        else:
            org_config = load_org_config(self.config_path, self.org_name)  # type: ignore[arg-type]
            reporter = config.pluginmanager.get_plugin("terminalreporter")

            def progress(message: str) -> None:
                if reporter is not None:
                    reporter.write_line(f"exchange-compliance: {message}")

            facts = collect_org(org_config, progress)
        self.evidence_path = snapshot.write(facts, self.report_dir / f"{self.stamp}-facts.json")
        shutil.copyfile(self.evidence_path, self.report_dir / "latest-facts.json")
        return facts

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: object) -> None:
        # xdist workers judge the controller's evidence file: the same facts, collected once.
        node.workerinput[WORKER_FACTS_KEY] = str(self.evidence_path)  # type: ignore[attr-defined]

    # --- results --------------------------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # On the controller this sees the workers' reports too, with their user_properties.
        if self.is_controller:
            self.rows.extend(value for key, value in report.user_properties if key == results.ROW_KEY)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.is_controller or self.facts is None:
            return
        document = results.document(
            rows=self.rows,
            org=self.facts,
            started=self.started,
            duration=time.monotonic() - self._clock,
            suite_version=__version__,
            evidence=self.evidence_path.name if self.evidence_path else None,
        )
        stamped = self.report_dir / f"{self.stamp}.json"
        results.write(document, stamped)
        shutil.copyfile(stamped, self.report_dir / "latest.json")
        self.results_path = self.report_dir / "latest.json"

    def pytest_terminal_summary(self, terminalreporter: object, config: pytest.Config) -> None:
        if not self.is_controller or self.results_path is None:
            return
        write = terminalreporter.write_line  # type: ignore[attr-defined]
        terminalreporter.write_sep("-", f"exchange-compliance: {self.summary_line()}")  # type: ignore[attr-defined]
        write(f"report:   {config.option.htmlpath}")
        write(f"results:  {self.results_path}")
        write(f"evidence: {self.evidence_path}")

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        # pytest-html writes its file at session finish; keep a timestamped copy beside latest.html.
        html = Path(getattr(config.option, "htmlpath", "") or "")
        if self.is_controller and self.facts is not None and html.is_file():
            shutil.copyfile(html, self.report_dir / f"{self.stamp}.html")

    def summary_line(self) -> str:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        unreachable = self.unreachable_servers()
        parts = [f"{n} {outcome}" for outcome, n in sorted(counts.items())]
        if unreachable:
            parts.append(f"unreachable: {', '.join(unreachable)}")
        return f"{self.org_name}: " + ", ".join(parts or ["no rows"])

    def unreachable_servers(self) -> list[str]:
        if self.facts is None:
            return []
        gone = [*self.facts.probes.values(), *self.facts.handshakes.values()]
        return sorted({u.server for u in gone if isinstance(u, Unavailable)})


RUN = pytest.StashKey[ComplianceRun]()

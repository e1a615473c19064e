"""The run's command-line options, read once into a typed RunOptions; a bad one is a usage error (exit 4)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .. import snapshot
from ..catalog import SEVERITIES
from ..config import REPORTS_KEEP, ConfigError, check_org_name, resolve_org_path
from ..facts import OrgFacts
from ..snapshot import SnapshotError
from . import waivers
from .gate import Target, TargetError, target_from_options
from .reports import ReportsError, report_dir

# The threshold: a run fails (exit 1) on what fails or cannot be checked at or above this severity.
DEFAULT_FAIL_ON = "high"


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("exchange-compliance")
    group.addoption("--org", help="the org to check: NAME for orgs/NAME.toml, or a path to an org .toml file")
    group.addoption(
        "--org-snapshot", metavar="FILE", help="judge the facts of an evidence file instead of collecting them live"
    )
    group.addoption("--reports-dir", default="reports", help="where reports/<org>/ is written (default: reports)")
    group.addoption(
        "--fail-on",
        choices=SEVERITIES,
        help="fail the run (exit 1) when a requirement of this severity or above fails or cannot be checked "
        f"(default: {DEFAULT_FAIL_ON})",
    )
    group.addoption(
        "--gate", action="store_true", help="CU gate: add GATE-02 for --target-version and end with GO / NO-GO"
    )
    group.addoption(
        "--target-version", metavar="BUILD", help='the update to gate: 15.1.2507.6, or a name: "2016 CU23", "SE RTM"'
    )
    group.addoption(
        "--waivers", metavar="FILE", help="the waivers file (default: orgs/<org>.waivers.toml when it exists)"
    )
    group.addoption(
        "--keep-reports",
        type=int,
        metavar="N",
        help=f"keep the files of the newest N runs in reports/<org>/ (default: [reports] keep, else {REPORTS_KEEP})",
    )


@dataclass(frozen=True)
class RunOptions:
    org_name: str  # the org config's file name, or the evidence file's org
    config_path: Path | None  # --org: the org config; None with --org-snapshot
    snapshot_path: Path | None  # --org-snapshot
    report_dir: Path  # reports/<org>/
    fail_on: str  # the threshold
    target: Target | None  # the CU gate's (--gate --target-version)
    waivers_path: Path | None
    waivers: tuple[waivers.Waiver, ...]
    keep: int | None  # --keep-reports; None: the org config's [reports] keep


def read_options(config: pytest.Config) -> tuple[RunOptions, OrgFacts | None] | None:
    """The run's options, and the facts of --org-snapshot; None when neither --org nor --org-snapshot is given.

    The evidence file is read once, here: its org names the run, and the same facts are judged."""
    org = config.getoption("org")
    snapshot_option = config.getoption("org_snapshot")
    if not org and not snapshot_option:
        return None
    keep = config.getoption("keep_reports")
    if keep is not None and keep < 1:
        raise pytest.UsageError("--keep-reports: keep at least 1 run (the current one)")
    config_path = resolve_org_path(org, config.rootpath / "orgs") if org else None
    snapshot_path = Path(snapshot_option) if snapshot_option else None
    try:
        replayed = snapshot.read(snapshot_path) if snapshot_path is not None else None
        name = _org_name(org, config_path, snapshot_path, replayed)
        target = target_from_options(config.getoption("gate"), config.getoption("target_version"))
        orgs = config_path.parent if config_path is not None else config.rootpath / "orgs"
        waivers_path = waivers.locate(config.getoption("waivers"), orgs / f"{name}.waivers.toml")
        options = RunOptions(
            org_name=name,
            config_path=config_path,
            snapshot_path=snapshot_path,
            report_dir=report_dir(config.rootpath / config.getoption("reports_dir"), name),
            fail_on=config.getoption("fail_on") or DEFAULT_FAIL_ON,
            target=target,
            waivers_path=waivers_path,
            waivers=waivers.load(waivers_path) if waivers_path else (),
            keep=keep,
        )
    except (SnapshotError, ConfigError, TargetError, ReportsError) as exc:
        raise pytest.UsageError(str(exc)) from None
    return options, replayed


def _org_name(org: str | None, config_path: Path | None, snapshot_path: Path | None, replayed: OrgFacts | None) -> str:
    """The run's org name, checked wherever it came from: it names reports/<org>/ and the waivers file. The
    evidence file's is checked even when --org names the run: its facts carry it into latest.json."""
    if replayed is not None:
        check_org_name(replayed.org, f"{snapshot_path}: org")
    if config_path is None:
        return replayed.org  # type: ignore[union-attr]
    # --org NAME is orgs/NAME.toml, so the stem is NAME; --org path/to/NAME.toml is named by its file.
    source = "--org" if config_path.stem == org else f"--org {org!r}: the file's name"
    return check_org_name(config_path.stem, source)

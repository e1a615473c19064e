"""Where a run's facts come from: collected live through the org config, or replayed from --org-snapshot; and
the run's evidence file they are written to (<stamp>-facts.json, copied to latest-facts.json).

A directory nobody can reach is not an error here: the run goes on with no test, and its report says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .. import snapshot
from ..config import ConfigError, NotifySettings, OrgConfig, load_org_config
from ..facts import OrgFacts
from ..snapshot import SnapshotError
from .options import RunOptions
from .reports import ReportsError, publish, writing
from .workers import Handoff


@dataclass(frozen=True)
class LoadedFacts:
    facts: OrgFacts | None  # None: the org could not be checked
    evidence_path: Path | None = None  # the evidence file this run wrote (the controller's)
    display_name: str | None = None  # the org config's, when the facts were collected live
    keep: int | None = None  # the org config's [reports] keep, when collected live
    unreachable: str | None = None  # why the org could not be checked: no domain controller answered
    notify: NotifySettings | None = None  # the org config's [notify], when collected live
    insecure: tuple[str, ...] = ()  # the org config's settings that weaken the run's protection, said as warnings


def load(
    options: RunOptions,
    replayed: OrgFacts | None,
    stamp: str,
    say: Callable[[str], None],
    warn: Callable[[str], None],
    listing: bool = False,
) -> LoadedFacts:
    """On the controller: the facts (--org-snapshot's, read with the options, or collected live), written as the
    run's evidence file. A config, evidence or reports directory error is a usage error (exit 4).

    `listing` (--collect-only): the tests are parametrized by server, so the directory is read for the servers'
    names, but no server is contacted and nothing is written."""
    display_name = keep = notify = None
    insecure: tuple[str, ...] = ()
    try:
        if replayed is not None:
            facts = replayed
        else:
            org_config = load_org_config(options.config_path, options.org_name)  # type: ignore[arg-type]
            display_name, keep, notify = org_config.display_name, org_config.reports_keep, org_config.notify
            insecure = org_config.insecure_settings()
            for line in insecure:
                warn(f"warning: {line}")
            collected = _collect(org_config, say, listing)
            if isinstance(collected, str):
                # Not pytest.exit: the session goes on with no test, so the report and latest.json say why, and
                # yesterday's report is not left looking like today's.
                warn(f"the org could not be checked: {collected}")
                return LoadedFacts(
                    None, display_name=display_name, keep=keep, unreachable=collected, notify=notify, insecure=insecure
                )
            facts = collected
        if listing:
            return LoadedFacts(facts, None, display_name, keep)
        with writing(options.report_dir):
            text = snapshot.dumps(facts)
            evidence = publish(options.report_dir / f"{stamp}-facts.json", text)
            publish(options.report_dir / "latest-facts.json", text)
    except (ConfigError, SnapshotError, ReportsError) as exc:
        raise pytest.UsageError(str(exc)) from None
    return LoadedFacts(facts, evidence, display_name, keep, notify=notify, insecure=insecure)


def collect_org(org_config: OrgConfig, say: Callable[[str], None], **options: bool) -> OrgFacts:
    """collect.collect_org. The collectors (ldap3, pywinrm, requests) are imported here, for a live run only: a
    replayed run and every xdist worker judge an evidence file, and importing them was most of such a process's
    start."""
    from ..collect import collect_org as collect

    return collect(org_config, say, **options)


def _collect(org_config: OrgConfig, say: Callable[[str], None], listing: bool) -> OrgFacts | str:
    """The org's facts (`listing`: the servers' names only, none contacted), or why it could not be checked at
    all: no DC bound, the read referred or broken off, the KDC's refusal."""
    from ..collect.kerberos import KerberosFailed
    from ..collect.ldap import DirectoryError, DirectoryUnreachable

    try:
        return collect_org(org_config, say, servers=False) if listing else collect_org(org_config, say)
    except (DirectoryUnreachable, DirectoryError, KerberosFailed) as exc:
        return str(exc)


def load_on_worker(handoff: Handoff, replayed: OrgFacts | None) -> LoadedFacts:
    """On an xdist worker: the controller's evidence file (with --org-snapshot, the same facts, already read)."""
    if handoff.evidence is None:
        return LoadedFacts(None, unreachable="the controller could not reach the org")
    return LoadedFacts(replayed if replayed is not None else snapshot.read(handoff.evidence), handoff.evidence)

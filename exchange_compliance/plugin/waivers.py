"""Waivers: orgs/<org>.waivers.toml acknowledges known findings, each with a justification and an expiry date.

    [[waiver]]
    requirement = "EWS-01"
    server = "EX03"              # or "all"
    justification = "EX03 is being decommissioned (CHG-1234)"
    expires = 2026-03-31         # a TOML date; the waiver holds through that day
    approved_by = "J. Smith, CAB"

A waived row (failed or error) shows as waived and does not fail the run. An expired waiver no longer applies
and is listed as expired; a waiver that matches no row is reported. The file is read strictly, like the org
config (strict_toml.StrictTable): a typo in a nightly job's waivers must stop the run, not waive the wrong thing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path

from ..catalog import catalog
from ..strict_toml import ConfigError, StrictTable, read_toml
from .results import Row

ALL = "all"


@dataclass(frozen=True)
class Waiver:
    number: int  # its position in the file, from 1: how a message names it
    requirement: str
    server: str  # a server name, or "all"
    justification: str
    expires: date
    approved_by: str

    def covers(self, row: Row) -> bool:
        if row.requirement != self.requirement:
            return False
        return self.server == ALL or (row.server or "").lower() == self.server.lower()

    def expired(self, today: date) -> bool:
        return today > self.expires

    @property
    def label(self) -> str:
        target = "every server" if self.server == ALL else self.server
        return f"waiver #{self.number} ({self.requirement} on {target})"

    def as_dict(self) -> dict[str, object]:
        return {
            "requirement": self.requirement,
            "server": self.server,
            "justification": self.justification,
            "expires": self.expires.isoformat(),
            "approved_by": self.approved_by,
        }


def locate(given: str | None, default: Path) -> Path | None:
    """--waivers FILE (which must exist), else the org's default file when there is one."""
    if given:
        if not Path(given).is_file():
            raise ConfigError(f"--waivers {given}: no such file")
        return Path(given)
    return default if default.is_file() else None


def load(path: Path) -> tuple[Waiver, ...]:
    """Every waiver in the file; ConfigError naming the file and the entry when anything is wrong."""
    root = StrictTable(read_toml(path), path, "")
    entries = root.get("waiver", list, [], what="[[waiver]] tables")
    root.finish()
    waivers: list[Waiver] = []
    for number, entry in enumerate(entries, 1):  # type: ignore[arg-type]
        waivers.append(_waiver(entry, path, number))
    seen: dict[tuple[str, str], Waiver] = {}
    for waiver in waivers:
        duplicate = seen.setdefault((waiver.requirement, waiver.server.lower()), waiver)
        if duplicate is not waiver:
            raise ConfigError(f"{path}: {waiver.label}: the same requirement and server as {duplicate.label}")
    return tuple(waivers)


def _waiver(entry: object, path: Path, number: int) -> Waiver:
    name = f"waiver #{number}"
    if isinstance(entry, dict):
        name += f" ({entry.get('requirement', '?')} on {entry.get('server', '?')})"
    section = StrictTable(entry, path, name)
    requirement_id = section.text("requirement")
    requirement = catalog().get(requirement_id)
    if requirement is None:
        raise ConfigError(f"{path}: [{name}] requirement: {requirement_id!r} is not in the requirement catalog")
    server = section.text("server").strip()
    if requirement.scope == "org" and server.lower() != ALL:
        raise ConfigError(f'{path}: [{name}] server: {requirement_id} is checked once for the org: use "all"')
    justification = section.text("justification").strip()
    expires = section.get("expires", date, what="a date (expires = 2026-03-31, unquoted)")
    if isinstance(expires, datetime):  # a TOML datetime is a date too; an expiry is a day, not an instant
        raise ConfigError(f"{path}: [{name}] expires: expected a date without a time, got {expires.isoformat()}")
    approved_by = section.text("approved_by", "").strip()
    section.finish()
    for field, value in (("server", server), ("justification", justification)):
        if not value:
            raise ConfigError(f"{path}: [{name}] {field}: must not be empty")
    return Waiver(number, requirement_id, ALL if server.lower() == ALL else server, justification, expires, approved_by)  # type: ignore[arg-type]


def apply(row: Row, waivers: tuple[Waiver, ...], today: date) -> Row:
    """The row, waived when a current waiver covers it; a named server's waiver wins over an "all" one."""
    if not row.failing:
        return row
    covering = sorted((w for w in waivers if w.covers(row)), key=lambda w: w.server == ALL)
    current = next((w for w in covering if not w.expired(today)), None)
    if current is not None:
        details = {**row.details, "waiver": current.as_dict(), "waived_outcome": row.outcome}
        return replace(row, outcome="waived", details=details)
    if covering:
        return replace(row, details={**row.details, "expired_waiver": covering[0].as_dict()})
    return row


@dataclass(frozen=True)
class WaiverStatus:
    waiver: Waiver
    status: str  # "applied", "expired", "not needed" (it covers rows, none failing), "matches nothing"
    rows: tuple[str, ...]  # the rows it covers: "EWS-01 on EX03"

    def as_dict(self) -> dict[str, object]:
        return {**self.waiver.as_dict(), "status": self.status, "rows": list(self.rows)}


def status(waivers: tuple[Waiver, ...], rows: list[Row], today: date) -> list[WaiverStatus]:
    """What became of each waiver in this run, for the report and the terminal."""
    statuses = []
    for waiver in waivers:
        covered = [row for row in rows if waiver.covers(row)]
        names = tuple(row.where for row in sorted(covered, key=lambda row: row.key))
        if waiver.expired(today):
            state = "expired"
        elif not covered:
            state = "matches nothing"
        elif any((row.details.get("waiver") or {}).get("server") == waiver.server for row in covered):  # type: ignore[union-attr]
            state = "applied"
        else:
            state = "not needed"
        statuses.append(WaiverStatus(waiver, state, names))
    return statuses

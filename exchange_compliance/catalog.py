"""The requirement catalog: ID, title, severity, scope, description and source of every requirement."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    severity: str
    scope: str  # "server" or "org"
    applies_to: str
    description: str
    source: str
    gate: bool = False


@cache
def catalog() -> dict[str, Requirement]:
    data = tomllib.loads(resources.files(__package__).joinpath("catalog.toml").read_text(encoding="utf-8"))
    requirements = {}
    for requirement_id, entry in data.items():
        requirement = Requirement(id=requirement_id, **entry)
        if requirement.severity not in SEVERITIES or requirement.scope not in ("server", "org"):
            raise ValueError(f"catalog.toml: [{requirement_id}] has a bad severity or scope")
        requirements[requirement_id] = requirement
    return requirements


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)

"""What a judge says about one requirement on one server (or the org)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from ..facts import Unavailable

T = TypeVar("T")


@dataclass(frozen=True)
class Verdict:
    """`evidence` says what was found (for a failure: what an admin needs to see to act); `fix` says what to
    run, with the real names filled in; `details` keeps the same evidence as data for the JSON results."""

    met: bool
    evidence: str
    fix: str = ""
    applicable: bool = True
    details: dict[str, object] = field(default_factory=dict)

    @classmethod
    def passed(cls, evidence: str, **details: object) -> Verdict:
        return cls(met=True, evidence=evidence, details=details)

    @classmethod
    def failed(cls, evidence: str, fix: str, **details: object) -> Verdict:
        return cls(met=False, evidence=evidence, fix=fix, details=details)

    @classmethod
    def not_applicable(cls, reason: str) -> Verdict:
        return cls(met=True, evidence=reason, applicable=False)


class FactUnavailable(Exception):
    """A fact a judge needs could not be collected (server unreachable, probe failed): the row is an error.

    `fact` is the Unavailable it stands for, when there is one: the same reason on many servers is then said once.
    """

    def __init__(self, message: str, fact: Unavailable | None = None) -> None:
        super().__init__(message)
        self.fact = fact


def available(fact: T | Unavailable) -> T:
    """The fact itself, or FactUnavailable saying what could not be collected and why (the row is an error)."""
    if isinstance(fact, Unavailable):
        raise FactUnavailable(fact.text, fact)
    return fact

"""The gate: which rows fail the run (exit 1), and the CU gate's one GO / NO-GO line.

A row blocks when it failed or could not be checked (error) at or above the `--fail-on` severity (default
high): a requirement nobody could check is not known to be met, so an error blocks like a failure. Waived rows
never block. With `--gate`, a gate requirement (GATE-01, GATE-02) blocks whatever its severity: it is what
makes a cumulative update fail or break the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..builds import CU_BUILDS, cu_name, parse_build
from ..catalog import catalog, severity_rank
from ..facts import Version
from .results import FAILING, is_warning, sort_key, where

DEFAULT_FAIL_ON = "high"
_BUILD = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:\.(\d+))?")
_NAME = re.compile(r"(?:exchange\s*)?(2013|2016|2019)\s*(RTM|SP1|CU\s*\d+)", re.IGNORECASE)


class TargetError(ValueError):
    """A --target-version that is neither a build nor a known CU name."""


@dataclass(frozen=True)
class Target:
    version: Version
    label: str  # "Exchange 2016 CU23 (15.1.2507.6)"


def parse_target(text: str) -> Target:
    """`15.1.2507.6` or a CU name such as `2016 CU23` / `Exchange 2019 CU14`."""
    text = text.strip()
    if match := _BUILD.fullmatch(text):
        major, minor, build, revision = match.groups()
        version = Version(int(major), int(minor), int(build), int(revision) if revision else None)
        if (version.major, version.minor) not in ((15, 0), (15, 1), (15, 2)):
            raise TargetError(f"--target-version {text}: not an Exchange 2013/2016/2019 build (15.0, 15.1 or 15.2)")
        name = cu_name(version)
        return Target(version, f"{version.product}{f' {name}' if name else ''} ({version})")
    if match := _NAME.fullmatch(text):
        product, cu = match.group(1), re.sub(r"\s+", "", match.group(2)).upper()
        build = CU_BUILDS[product].get(cu)
        if build is not None:
            return Target(parse_build(build), f"Exchange {product} {cu} ({build})")
        known = ", ".join(CU_BUILDS[product])
        raise TargetError(f"--target-version {text!r}: Exchange {product} has no {cu}; known: {known}")
    raise TargetError(
        f"--target-version {text!r}: give a build (15.1.2507.6) or a CU name (2013 CU23, 2016 CU23, 2019 CU15)"
    )


def target_from_options(gate_mode: bool, text: str | None) -> Target | None:
    """--gate and --target-version go together."""
    if gate_mode and not text:
        raise TargetError("--gate needs --target-version: a build (15.1.2507.6) or a CU name (2016 CU23)")
    if text and not gate_mode:
        raise TargetError("--target-version is for the CU gate: add --gate")
    return parse_target(text) if text else None


def blocks(row: dict, fail_on: str, gate: bool) -> bool:
    if row["outcome"] not in FAILING:
        return False
    if gate and catalog()[row["requirement"]].gate:
        return True
    return severity_rank(row["severity"]) >= severity_rank(fail_on)


@dataclass(frozen=True)
class Verdict:
    """The run's verdict: what blocks, what is below the threshold, warnings; and the exit status."""

    fail_on: str
    blocking: list[dict]
    below: list[dict]  # failing rows under the threshold: shown, not blocking
    warnings: list[dict]
    broken: list[str] = field(default_factory=list)  # tests that failed outside any requirement (a suite bug)
    unreachable: str | None = None  # why the org could not be checked at all

    @property
    def failed(self) -> bool:
        return bool(self.blocking or self.broken)

    def line(self, target: Target | None = None) -> str:
        """One line: PASS / FAIL, or with a target GO / NO-GO, naming what blocks."""
        good, bad = ("GO", "NO-GO") if target else ("PASS", "FAIL")
        subject = f" {target.label}" if target else ""
        if self.unreachable:
            return f"{bad if target else 'NOT CHECKED'}{subject}: the org could not be checked: {self.unreachable}"
        if self.failed:
            names = [f"{where(r)} ({r['severity']}, {r['outcome']})" for r in self.blocking]
            names += [f"{nodeid} (a check broke outside any requirement)" for nodeid in self.broken]
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            return f"{bad}{subject}: {len(names)} blocking at or above {self.fail_on}: {shown}"
        notes = [f"nothing fails at or above {self.fail_on}"]
        if self.below:
            notes.append(f"{len(self.below)} below it")
        if self.warnings:
            notes.append("warning: " + ", ".join(where(r) for r in self.warnings))
        return f"{good}{subject}: " + "; ".join(notes)


def judge(rows: list[dict], fail_on: str, gate: bool, broken: list[str], unreachable: str | None) -> Verdict:
    rows = sorted(rows, key=sort_key)
    blocking = [r for r in rows if blocks(r, fail_on, gate)]
    below = [r for r in rows if r["outcome"] in FAILING and r not in blocking]
    return Verdict(fail_on, blocking, below, [r for r in rows if is_warning(r)], broken, unreachable)

"""The gate: which rows fail the run (exit 1), and the CU gate's one GO / NO-GO line.

A row blocks when it failed or could not be checked (error) at or above the `--fail-on` severity (default
high): a requirement nobody could check is not known to be met, so an error blocks like a failure. Waived rows
never block. With `--gate`, a gate requirement (GATE-01, GATE-02) blocks whatever its severity: it is what
makes a cumulative update fail or break the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..catalog import catalog, severity_rank
from ..facts import Version
from .results import FAILING, is_warning, sort_key, where

DEFAULT_FAIL_ON = "high"
# Builds of the cumulative updates (Microsoft's "Exchange Server build numbers and release dates").
CU_BUILDS: dict[str, dict[str, str]] = {
    "2013": {
        "RTM": "15.0.516.32", "CU1": "15.0.620.29", "CU2": "15.0.712.24", "CU3": "15.0.775.38",
        "SP1": "15.0.847.32", "CU5": "15.0.913.22", "CU6": "15.0.995.29", "CU7": "15.0.1044.25",
        "CU8": "15.0.1076.9", "CU9": "15.0.1104.5", "CU10": "15.0.1130.7", "CU11": "15.0.1156.6",
        "CU12": "15.0.1178.4", "CU13": "15.0.1210.3", "CU14": "15.0.1236.3", "CU15": "15.0.1263.5",
        "CU16": "15.0.1293.2", "CU17": "15.0.1320.4", "CU18": "15.0.1347.2", "CU19": "15.0.1365.1",
        "CU20": "15.0.1367.3", "CU21": "15.0.1395.4", "CU22": "15.0.1473.3", "CU23": "15.0.1497.2",
    },
    "2016": {
        "RTM": "15.1.225.42", "CU1": "15.1.396.30", "CU2": "15.1.466.34", "CU3": "15.1.544.27",
        "CU4": "15.1.669.32", "CU5": "15.1.845.34", "CU6": "15.1.1034.26", "CU7": "15.1.1261.35",
        "CU8": "15.1.1415.2", "CU9": "15.1.1466.3", "CU10": "15.1.1531.3", "CU11": "15.1.1591.10",
        "CU12": "15.1.1713.5", "CU13": "15.1.1779.2", "CU14": "15.1.1847.3", "CU15": "15.1.1913.5",
        "CU16": "15.1.1979.3", "CU17": "15.1.2044.4", "CU18": "15.1.2106.2", "CU19": "15.1.2176.2",
        "CU20": "15.1.2242.4", "CU21": "15.1.2308.8", "CU22": "15.1.2375.7", "CU23": "15.1.2507.6",
    },
    "2019": {
        "RTM": "15.2.221.12", "CU1": "15.2.330.5", "CU2": "15.2.397.3", "CU3": "15.2.464.5",
        "CU4": "15.2.529.5", "CU5": "15.2.595.3", "CU6": "15.2.659.4", "CU7": "15.2.721.2",
        "CU8": "15.2.792.3", "CU9": "15.2.858.5", "CU10": "15.2.922.7", "CU11": "15.2.986.5",
        "CU12": "15.2.1118.7", "CU13": "15.2.1258.12", "CU14": "15.2.1544.4", "CU15": "15.2.1748.10",
    },
}  # fmt: skip
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
        name = next((f" {cu}" for cu, b in CU_BUILDS[version.product[-4:]].items() if _same_cu(b, version)), "")
        return Target(version, f"{version.product}{name} ({version})")
    if match := _NAME.fullmatch(text):
        product, cu = match.group(1), re.sub(r"\s+", "", match.group(2)).upper()
        build = CU_BUILDS[product].get(cu)
        if build is not None:
            return Target(parse_target(build).version, f"Exchange {product} {cu} ({build})")
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


def _same_cu(build: str, version: Version) -> bool:
    major, minor, number = (int(part) for part in build.split(".")[:3])
    return (major, minor, number) == (version.major, version.minor, version.build)


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

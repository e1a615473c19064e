"""The CU gate's target: `--gate --target-version BUILD|NAME`, before a cumulative update is installed.

A gate run adds GATE-02 for the target, ends with GO / NO-GO (run_verdict.RunVerdict.line), and its gate
requirements (GATE-01, GATE-02) block whatever their severity. "Gate" means this and only this; the severity at
which a run fails is the threshold, `--fail-on`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..builds import CU_BUILDS, cu_name, parse_build
from ..facts import Version

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

"""The CU gate's target: `--gate --target-version BUILD|NAME`, before a cumulative update is installed.

A gate run adds GATE-02 for the target, ends with GO / NO-GO (run_verdict.RunVerdict.line), and its gate
requirements (GATE-01, GATE-02) block whatever their severity. "Gate" means this and only this; the severity at
which a run fails is the threshold, `--fail-on`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..builds import CU_BUILDS, UPDATE_BUILDS, parse_build, release_name
from ..facts import Version

_BUILD = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:\.(\d+))?")
_NAME = re.compile(
    r"(?:exchange\s*)?(2013|2016|2019|SE)\s*(RTM|SP1|CU\s*\d+)(?:\s*([a-z]{3}\d\d[sh]u(?:v\d+)?))?", re.IGNORECASE
)


class TargetError(ValueError):
    """A --target-version that is neither a build nor a known CU name."""


@dataclass(frozen=True)
class Target:
    version: Version
    label: str  # "Exchange 2016 CU23 (15.1.2507.6)"


def parse_target(text: str) -> Target:
    """`15.1.2507.6`, or a release name such as `2016 CU23`, `Exchange 2019 CU14`, `SE RTM`, `2019 CU15 Feb26SU`.
    A build the table does not know (a later CU) is a target too, named by its product and number."""
    text = text.strip()
    if _BUILD.fullmatch(text):
        version = parse_build(text)
        if version.major < 15:
            raise TargetError(f"--target-version {text}: not an Exchange 2013 or later build (15.0 and up)")
        return Target(version, f"{release_name(version)} ({version})")
    if match := _NAME.fullmatch(text):
        product, cu = match.group(1).upper(), re.sub(r"\s+", "", match.group(2)).upper()
        build = CU_BUILDS[product].get(cu)
        if build is None:
            known = ", ".join(CU_BUILDS[product])
            raise TargetError(
                f"--target-version {text!r}: Exchange {product} has no {cu}; known: {known} (for one the suite's "
                "table lacks, give its build number)"
            )
        if update := match.group(3):
            updates = UPDATE_BUILDS.get((product, cu), {})
            build = next((b for name, b in updates.items() if name.lower() == update.lower()), None)
            if build is None:
                raise TargetError(
                    f"--target-version {text!r}: Exchange {product} {cu} has no update {update}; known: "
                    f"{', '.join(updates) or 'none'} (for one the suite's table lacks, give its build number)"
                )
        version = parse_build(build)
        return Target(version, f"{release_name(version)} ({version})")
    raise TargetError(
        f"--target-version {text!r}: give a build (15.1.2507.6) or a release name (2016 CU23, 2019 CU15, SE RTM)"
    )


def target_from_options(gate_mode: bool, text: str | None) -> Target | None:
    """--gate and --target-version go together."""
    if gate_mode and not text:
        raise TargetError("--gate needs --target-version: a build (15.1.2507.6) or a CU name (2016 CU23)")
    if text and not gate_mode:
        raise TargetError("--target-version is for the CU gate: add --gate")
    return parse_target(text) if text else None

"""Exchange builds: each cumulative update's build number, by product and name, and the names of the builds.

The one table: the CU gate's target names (--target-version "2016 CU23", "SE RTM"), the builds GATE-02 knows about
(judge/cu_gate.py) and the report's names of the servers' builds all read it. Each build was read in at least one
of these sources:
- Microsoft Learn, "Exchange Server build numbers and release dates", through its public source
  MicrosoftDocs/OfficeDocs-Exchange as of July 2021: every RTM, 2013 SP1 and CU up to 2016 CU21 and 2019 CU10
  (the page's later edits are not public);
- the build dictionary of Microsoft's CSS-Exchange, which HealthChecker uses (Shared/Get-ExchangeBuildVersion
  Information.ps1, commit f88378b of April 2026): every CU of 2013, 2016 and 2019 (2013 SP1 as its "CU4"),
  Exchange SE RTM (15.2.2562.17; also "Exchange Server SE RTM has Build Number 15.2.2562.17" in samuraj-cz.com's
  "Exchange Server 2016 to Subscription Edition (SE) migration", part 1) and the updates in UPDATE_BUILDS.
  Exchange SE had no CU there yet: a later one is a target by its build number, named by its product.
"""

from __future__ import annotations

from .facts import Version

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
    "SE": {"RTM": "15.2.2562.17"},
}  # fmt: skip
# Security (SU) and hotfix (HU) updates of the releases a gate targets today, by the names Microsoft gives them:
# an update raises only the revision of its CU's build.
UPDATE_BUILDS: dict[tuple[str, str], dict[str, str]] = {
    ("2019", "CU15"): {
        "Apr25HU": "15.2.1748.24", "May25HU": "15.2.1748.26", "Aug25SU": "15.2.1748.36", "Sep25HU": "15.2.1748.37",
        "Oct25SU": "15.2.1748.39", "Dec25SU": "15.2.1748.42", "Feb26SU": "15.2.1748.43",
    },
    ("SE", "RTM"): {
        "Aug25SU": "15.2.2562.20", "Sep25HU": "15.2.2562.27", "Oct25SU": "15.2.2562.29", "Dec25SU": "15.2.2562.35",
        "Feb26SU": "15.2.2562.37",
    },
}  # fmt: skip


def parse_build(text: str) -> Version:
    """`15.1.1034.26` (or `15.1.1034`) as a Version; ValueError when it is not one."""
    parts = [int(part) for part in text.split(".")]
    if len(parts) not in (3, 4):
        raise ValueError(f"not a build number: {text!r}")
    return Version(*parts)


def release(product: str, name: str) -> Version:
    """The build of a named release: release("2016", "CU6") is 15.1.1034.26."""
    return parse_build(CU_BUILDS[product][name])


def cu_name(version: Version) -> str | None:
    """The name of the release a build belongs to ("CU23" for 15.1.2507.39, a CU23 security update), if known:
    the revision does not count."""
    for name, build in CU_BUILDS.get(version.product.removeprefix("Exchange "), {}).items():
        known = parse_build(build)
        if (known.major, known.minor, known.build) == (version.major, version.minor, version.build):
            return name
    return None


def update_name(version: Version) -> str | None:
    """The security or hotfix update a whole build number is ("Feb26SU" for 15.2.2562.37), if the table has it."""
    product, cu = version.product.removeprefix("Exchange "), cu_name(version)
    updates = UPDATE_BUILDS.get((product, cu), {}) if cu else {}
    return next((name for name, build in updates.items() if parse_build(build) == version), None)


def release_name(version: Version) -> str:
    """What a build is called: "Exchange SE RTM", "Exchange 2019 CU15 Feb26SU"; a build the table does not know (a
    later CU) by its product alone, "Exchange SE": the product comes from the build number, never from the
    version's first two parts alone."""
    return " ".join(part for part in (version.product, cu_name(version), update_name(version)) if part)

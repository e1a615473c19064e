"""What the lab and the suite's own tests open on this machine, and the Debian package that brings each.

`lab up` checks the lab's part before it starts anything; `scripts/setup` checks everything after installing,
so a package that an install left out (samba-ad-dc without its recommended samba-ad-provision) is one line
naming it, not a Samba traceback ten steps later. Checked by what is opened, not by what dpkg says: a file
removed by hand or a package half-installed counts as missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-samba lives there, not in the project's python
PROVISION_SCHEMA = Path("/usr/share/samba/setup/ad-schema/AD_DS_Attributes__Windows_Server_2012_R2.ldf")
DSDB_MODULES = "/usr/lib/*/samba/ldb/samba_dsdb.so"


@dataclass(frozen=True)
class Prerequisite:
    what: str  # what is opened, as the line names it
    package: str  # the Debian package that brings it
    needed_by: str  # "lab" (lab up) or "tests" (the suite's own tests beside the lab)
    present: Callable[[], bool]


def _program(name: str) -> Callable[[], bool]:
    return lambda: shutil.which(name) is not None


def _imports(python: str, module: str) -> Callable[[], bool]:
    def check() -> bool:
        if not Path(python).exists():
            return False
        done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=60)
        return done.returncode == 0

    return check


def _glob(pattern: str) -> Callable[[], bool]:
    return lambda: any(Path("/").glob(pattern.lstrip("/")))


PREREQUISITES = (
    Prerequisite("samba (the AD DC daemon)", "samba", "lab", _program("samba")),
    Prerequisite("samba-tool", "samba-common-bin", "lab", _program("samba-tool")),
    Prerequisite(f"Samba's provisioning files ({PROVISION_SCHEMA})", "samba-ad-provision", "lab",
                 lambda: PROVISION_SCHEMA.exists()),
    Prerequisite(f"Samba's directory modules ({DSDB_MODULES})", "samba-dsdb-modules", "lab", _glob(DSDB_MODULES)),
    Prerequisite(f"Samba's python bindings ({SYSTEM_PYTHON} -c 'import samba.samdb')", "python3-samba", "lab",
                 _imports(SYSTEM_PYTHON, "samba.samdb")),
    Prerequisite("kinit (Kerberos client)", "krb5-user", "lab", _program("kinit")),
    Prerequisite("chromium (the report opened in a real browser)", "chromium", "tests", _program("chromium")),
    Prerequisite("libfaketime (the Kerberos clock skew test)", "faketime", "tests",
                 _glob("/usr/lib/*/faketime/libfaketime.so.1")),
)  # fmt: skip


def missing(needed_by: tuple[str, ...] = ("lab", "tests")) -> list[Prerequisite]:
    return [p for p in PREREQUISITES if p.needed_by in needed_by and not p.present()]


def line(prerequisite: Prerequisite) -> str:
    return f"{prerequisite.what} is missing: apt-get install {prerequisite.package}"


def main() -> int:
    """`python -m exchange_compliance.lab.prerequisites`: one line per missing piece; exit 1 if any."""
    absent = missing()
    for prerequisite in absent:
        print(f"setup: {line(prerequisite)}", file=sys.stderr)
    return 1 if absent else 0


if __name__ == "__main__":
    sys.exit(main())

"""The layers stay apart: the judges are pure functions over the facts and load no collector or network library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import exchange_compliance.judge

REPO = Path(__file__).resolve().parents[1]
IO_LIBRARIES = ("ldap3", "winrm", "requests", "urllib3")


def test_importing_every_judge_loads_no_io_library():
    judges = sorted(
        f"exchange_compliance.judge.{path.stem}"
        for path in Path(exchange_compliance.judge.__file__).parent.glob("*.py")
        if path.stem != "__init__"
    )
    assert "exchange_compliance.judge.rights" in judges and "exchange_compliance.judge.auth" in judges
    # A fresh interpreter: this one has loaded the collectors already, for other tests.
    script = (
        "import importlib, json, sys\n"
        f"for name in {judges!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {IO_LIBRARIES!r})))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('exchange_compliance.collect'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env={"PYTHONPATH": str(REPO)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    io_modules, collectors = (json.loads(line) for line in done.stdout.splitlines())
    assert io_modules == []
    assert collectors == []

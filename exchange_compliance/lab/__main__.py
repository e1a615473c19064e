"""python -m exchange_compliance.lab up [--scenario NAME | --scenario-file FILE] [--servers N] | down | status"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .control import LabError, down, status, up
from .scenario import scenario_names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exchange_compliance.lab", description="The lab Exchange org.")
    parser.add_argument("--root", default=os.environ.get("EXCOMP_LAB_ROOT", ".lab"), help="lab state (default .lab)")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="bring the lab org up (restarting it if it runs)")
    which = start.add_mutually_exclusive_group()
    which.add_argument("--scenario", help=f"a shipped scenario: {', '.join(scenario_names())} (default healthy)")
    which.add_argument("--scenario-file", help="a scenario TOML file")
    start.add_argument("--servers", type=int, help="replace the scenario's servers with N generated healthy ones")
    commands.add_parser("down", help="stop the processes the lab started")
    commands.add_parser("status", help="say whether the lab runs, and what")
    arguments = parser.parse_args(argv)
    root = Path(arguments.root)
    try:
        if arguments.command == "up":
            up(root, arguments.scenario, arguments.scenario_file, arguments.servers)
        elif arguments.command == "down":
            down(root)
        else:
            state = status(root)
            print(json.dumps(state, indent=1) if state else "the lab is not running")
            return 0 if state else 3
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

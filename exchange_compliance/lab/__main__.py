"""python -m exchange_compliance.lab up [--scenario NAME | --scenario-file FILE] [--servers N [--latency-ms MS]
[--probe-seconds S]] | down | status"""

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
    start.add_argument(
        "--latency-ms", type=int, default=0, help="with --servers: each server's delay before every response"
    )
    start.add_argument(
        "--probe-seconds",
        type=float,
        default=0.0,
        help="with --servers: how long the probe runs on each server (a real one takes seconds)",
    )
    commands.add_parser("down", help="stop the processes the lab started")
    commands.add_parser("status", help="say whether the lab runs, and what")
    arguments = parser.parse_args(argv)
    root = Path(arguments.root)
    if arguments.command == "up":
        if not arguments.servers and (arguments.latency_ms or arguments.probe_seconds):
            parser.error("--latency-ms and --probe-seconds go with --servers N (a scenario sets them per server)")
        if arguments.latency_ms < 0 or arguments.probe_seconds < 0:
            parser.error("--latency-ms and --probe-seconds must be at least 0")
    try:
        if arguments.command == "up":
            up(
                root,
                arguments.scenario,
                arguments.scenario_file,
                arguments.servers,
                latency_ms=arguments.latency_ms,
                probe_seconds=arguments.probe_seconds,
            )
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

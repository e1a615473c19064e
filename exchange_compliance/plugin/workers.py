"""The xdist protocol: the controller hands each worker the run's evidence file and its day.

The controller collects the facts once and writes them as the evidence file; every worker judges that file, so
a parallel run judges exactly the facts of a serial one. The day travels too: waivers expire by the calendar of
whoever runs the suite, and a worker started after midnight must not disagree with the controller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

FACTS_KEY = "exchange_compliance_facts"
TODAY_KEY = "exchange_compliance_today"


@dataclass(frozen=True)
class Handoff:
    evidence: Path | None  # None: the controller could not reach the org
    today: date


def send(node: object, evidence: Path | None, today: date) -> None:
    """On the controller, for pytest_configure_node: what the worker `node` will receive."""
    node.workerinput[FACTS_KEY] = str(evidence or "")  # type: ignore[attr-defined]
    node.workerinput[TODAY_KEY] = today.isoformat()  # type: ignore[attr-defined]


def received(config: pytest.Config) -> Handoff | None:
    """On a worker, what the controller sent; None on the controller (or in a run without xdist)."""
    worker = getattr(config, "workerinput", None)
    if worker is None:
        return None
    evidence = Path(worker[FACTS_KEY]) if worker.get(FACTS_KEY) else None
    return Handoff(evidence, date.fromisoformat(worker[TODAY_KEY]))

"""reports/<org>/: latest.json and the fix plan with their timestamped copies, copies of pytest-html's and
junitxml's files, and pruning old runs. A directory that cannot be written is one line naming the path (exit 4).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .. import __version__
from . import fixplan, history, results
from .run_verdict import JudgedRun


class ReportsError(Exception):
    """The reports directory cannot be written: one line naming the path."""


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError while writing reports into a ReportsError naming the file (or `path`) and why."""
    try:
        yield
    except OSError as exc:
        where = exc.filename2 or exc.filename or path  # copyfile names the destination second
        raise ReportsError(f"{where}: cannot write the run's reports: {exc.strerror or exc}") from None


def check_writable(folder: Path) -> None:
    """Before anything is collected: a nightly run must not spend its minutes on facts it cannot write."""
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass


def publish(path: Path, data: bytes | str) -> Path:
    """Write `path` whole or not at all: a temporary file beside it, renamed over it (os.replace). A reader (a
    node_exporter scrape of latest.prom, a tool polling latest.json) sees the old file or the new one, never half."""
    content = data.encode("utf-8") if isinstance(data, str) else data
    # Named so that no reader's pattern takes it for the file (node_exporter reads *.prom only).
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # Created through the umask like any other report (mkstemp's 0600 would hide it from node_exporter,
        # which runs as another user).
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(descriptor, "wb") as out:
            out.write(content)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write(judged: JudgedRun, report_dir: Path, stamp: str, evidence: Path | None, keep: int) -> Path:
    """latest.json and <stamp>.json, the fix plan (when there are facts), then pruning; returns latest.json."""
    with writing(report_dir):
        verdict = judged.verdict
        run = {
            "fail_on": verdict.fail_on,
            "verdict": {
                "status": verdict.status,
                "line": judged.line,
                "blocking": [row.where for row in verdict.blocking] + verdict.broken,
            },
            "gate": {"target": str(judged.target.version), "label": judged.target.label} if judged.target else None,
            "waivers": [s.as_dict() for s in judged.waivers],
            "since_last_run": judged.changes.as_dict() if judged.changes else None,
            "fix_plan": judged.fix_plan.name if judged.fix_plan else None,
        }
        stamped = report_dir / f"{stamp}.json"
        if judged.facts is None:  # the org could not be reached: a document with the reason and no rows
            started = judged.started.isoformat()
            document = {"schema": results.SCHEMA, "org": judged.org_name, "started": started, **run}
            results.write({**document, "suite_version": __version__, "rows": []}, stamped)
        else:
            document = results.document(
                rows=judged.rows,
                org=judged.facts,
                started=judged.started,
                duration=judged.duration,
                suite_version=__version__,
                evidence=evidence.name if evidence else None,
                **run,
            )
            results.write(document, stamped)
            text = fixplan.powershell(
                judged.rows,
                org=judged.org_name,
                started=judged.started.isoformat(),
                results_name=stamped.name,
                version=__version__,
            )
            fixplan.write(judged.fix_plan, text)  # type: ignore[arg-type]
            shutil.copyfile(judged.fix_plan, report_dir / "latest-fixes.ps1")  # type: ignore[arg-type]
        shutil.copyfile(stamped, report_dir / "latest.json")
        history.prune(report_dir, keep, stamp)
    return report_dir / "latest.json"


def copy_stamped(config: pytest.Config, report_dir: Path, stamp: str) -> None:
    """Timestamped copies of latest.html and latest.xml, which pytest-html and junitxml write at session finish."""
    with writing(report_dir):
        for option, suffix in (("htmlpath", ".html"), ("xmlpath", ".xml")):
            written = Path(getattr(config.option, option, "") or "")
            if written.is_file() and written.parent == report_dir:
                shutil.copyfile(written, report_dir / f"{stamp}{suffix}")

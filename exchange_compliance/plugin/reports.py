"""reports/<org>/: latest.json and the fix plan with their timestamped copies, pytest-html's and junitxml's files
published beside them, and pruning old runs. A directory that cannot be written is one line naming the path
(exit 4).

Every file lands by publish(): written whole to a temporary file in the same directory, then renamed over its
name. A latest.* (or a stamped name) that someone made a symlink is replaced, never written through, and a reader
never sees half a file. pytest-html and junitxml write into a private temporary directory (ToolOutputs), from
which their files are published the same way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


def report_dir(root: Path, org: str) -> Path:
    """reports/<org>/, which must resolve inside the reports root: a reports/<org> that is a symlink to elsewhere
    would have the run write, and prune, there."""
    folder = root / org
    inside, resolved = root.resolve(), folder.resolve()
    if resolved.parent != inside:
        raise ReportsError(f"{folder}: resolves to {resolved}, outside the reports directory {inside}")
    return folder


def check_writable(folder: Path) -> None:
    """Before anything is collected: a nightly run must not spend its minutes on facts it cannot write."""
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass


def publish(path: Path, data: bytes | str) -> Path:
    """Write `path` whole or not at all: a temporary file beside it, renamed over it (os.replace). A reader (a
    node_exporter scrape of latest.prom, a tool polling latest.json) sees the old file or the new one, never half;
    a `path` that is a symlink (or a hard link) is replaced, never written through."""
    content = data.encode("utf-8") if isinstance(data, str) else data
    # A name nobody can guess or plant a symlink at beforehand (mkstemp creates it, O_EXCL), and that no reader's
    # pattern takes for the file (node_exporter reads *.prom only).
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # Readable as the umask lets any other report be (mkstemp's 0600 would hide it from node_exporter, which
        # runs as another user).
        os.fchmod(descriptor, 0o666 & ~_umask())
        with os.fdopen(descriptor, "wb") as out:
            out.write(content)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write(
    judged: JudgedRun,
    report_dir: Path,
    stamp: str,
    evidence: Path | None,
    keep: int,
    partial: frozenset[str] = frozenset(),
) -> Path:
    """latest.json and <stamp>.json, the fix plan (when there are facts), then pruning (`partial`: the stamps of
    the earlier partial runs, pruned apart); returns latest.json."""
    with writing(report_dir):
        verdict = judged.verdict
        run = {
            "fail_on": verdict.fail_on,
            "verdict": {
                "status": verdict.status,
                "line": judged.line,
                "blocking": [row.where for row in verdict.blocking] + verdict.broken,
                **verdict.selection_fields(),
            },
            "gate": {"target": str(judged.target.version), "label": judged.target.label} if judged.target else None,
            "waivers": [s.as_dict() for s in judged.waivers],
            "since_last_run": judged.changes.as_dict() if judged.changes else None,
            "fix_plan": judged.fix_plan.name if judged.fix_plan else None,
            "insecure_settings": list(judged.insecure),
        }
        stamped = report_dir / f"{stamp}.json"
        if judged.facts is None:  # the org could not be reached: a document with the reason and no rows
            started = judged.started.isoformat()
            document = {"schema": results.SCHEMA, "org": judged.org_name, "started": started, **run}
            document = {**document, "suite_version": __version__, "rows": []}
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
            text = fixplan.powershell(
                judged.rows,
                org=judged.org_name,
                started=judged.started.isoformat(),
                results_name=stamped.name,
                version=__version__,
            )
            script = fixplan.encode(text)
            publish(judged.fix_plan, script)  # type: ignore[arg-type]
            publish(report_dir / "latest-fixes.ps1", script)
        data = results.dumps(document)
        publish(stamped, data)
        publish(report_dir / "latest.json", data)
        history.prune(report_dir, keep, stamp, partial | {stamp} if verdict.partial else partial)
    return report_dir / "latest.json"


@dataclass
class ToolOutputs:
    """pytest-html's and junitxml's files, redirected into a private temporary directory (mode 0700, in the
    system's temporary directory, where nobody else can swap a file for a symlink while the run goes on), then
    published as latest.* and <stamp>.*. A path the user gave (--html, --junitxml) is left to them."""

    folder: Path
    written: dict[str, Path] = field(default_factory=dict)  # suffix (".html", ".xml") -> where the tool writes it

    @classmethod
    def redirect(cls, option: object, html: bool) -> ToolOutputs:
        """`html`: pytest-html is loaded (it is not under -p no:html), and writes the report."""
        outputs = cls(Path(tempfile.mkdtemp(prefix="exchange-compliance-")))
        if html and not getattr(option, "htmlpath", None):
            outputs.written[".html"] = outputs.folder / "latest.html"
            option.htmlpath = str(outputs.written[".html"])  # type: ignore[attr-defined]
        option.self_contained_html = True  # type: ignore[attr-defined]  # one file: no assets/ beside it
        if not getattr(option, "xmlpath", None):
            outputs.written[".xml"] = outputs.folder / "latest.xml"
            option.xmlpath = str(outputs.written[".xml"])  # type: ignore[attr-defined]
        return outputs

    def publish(self, config: pytest.Config, report_dir: Path, stamp: str) -> None:
        """latest.html and latest.xml, with their timestamped copies, from what the tools wrote at session finish."""
        with writing(report_dir):
            for suffix, written in self.written.items():
                if not written.is_file():
                    continue
                data = written.read_bytes()
                publish(report_dir / f"{stamp}{suffix}", data)
                latest = publish(report_dir / f"latest{suffix}", data)
                option = "htmlpath" if suffix == ".html" else "xmlpath"
                setattr(config.option, option, str(latest))  # what the run's own lines name
                # pytest-html and junitxml each name their file in a line of their own after the run: the
                # published one, not the private one.
                for plugin in config.pluginmanager.get_plugins():
                    if getattr(plugin, "_report_path", None) == written:
                        plugin._report_path = latest
                    if getattr(plugin, "logfile", None) == str(written):
                        plugin.logfile = str(latest)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

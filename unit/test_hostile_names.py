"""Names are data, never paths or commands.

An org name, from --org, an org config's file name or an evidence file, is checked before it names a directory;
reports/<org>/ stays inside the reports root; a latest.* that is a symlink is replaced, never written through, and
pruning deletes only regular files; every name in the fix plan is quoted or spelled out, so that nothing a name
holds runs, and nothing runs before the plan's `throw`.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import ORG, TESTS_ENV, build_org
from exchange_compliance import snapshot
from exchange_compliance.config import shown
from exchange_compliance.facts import OrgFacts
from exchange_compliance.plugin import fixplan
from exchange_compliance.plugin.results import Row

# The files with a stamped copy; latest.prom (node_exporter's) has none.
LATEST = ("latest.json", "latest.html", "latest.xml", "latest-fixes.ps1", "latest-facts.json")
# Files an earlier run of another org left where a hostile name points: pruning must not take them.
PLANTED = ("20000101-000000.json", "20000101-000000.html", "20000101-000000-facts.json", "latest.json")
NOT_AN_ORG_NAME = "is not an org name (letters, digits, '.', '_' and '-', a letter or digit first)"
ABSOLUTE = "<absolute path to the victim>"
# A name as anyone who may name a server or a group in AD could choose it: a line break that would start a
# command, terminal escapes (ESC, BEL), a subexpression, a backtick, and both kinds of quote, ASCII and typographic.
NAME = (
    "EX9\r\nRemove-Item C:\\ -Recurse\rthrow\x1b[2J\x07 $(Remove-Item C:\\) `whoami` "
    + "\"x\" 'y' \u201cz\u201d \u2018w\u2019"
)


def plant(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in PLANTED:
        (folder / name).write_bytes(b"precious: " + name.encode())
    return tree(folder)


def tree(folder: Path) -> dict[str, object]:
    """Every entry under `folder` (but pytester's capture of a run's output): a file's bytes, a symlink's target,
    or "dir"."""
    found: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if key in ("stdout", "stderr"):
            continue
        if path.is_symlink():
            found[key] = ("symlink", str(path.readlink()))
        elif path.is_dir():
            found[key] = "dir"
        else:
            found[key] = path.read_bytes()
    return found


def evidence_with_org(path: Path, org: str) -> Path:
    """An evidence file as an attacker would hand it over: a healthy org whose `org` is `org`."""
    document = json.loads(snapshot.dumps(build_org(2)))
    document["facts"]["org"] = org
    path.write_text(json.dumps(document))
    return path


def one_line_error(done: pytest.RunResult) -> str:
    output = done.stdout.str() + done.stderr.str()
    assert done.ret == 4, output
    assert "Traceback" not in output and "INTERNALERROR" not in output
    errors = [line for line in done.stderr.lines if line.startswith("ERROR: ")]
    assert len(errors) == 1, output
    assert errors[0].isprintable()
    return errors[0]


def run_tests_env(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.run(sys.executable, "-m", "pytest", str(TESTS_ENV), *args, timeout=300)


# --- org names ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "org", ["../../victim", ABSOLUTE, "..", ".", "prod/../../victim", "prod\nRemove-Item C:\\", "prod\x1b[2J", ""]
)
def test_a_hostile_org_name_in_an_evidence_file_is_refused_and_nothing_is_written_or_deleted(pytester, org):
    workdir = pytester.path
    planted = plant(workdir / "victim")
    org = str(workdir / "victim") if org == ABSOLUTE else org
    evidence = evidence_with_org(workdir / "evidence.json", org)
    before = tree(workdir)
    # The reports root two levels down: "../../victim" from it is the victim directory, which holds files named
    # like an earlier run's that pruning would have deleted.
    done = run_tests_env(pytester, "--org-snapshot", str(evidence), "--reports-dir", str(workdir / "out" / "reports"))
    assert one_line_error(done) == f"ERROR: {evidence}: org: {shown(org)} {NOT_AN_ORG_NAME}"
    assert tree(workdir) == before  # nothing written anywhere, not even reports/
    assert tree(workdir / "victim") == planted


@pytest.mark.parametrize(
    ("argument", "source", "name"),
    [
        ("..", "--org", ".."),
        (".hidden", "--org", ".hidden"),
        ("prod\nx", "--org", "prod\nx"),
        ("bad name.toml", "--org 'bad name.toml': the file's name", "bad name"),
        ("../x\ty.toml", "--org '../x\\ty.toml': the file's name", "x\ty"),
    ],
)
def test_a_hostile_org_name_on_the_command_line_is_refused(pytester, argument, source, name):
    done = run_tests_env(pytester, "--org", argument, "--reports-dir", str(pytester.path / "reports"))
    assert one_line_error(done) == f"ERROR: {source}: {name!r} {NOT_AN_ORG_NAME}"
    assert not (pytester.path / "reports").exists()


def test_a_reports_directory_that_resolves_outside_the_reports_root_is_refused(pytester):
    planted = plant(pytester.path / "victim")
    (pytester.path / "reports").mkdir()
    (pytester.path / "reports" / ORG).symlink_to(pytester.path / "victim")
    evidence = snapshot.write(build_org(2), pytester.path / "facts.json")
    done = run_tests_env(pytester, "--org-snapshot", str(evidence), "--reports-dir", str(pytester.path / "reports"))
    line = one_line_error(done)
    assert line == (
        f"ERROR: {pytester.path / 'reports' / ORG}: resolves to {pytester.path / 'victim'}, "
        f"outside the reports directory {pytester.path / 'reports'}"
    )
    assert tree(pytester.path / "victim") == planted


# --- symlinks in reports/<org>/ ----------------------------------------------------------------------------------


def test_symlinked_report_files_are_replaced_never_written_through_and_pruning_takes_only_regular_files(
    suite, pytester, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = pytester.path / "reports" / ORG
    folder.mkdir(parents=True)
    old = "20000101-000000"
    linked = (*LATEST, "latest.prom", f"{old}.json", f"{old}-facts.json")
    for name in linked:
        (outside / name).write_text(f"precious {name}")
        (folder / name).symlink_to(outside / name)
    (folder / f"{old}.html").write_text("an old run's report")  # a regular file of an old run: pruned
    (folder / f"{old}.xml").mkdir()  # named like a run's file, but a directory: not the run's to delete
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()

    run = suite(build_org(2, ("backend-cert:EX02",)), "--keep-reports", "1", env={"TMPDIR": str(private_tmp)})

    assert run.ret == 1, run.stdout + run.stderr
    assert {name: (outside / name).read_text() for name in linked} == {name: f"precious {name}" for name in linked}
    for name in (*LATEST, "latest.prom"):
        assert (folder / name).is_file() and not (folder / name).is_symlink(), name
    assert json.loads((folder / "latest.json").read_text())["org"] == ORG
    assert "BE-02 on EX02" in (folder / "latest.html").read_text()
    assert ElementTree.parse(folder / "latest.xml").getroot() is not None
    assert (folder / "latest-fixes.ps1").read_bytes().startswith(b"\xef\xbb\xbf# exchange-compliance fix plan")
    assert snapshot.read(folder / "latest-facts.json").org == ORG
    # each published file is its stamped copy
    stamp = json.loads((folder / "latest.json").read_text())["fix_plan"].removesuffix("-fixes.ps1")
    for name in LATEST:
        assert (folder / name).read_bytes() == (folder / name.replace("latest", stamp)).read_bytes(), name
    # pruning: the old regular file went; the symlinks and the directory stayed, untouched
    assert not (folder / f"{old}.html").exists()
    assert (folder / f"{old}.json").is_symlink() and (folder / f"{old}-facts.json").is_symlink()
    assert (folder / f"{old}.xml").is_dir()
    assert not [path.name for path in folder.iterdir() if path.name.startswith(".")]  # no temporary file left
    assert list(private_tmp.iterdir()) == []  # the report's and junitxml's private directory is gone
    assert f"report:   {folder / 'latest.html'}" in run.stdout
    # pytest-html's and junitxml's own lines name the published files, never the private directory.
    assert f"Generated html report: {(folder / 'latest.html').as_uri()}" in run.stdout
    assert f"generated xml file: {folder / 'latest.xml'}" in run.stdout
    assert str(private_tmp) not in run.stdout


def test_a_user_given_html_path_is_written_there_and_not_copied(suite, pytester):
    mine = pytester.path / "mine.html"
    run = suite(build_org(1), "--html", str(mine))
    assert run.ret == 0, run.stdout + run.stderr
    assert "exchange-compliance: contoso-unit" in mine.read_text()
    assert not (run.reports / "latest.html").exists() and (run.reports / "latest.xml").is_file()


# --- the fix plan ------------------------------------------------------------------------------------------------


def check_plan(text: str, fixes: list[str]) -> list[str]:
    """Every line of the plan is a comment, blank, the guard, or a line of a fix after the guard; no line holds a
    control character (each one is spelled out). Returns the lines."""
    lines = text.split("\n")
    fix_lines = {line for fix in fixes for line in fix.splitlines()}
    guard = lines.index(fixplan.GUARD)
    for number, line in enumerate(lines):
        assert line.isprintable(), f"line {number}: {line!r}"
        if line in ("", "#") or line.startswith("# "):  # "# ", never "#requires": PowerShell acts on that one
            continue
        assert number == guard or (number > guard and line in fix_lines), f"line {number}: {line!r}"
    return lines


def hostile_row(requirement: str, server: str | None) -> Row:
    return Row(
        requirement=requirement,
        title="title",
        server=server,
        outcome="failed",
        severity="critical",
        message=f"evidence naming {NAME}\nsecond line",
        fix="Get-ExchangeServer -Identity 'EX9'",
        source="source",
        details={},
    )


def test_the_fix_plan_spells_out_every_name_it_carries():
    from factories import runnable_text

    rows = [hostile_row("BE-02", NAME), hostile_row("AUTH-03", None)]
    text = fixplan.powershell(rows, org=NAME, started="2026-01-01T00:00:00+00:00", results_name="r.json", version="v")
    lines = check_plan(text, [row.fix for row in rows])
    assert lines[0].startswith("# exchange-compliance fix plan for org EX9<U+000D><U+000A>Remove-Item C:\\ -Recurse")
    assert "<U+001B>[2J<U+0007>" in lines[0]
    assert any(line.startswith("# ==== EX9<U+000D><U+000A>Remove-Item") for line in lines)
    assert "Remove-Item" not in runnable_text(text.replace(fixplan.GUARD, ""))


def hostile_org() -> OrgFacts:
    """Failing rows whose evidence and fixes carry hostile names: the Exchange organization's name, a server's
    (EX03, no Auth certificate, an http EWS URL) and a group's (EX02 nested into Domain Admins through it)."""
    faults = ("backend-cert:EX02", "nested-admins:EX02", "no-auth-cert:EX03", "ews-http:EX03")
    facts = build_org(3, faults, rename=NAME)
    directory = facts.directory
    groups = {
        dn: replace(group, name=f"Server Operators {NAME}") if group.name.startswith("Server Operators") else group
        for dn, group in directory.groups.items()
    }
    return replace(facts, directory=replace(directory, org_name=NAME, groups=groups))


def test_the_fix_plan_of_a_run_over_hostile_names_runs_nothing_they_hold(suite):
    from factories import runnable_text

    run = suite(hostile_org())
    assert run.ret == 1, run.stdout + run.stderr
    latest = json.loads((run.reports / "latest.json").read_text())
    failing = {(row["requirement"], row["server"]) for row in latest["rows"] if row["outcome"] == "failed"}
    assert {("ACL-01", "EX02"), ("BE-02", "EX02"), ("AUTH-02", NAME), ("EWS-01", NAME)} <= failing
    assert latest["organization"] == NAME
    raw = (run.reports / "latest-fixes.ps1").read_bytes()
    text = raw.decode("utf-8-sig")
    assert "\r\n" in text
    text = text.replace("\r\n", "\n")
    fixes = [row["fix"] for row in latest["rows"] if row["fix"]]
    lines = check_plan(text, fixes)
    assert any(line.startswith("# ==== EX9<U+000D><U+000A>Remove-Item C:\\ -Recurse<U+000D>throw") for line in lines)
    # in the evidence, the name's line feed breaks a comment line into two comment lines; the CR is spelled out
    assert any(line.endswith("Server Operators EX9<U+000D>") for line in lines if line.startswith("#   "))
    assert "Remove-Item" not in runnable_text(text.replace(fixplan.GUARD, ""))

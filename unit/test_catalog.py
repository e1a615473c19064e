"""The catalog and tests_env/ in step: every catalog requirement has exactly one test, marked with its ID, which
takes the `server` fixture when the requirement is checked per server; a run of a tests directory missing one
stops with one line (exit 4)."""

from __future__ import annotations

import importlib.util
import inspect
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, TESTS_ENV, build_org
from exchange_compliance import snapshot
from exchange_compliance.catalog import catalog
from exchange_compliance.plugin import coverage


def marked_tests() -> list[tuple[str, str, tuple[str, ...]]]:
    """(requirement ID, test, its parameters) for every test function in tests_env/, from the marks pytest sees."""
    found = []
    for path in sorted(TESTS_ENV.glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"tests_env_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, function in vars(module).items():
            if name.startswith("test") and inspect.isfunction(function) and function.__module__ == module.__name__:
                marks = [m for m in getattr(function, "pytestmark", []) if m.name == "requirement"]
                assert marks, f"{path.name}::{name} checks no requirement"
                parameters = tuple(inspect.signature(function).parameters)
                found += [(mark.args[0], f"{path.name}::{name}", parameters) for mark in marks]
    return found


def test_every_catalog_requirement_has_exactly_one_test_and_every_test_a_catalog_requirement():
    tests: dict[str, list[str]] = {}
    for requirement, test, _ in marked_tests():
        tests.setdefault(requirement, []).append(test)
    assert sorted(tests) == sorted(catalog())
    assert {requirement: len(names) for requirement, names in tests.items()} == dict.fromkeys(catalog(), 1)


def test_server_scoped_requirements_take_the_server_fixture_and_org_scoped_ones_do_not():
    scopes = {
        requirement: ("server" if "server" in parameters else "org") for requirement, _, parameters in marked_tests()
    }
    assert scopes == {requirement_id: requirement.scope for requirement_id, requirement in catalog().items()}


def test_the_plugins_reading_of_the_source_agrees_with_the_marks():
    declared = {(test.requirement, test.test) for test in coverage.declared_tests(TESTS_ENV)}
    assert declared == {(requirement, test) for requirement, test, _ in marked_tests()}
    assert coverage.missing_requirements(TESTS_ENV) == []


# --- a run --------------------------------------------------------------------------------------------------------


@pytest.fixture
def without_ews(pytester: pytest.Pytester) -> Path:
    """tests_env copied beside a pytester rootdir, without EWS-01's test module."""
    target = pytester.path / "tests_env"
    shutil.copytree(TESTS_ENV, target, ignore=shutil.ignore_patterns("__pycache__", "test_web_services.py"))
    snapshot.write(build_org(1), pytester.path / "facts.json")
    return target


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "exchange_compliance.plugin", *args, "--org-snapshot", "facts.json", "--reports-dir", "out"
    )


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_a_directory_missing_a_requirement_stops_the_run_with_one_line(pytester, without_ews, workers):
    result = run(pytester, "tests_env", *workers)
    assert result.ret == 4
    errors = [line for line in result.errlines if line.strip()]
    assert errors == [
        "ERROR: tests_env: no test checks catalog requirement EWS-01 (exchange_compliance/catalog.toml): "
        'add one marked @requirement("ID"), or it yields no row'
    ]
    assert "INTERNALERROR" not in result.stdout.str() and not (pytester.path / "out").exists()


def test_a_selection_is_not_the_whole_directory(pytester, without_ews):
    assert run(pytester, "tests_env/test_backend_site.py").ret == 0
    assert run(pytester, "tests_env/test_cu_gate.py::test_no_iis_bound_certificate_has_expired").ret == 0


def test_deselecting_with_k_is_no_false_alarm(suite):
    run = suite(build_org(1), "-k", "backend_site")
    assert run.ret == 0, run.stdout + run.stderr
    assert "3 passed, 19 deselected, 3 not applicable" in run.stdout


# --- sources -------------------------------------------------------------------------------------------------------


def test_every_requirement_cites_an_article_an_admin_can_find():
    for requirement in catalog().values():
        assert requirement.sources, requirement.id
        for source in requirement.sources:
            assert source.title and (source.kb or source.url) and (source.publisher or source.author), source
            assert not source.url or source.url.startswith("https://"), source
    assert catalog()["ACL-01"].sources[0].kb == "2898571"
    assert "(Microsoft, KB 2898571) https://learn.microsoft.com/" in catalog()["ACL-01"].source


def test_a_source_links_only_to_a_web_address_and_is_escaped():
    from exchange_compliance.catalog import Source
    from exchange_compliance.plugin.html import _citation

    hostile = Source(title="<img src=x>", url="javascript:alert(1)", publisher="<b>")
    assert _citation(hostile) == "&lt;img src=x&gt; (&lt;b&gt;)"
    quoted = Source(title="T", url='https://example.test/"onmouseover="x')
    assert _citation(quoted) == (
        '<a href="https://example.test/&quot;onmouseover=&quot;x" rel="noopener" target="_blank">T</a>'
    )


# Our own file names for the articles ("seed 000") mean nothing to an admin: cited by title and KB number instead.
CITED_BY_FILE_NAME = re.compile(r"seed ?0[0-4]|\(seed|seeds? 00", re.IGNORECASE)


def test_nothing_outside_the_suites_own_tests_cites_an_article_by_our_file_name():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    found = []
    for name in tracked.splitlines():
        path = REPO / name
        if name.startswith("unit/") or not path.is_file() or path.suffix in (".pem", ".der", ".bin"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if CITED_BY_FILE_NAME.search(line)]
    assert found == []


def test_the_requirements_judged_only_in_a_gate_run_are_those_about_the_target_version():
    about_target = {requirement for requirement, _, parameters in marked_tests() if "target_version" in parameters}
    assert about_target == {r.id for r in catalog().values() if r.needs_target} == {"GATE-02"}

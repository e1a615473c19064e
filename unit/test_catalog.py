"""The catalog and tests_env/ in step: every catalog requirement has exactly one test, marked with its ID, which
takes the `server` fixture when the requirement is checked per server; a run of a tests directory missing one
stops with one line (exit 4)."""

from __future__ import annotations

import importlib.util
import inspect
import shutil
from pathlib import Path

import pytest

from conftest import TESTS_ENV, build_org
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

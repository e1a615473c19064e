"""Catalog and tests in step: which catalog requirement each test of a tests directory checks, from its source.

A catalog entry without a test would yield no row, silently. Before a run that collects a whole directory of
requirement tests, the plugin reads the directory's test modules and stops (exit 4) when a catalog requirement
has none. It reads the source rather than pytest's collection because under xdist the controller collects
nothing, and a worker that stops the session is an INTERNALERROR, not one line; a file or a node ID on the command
line is a selection, not the whole directory, and -k / -m deselect after collection, so neither is checked.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..catalog import catalog


@dataclass(frozen=True)
class DeclaredTest:
    requirement: str
    test: str  # "test_backend_site.py::test_back_end_site_has_an_https_binding_on_444"


def declared_tests(directory: Path) -> list[DeclaredTest]:
    """Every test function in the directory's test_*.py modules decorated @requirement("ID"), in file order."""
    found = []
    for path in _test_modules(directory):
        try:
            tree = ast.parse(path.read_bytes(), str(path))
        except (OSError, SyntaxError, ValueError):
            continue  # pytest's collection says what is wrong with the file
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                test = f"{path.relative_to(directory).as_posix()}::{node.name}"
                found += [DeclaredTest(requirement, test) for requirement in _requirements(node)]
    return found


def _test_modules(directory: Path) -> list[Path]:
    """test_*.py below the directory, hidden directories (the lab's state, .git) and caches left out."""
    found = []
    for folder, subfolders, files in os.walk(directory):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d != "__pycache__")
        found += [Path(folder) / name for name in sorted(files) if name.startswith("test_") and name.endswith(".py")]
    return found


def _requirements(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """The IDs of the function's @requirement("ID") decorators (plain or as plugin.requirement)."""
    ids = []
    for decorator in function.decorator_list:
        if not isinstance(decorator, ast.Call) or not decorator.args:
            continue
        name = decorator.func.attr if isinstance(decorator.func, ast.Attribute) else getattr(decorator.func, "id", "")
        argument = decorator.args[0]
        if name == "requirement" and isinstance(argument, ast.Constant) and isinstance(argument.value, str):
            ids.append(argument.value)
    return ids


def missing_requirements(directory: Path) -> list[str]:
    """Catalog IDs no test in the directory checks; none when it holds no requirement test at all."""
    checked = {test.requirement for test in declared_tests(directory)}
    return [requirement for requirement in catalog() if requirement not in checked] if checked else []


def check_whole_directories(config: pytest.Config) -> None:
    """UsageError (exit 4) naming the directory and the requirements, when a directory the run collects whole
    lacks a test for a catalog requirement."""
    for argument in config.args:
        path = config.invocation_params.dir / argument
        if "::" in argument or not path.is_dir():
            continue  # a selection: not every requirement is meant to run
        missing = missing_requirements(path)
        if missing:
            ids = ", ".join(missing)
            raise pytest.UsageError(
                f"{argument}: no test checks catalog requirement {ids} (exchange_compliance/catalog.toml): "
                'add one marked @requirement("ID"), or it yields no row'
            )

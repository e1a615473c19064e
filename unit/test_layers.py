"""The layers stay apart: the judges are pure functions over the facts and load no collector or network library."""

from __future__ import annotations

import ast
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


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules a module imports (TYPE_CHECKING imports too: a circle is a circle to a reader)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            # `from . import values` imports the submodule; `from .ldap import X`, the module ldap.
            found |= {f"{target}.{alias.name}" for alias in node.names} | ({target} if node.module else set())
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return (found & set(modules)) - {name}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_of_the_package_imports_itself_in_a_circle():
    modules = {_module_name(p): p for p in (REPO / "exchange_compliance").rglob("*.py")}
    graph = {name: _imports(path, modules) for name, path in modules.items()}
    circles = []

    def walk(start: str, name: str, path: list[str]) -> None:
        for imported in sorted(graph[name]):
            if imported == start:
                circles.append(" -> ".join([*path, start]))
            elif imported not in path and imported > start:
                walk(start, imported, [*path, imported])

    for name in sorted(graph):
        walk(name, name, [name])
    assert circles == []


def test_the_plugin_loads_no_collector_until_a_run_collects():
    # A replayed run and every xdist worker judge an evidence file: importing ldap3, pywinrm and requests was
    # most of such a process's start.
    script = (
        "import json, sys\nimport exchange_compliance.plugin\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {IO_LIBRARIES!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env={"PYTHONPATH": str(REPO)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []

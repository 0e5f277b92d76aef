"""Enforce the sans-I/O rule for ``firmware/core`` (DESIGN.md principle 1, STYLE.md B1).

Every module under ``firmware/core`` is parsed with :mod:`ast` (never imported) and
checked for:

* imports of I/O, concurrency, clock, randomness, logging or hardware modules
  (``FORBIDDEN_MODULES``): the core takes events and the current time and returns
  actions, the shell does the rest;
* imports that break the one-way layering: the core imports neither the shell
  (``firmware`` outside ``firmware.core``) nor ``hal``. Relative imports that stay
  inside ``firmware.core`` are fine; ones that climb out of it are resolved and
  checked like absolute imports;
* calls that read a clock (``datetime.now()``, ``date.today()``, ``x.monotonic()``...)
  and calls to the I/O builtins ``open``, ``input`` and ``print``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.program import REPO

CORE = REPO / "firmware" / "core"
CORE_PACKAGE = "firmware.core"

FORBIDDEN_MODULES = frozenset({
    # concurrency and the clock
    "asyncio", "time", "threading", "multiprocessing", "subprocess", "signal",
    # sockets, network, I/O
    "socket", "select", "selectors", "ssl", "urllib", "http", "io", "os",
    # the core returns actions; the shell logs
    "logging",
    # nondeterminism
    "random",
    # links and hardware
    "aiomqtt", "paho", "pymodbus", "serial", "RPi", "gpiod",
    # the other layers
    "hal",
})

CLOCK_CALLS = frozenset({
    "now", "utcnow", "today", "time", "monotonic", "perf_counter", "time_ns", "monotonic_ns",
})
IO_BUILTINS = frozenset({"open", "input", "print"})


def _resolve_relative(module: str | None, level: int, package: str) -> str:
    """Absolute name of ``from <level dots><module> import ...`` inside ``package``."""
    parts = package.split(".")
    if level > len(parts):
        return ""  # climbs above the top-level package; Python rejects it too
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _check_import(name: str, lineno: int) -> list[str]:
    top = name.split(".")[0]
    if top in FORBIDDEN_MODULES:
        return [f"line {lineno}: imports forbidden module {name!r}"]
    if top == "firmware" and name != CORE_PACKAGE and not name.startswith(CORE_PACKAGE + "."):
        return [f"line {lineno}: core imports the shell ({name!r}); imports go shell -> core only"]
    return []


def violations(source: str, package: str = CORE_PACKAGE, filename: str = "<string>") -> list[str]:
    """Return a description of every sans-I/O violation in ``source``.

    ``package`` is the package the module lives in, used to resolve relative imports.
    """
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found += _check_import(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                base = _resolve_relative(node.module, node.level, package)
                if base == CORE_PACKAGE or base.startswith(CORE_PACKAGE + "."):
                    continue  # relative import that stays inside the core
            # `from firmware import app` / `from .. import app`: the module is the imported name.
            parent = CORE_PACKAGE.rpartition(".")[0]
            names = [f"{base}.{a.name}" for a in node.names] if base == parent else [base]
            for name in names:
                found += _check_import(name, node.lineno)
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in CLOCK_CALLS:
                found.append(f"line {node.lineno}: reads a clock ({ast.unparse(func)}())")
            elif isinstance(func, ast.Name) and func.id in IO_BUILTINS:
                found.append(f"line {node.lineno}: calls I/O builtin {func.id}()")
    return found


def _package_of(path: Path) -> str:
    return ".".join(path.relative_to(REPO).parent.parts)


CORE_FILES = sorted(CORE.rglob("*.py"))


def test_core_files_exist() -> None:
    """The parametrized check below must not pass vacuously."""
    assert CORE_FILES, f"no *.py found under {CORE}"


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_core_is_sans_io(path: Path) -> None:
    found = violations(path.read_text(encoding="utf-8"), _package_of(path), str(path))
    assert not found, f"{path.relative_to(REPO)} breaks the sans-I/O rule:\n" + "\n".join(found)


def test_checker_reports_forbidden_import_and_clock_read() -> None:
    source = "import asyncio\nfrom datetime import datetime\n\nstamp = datetime.now()\n"
    found = violations(source)
    assert len(found) == 2
    assert "asyncio" in found[0]
    assert "datetime.now()" in found[1]


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("from time import monotonic", "'time'"),
        ("import os.path", "'os.path'"),
        ("import logging", "'logging'"),
        ("import RPi.GPIO as GPIO", "'RPi.GPIO'"),
        ("from hal.sim import Board", "'hal.sim'"),
        ("from firmware import app", "'firmware.app'"),
        ("from firmware.mqtt import Link", "'firmware.mqtt'"),
        ("from .. import app", "'firmware.app'"),
        ("from ..store import Store", "'firmware.store'"),
        ("t = loop.time()", "loop.time()"),
        ("d = date.today()", "date.today()"),
        ("print('x')", "print()"),
        ("open('f')", "open()"),
    ],
)
def test_checker_catches(source: str, fragment: str) -> None:
    found = violations(source)
    assert len(found) == 1
    assert fragment in found[0]


@pytest.mark.parametrize(
    "source",
    [
        "from . import pilot",
        "from .pilot import classify",
        "from firmware.core.evse import Evse",
        "import firmware.core.pilot",
        "from firmware import core",
        "from datetime import datetime, timedelta",
        "from dataclasses import dataclass\nfrom enum import StrEnum\nfrom typing import Final",
        "deadline = now + 3.0",
    ],
)
def test_checker_allows(source: str) -> None:
    assert violations(source) == []


# --- the shell: imports go one way (issue 9) ---------------------------------------------------------

def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports at run time (imports under TYPE_CHECKING excluded)."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {dep for dep in found if dep in modules and dep != name and dep.startswith(package)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in sorted(graph[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_shell_has_no_import_cycles() -> None:
    graph = import_graph(REPO / "firmware", "firmware")
    assert "firmware.core_loop" in graph  # the walk found the shell
    assert cycles(graph) == []


def test_the_link_and_the_ops_import_no_controller() -> None:
    """mqtt.py knows bytes, topics and the link; ops.py works over a narrow context: neither reaches
    back into the controller (app.py) or the core loop."""
    graph = import_graph(REPO / "firmware", "firmware")
    assert graph["firmware.mqtt"].isdisjoint({"firmware.app", "firmware.core_loop", "firmware.ops"})
    assert graph["firmware.ops"].isdisjoint({"firmware.app", "firmware.core_loop", "firmware.mqtt"})


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []

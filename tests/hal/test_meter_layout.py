"""STYLE.md B4: pymodbus is used only in hal/meter_modbus.py.

Every module of firmware/ and hal/ is parsed (never imported) and its imports are checked;
then a fresh interpreter imports the pure meter modules and checks pymodbus stayed out of
`sys.modules`, so an indirect import is caught too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.support.program import REPO

PYMODBUS_HOME = REPO / "hal" / "meter_modbus.py"


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_only_meter_modbus_imports_pymodbus() -> None:
    files = sorted((REPO / "firmware").rglob("*.py")) + sorted((REPO / "hal").rglob("*.py"))
    users = [p.relative_to(REPO).as_posix() for p in files
             if any(m.split(".")[0] == "pymodbus" for m in imported_modules(p))]
    assert users == [PYMODBUS_HOME.relative_to(REPO).as_posix()]


def test_pure_meter_modules_do_not_load_pymodbus() -> None:
    code = ("import sys, hal.meter_url, hal.meter_maps, hal.meter_codec, hal.meter_bus; "
            "assert 'pymodbus' not in sys.modules, sorted(m for m in sys.modules if 'pymodbus' in m)")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)

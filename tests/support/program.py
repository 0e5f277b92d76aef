"""The repository, and the firmware run as a program (`charger-firmware` is `python -m firmware`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "deploy" / "charger.example.toml"


def firmware_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "firmware", *args]


def run_firmware(*args: str, timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:  # noqa: ANN401
    """The program to its end, from the repository, its output captured as text."""
    return subprocess.run(firmware_command(*args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=False, **kw)

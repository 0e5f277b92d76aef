"""Installing the fakes of the Pi-only libraries (tests/fakes: RPi.GPIO, spidev, evdev) for one test.

`fresh_fake(monkeypatch, "spidev")` puts tests/fakes first on sys.path and imports the fake fresh; when
the test ends, monkeypatch puts sys.path and sys.modules back as they were, so no fake leaks into
another test (and the real library, which is never installed off a Pi, is never imported).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Final

import pytest

FAKES: Final = Path(__file__).resolve().parents[1] / "fakes"
#: Each fake and the submodules imported with it.
FAKE_PACKAGES: Final = {"RPi.GPIO": ("RPi",), "spidev": (), "evdev": ("evdev.ecodes",)}


def fresh_fake(monkeypatch: pytest.MonkeyPatch, name: str) -> ModuleType:
    """Import the fake `name` ("RPi.GPIO", "spidev" or "evdev") from tests/fakes, fresh, for this test."""
    monkeypatch.syspath_prepend(str(FAKES))
    for module in (name, *FAKE_PACKAGES[name]):
        monkeypatch.setitem(sys.modules, module, None)  # the undo restores what was there (or nothing)
        del sys.modules[module]
    fake = importlib.import_module(name)
    assert fake.__file__ is not None
    assert Path(fake.__file__).is_relative_to(FAKES), fake.__file__
    return fake

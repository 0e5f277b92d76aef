"""firmware/boards.py: which board the config gives, and that the Pi backends stay out of a simulated run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from firmware.boards import BoardNotDescribed, build_board
from firmware.config import load_config
from hal.sim import SimBoard

REPO = Path(__file__).resolve().parents[2]
PI_ONLY = ("hal.gpio", "hal.gpio_pins", "hal.gpio_leds", "hal.gpio_rcd", "hal.pwm", "hal.adc", "hal.rfid",
           "hal.rpi", "RPi", "RPi.GPIO", "spidev", "evdev")


def test_the_pi_backends_are_never_imported_for_a_simulated_board() -> None:
    code = ("import sys\n"
            "from firmware.config import load_config\n"
            "from firmware.boards import build_board\n"
            "build_board(load_config('deploy/reference-board.toml'), sim=True, clock=lambda: 0.0)\n"
            "import firmware.app, firmware.__main__\n"
            f"print(sorted(m for m in sys.modules if m in {PI_ONLY!r}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sim_gives_the_simulated_board_whatever_the_config_describes() -> None:
    board, sim = build_board(load_config(REPO / "deploy" / "reference-board.toml"), sim=True, clock=lambda: 0.0)
    assert isinstance(board, SimBoard)
    assert sim is board
    assert board.meter(1) is None  # the reference board's EVSE has a Modbus meter: the sim simulates none


def test_without_sim_a_config_that_describes_no_board_is_refused_in_one_line() -> None:
    with pytest.raises(BoardNotDescribed, match=r'\[board\] kind = "sim"\): run with --sim') as info:
        build_board(load_config(None), sim=False, clock=lambda: 0.0)
    assert "\n" not in str(info.value)

"""Hardware in the loop without the hardware: the simulated board's physics behind the fake buses.

`HilWorld(config)` plays everything outside the Raspberry Pi for a controller that runs on the
REAL backends (`board.kind = "rpi"`: hal/gpio.py, hal/pwm.py, hal/adc.py, hal/rfid.py): an EV, its
cable, the contactor with its mirror contact, the lock, the RCD and the card reader. The physics is
`hal.sim.SimBoard`'s (the same EV model `--sim` runs); only the wires differ:

* CP generator: the PWM sysfs tree at `[board] pwm_root` (plain files the backend writes; the world
  creates them): the world reads
  period, duty_cycle and enable back and drives the simulated CP with that duty;
* CP and PP levels: the fake MCP3008/MCP3208 (`tests/fakes/spidev.py`) answers each conversion with
  the simulated plateau or PP voltage, turned into ADC volts by the inverse of the config's calibration;
* relays, lock, RCD test: the fake RPi.GPIO (`tests/fakes/RPi/GPIO.py`) calls the world when an output
  changes; the world drives the inputs (mirror contact, lock switch, RCD trip, thermal switch) back,
  honouring `board.active_low_pins`;
* card reader: the fake evdev device at `[evse.rfid] device` is fed key events as a reader types them.

Script: `plug`, `fault` (SimBoard's), `card(cid, typed)`, `lock_works`, `rcd_test_works`. The fakes must
be on sys.path first (`install_fakes`), before the backends open. `serve(path)` answers the same script
as JSON lines on a unix socket, so a test can drive a world inside a `charger-firmware` process
(started with `sitecustomize` from `write_site`).
"""

from __future__ import annotations

import importlib
import json
import socket
import struct
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import pytest

from firmware.config import Config
from hal.sim import SimBoard
from tests.support.fakes import FAKE_PACKAGES, FAKES, fresh_fake

REPO: Final = Path(__file__).resolve().parents[2]
#: How long a PWM state read back from the files is reused (the ADC converts ~900 times a second).
PWM_CACHE_S: Final = 0.002


def install_fakes(monkeypatch: pytest.MonkeyPatch | None = None) -> dict[str, ModuleType]:
    """The fakes of RPi.GPIO, spidev and evdev, imported fresh (the real libraries are never used): for
    one test with `monkeypatch` (undone after it), or for the whole process (a `charger-firmware` run)."""
    if monkeypatch is not None:
        fakes = {name: fresh_fake(monkeypatch, name) for name in FAKE_PACKAGES}
    else:
        sys.path.insert(0, str(FAKES))
        fakes = {name: importlib.import_module(name) for name in FAKE_PACKAGES}
    fakes["RPi.GPIO"].fake_reset()
    return {"GPIO": fakes["RPi.GPIO"], "spidev": fakes["spidev"], "evdev": fakes["evdev"]}


def run_now(coro: Coroutine[Any, Any, Any]) -> Any:  # noqa: ANN401
    """Run a SimBoard method that never awaits, synchronously (the fakes call the world from sync code)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the simulated board awaited")


class HilWorld:
    """The outside world of a Pi board described by `config` (see the module docstring)."""

    def __init__(self, config: Config, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
        self.config = config
        fakes = install_fakes(monkeypatch)
        self.gpio, self.spidev, self.evdev = fakes["GPIO"], fakes["spidev"], fakes["evdev"]
        self.ev = SimBoard([e.id for e in config.evses], clock=time.monotonic,
                           phases={e.id: e.phases for e in config.evses}, meter_ids=[])
        self.lock_works = True
        self.rcd_test_works = True
        self._lock = threading.RLock()
        self._pwm_seen: dict[int, tuple[float, float]] = {}  # cid -> (time read, duty %)
        self._active_low = frozenset(config.board.active_low_pins)
        self._locked: dict[int, bool] = {}
        self._testing: dict[int, bool] = {}
        self._channels: dict[int, tuple[int, str]] = {}
        self.cp_changed_at: list[tuple[float, int, str]] = []  # (monotonic, cid, cp) of every plug()
        board = config.board
        mcp = self.spidev.FakeMcp(chip=board.adc_chip.value, vref_v=board.adc_vref_v)
        mcp.volts_of = self._adc_volts
        self.spidev.FAKE_BUSES[(board.spi_bus, board.spi_device)] = mcp
        self.mcp = mcp
        for evse in config.evses:
            self._wire(evse)
        self._refresh()

    # --- wiring -----------------------------------------------------------------------------------

    def _wire(self, evse: Any) -> None:  # noqa: ANN401 - an EvseSettings with its board tables
        cid, pins, adc, pwm = evse.id, evse.pins, evse.adc, evse.pwm
        chip_dir = self.config.board.pwm_root / f"pwmchip{pwm.chip}"
        chip_dir.mkdir(parents=True, exist_ok=True)
        for name, text in (("export", ""), ("unexport", ""), ("npwm", "2\n")):
            (chip_dir / name).write_text(text)
        channel_dir = chip_dir / f"pwm{pwm.channel}"
        channel_dir.mkdir(exist_ok=True)
        for name, text in (("period", "0\n"), ("duty_cycle", "0\n"), ("enable", "0\n"), ("polarity", "normal\n")):
            (channel_dir / name).write_text(text)
        self._channels[adc.cp_hi_channel] = (cid, "hi")
        self._channels[adc.cp_lo_channel] = (cid, "lo")
        if adc.pp_channel is not None:
            self._channels[adc.pp_channel] = (cid, "pp")
        self.gpio.fake_on_output(pins.relay, lambda level, c=cid, p=pins.relay: self._relay(c, self._active(p, level)))
        if pins.lock is not None:
            self.gpio.fake_on_output(pins.lock, lambda level, c=cid, p=pins.lock: self._lock_drive(c, p, level, True))
            self.gpio.fake_on_output(pins.unlock,
                                     lambda level, c=cid, p=pins.unlock: self._lock_drive(c, p, level, False))
        if pins.rcd_test is not None:
            self.gpio.fake_on_output(pins.rcd_test,
                                     lambda level, c=cid, p=pins.rcd_test: self._rcd_test(c, self._active(p, level)))
        if evse.rfid is not None:
            self.evdev.FAKE_DEVICES[str(evse.rfid.device)] = self.evdev.FakeDevice(name="HIL card reader")

    def _active(self, pin: int, level: int | None) -> bool:
        return level is not None and bool(level) != (pin in self._active_low)

    def _level(self, pin: int, active: bool) -> int:
        return int(active) ^ int(pin in self._active_low)

    def _evse(self, cid: int) -> Any:  # noqa: ANN401
        return next(e for e in self.config.evses if e.id == cid)

    # --- the outputs the controller drives ----------------------------------------------------------

    def _relay(self, cid: int, closed: bool) -> None:
        with self._lock:
            run_now(self.ev.set_closed(cid, closed))
        self._refresh()

    def _lock_drive(self, cid: int, pin: int, level: int | None, locking: bool) -> None:
        if self._active(pin, level) and self.lock_works:
            self._locked[cid] = locking
            self._refresh()

    def _rcd_test(self, cid: int, active: bool) -> None:
        self._testing[cid] = active and self.rcd_test_works
        self._refresh()

    def duty_pct(self, cid: int) -> float:
        """The CP generator's duty as the PWM files say (0: F, also while disabled)."""
        now = time.monotonic()
        seen = self._pwm_seen.get(cid)
        if seen is not None and now - seen[0] < PWM_CACHE_S:
            return seen[1]
        pwm = self._evse(cid).pwm
        d = self.config.board.pwm_root / f"pwmchip{pwm.chip}" / f"pwm{pwm.channel}"
        try:
            period, duty, enabled = (int((d / n).read_text().strip() or 0) for n in ("period", "duty_cycle", "enable"))
        except (OSError, ValueError):
            period, duty, enabled = 0, 0, 0
        pct = round(100.0 * duty / period, 1) if enabled and period else 0.0
        self._pwm_seen[cid] = (now, pct)
        return pct

    def _adc_volts(self, channel: int) -> float:
        """What the ADC's input pin sees: the simulated level through the inverse of the calibration."""
        if channel not in self._channels:
            return 0.0
        cid, kind = self._channels[channel]
        adc = self._evse(cid).adc
        with self._lock:
            run_now(self.ev.set_duty(cid, self.duty_pct(cid)))
            if kind == "pp":
                ohms = run_now(self.ev.read_pp(cid))
                pp_v = adc.pp_supply_v if ohms is None else adc.pp_supply_v * ohms / (ohms + adc.pp_pullup_ohms)
                return float(pp_v / adc.pp_scale)
            sample = run_now(self.ev.read_cp(cid))
        volts = sample.volts_hi if kind == "hi" else sample.volts_lo
        return float((volts - adc.cp_offset_v) / adc.cp_scale)

    def _refresh(self) -> None:
        """Drive every input as the world now is."""
        with self._lock:
            for evse in self.config.evses:
                cid, pins = evse.id, evse.pins
                faults = self.ev.faults(cid)
                if pins.relay_feedback is not None:
                    closed = run_now(self.ev.feedback_closed(cid))
                    self.gpio.fake_drive(pins.relay_feedback, self._level(pins.relay_feedback, bool(closed)))
                if pins.lock_feedback is not None:
                    locked = self._locked.get(cid, False)
                    self.gpio.fake_drive(pins.lock_feedback, self._level(pins.lock_feedback, locked))
                if pins.rcd_trip is not None:
                    tripped = "rcd" in faults or self._testing.get(cid, False)
                    self.gpio.fake_drive(pins.rcd_trip, self._level(pins.rcd_trip, tripped))
                if pins.overtemperature is not None:
                    hot = "overtemperature" in faults
                    self.gpio.fake_drive(pins.overtemperature, self._level(pins.overtemperature, hot))

    # --- the script ---------------------------------------------------------------------------------

    def plug(self, cid: int, cp: str, **kw: Any) -> None:  # noqa: ANN401
        with self._lock:
            self.ev.plug(cid, cp, **kw)
            self.cp_changed_at.append((time.monotonic(), cid, cp))
        self._refresh()

    def fault(self, cid: int, fault: str, active: bool) -> None:
        with self._lock:
            self.ev.fault(cid, fault, active)
        self._refresh()

    def locked(self, cid: int) -> bool:
        """The lock as its motor last moved it."""
        return self._locked.get(cid, False)

    def card(self, cid: int, typed: str) -> None:
        """The card reader of EVSE `cid` types `typed` and Enter, as a keyboard-wedge reader does."""
        rfid = self._evse(cid).rfid
        self.evdev.FAKE_DEVICES[str(rfid.device)].feed(key_events(self.evdev.ecodes, typed))

    def serve(self, path: Path) -> None:
        """Answer the script as JSON lines on a unix socket, in a daemon thread: {"op": "plug", "args":
        [1, "B"]} -> {"ok": true} (or {"ok": false, "error": ...})."""
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen()

        def handle(conn: socket.socket) -> None:
            with conn, conn.makefile("rw") as stream:
                for line in stream:
                    request = json.loads(line)
                    try:
                        getattr(self, {"plug": "plug", "fault": "fault", "card": "card"}[request["op"]])(
                            *request["args"], **request.get("kwargs", {}))
                        stream.write(json.dumps({"ok": True}) + "\n")
                    except Exception as exc:  # noqa: BLE001 - reported to the test
                        stream.write(json.dumps({"ok": False, "error": repr(exc)}) + "\n")
                    stream.flush()

        def accept() -> None:
            while True:
                conn, _ = server.accept()
                threading.Thread(target=handle, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True, name="hil-control").start()


def key_events(ecodes: Any, typed: str, start_s: float = 1_700_000_000.0) -> bytes:  # noqa: ANN401
    """`struct input_event` records (64-bit layout "llHHi") of a reader typing `typed` then Enter, 2 ms
    per key edge."""
    names = {**{str(d): f"KEY_{d}" for d in range(10)}, **{c: f"KEY_{c.upper()}" for c in "abcdefABCDEF"}}
    out = bytearray()
    t = start_s
    for char in [*typed, "\n"]:
        code = ecodes.KEY_ENTER if char == "\n" else getattr(ecodes, names[char])
        for value in (1, 0):
            sec, usec = int(t), int((t % 1) * 1_000_000)
            out += struct.pack("llHHi", sec, usec, ecodes.EV_KEY, code, value)
            out += struct.pack("llHHi", sec, usec, ecodes.EV_SYN, ecodes.SYN_REPORT, 0)
            t += 0.002
    return bytes(out)


def hil_config(reference: Path, directory: Path, *, broker_port: int, meter_port: int, charger_id: str) -> Path:
    """The reference board's file with only what differs on a laptop replaced: the state directory, the
    broker, the PWM sysfs root (a temporary tree) and the meter (a pymodbus server over TCP instead of
    RS-485). Pins, channels, calibration and timing stay the reference board's."""
    text = reference.read_text(encoding="utf-8")
    replaced = {
        'id = "CP-REF-0001"': f'id = "{charger_id}"',
        'state_dir = "/var/lib/charger-firmware"': f'state_dir = "{directory / "state"}"',
        "port = 1883": f"port = {broker_port}\ncodec = \"json\"",
        'pwm_root = "/sys/class/pwm"': f'pwm_root = "{directory / "pwm"}"',
        'url = "rtu:///dev/ttyAMA0?baud=9600&parity=N&stopbits=1"': f'url = "tcp://127.0.0.1:{meter_port}"',
    }
    for old, new in replaced.items():
        assert old in text, old  # noqa: S101
        text = text.replace(old, new)
    path = directory / "hil-board.toml"
    path.write_text(text, encoding="utf-8")
    return path


def write_site(directory: Path) -> Path:
    """A `sitecustomize` directory: with it first on PYTHONPATH, `charger-firmware` starts with the fakes
    installed and the world of the config named by $HIL_CONFIG answering on the socket $HIL_CONTROL."""
    site = directory / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from pathlib import Path\n"
        "from firmware.config import load_config\n"
        "from tests.support.hil import HilWorld\n"
        "config = load_config(os.environ['HIL_CONFIG'])\n"
        "WORLD = HilWorld(config)\n"
        "WORLD.serve(Path(os.environ['HIL_CONTROL']))\n",
        encoding="utf-8")
    return site

"""The board description (`[board]`, `[evse.pins]`, `[evse.adc]`, `[evse.pwm]`, `[evse.rfid]`): the
reference board loads, and a missing pin, a pin used twice, a clash with the SPI bus or the PWM overlay,
an ADC or PWM channel used twice give one clear error naming the key (issue 10)."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from firmware.config import BoardKind, Config, load_config
from firmware.config.board import AdcChip
from firmware.core.errors import ConfigError
from hal.rfid import UidFormat
from tests.support.toml import to_toml

REFERENCE = Path(__file__).resolve().parents[1] / "deploy" / "reference-board.toml"


def reference() -> dict[str, Any]:
    return tomllib.loads(REFERENCE.read_text(encoding="utf-8"))


def two_evses() -> dict[str, Any]:
    """The reference board with a second EVSE on other pins, channels and PWM."""
    doc = reference()
    second = copy.deepcopy(doc["evse"][0])
    second.update(id=2, phase_switching=False)
    second["pins"] = {"relay": 16, "relay_feedback": 20, "led_green": 21}
    second["adc"] = {"cp_hi_channel": 3, "cp_lo_channel": 4, "pp_channel": 5}
    second["pwm"] = {"chip": 0, "channel": 1}
    second["rfid"] = {"device": "/dev/input/by-id/usb-second-reader-event-kbd"}
    del second["meter"]
    doc["evse"].append(second)
    return doc


def load(tmp_path: Path, doc: dict[str, Any]) -> Config:
    path = tmp_path / "board.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    return load_config(path)


def error(tmp_path: Path, doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, doc)
    message = str(info.value)
    assert "\n" not in message
    return message.split(": ", 1)[1]  # without the file name


def test_the_reference_board_loads_with_its_wiring() -> None:
    config = load_config(REFERENCE)
    assert config.board.kind is BoardKind.RPI
    assert config.board.adc_chip is AdcChip.MCP3008
    evse = config.evses[0]
    assert evse.pins is not None
    assert evse.pins.relay == 17
    assert evse.pins.rcd_test == 12
    assert evse.adc is not None
    assert (evse.adc.cp_hi_channel, evse.adc.cp_lo_channel, evse.adc.pp_channel) == (0, 1, 2)
    assert evse.pwm is not None
    assert (evse.pwm.chip, evse.pwm.channel) == (0, 0)
    assert evse.rfid is not None
    assert evse.rfid.uid_format is UidFormat.DECIMAL
    assert config.evse_configs()[0].rcd_self_test  # an RCD test output is wired


def test_two_evses_fit(tmp_path: Path) -> None:
    config = load(tmp_path, two_evses())
    assert [e.id for e in config.evses] == [1, 2]
    assert [c.rcd_self_test for c in config.evse_configs()] == [True, False]  # EVSE 2 has no test output


def test_the_default_board_is_simulated_and_needs_no_wiring(tmp_path: Path) -> None:
    config = load(tmp_path, {"charger": {"id": "X"}, "evse": [{"id": 1}]})
    assert config.board.kind is BoardKind.SIM
    assert config.evses[0].pins is None
    assert not config.evse_configs()[0].rcd_self_test


@pytest.mark.parametrize("table", ["pins", "adc", "pwm"])
def test_an_rpi_board_needs_every_evse_wired(tmp_path: Path, table: str) -> None:
    doc = reference()
    del doc["evse"][0][table]
    assert error(tmp_path, doc) == f'evse[0].{table}: [evse.{table}] is required with board.kind = "rpi"'


def test_a_missing_relay_pin(tmp_path: Path) -> None:
    doc = reference()
    del doc["evse"][0]["pins"]["relay"]
    assert error(tmp_path, doc) == "evse[0].pins.relay: required key is missing"


def test_a_pin_used_twice_in_one_evse(tmp_path: Path) -> None:
    doc = reference()
    doc["evse"][0]["pins"]["led_blue"] = 17  # the relay's
    assert error(tmp_path, doc) == "evse[0].pins.led_blue: GPIO 17 is used twice (also evse[0].pins.relay)"


def test_a_pin_used_by_two_evses(tmp_path: Path) -> None:
    doc = two_evses()
    doc["evse"][1]["pins"]["relay"] = 22  # EVSE 1's lock
    assert error(tmp_path, doc) == "evse[1].pins.relay: GPIO 22 is used twice (also evse[0].pins.lock)"


@pytest.mark.parametrize("pin", [10, 18, 14], ids=["SPI0 MOSI", "PWM0", "UART TX (reserved by the board)"])
def test_a_pin_of_the_spi_bus_or_a_reserved_pin(tmp_path: Path, pin: int) -> None:
    doc = reference()
    doc["evse"][0]["pins"]["led_blue"] = pin
    assert error(tmp_path, doc) == (f"evse[0].pins.led_blue: GPIO {pin} belongs to SPI0 or the PWM overlay "
                                    "(board.reserved_pins)")


def test_a_pin_outside_the_header(tmp_path: Path) -> None:
    doc = reference()
    doc["evse"][0]["pins"]["relay"] = 28
    assert error(tmp_path, doc) == "evse[0].pins.relay: must be between 0 and 27, got 28"


def test_a_lock_without_its_feedback(tmp_path: Path) -> None:
    doc = reference()
    del doc["evse"][0]["pins"]["lock_feedback"]
    assert "lock_feedback" in error(tmp_path, doc)


def test_an_rcd_test_output_without_the_trip_input(tmp_path: Path) -> None:
    doc = reference()
    del doc["evse"][0]["pins"]["rcd_trip"]
    doc["board"]["active_low_pins"] = [24, 27]
    assert error(tmp_path, doc) == "evse[0].pins.rcd_test: an RCD test output needs rcd_trip"


def test_an_adc_channel_used_twice(tmp_path: Path) -> None:
    doc = two_evses()
    doc["evse"][1]["adc"]["pp_channel"] = 2
    assert error(tmp_path, doc) == "evse[1].adc.pp_channel: ADC channel 2 is used twice (also evse[0].adc.pp_channel)"


def test_cp_and_pp_on_one_channel(tmp_path: Path) -> None:
    doc = reference()
    doc["evse"][0]["adc"]["pp_channel"] = 0
    assert error(tmp_path, doc) == "evse[0].adc.cp_lo_channel: the CP and PP channels must differ, got [0, 1, 0]"


def test_a_pwm_channel_used_twice(tmp_path: Path) -> None:
    doc = two_evses()
    doc["evse"][1]["pwm"]["channel"] = 0
    assert error(tmp_path, doc) == "evse[1].pwm.channel: PWM chip 0 channel 0 is used twice (also evse[0].pwm.channel)"


def test_an_active_low_pin_that_no_evse_uses(tmp_path: Path) -> None:
    doc = reference()
    doc["board"]["active_low_pins"] = [24, 25, 27, 9]
    assert error(tmp_path, doc) == "evse: board.active_low_pins names GPIO 9, which no EVSE uses"


def test_an_unknown_adc_chip(tmp_path: Path) -> None:
    doc = reference()
    doc["board"]["adc_chip"] = "ADS1115"
    assert error(tmp_path, doc).startswith("board.adc_chip: must be one of")


def test_an_unknown_uid_format(tmp_path: Path) -> None:
    doc = reference()
    doc["evse"][0]["rfid"]["uid_format"] = "octal"
    assert error(tmp_path, doc).startswith("evse[0].rfid.uid_format: must be one of")


# --- meters on a shared RS-485 bus (issue 11) -----------------------------------------------------------


def meter_evses(*meters: dict[str, Any]) -> dict[str, Any]:
    return {"charger": {"id": "X"}, "evse": [{"id": i + 1, "meter": m} for i, m in enumerate(meters)]}


RTU = "rtu:///dev/ttyAMA0?baud=9600&parity=N&stopbits=1"


def test_two_meters_on_one_bus_with_different_device_ids(tmp_path: Path) -> None:
    config = load(tmp_path, meter_evses({"model": "SDM630", "url": RTU, "device_id": 1},
                                        {"model": "EM340", "url": RTU, "device_id": 2}))
    assert [e.meter.device_id for e in config.evses if e.meter is not None] == [1, 2]


def test_two_meters_on_one_bus_with_the_same_device_id(tmp_path: Path) -> None:
    doc = meter_evses({"model": "SDM630", "url": RTU, "device_id": 1}, {"model": "EM340", "url": RTU, "device_id": 1})
    assert error(tmp_path, doc) == ("evse[1].meter.device_id: meter /dev/ttyAMA0 device_id 1 is used twice "
                                    "(also evse[0].meter.device_id)")


def test_one_bus_with_two_baud_rates(tmp_path: Path) -> None:
    other = "rtu:///dev/ttyAMA0?baud=19200&parity=N&stopbits=1"
    doc = meter_evses({"model": "SDM630", "url": RTU, "device_id": 1}, {"model": "EM340", "url": other, "device_id": 2})
    assert error(tmp_path, doc) == ("evse[1].meter.url: RS-485 bus /dev/ttyAMA0 is set to baud=19200&parity=N&"
                                    "stopbits=1 here but baud=9600&parity=N&stopbits=1 (also evse[0].meter.url)")


def test_the_same_tcp_meter_twice(tmp_path: Path) -> None:
    tcp = "tcp://10.0.0.5:502"
    doc = meter_evses({"model": "EM24", "url": tcp}, {"model": "EM24", "url": tcp})
    assert "meter 10.0.0.5:502 device_id 1 is used twice" in error(tmp_path, doc)

"""Building the board and the meters the config describes: the simulated board, or a Raspberry Pi's.

What it is for: `build_board(config, sim=...)` turns `[board]` and each EVSE's wiring
(firmware/config/board.py) into the HAL's objects: `hal.sim.SimBoard` under `--sim`, else
`hal.rpi.RpiBoard` from the real backends; `build_meters` attaches a Modbus meter to each EVSE with an
`[evse.meter]` table (and, under `--sim`, the simulated meter to the others).

What it must never do: import the Raspberry Pi backends unless `board.kind = "rpi"` (they are Pi-only
and are imported here, inside that branch), open a device (the controller opens the board, outputs
safe first), or decide anything about charging.

Standard: the board description of firmware/config/board.py; hal/protocols.py.
"""

from __future__ import annotations

from collections.abc import Callable

from firmware.config import BoardKind, Config
from hal.protocols import Board, Meter
from hal.sim import SimBoard


class BoardNotDescribed(Exception):  # noqa: N818 - a refusal to start, reported in one line
    """No hardware to run on: the config describes no board (kind "sim") and `--sim` was not given."""


def build_board(config: Config, *, sim: bool, clock: Callable[[], float]) -> tuple[Board, SimBoard | None]:
    """The board to run on, and the simulated board when it is one (for the sim ops)."""
    if sim:
        modbus = {e.id for e in config.evses if e.meter is not None}
        board = SimBoard([e.id for e in config.evses], clock=clock, phases={e.id: e.phases for e in config.evses},
                         meter_ids=[e.id for e in config.evses if e.id not in modbus])
        return board, board
    if config.board.kind is not BoardKind.RPI:
        raise BoardNotDescribed(
            'the config describes no hardware ([board] kind = "sim"): run with --sim, or describe the board '
            '([board] kind = "rpi"; see deploy/reference-board.toml)')
    return _rpi_board(config), None


def _rpi_board(config: Config) -> Board:
    from hal.adc import AdcPilotInputs, CpCalibration, Mcp3x08, PilotChannels, PpCalibration  # Pi only
    from hal.gpio import EvsePins, GpioBoard, GpioTiming
    from hal.pwm import PwmChannel, SysfsPwm
    from hal.rfid import EvdevTokenReader, ReaderConfig
    from hal.rpi import RpiBoard

    b = config.board
    pins: dict[int, EvsePins] = {}
    channels: dict[int, PilotChannels] = {}
    pwms: dict[int, PwmChannel] = {}
    readers: list[ReaderConfig] = []
    for evse in config.evses:
        p, a, pwm = evse.pins, evse.adc, evse.pwm
        if p is None or a is None or pwm is None:  # the config's board_fits requires them for "rpi"
            raise BoardNotDescribed(f"EVSE {evse.id}: [evse.pins], [evse.adc] and [evse.pwm] are required")
        pins[evse.id] = EvsePins(**{name: pin for name, pin in p.used()})
        channels[evse.id] = PilotChannels(
            cp_hi=a.cp_hi_channel, cp_lo=a.cp_lo_channel, pp=a.pp_channel,
            cp=CpCalibration(scale=a.cp_scale, offset_v=a.cp_offset_v),
            pp_cal=None if a.pp_channel is None else PpCalibration(pullup_ohms=a.pp_pullup_ohms,
                                                                    supply_v=a.pp_supply_v, scale=a.pp_scale))
        pwms[evse.id] = PwmChannel(chip=pwm.chip, channel=pwm.channel)
        if evse.rfid is not None:
            r = evse.rfid
            readers.append(ReaderConfig(cid=evse.id, device=r.device, uid_format=r.uid_format, uid_bytes=r.uid_bytes,
                                        key_timeout_s=r.key_timeout_s, repeat_s=r.repeat_s))
    timing = GpioTiming(lock_pulse_s=b.lock_pulse_s, lock_confirm_s=b.lock_confirm_s,
                        rcd_debounce_ms=max(b.rcd_debounce_ms, 1), rcd_test_pulse_s=b.rcd_test_pulse_ms / 1000,
                        rcd_test_timeout_s=b.rcd_test_trip_ms / 1000, rcd_release_timeout_s=b.rcd_release_ms / 1000)
    adc = Mcp3x08(bus=b.spi_bus, device=b.spi_device, chip=b.adc_chip.value, vref_v=b.adc_vref_v,
                  speed_hz=b.spi_speed_hz)
    return RpiBoard(
        gpio=GpioBoard(pins, timing=timing, active_low=frozenset(b.active_low_pins)),
        inputs=AdcPilotInputs(adc, channels, oversample=b.adc_oversample),
        pwm=SysfsPwm(pwms, root=b.pwm_root, inverted=b.pwm_inverted),
        readers=EvdevTokenReader(readers) if readers else None,
    )


def build_meters(config: Config, board: Board) -> dict[int, Meter]:
    """A Modbus meter for each EVSE with `[evse.meter]`; the board's own meter (the simulated one) for
    the others, where it has one."""
    meters: dict[int, Meter] = {}
    for evse in config.evses:
        if evse.meter is not None:
            from hal.meter import ModbusMeter  # pymodbus is imported only when a meter is configured

            meters[evse.id] = ModbusMeter(evse.meter.model, evse.meter.url, device_id=evse.meter.device_id,
                                          timeout_s=evse.meter.timeout_s)
        elif (own := board.meter(evse.id)) is not None:
            meters[evse.id] = own
    return meters

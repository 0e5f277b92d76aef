"""The Raspberry Pi board: the real backends of `hal/` put together behind `hal.protocols.Board`.

What it is for: one object with every device of a Pi-based charger board, as the controller sees
the simulated one. The CP is driven by the hardware PWM (`hal.pwm.SysfsPwm`) and read through the
ADC (`hal.adc.AdcPilotInputs`); relays, LEDs, the lock, the RCD and the over-temperature switch are
GPIO (`hal.gpio.GpioBoard`); cards come from USB readers (`hal.rfid.EvdevTokenReader`, or none).

Opening order is the safety order: the PWM first, which drives every CP to F (-12 V: "EVSE not
available"), then the GPIO, which sets every output to its safe level as it claims the pin (relays
open), then the ADC and the readers. If any device fails to open, those already open are closed
again and the error (a `HardwareError` naming the device) goes to the caller in one line.

What it must never do: import RPi.GPIO, spidev or evdev itself (each backend imports its library
when it opens, so this module can be imported anywhere), or decide anything about charging.
Energy meters are Modbus devices that the shell attaches (`meter()` returns None).

Standard: the Protocols' contracts (hal/protocols.py); IEC 61851-1 Annex A for the CP levels.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

from hal.adc import AdcPilotInputs
from hal.gpio import GpioBoard
from hal.protocols import Leds, Lock, Meter, Pilot, PilotSample, Rcd, Relays, Temperature, TokenRead, TokenReader
from hal.pwm import SysfsPwm
from hal.rfid import EvdevTokenReader


class AdcPwmPilot:
    """The CP/PP `Pilot` of a Pi board: readings from the ADC, the duty on the hardware PWM."""

    def __init__(self, inputs: AdcPilotInputs, pwm: SysfsPwm) -> None:
        self.inputs = inputs
        self.pwm = pwm

    async def read_cp(self, cid: int) -> PilotSample:
        return await self.inputs.read_cp(cid)

    async def read_pp(self, cid: int) -> float | None:
        return await self.inputs.read_pp(cid)

    async def set_duty(self, cid: int, duty_pct: float) -> None:
        await self.pwm.set_duty(cid, duty_pct)


class NoTokenReader:
    """A board without a card reader: no card ever comes (tokens arrive over MQTT only)."""

    async def next_token(self) -> TokenRead:
        await asyncio.Event().wait()  # never set: waits until cancelled
        raise AssertionError("unreachable")  # pragma: no cover

    async def reopen(self) -> None:
        """Nothing to reopen."""


class RpiBoard:
    """Every device of a Pi-based board (see the module docstring); an async context manager."""

    def __init__(self, *, gpio: GpioBoard, inputs: AdcPilotInputs, pwm: SysfsPwm,
                 readers: EvdevTokenReader | None) -> None:
        self.gpio = gpio
        self.pwm = pwm
        self.inputs = inputs
        self.readers = readers
        self.pilot: Pilot = AdcPwmPilot(inputs, pwm)
        self.relays: Relays = gpio
        self.leds: Leds = gpio
        self.lock: Lock = gpio
        self.rcd: Rcd = gpio
        self.temperature: Temperature = gpio
        self.tokens: TokenReader = readers if readers is not None else NoTokenReader()
        self.is_sim: bool = False
        self._stack: contextlib.AsyncExitStack | None = None

    def meter(self, cid: int) -> Meter | None:
        return None

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.pwm)  # CP to F first
            await stack.enter_async_context(self.gpio)  # relays open as the pins are claimed
            await stack.enter_async_context(self.inputs)
            if self.readers is not None:
                await stack.enter_async_context(self.readers)
            self._stack = stack.pop_all()  # all open: keep them open until __aexit__
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()  # the readers, the ADC, the GPIO (outputs safe), the PWM (left at F)

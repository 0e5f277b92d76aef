"""Error types of charger-firmware, defined in the core so that both the core and the shell use them.

The core raises only `IllegalTransition` (a command that the current state does not accept; nothing
changed) and `ValueError` for out-of-range values. The shell converts library errors into the others
with `raise ... from exc` at each boundary. Follows EVerest's error catalogue habit.
"""

from __future__ import annotations

from typing import Any


class ChargerError(Exception):
    """Base of every error this project raises on purpose."""


class IllegalTransition(ChargerError):
    """The machine in `state` does not accept `event`; its state is unchanged."""

    def __init__(self, state: Any, event: Any) -> None:
        super().__init__(f"{type(event).__name__} is not accepted in state {state}")
        self.state = state
        self.event = event


class ConfigError(ChargerError):
    """The configuration is invalid; the message names the file, the key and the problem."""


class HardwareError(ChargerError):
    """A device did not respond or answered nonsense."""


class LinkError(ChargerError):
    """A link (MQTT broker, Modbus meter, console) is down."""

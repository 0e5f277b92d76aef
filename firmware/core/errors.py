"""Error types of charger-firmware, defined in the core so that both the core and the shell use them.

The core raises only `IllegalTransition` (a command that the current state does not accept; nothing
changed) and `ValueError` for out-of-range values (`InvalidValue` where a value has the wrong type).
The shell converts library errors into the others with `raise ... from exc` at each boundary. Follows
EVerest's error catalogue habit. This module must never import anything of the project or do
anything but define the types.
"""

from __future__ import annotations


class ChargerError(Exception):
    """Base of every error this project raises on purpose."""


class IllegalTransition(ChargerError):
    """The machine in `state` does not accept `event`; its state is unchanged."""

    def __init__(self, state: object, event: object) -> None:
        super().__init__(f"{type(event).__name__} is not accepted in state {state}")
        self.state = state
        self.event = event


class InvalidValue(ValueError):
    """A value the core refuses because of its type (a reservation id that is no integer, a stored
    snapshot part that is no list or map). Deliberately a `ValueError`, not a `TypeError`: the callers
    that refuse bad input (a request's `invalid_args` reply, a damaged stored part skipped at restore)
    catch ValueError, as they do for out-of-range values."""


class ConfigError(ChargerError):
    """The configuration is invalid; the message names the file, the key and the problem."""


class HardwareError(ChargerError):
    """A device did not respond or answered nonsense."""


class LinkError(ChargerError):
    """A link (MQTT broker, Modbus meter, console) is down."""

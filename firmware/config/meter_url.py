"""A meter's address in the config file, `tcp://HOST:PORT` or `rtu:///dev/DEVICE?baud=..` (API.md §9).

`MeterUrl` is the record that `[evse.meter] url` becomes, in the config's shape (`device`, None for
the other scheme's fields); `parse_meter_url(text)` (also `MeterUrl.parse`) builds it with the one
parser there is, `hal.meter_url.parse_meter_url` (on `urllib.parse`).

The parser never touches the network or the serial device: it checks the text only. A bad URL is a
`ValueError` whose message says what is wrong and quotes the text; the loader prefixes the file and
the key path.

Standard: STYLE.md B6 (frozen dataclass validated in `__post_init__`), METERS.md for serial settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote

from hal import meter_url as hal_meter_url

__all__ = ["BAUD_RATES", "MeterUrl", "parse_meter_url"]

BAUD_RATES: Final = tuple(sorted(hal_meter_url.BAUD_RATES))  # in order, for messages
_PARITIES: Final[dict[str, Literal["N", "E", "O"]]] = {"N": "N", "E": "E", "O": "O"}


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterUrl:
    """Where a Modbus meter is: `tcp://HOST:PORT` or `rtu:///dev/DEVICE?baud=9600&parity=N&stopbits=1`.

    Build it with `MeterUrl.parse(text)`. For tcp, `host` (an IPv6 address without brackets) and
    `port` are set; for rtu, `device`, `baud`, `parity` and `stopbits` (8 data bits are implied).
    Serial settings have no defaults: they differ between meter models (METERS.md), and a wrong
    guess shows only as timeouts.
    """

    scheme: Literal["tcp", "rtu"]
    host: str | None = None
    port: int | None = None
    device: str | None = None
    baud: int | None = None
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None

    def __post_init__(self) -> None:
        tcp = (self.host, self.port)
        rtu = (self.device, self.baud, self.parity, self.stopbits)
        if self.scheme == "tcp":
            ok = None not in tcp and all(v is None for v in rtu)
        elif self.scheme == "rtu":
            ok = None not in rtu and all(v is None for v in tcp)
        else:
            ok = False
        if not ok:
            raise ValueError(f"inconsistent MeterUrl fields for scheme {self.scheme!r}")

    def __str__(self) -> str:
        if self.scheme == "tcp":
            host = f"[{self.host}]" if ":" in (self.host or "") else self.host
            return f"tcp://{host}:{self.port}"
        return f"rtu://{quote(self.device or '')}?baud={self.baud}&parity={self.parity}&stopbits={self.stopbits}"

    @classmethod
    def parse(cls, text: str) -> MeterUrl:
        """Parse and check a meter URL; `ValueError` says what is wrong (see `parse_meter_url`)."""
        return parse_meter_url(text)


def parse_meter_url(text: str) -> MeterUrl:
    """Parse and check a meter URL with the one parser (`hal.meter_url`); `ValueError` says what is wrong."""
    parsed = hal_meter_url.parse_meter_url(text)
    if parsed.scheme == "tcp":
        return MeterUrl(scheme="tcp", host=parsed.host, port=parsed.port)
    parity = _PARITIES[parsed.parity]
    stopbits: Literal[1, 2] = 1 if parsed.stopbits == 1 else 2
    return MeterUrl(scheme="rtu", device=parsed.path, baud=parsed.baud, parity=parity, stopbits=stopbits)

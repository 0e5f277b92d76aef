"""A meter's address in the config file, `tcp://HOST:PORT` or `rtu:///dev/DEVICE?baud=..` (API.md §9).

`MeterUrl` is the parsed record that `[evse.meter] url` becomes; `parse_meter_url(text)` (also
`MeterUrl.parse`) is the parser, moved unchanged from the former firmware/config.py. hal/meter.py has
a second parser; once hal/meter_url.py offers the shared one, `parse_meter_url` is to be replaced by
an import of it, and this module shrinks to that import (or disappears).

The parser never touches the network or the serial device: it checks the text only. A bad URL is a
`ValueError` whose message says what is wrong and quotes the text; the loader prefixes the file and
the key path.

Standard: STYLE.md B6 (frozen dataclass validated in `__post_init__`), METERS.md for serial settings.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote, unquote

__all__ = ["BAUD_RATES", "MeterUrl", "parse_meter_url"]

BAUD_RATES: Final = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
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
    """Parse and check a meter URL; `ValueError` says what is wrong."""
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"must not contain spaces or control characters, got {text!r}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ValueError(f"must be tcp://HOST:PORT or rtu:///dev/DEVICE?baud=..&parity=..&stopbits=.., got {text!r}")
    match scheme.lower():
        case "tcp":
            return _parse_tcp(rest, text)
        case "rtu":
            return _parse_rtu(rest, text)
        case _:
            raise ValueError(f"unknown scheme {scheme!r}: must be tcp:// or rtu://, got {text!r}")


def _parse_tcp(rest: str, text: str) -> MeterUrl:
    if any(c in rest for c in "/?#@"):
        raise ValueError(f"a tcp URL is exactly tcp://HOST:PORT (no user, path or query), got {text!r}")
    if rest.startswith("["):
        m = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", rest)
        if m is None:
            raise ValueError(f"bad bracketed IPv6 address in {text!r}")
        host, port = m.group(1), m.group(2)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address, in {text!r}") from None
    else:
        host, sep, port = rest.rpartition(":")
        if not sep:
            host, port = rest, None
        if ":" in host:
            raise ValueError(f"an IPv6 address must be in brackets, tcp://[::1]:502, got {text!r}")
        if not host:
            raise ValueError(f"a tcp URL needs a host: tcp://HOST:PORT, got {text!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", host):
            raise ValueError(f"{host!r} is not a host name or IPv4 address, in {text!r}")
    if port is None or port == "":
        raise ValueError(f"a tcp URL needs a port: tcp://HOST:PORT, got {text!r}")
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {port!r}")
    return MeterUrl(scheme="tcp", host=host, port=int(port))


def _parse_rtu(rest: str, text: str) -> MeterUrl:
    example = "rtu:///dev/ttyUSB0?baud=9600&parity=N&stopbits=1"
    if not rest.startswith("/"):
        raise ValueError(f"an rtu URL has an empty host and an absolute device path, e.g. {example}, got {text!r}")
    if "#" in rest:
        raise ValueError(f"an rtu URL has no fragment ('#'), got {text!r}")
    raw_path, _, query = rest.partition("?")
    device = unquote(raw_path)
    if device.strip("/") == "" or any(ord(c) < 0x20 for c in device):
        raise ValueError(f"an rtu URL needs a device path, e.g. {example}, got {text!r}")
    params: dict[str, str] = {}
    for item in query.split("&") if query else ():
        name, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"query parameter {item!r} needs a value (name=value), in {text!r}")
        if name not in ("baud", "parity", "stopbits"):
            raise ValueError(f"unknown parameter {name!r} (expected baud, parity, stopbits), in {text!r}")
        if name in params:
            raise ValueError(f"parameter {name!r} is given twice, in {text!r}")
        params[name] = value
    missing = [name for name in ("baud", "parity", "stopbits") if name not in params]
    if missing:
        raise ValueError(
            f"an rtu URL needs baud, parity and stopbits (they differ between meters, see METERS.md);"
            f" missing {', '.join(missing)}, e.g. {example}"
        )
    baud_text, parity_text, stopbits_text = params["baud"], params["parity"], params["stopbits"]
    if not re.fullmatch(r"[0-9]{1,6}", baud_text) or int(baud_text) not in BAUD_RATES:
        raise ValueError(f"baud must be one of {', '.join(map(str, BAUD_RATES))}, got {baud_text!r}")
    parity = _PARITIES.get(parity_text.upper())
    if parity is None:
        raise ValueError(f"parity must be N, E or O, got {parity_text!r}")
    if stopbits_text not in ("1", "2"):
        raise ValueError(f"stopbits must be 1 or 2, got {stopbits_text!r}")
    return MeterUrl(
        scheme="rtu",
        device=device,
        baud=int(baud_text),
        parity=parity,
        stopbits=1 if stopbits_text == "1" else 2,
    )


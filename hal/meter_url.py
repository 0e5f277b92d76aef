"""Meter addresses: the one parser of meter URLs, and the `MeterUrl` record the meter
takes.

What it is for: turning the text of a meter address into a checked `MeterUrl`, and
turning whatever record a caller holds (this module's `MeterUrl`, or
the config's own record (firmware/config/meter_url.py)) into one (`as_meter_url`). Two forms exist:

* `tcp://HOST:PORT`: Modbus TCP. HOST is a host name or IPv4 address (letters, digits,
  `_`, `.`, `-`) or an IPv6 address in brackets (`tcp://[::1]:502`); PORT is 1..65535
  and must be given. The scheme is case-insensitive; the host is kept as written.
* `rtu:///dev/DEVICE?baud=9600&parity=N&stopbits=1`: Modbus RTU on a serial device (8
  data bits). The host is empty and the device path absolute, percent-encoded where
  needed (`%20` for a space). `baud`, `parity` (N, E or O, any case) and `stopbits` (1
  or 2) are all required, in any order, each once: they differ between meter models
  (METERS.md: SDM120 2400 baud, ABB often 8E1) and a wrong guess shows only as timeouts.

`parse_meter_url(text)` (also `MeterUrl.parse(text)`) raises ValueError saying which
part is wrong and quoting the text, e.g. `port must be between 1 and 65535, got '0'`.
The texts are those the config has always produced, so that config can use this
parser unchanged. One difference: when an rtu query has two faults and one of them is a
field without "=", that field is named even if the other fault comes first.

What it must never do:

* open, resolve or probe anything: no DNS lookup, no `os.path` check of the device (a
  USB adapter may appear after start), no socket; it only reads the text;
* guess: no default port, no default serial settings, nothing unknown ignored (user,
  path or query on tcp, a fragment, an unknown or repeated parameter, spaces or control
  characters);
* import pymodbus (only `hal/meter_modbus.py` does, STYLE.md B4).

Standard: RFC 3986 (generic URI syntax: scheme, authority, path, query, fragment; IPv6
literals in brackets, §3.2.2; percent-encoding, §2.1), as implemented by
`urllib.parse.urlsplit`, `parse_qsl` and `unquote`. The Modbus TCP port is from Modbus
Messaging on TCP/IP V1.0b (502 is the usual one, but it is not assumed); the serial
settings from Modbus over Serial Line V1.02 §2.5.1 (8 data bits, parity N/E/O, 1 or 2
stop bits) and METERS.md §6 (per-model defaults).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final, Literal, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "BAUD_RATES",
    "SERIAL_PARAMETERS",
    "MeterUrl",
    "MeterUrlLike",
    "as_meter_url",
    "format_meter_url",
    "parse_meter_url",
]

BAUD_RATES: Final = frozenset({1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200})
#: The query parameters of an rtu URL, all required.
SERIAL_PARAMETERS: Final = ("baud", "parity", "stopbits")
_PARITIES: Final[dict[str, Literal["N", "E", "O"]]] = {"N": "N", "E": "E", "O": "O"}
_RTU_EXAMPLE: Final = "rtu:///dev/ttyUSB0?baud=9600&parity=N&stopbits=1"
_HOST_NAME: Final = re.compile(r"[A-Za-z0-9_.-]+")
_BRACKETED: Final = re.compile(r"\[([^\]]*)\](?::(.*))?")
_PORT: Final = re.compile(r"[0-9]{1,5}")
_BAUD: Final = re.compile(r"[0-9]{1,6}")


# --------------------------------------------------------------------------------------
# The record


class MeterUrlLike(Protocol):
    """What `ModbusMeter` needs to know about an address: `MeterUrl`, or the config
    module's own record.

    Objects that call the serial device `device` instead of `path`, or leave the other
    scheme's fields as None, are accepted too (`as_meter_url`).
    """

    @property
    def scheme(self) -> str: ...
    @property
    def host(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def baud(self) -> int | None: ...
    @property
    def parity(self) -> str | None: ...
    @property
    def stopbits(self) -> int | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterUrl:
    """Where a meter is: `tcp://host:port` or
    `rtu:///dev/ttyX?baud=9600&parity=N&stopbits=1` (8 data bits). Build it with
    `MeterUrl.parse(text)`; a record built in code is checked too. The serial settings
    have no defaults: they differ between models (METERS.md: SDM120 2400 baud, ABB often
    8E1) and a wrong guess shows only as timeouts. Fields of the other scheme keep their
    empty defaults."""

    scheme: Literal["tcp", "rtu"]
    host: str = ""
    port: int = 0
    path: str = ""
    baud: int = 0
    parity: Literal["N", "E", "O", ""] = ""
    stopbits: int = 0

    def __post_init__(self) -> None:
        if self.scheme == "tcp":
            self._check_tcp()
        elif self.scheme == "rtu":
            self._check_rtu()
        else:
            raise ValueError(f"meter url: scheme {self.scheme!r} is not tcp or rtu")

    def _check_tcp(self) -> None:
        if not self.host:
            raise ValueError("meter url: tcp needs a host, e.g. tcp://192.168.1.20:502")
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"meter url: tcp port {self.port!r} not in 1..65535")
        if self.path or self.baud or self.parity or self.stopbits:
            raise ValueError("meter url: tcp takes no serial device or serial settings")

    def _check_rtu(self) -> None:
        if not self.path.startswith("/") or self.path == "/":
            raise ValueError(
                "meter url: rtu needs an absolute serial device path,"
                f" got {self.path!r}"
            )
        if self.baud not in BAUD_RATES:
            raise ValueError(
                f"meter url: baud {self.baud!r} not one of {sorted(BAUD_RATES)}"
            )
        if self.parity not in ("N", "E", "O"):
            raise ValueError(f"meter url: parity {self.parity!r} is not N, E or O")
        if self.stopbits not in (1, 2):
            raise ValueError(f"meter url: stopbits {self.stopbits!r} is not 1 or 2")
        if self.host or self.port:
            raise ValueError("meter url: rtu takes no host or port")

    @classmethod
    def parse(cls, text: str) -> MeterUrl:
        """`parse_meter_url(text)`."""
        return parse_meter_url(text)

    def __str__(self) -> str:
        if self.scheme == "rtu":
            return (
                f"rtu://{self.path}?baud={self.baud}&parity={self.parity}"
                f"&stopbits={self.stopbits}"
            )
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def format_meter_url(url: MeterUrlLike) -> str:
    """The canonical text of a meter address, as used in error messages."""
    return str(as_meter_url(url))


def as_meter_url(url: MeterUrlLike) -> MeterUrl:
    """A `MeterUrl` from any object with the `MeterUrlLike` attributes, e.g. the
    config's parsed URL. The serial device may be called `path` or `device`; None means
    "not set". Raises ValueError."""
    if isinstance(url, MeterUrl):
        return url
    scheme = getattr(url, "scheme", None)
    if scheme == "tcp":
        return MeterUrl(
            scheme="tcp",
            host=getattr(url, "host", None) or "",
            port=getattr(url, "port", None) or 0,
        )
    if scheme == "rtu":
        return MeterUrl(
            scheme="rtu",
            path=getattr(url, "path", None) or getattr(url, "device", None) or "",
            baud=getattr(url, "baud", None) or 0,
            parity=getattr(url, "parity", None) or "",
            stopbits=getattr(url, "stopbits", None) or 0,
        )
    raise ValueError(f"meter url: scheme {scheme!r} is not tcp or rtu")


# --------------------------------------------------------------------------------------
# The parser


def parse_meter_url(text: str) -> MeterUrl:
    """Parse and check a meter URL (see the module docstring for the two forms).

    Raises ValueError naming the part that is wrong (scheme, host, port, device path, a
    query parameter) and quoting the text.
    """
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"must not contain spaces or control characters, got {text!r}")
    # Checked on the text: urlsplit would read "tcp:h:502" as a scheme and a path.
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ValueError(
            "must be tcp://HOST:PORT or rtu:///dev/DEVICE?baud=..&parity=..&stopbits=..,"
            f" got {text!r}"
        )
    match scheme.lower():
        case "tcp":
            return _parse_tcp(text, rest)
        case "rtu":
            return _parse_rtu(text, rest)
        case _:
            raise ValueError(
                f"unknown scheme {scheme!r}: must be tcp:// or rtu://, got {text!r}"
            )


def _parse_tcp(text: str, rest: str) -> MeterUrl:
    """`tcp://HOST:PORT`; `rest` is the text after "://".

    A tcp URL is only an authority, so urlsplit is not used here: it drops an empty
    query or fragment ("tcp://h:502?"), its `hostname` and `port` do not fit (see
    `_host_and_port`), and its own check of a host in brackets refuses IPv6 zone ids
    that this parser has always accepted (non-ASCII ones that NFKC turns into ":").
    """
    if any(c in rest for c in "/?#@"):
        raise ValueError(
            "a tcp URL is exactly tcp://HOST:PORT (no user, path or query),"
            f" got {text!r}"
        )
    host, port = _host_and_port(rest, text)
    return MeterUrl(scheme="tcp", host=host, port=port)


def _host_and_port(netloc: str, text: str) -> tuple[str, int]:
    """HOST:PORT, split and checked here rather than by `SplitResult.hostname` and
    `.port`: those lowercase the host, accept port 0 and any number of leading zeros,
    and raise texts that do not name the URL."""
    port: str | None
    if netloc.startswith("["):
        m = _BRACKETED.fullmatch(netloc)
        if m is None:
            raise ValueError(f"bad bracketed IPv6 address in {text!r}")
        host, port = m.group(1), m.group(2)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address, in {text!r}") from None
    else:
        host, sep, port = netloc.rpartition(":")
        if not sep:
            host, port = netloc, None
        if ":" in host:
            raise ValueError(
                f"an IPv6 address must be in brackets, tcp://[::1]:502, got {text!r}"
            )
        if not host:
            raise ValueError(f"a tcp URL needs a host: tcp://HOST:PORT, got {text!r}")
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(
                f"{host!r} is not a host name or IPv4 address, in {text!r}"
            )
    if not port:
        raise ValueError(f"a tcp URL needs a port: tcp://HOST:PORT, got {text!r}")
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {port!r}")
    return host, int(port)


def _parse_rtu(text: str, rest: str) -> MeterUrl:
    """`rtu:///dev/DEVICE?baud=..&parity=..&stopbits=..`; `rest` is the text after "://"."""
    if not rest.startswith("/"):  # urlsplit would take "rtu://dev/x" as host "dev"
        raise ValueError(
            "an rtu URL has an empty host and an absolute device path,"
            f" e.g. {_RTU_EXAMPLE}, got {text!r}"
        )
    if "#" in rest:  # checked on the text: urlsplit drops an empty fragment
        raise ValueError(f"an rtu URL has no fragment ('#'), got {text!r}")
    parts = urlsplit(text)  # cannot raise: the host is empty
    device = unquote(parts.path)
    if device.strip("/") == "" or any(ord(c) < 0x20 for c in device):
        raise ValueError(
            f"an rtu URL needs a device path, e.g. {_RTU_EXAMPLE}, got {text!r}"
        )
    params = _serial_parameters(parts.query, text)
    baud_text, parity_text, stopbits_text = (
        params["baud"],
        params["parity"],
        params["stopbits"],
    )
    if not _BAUD.fullmatch(baud_text) or int(baud_text) not in BAUD_RATES:
        raise ValueError(
            f"baud must be one of {', '.join(map(str, sorted(BAUD_RATES)))},"
            f" got {baud_text!r}"
        )
    parity = _PARITIES.get(parity_text.upper())
    if parity is None:
        raise ValueError(f"parity must be N, E or O, got {parity_text!r}")
    if stopbits_text not in ("1", "2"):
        raise ValueError(f"stopbits must be 1 or 2, got {stopbits_text!r}")
    return MeterUrl(
        scheme="rtu",
        path=device,
        baud=int(baud_text),
        parity=parity,
        stopbits=int(stopbits_text),
    )


def _serial_parameters(query: str, text: str) -> dict[str, str]:
    """The query's baud, parity and stopbits, as written. ValueError for a field without
    "=", an unknown or repeated name, or a missing one."""
    # parse_qsl decodes %XX and "+"; the settings are plain ASCII, so keep them as
    # written ("baud=96%300" is not 9600) by escaping both first.
    literal = query.replace("%", "%25").replace("+", "%2B")
    try:
        pairs = parse_qsl(literal, keep_blank_values=True, strict_parsing=True)
    except ValueError:  # a field without "=" (an empty one too: "a=1&&b=2")
        bare = next(field for field in query.split("&") if "=" not in field)
        raise ValueError(
            f"query parameter {bare!r} needs a value (name=value), in {text!r}"
        ) from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name not in SERIAL_PARAMETERS:
            raise ValueError(
                f"unknown parameter {name!r} (expected baud, parity, stopbits),"
                f" in {text!r}"
            )
        if name in params:
            raise ValueError(f"parameter {name!r} is given twice, in {text!r}")
        params[name] = value
    if missing := [name for name in SERIAL_PARAMETERS if name not in params]:
        raise ValueError(
            "an rtu URL needs baud, parity and stopbits (they differ between meters,"
            f" see METERS.md); missing {', '.join(missing)}, e.g. {_RTU_EXAMPLE}"
        )
    return params

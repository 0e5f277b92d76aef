"""Table tests of `hal.meter_url.parse_meter_url`, the meter URL parser (no I/O).

ACCEPTED lists each accepted form with the record it gives; REJECTED lists each way a URL
can be wrong with the exact ValueError text. The texts are those firmware/config.py's
parser produces (tests/test_config.py asserts parts of them), so that config can switch to
this parser without a visible change. `test_same_as_the_config_parser` checks that on
mutated URLs while config still has its own parser.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from firmware.config import MeterUrl as ConfigMeterUrl
from hal.meter_url import BAUD_RATES, MeterUrl, as_meter_url, parse_meter_url

RTU = "rtu:///dev/ttyUSB0?baud=9600&parity=N&stopbits=1"
EXAMPLE = "rtu:///dev/ttyUSB0?baud=9600&parity=N&stopbits=1"
BAUDS = "1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200"


def tcp(host: str, port: int) -> MeterUrl:
    return MeterUrl(scheme="tcp", host=host, port=port)


def rtu(path: str, baud: int = 9600, parity: str = "N", stopbits: int = 1) -> MeterUrl:
    return MeterUrl(scheme="rtu", path=path, baud=baud, parity=parity, stopbits=stopbits)  # type: ignore[arg-type]


ACCEPTED: list[tuple[str, MeterUrl]] = [
    ("tcp://meter.local:502", tcp("meter.local", 502)),
    ("tcp://10.0.0.2:1", tcp("10.0.0.2", 1)),
    ("TCP://10.0.0.2:1", tcp("10.0.0.2", 1)),  # the scheme is case-insensitive
    ("Tcp://Meter-1.LAN:65535", tcp("Meter-1.LAN", 65535)),  # the host is kept as written
    ("tcp://my_meter:1502", tcp("my_meter", 1502)),
    ("tcp://h:00502", tcp("h", 502)),  # up to five digits
    ("tcp://[::1]:502", tcp("::1", 502)),
    ("tcp://[fe80::1%25eth0]:502", tcp("fe80::1%25eth0", 502)),  # zone id kept as written
    (RTU, rtu("/dev/ttyUSB0")),
    ("RTU:///dev/ttyUSB0?baud=9600&parity=N&stopbits=1", rtu("/dev/ttyUSB0")),
    ("rtu:///dev/ttyAMA0?parity=e&stopbits=2&baud=115200", rtu("/dev/ttyAMA0", 115200, "E", 2)),
    ("rtu:///dev/ttyS0?baud=2400&parity=o&stopbits=1", rtu("/dev/ttyS0", 2400, "O", 1)),
    ("rtu:///dev/serial/by-id/usb-FTDI%20x?baud=1200&parity=O&stopbits=1",
     rtu("/dev/serial/by-id/usb-FTDI x", 1200, "O", 1)),
    ("rtu:////dev//ttyUSB0?baud=9600&parity=N&stopbits=1", rtu("//dev//ttyUSB0")),
    ("rtu:///dev/ttyUSB0?baud=09600&parity=N&stopbits=1", rtu("/dev/ttyUSB0")),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED, ids=[row[0] for row in ACCEPTED])
def test_accepted(text: str, expected: MeterUrl) -> None:
    assert parse_meter_url(text) == expected
    assert MeterUrl.parse(text) == expected


@pytest.mark.parametrize("baud", sorted(BAUD_RATES))
def test_every_baud_rate(baud: int) -> None:
    assert parse_meter_url(RTU.replace("9600", str(baud))).baud == baud


@pytest.mark.parametrize("text", [text for text, _ in ACCEPTED if "%" not in text])
def test_canonical_text_parses_to_the_same_record(text: str) -> None:
    url = parse_meter_url(text)
    assert parse_meter_url(str(url)) == url


REJECTED: list[tuple[str, str, str]] = [
    # the whole text
    ("space", "tcp://h :502", "must not contain spaces or control characters, got 'tcp://h :502'"),
    ("tab", "tcp://h:502\t", "must not contain spaces or control characters, got 'tcp://h:502\\t'"),
    ("del", "tcp://h:502\x7f", "must not contain spaces or control characters, got 'tcp://h:502\\x7f'"),
    ("empty", "", "must be tcp://HOST:PORT or rtu:///dev/DEVICE?baud=..&parity=..&stopbits=.., got ''"),
    ("no-scheme", "127.0.0.1:502",
     "must be tcp://HOST:PORT or rtu:///dev/DEVICE?baud=..&parity=..&stopbits=.., got '127.0.0.1:502'"),
    ("scheme-colon-only", "tcp:h:502",
     "must be tcp://HOST:PORT or rtu:///dev/DEVICE?baud=..&parity=..&stopbits=.., got 'tcp:h:502'"),
    # the scheme
    ("http", "http://h:80", "unknown scheme 'http': must be tcp:// or rtu://, got 'http://h:80'"),
    ("empty-scheme", "://h:80", "unknown scheme '': must be tcp:// or rtu://, got '://h:80'"),
    # tcp: the shape
    ("tcp-path", "tcp://h:502/x", "a tcp URL is exactly tcp://HOST:PORT (no user, path or query), got 'tcp://h:502/x'"),
    ("tcp-user", "tcp://u@h:502", "a tcp URL is exactly tcp://HOST:PORT (no user, path or query), got 'tcp://u@h:502'"),
    ("tcp-query", "tcp://h:502?x=1",
     "a tcp URL is exactly tcp://HOST:PORT (no user, path or query), got 'tcp://h:502?x=1'"),
    ("tcp-empty-query", "tcp://h:502?",
     "a tcp URL is exactly tcp://HOST:PORT (no user, path or query), got 'tcp://h:502?'"),
    ("tcp-fragment", "tcp://h:502#",
     "a tcp URL is exactly tcp://HOST:PORT (no user, path or query), got 'tcp://h:502#'"),
    # tcp: the host
    ("tcp-no-host", "tcp://:502", "a tcp URL needs a host: tcp://HOST:PORT, got 'tcp://:502'"),
    ("tcp-bad-host", "tcp://h%20x:502", "'h%20x' is not a host name or IPv4 address, in 'tcp://h%20x:502'"),
    ("tcp-non-ascii-host", "tcp://zähler:502", "'zähler' is not a host name or IPv4 address, in 'tcp://zähler:502'"),
    ("tcp-bare-ipv6", "tcp://::1:502", "an IPv6 address must be in brackets, tcp://[::1]:502, got 'tcp://::1:502'"),
    ("tcp-bad-ipv6", "tcp://[zz]:502", "'zz' is not an IPv6 address, in 'tcp://[zz]:502'"),
    ("tcp-ipv4-in-brackets", "tcp://[10.0.0.1]:502", "'10.0.0.1' is not an IPv6 address, in 'tcp://[10.0.0.1]:502'"),
    ("tcp-unclosed-bracket", "tcp://[::1:502", "bad bracketed IPv6 address in 'tcp://[::1:502'"),
    ("tcp-junk-after-bracket", "tcp://[::1]502", "bad bracketed IPv6 address in 'tcp://[::1]502'"),
    # tcp: the port
    ("tcp-no-port", "tcp://127.0.0.1", "a tcp URL needs a port: tcp://HOST:PORT, got 'tcp://127.0.0.1'"),
    ("tcp-empty-port", "tcp://h:", "a tcp URL needs a port: tcp://HOST:PORT, got 'tcp://h:'"),
    ("tcp-ipv6-no-port", "tcp://[::1]", "a tcp URL needs a port: tcp://HOST:PORT, got 'tcp://[::1]'"),
    ("tcp-port-zero", "tcp://h:0", "port must be between 1 and 65535, got '0'"),
    ("tcp-port-big", "tcp://h:65536", "port must be between 1 and 65535, got '65536'"),
    ("tcp-port-six-digits", "tcp://h:000502", "port must be between 1 and 65535, got '000502'"),
    ("tcp-port-name", "tcp://h:modbus", "port must be between 1 and 65535, got 'modbus'"),
    ("tcp-port-sign", "tcp://h:+502", "port must be between 1 and 65535, got '+502'"),
    ("tcp-port-non-ascii-digit", "tcp://h:５０２", "port must be between 1 and 65535, got '５０２'"),
    # rtu: the shape
    ("rtu-host", "rtu://dev/ttyUSB0?baud=9600&parity=N&stopbits=1",
     f"an rtu URL has an empty host and an absolute device path, e.g. {EXAMPLE},"
     " got 'rtu://dev/ttyUSB0?baud=9600&parity=N&stopbits=1'"),
    ("rtu-nothing", "rtu://",
     f"an rtu URL has an empty host and an absolute device path, e.g. {EXAMPLE}, got 'rtu://'"),
    ("rtu-bracket-host", "rtu://[::1]/dev/x",
     f"an rtu URL has an empty host and an absolute device path, e.g. {EXAMPLE}, got 'rtu://[::1]/dev/x'"),
    ("rtu-fragment", RTU + "#x", f"an rtu URL has no fragment ('#'), got '{RTU}#x'"),
    ("rtu-empty-fragment", RTU + "#", f"an rtu URL has no fragment ('#'), got '{RTU}#'"),
    # rtu: the device
    ("rtu-no-device", "rtu:///?baud=9600&parity=N&stopbits=1",
     f"an rtu URL needs a device path, e.g. {EXAMPLE}, got 'rtu:///?baud=9600&parity=N&stopbits=1'"),
    ("rtu-only-slashes", "rtu://///?baud=9600&parity=N&stopbits=1",
     f"an rtu URL needs a device path, e.g. {EXAMPLE}, got 'rtu://///?baud=9600&parity=N&stopbits=1'"),
    ("rtu-encoded-control", "rtu:///dev/tty%0A?baud=9600&parity=N&stopbits=1",
     f"an rtu URL needs a device path, e.g. {EXAMPLE}, got 'rtu:///dev/tty%0A?baud=9600&parity=N&stopbits=1'"),
    # rtu: the query fields
    ("rtu-no-params", "rtu:///dev/ttyUSB0",
     "an rtu URL needs baud, parity and stopbits (they differ between meters, see METERS.md);"
     f" missing baud, parity, stopbits, e.g. {EXAMPLE}"),
    ("rtu-empty-query", "rtu:///dev/ttyUSB0?",
     "an rtu URL needs baud, parity and stopbits (they differ between meters, see METERS.md);"
     f" missing baud, parity, stopbits, e.g. {EXAMPLE}"),
    ("rtu-no-parity", "rtu:///dev/ttyUSB0?baud=9600&stopbits=1",
     "an rtu URL needs baud, parity and stopbits (they differ between meters, see METERS.md);"
     f" missing parity, e.g. {EXAMPLE}"),
    ("rtu-unknown-param", RTU + "&bytesize=8",
     f"unknown parameter 'bytesize' (expected baud, parity, stopbits), in '{RTU}&bytesize=8'"),
    ("rtu-name-case", RTU.replace("baud", "BAUD"),
     f"unknown parameter 'BAUD' (expected baud, parity, stopbits), in '{RTU.replace('baud', 'BAUD')}'"),
    ("rtu-encoded-name", RTU.replace("baud", "b%61ud"),
     f"unknown parameter 'b%61ud' (expected baud, parity, stopbits), in '{RTU.replace('baud', 'b%61ud')}'"),
    ("rtu-duplicate-param", RTU + "&baud=19200", f"parameter 'baud' is given twice, in '{RTU}&baud=19200'"),
    ("rtu-param-without-value", RTU + "&parity",
     f"query parameter 'parity' needs a value (name=value), in '{RTU}&parity'"),
    ("rtu-empty-field", RTU.replace("&parity", "&&parity"),
     f"query parameter '' needs a value (name=value), in '{RTU.replace('&parity', '&&parity')}'"),
    # rtu: the values, taken as written (no percent- or plus-decoding)
    ("rtu-bad-baud", RTU.replace("9600", "9601"), f"baud must be one of {BAUDS}, got '9601'"),
    ("rtu-baud-600", RTU.replace("9600", "600"), f"baud must be one of {BAUDS}, got '600'"),
    ("rtu-baud-empty", RTU.replace("9600", ""), f"baud must be one of {BAUDS}, got ''"),
    ("rtu-baud-encoded", RTU.replace("9600", "96%300"), f"baud must be one of {BAUDS}, got '96%300'"),
    ("rtu-bad-parity", RTU.replace("parity=N", "parity=X"), "parity must be N, E or O, got 'X'"),
    ("rtu-parity-word", RTU.replace("parity=N", "parity=none"), "parity must be N, E or O, got 'none'"),
    ("rtu-parity-plus", RTU.replace("parity=N", "parity=N+"), "parity must be N, E or O, got 'N+'"),
    ("rtu-bad-stopbits", RTU.replace("stopbits=1", "stopbits=3"), "stopbits must be 1 or 2, got '3'"),
    ("rtu-stopbits-1.5", RTU.replace("stopbits=1", "stopbits=1.5"), "stopbits must be 1 or 2, got '1.5'"),
]


@pytest.mark.parametrize(("text", "message"), [row[1:] for row in REJECTED], ids=[row[0] for row in REJECTED])
def test_rejected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        parse_meter_url(text)
    assert str(info.value) == message


def test_the_table_matches_the_config_parser() -> None:
    """Every row gives what firmware/config.py's parser gives (until config uses this one)."""
    for text, expected in ACCEPTED:
        assert as_meter_url(ConfigMeterUrl.parse(text)) == expected, text
    for _, text, message in REJECTED:
        with pytest.raises(ValueError, match=re.escape(message)) as info:
            ConfigMeterUrl.parse(text)
        assert str(info.value) == message, text


# ------------------------------------------------------------------------------------------------
# Mutated URLs: the same answer as firmware/config.py's parser

SEEDS = [text for text, _ in ACCEPTED]
PIECES = [*"tcpruTR:/?#@[]%&=+.-_019aebnoNEOsyv", "%25", "%30", "%2F", "%00", "::", "&&", "baud=", "parity=",
          "stopbits=", "ü", "﹕", "１", " ", "\x7f"]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = list(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        i = draw(st.integers(min_value=0, max_value=len(text)))
        match draw(st.sampled_from(["delete", "insert", "replace"])):
            case "delete" if text:
                del text[min(i, len(text) - 1)]
            case "replace" if text:
                text[min(i, len(text) - 1)] = draw(st.sampled_from(PIECES))
            case _:
                text.insert(i, draw(st.sampled_from(PIECES)))
    return "".join(text)


@given(mutated())
@example("rtu:///dev/ttyUSB0?baud=9600&parity=N&stopbits=1&baud=1&x")
@example("tcp://[fe80::1%25e﹕h0]:502")  # urlsplit refuses this zone id; both parsers accept it
def test_same_as_the_config_parser(text: str) -> None:
    """Same records for accepted text, ValueError for the rest, with the same message
    except for one thing: when a query has a field without "=" and an earlier bad field,
    this parser names the field without "=" (parse_qsl reports it first) and config's
    names the earlier one."""
    try:
        want: MeterUrl | str = as_meter_url(ConfigMeterUrl.parse(text))
    except ValueError as exc:
        want = str(exc)
    try:
        got: MeterUrl | str = parse_meter_url(text)
    except ValueError as exc:
        got = str(exc)
    if isinstance(want, str) and isinstance(got, str) and "needs a value" in got:
        return  # both refuse it; which of two faults is named may differ (see the docstring)
    assert got == want

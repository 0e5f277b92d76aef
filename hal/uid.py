"""The UIDs of RFID cards: what keyboard-wedge readers type, and the canonical token it stands for.

What it is for: a USB RFID reader types a card's UID in one of a few formats (`UidFormat`: hex or
decimal, in the card's byte order or reversed, or EM4100's "3,5 digit decimal"); `normalise_uid`
turns what it typed into the canonical token, so that whatever a reader types, the backend sees
the same token (`em4100-decimal` excepted: see `UidFormat`). `mask_uid` is the one way a UID may
appear in a log. Used by the evdev reader (`hal/rfid.py`) and the board config
(`firmware/config/board.py`).

What it must never do:

* perform I/O, read a clock, or log: everything here is a pure function of its arguments;
* echo a UID: errors name what is wrong with the text, never the text itself, and `mask_uid`
  shows only the last 4 characters;
* return a made-up token: text that is no whole UID of the configured format and size raises
  ValueError.

The canonical token (`id_token`) is the UID in uppercase hex in the card's own byte order, e.g.
"1A2B3C4D": OCPP 1.6 section 3.9 "ID Tokens" recommends the hex of the UID bytes with byte 0 (as
ISO/IEC 14443-3 numbers them) first, and OCPP 2.0.1's ISO14443 token type is "4 or 7 bytes in
hexadecimal representation"; for EM4100 the data bits in transmission order.

Standards and sources:

* UID sizes: ISO/IEC 14443-3 single/double/triple size UIDs of 4, 7 and 10 bytes; EM4100: 40 bits
  (5 bytes: 8-bit version/customer id + 32 data bits).
* What readers type (`UidFormat`): configurable keyboard-wedge software offers exactly the four
  main choices, "Hex Standard, Hex Reversed, Decimal Standard (32 or 64 bit), Decimal Reversed"
  (Dot Origin, Read-a-Card User Guide v3.3, "Format tab"); Baltech's reader configuration calls
  the reversal "Rotate Bytewise" (docs.baltech.de/project-setup/convert-uid.html). The NITGEN
  eNCard-i user guide ("Card format") spells the settings out with examples: an EM card
  08 01 16 1D D6 is "0801161DD6" in hex, "0018226646" as "10 Digit Decimal" (the last 4 bytes) and
  "02207638" as "3,5 Digit Decimal" (022 = 0x16, 07638 = 0x1DD6); a MIFARE card 52 9D 06 E3 is
  "529D06E3" in hex, "E3069D52" reversed, "1386022627" as 10-digit decimal and "3808861522" as
  the decimal of the reversed bytes. Little-endian decimal is what many MIFARE keyboard readers
  type out of the box (github.com/geeksoflondon/hamster wiki "RFID Scanners": UID 1c78f2bf is
  typed as 3220338716 = 0xBFF2781C). "0007625328" and "116,23152" printed on one EM4100 card are
  the same 32 bits in the 10-digit and the 3+5-digit form (StackOverflow question 29798566,
  answer by M. Roland).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Literal

__all__ = ["UID_BYTES", "UidFormat", "mask_uid", "normalise_uid"]

#: UID sizes a decimal format may be configured for: ISO/IEC 14443-3 single, double and triple size
#: (4, 7, 10 bytes) and the 40-bit EM4100 id (5 bytes).
UID_BYTES: Final = (4, 5, 7, 10)
#: Hex formats accept a UID of this many bytes (4 up to a triple-size 10-byte UID; EM4100 is 5).
_HEX_BYTES: Final = range(4, 11)


class UidFormat(StrEnum):
    """What a reader types for a card (its factory or DIP-switch setting; see the module docstring)."""

    #: The UID bytes in hex, in the card's order (upper or lower case), e.g. "529D06E3".
    HEX = "hex"
    #: Hex with the byte order reversed (a common MIFARE reader setting), e.g. "E3069D52".
    HEX_REVERSED = "hex-reversed"
    #: The UID as one big-endian decimal number, zero-padded to the width of the largest value of
    #: `uid_bytes` bytes ("10 digit decimal" for 4 bytes), e.g. 0x1A2B3C4D -> "0439041101".
    DECIMAL = "decimal"
    #: The decimal of the byte-reversed (little-endian) UID, zero-padded the same way, e.g.
    #: 52 9D 06 E3 -> "3808861522".
    DECIMAL_REVERSED = "decimal-reversed"
    #: "3,5 digit decimal" (8 digits, the Wiegand-26 view of an EM4100 card): 3 digits for the
    #: third-last byte, 5 for the last two, e.g. "11623152" for .. 74 5A 70. It holds only 24 bits,
    #: so the token is 3 bytes ("745A70"), not the card's full id: do not mix such readers with
    #: full-UID readers in one installation. `uid_bytes` does not apply.
    EM4100_DECIMAL = "em4100-decimal"


def _decimal_width(uid_bytes: int) -> int:
    return len(str(256**uid_bytes - 1))


def _normalise_hex(typed: str, fmt: UidFormat) -> str:
    bad = next((i for i, ch in enumerate(typed) if ch not in "0123456789abcdefABCDEF"), None)
    if bad is not None:
        raise ValueError(f"{fmt} UID: character {bad + 1} of {len(typed)} is not a hex digit")
    if len(typed) % 2 or len(typed) // 2 not in _HEX_BYTES:
        raise ValueError(
            f"{fmt} UID: {len(typed)} hex digits is not a whole UID of "
            f"{_HEX_BYTES.start}..{_HEX_BYTES.stop - 1} bytes"
        )
    data = bytes.fromhex(typed)
    return (data[::-1] if fmt is UidFormat.HEX_REVERSED else data).hex().upper()


def _normalise_decimal(typed: str, fmt: UidFormat, uid_bytes: int) -> str:
    if uid_bytes not in UID_BYTES:
        raise ValueError(f"uid_bytes must be one of {UID_BYTES}, got {uid_bytes!r}")
    width = _decimal_width(uid_bytes)
    if len(typed) != width:
        raise ValueError(f"{fmt} UID of {uid_bytes} bytes: expected {width} digits, got {len(typed)}")
    value = int(typed)
    if value >= 256**uid_bytes:
        raise ValueError(f"{fmt} UID: a {width}-digit number that does not fit in {uid_bytes} bytes")
    order: Literal["little", "big"] = "little" if fmt is UidFormat.DECIMAL_REVERSED else "big"
    return value.to_bytes(uid_bytes, order).hex().upper()


def _normalise_em4100(typed: str) -> str:
    if len(typed) != 8:
        raise ValueError(f"em4100-decimal UID: expected 8 digits (3 + 5), got {len(typed)}")
    high, low = int(typed[:3]), int(typed[3:])
    if high > 0xFF or low > 0xFFFF:
        raise ValueError("em4100-decimal UID: the 3-digit part must be <= 255 and the 5-digit part <= 65535")
    return f"{high:02X}{low:04X}"


def normalise_uid(typed: str, fmt: UidFormat, *, uid_bytes: int = 4) -> str:
    """The canonical token (uppercase hex, the card's byte order) of what a reader typed.

    `uid_bytes` is the size of the UID for the decimal formats (4, 5, 7 or 10 bytes: one number
    cannot say how many leading zero bytes it had); the hex formats take the size from the text.
    Raises ValueError naming what is wrong (never echoing the UID) for anything else. Pure.
    """
    fmt = UidFormat(fmt)
    if not isinstance(typed, str) or not typed:
        raise ValueError(f"{fmt} UID must be a non-empty string")
    if fmt in (UidFormat.HEX, UidFormat.HEX_REVERSED):
        return _normalise_hex(typed, fmt)
    bad = next((i for i, ch in enumerate(typed) if ch not in "0123456789"), None)
    if bad is not None:
        raise ValueError(f"{fmt} UID: character {bad + 1} of {len(typed)} is not a decimal digit")
    if fmt is UidFormat.EM4100_DECIMAL:
        return _normalise_em4100(typed)
    return _normalise_decimal(typed, fmt, uid_bytes)


def mask_uid(text: str) -> str:
    """`text` with all but its last 4 characters replaced by '*' (all of it when it is that short)."""
    if len(text) <= 4:
        return "*" * len(text)
    return "*" * (len(text) - 4) + text[-4:]

"""Makes the keyboard-wedge RFID recordings of this folder (`*.bin`), deterministically.

Run from the repository root: `python tests/data/rfid/make_recordings.py` (rewrites every .bin; the
output is byte-identical on every run). Tests read the .bin files, never this script.

Each file holds what `read()` on a reader's /dev/input/eventN returns: Linux `struct input_event`
records in the 64-bit layout (`struct timeval {long tv_sec; long tv_usec}`, `__u16 type`,
`__u16 code`, `__s32 value`: struct format "llHHi", 24 bytes, native byte order). They model what
the kernel's hid-input makes of a USB HID keyboard-wedge reader, as `evtest` shows it:

* a reader sends one HID report per USB polling interval (`interval_us`, 1 to 8 ms on real readers;
  each report a little late by a deterministic jitter of up to 300 us): a report with the key down,
  then one with all keys up;
* each report becomes one event frame sharing one timestamp (evdev stamps a frame once): EV_MSC
  MSC_SCAN with the key's HID usage (Keyboard/Keypad page 0x07, HID Usage Tables 1.12 section 10:
  0x7001E..0x70027 for 1..0, 0x70004.. for A.., 0x70028 Enter, 0x70059..0x70062 keypad 1..0,
  0x70058 keypad Enter, 0x700E1 left Shift), EV_KEY with value 1 (down) or 0 (up), EV_SYN
  SYN_REPORT. A hex reader typing upper case sends Shift in the same report as the letter, so the
  frame carries Shift first (the modifier byte comes first in the report) and then the letter;
* a key held longer than the kernel's autorepeat delay (REP_DELAY 250 ms, REP_PERIOD 33 ms) gives
  EV_KEY value 2 frames without MSC_SCAN (input core's input_repeat_key).

Recordings (name: reader, what it types, the tokens hal.rfid must give; UIDs from the sources cited
in hal/rfid.py where possible):

* decimal10.bin: "10 digit decimal" 125 kHz reader (decimal, 4 bytes), one card 0x1A2B3C4D typed
  "0439041101" + Enter, 8 ms polling -> 1A2B3C4D.
* hex_shift.bin: 13.56 MHz hex reader typing upper case with Shift, a 7-byte NXP UID
  "04E1F23CAB5D80", 4 ms polling -> 04E1F23CAB5D80.
* hex_reversed.bin: MIFARE reader typing hex in reversed byte order, lower case, no Shift:
  card 52 9D 06 E3 typed "e3069d52", 1 ms polling -> 529D06E3.
* keypad.bin: reader typing keypad digits and keypad Enter, decimal-reversed (little-endian):
  card 1C 78 F2 BF typed "3220338716" -> 1C78F2BF.
* em4100_8d.bin: 125 kHz reader set to "8D" (3+5 digits): "11623152" -> 745A70.
* burst.bin: decimal reader, two cards 0.7 s apart: "0007625328", "0439041101"
  -> 00745A70, 1A2B3C4D.
* held.bin: decimal reader, a card left on the antenna: the reader re-sends "1386022627" every
  0.5 s for 3 s (7 lines), the card is taken away and tapped again 3 s after the last re-send
  -> 529D06E3, 529D06E3 (with repeat_s 2.0).
* garbage.bin: decimal reader: a line with a '-' in the middle ("04390-1101"), then a stuck reader's
  40-digit line, then a good "0439041101" -> 1A2B3C4D.
* partial.bin: hex reader, upper case: "DEAD" typed, then the reader is unplugged and plugged back
  (1.5 s without a key), then "1A2B3C4D" + Enter -> 1A2B3C4D (never DEAD1A2B3C4D).
* autorepeat.bin: decimal reader that holds the "9" of "0439041101" for 300 ms (two autorepeat
  frames) -> 1A2B3C4D with key_timeout_s 0.5; nothing with the default 0.2 s (300 ms without a
  key event is a broken line).
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
EVENT_FORMAT = "llHHi"

# include/uapi/linux/input-event-codes.h
EV_SYN, EV_KEY, EV_MSC = 0x00, 0x01, 0x04
SYN_REPORT, MSC_SCAN = 0, 0x04
KEY_LEFTSHIFT, KEY_ENTER, KEY_KPENTER, KEY_MINUS = 42, 28, 96, 12
DIGIT_KEYS = {"1": 2, "2": 3, "3": 4, "4": 5, "5": 6, "6": 7, "7": 8, "8": 9, "9": 10, "0": 11}
KEYPAD_KEYS = {"1": 79, "2": 80, "3": 81, "4": 75, "5": 76, "6": 77, "7": 71, "8": 72, "9": 73, "0": 82}
LETTER_KEYS = {"a": 30, "b": 48, "c": 46, "d": 32, "e": 18, "f": 33}
# HID Usage Tables 1.12, Keyboard/Keypad page (0x07): usage IDs.
HID_USAGE = {
    **{code: 0x1E + i for i, code in enumerate(DIGIT_KEYS.values())},  # 1..9, 0 = 0x1E..0x27
    **{KEYPAD_KEYS[d]: 0x59 + i for i, d in enumerate("123456789")},
    KEYPAD_KEYS["0"]: 0x62,
    **{code: 0x04 + "abcdef".index(ch) for ch, code in LETTER_KEYS.items()},
    KEY_ENTER: 0x28,
    KEY_KPENTER: 0x58,
    KEY_MINUS: 0x2D,
    KEY_LEFTSHIFT: 0xE1,
}


@dataclass
class Typist:
    """One reader's keyboard: writes the frames of the keys it types, advancing its own time."""

    t_us: int
    interval_us: int
    seed: int
    records: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _frame(self, events: list[tuple[int, int, int]]) -> None:
        sec, usec = divmod(self.t_us, 1_000_000)
        for etype, code, value in [*events, (EV_SYN, SYN_REPORT, 0)]:
            self.records.append(struct.pack(EVENT_FORMAT, sec, usec, etype, code, value))

    def _next_report(self) -> None:
        self.t_us += self.interval_us + self._rng.randrange(0, 300)

    def key(self, code: int, *, shift: bool = False, hold_us: int = 0) -> None:
        """Press and release one key (with Shift in the same reports when asked)."""
        keys = [KEY_LEFTSHIFT, code] if shift else [code]
        self._frame([e for k in keys for e in ((EV_MSC, MSC_SCAN, 0x70000 | HID_USAGE[k]), (EV_KEY, k, 1))])
        if hold_us:
            down_us = self.t_us
            repeat_us = down_us + 250_000  # REP_DELAY
            while repeat_us < down_us + hold_us:
                self.t_us = repeat_us
                self._frame([(EV_KEY, code, 2)])
                repeat_us += 33_000  # REP_PERIOD
            self.t_us = down_us + hold_us
        else:
            self._next_report()
        self._frame([e for k in reversed(keys) for e in ((EV_MSC, MSC_SCAN, 0x70000 | HID_USAGE[k]), (EV_KEY, k, 0))])
        self._next_report()

    def type(self, text: str, *, keypad: bool = False, upper: bool = False, enter: bool = True,
             hold: dict[int, int] | None = None) -> None:
        """Type `text` (digits, a-f, '-'), then Enter (keypad Enter for a keypad reader)."""
        for i, ch in enumerate(text.lower()):
            hold_us = (hold or {}).get(i, 0)
            if ch == "-":
                self.key(KEY_MINUS, hold_us=hold_us)
            elif ch in LETTER_KEYS:
                self.key(LETTER_KEYS[ch], shift=upper, hold_us=hold_us)
            else:
                self.key((KEYPAD_KEYS if keypad else DIGIT_KEYS)[ch], hold_us=hold_us)
        if enter:
            self.key(KEY_KPENTER if keypad else KEY_ENTER)

    def pause(self, seconds: float) -> None:
        self.t_us += round(seconds * 1_000_000)

    def data(self) -> bytes:
        return b"".join(self.records)


def recordings() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    # A few seconds after boot on 2024-06-10 (the Pi's wall clock, which evdev uses by default).
    base_us = 1_718_000_000_000_000

    typist = Typist(base_us + 123_456, 8_000, seed=1)
    typist.type("0439041101")
    out["decimal10.bin"] = typist.data()

    typist = Typist(base_us + 2_000_000, 4_000, seed=2)
    typist.type("04E1F23CAB5D80", upper=True)
    out["hex_shift.bin"] = typist.data()

    typist = Typist(base_us + 3_000_000, 1_000, seed=3)
    typist.type("e3069d52")
    out["hex_reversed.bin"] = typist.data()

    typist = Typist(base_us + 4_000_000, 2_000, seed=4)
    typist.type("3220338716", keypad=True)
    out["keypad.bin"] = typist.data()

    typist = Typist(base_us + 5_000_000, 8_000, seed=5)
    typist.type("11623152")
    out["em4100_8d.bin"] = typist.data()

    typist = Typist(base_us + 6_000_000, 8_000, seed=6)
    start = typist.t_us
    typist.type("0007625328")
    typist.t_us = start + 700_000
    typist.type("0439041101")
    out["burst.bin"] = typist.data()

    typist = Typist(base_us + 10_000_000, 8_000, seed=7)
    start = typist.t_us
    for i in range(7):  # re-sent every 0.5 s while on the antenna: 0.0 .. 3.0 s
        typist.t_us = start + i * 500_000
        typist.type("1386022627")
    typist.t_us = start + 6_000_000  # taken away, tapped again 3 s after the last re-send
    typist.type("1386022627")
    out["held.bin"] = typist.data()

    typist = Typist(base_us + 20_000_000, 8_000, seed=8)
    typist.type("04390-1101")
    typist.pause(1.0)
    typist.type("1234567890" * 4)
    typist.pause(1.0)
    typist.type("0439041101")
    out["garbage.bin"] = typist.data()

    typist = Typist(base_us + 30_000_000, 4_000, seed=9)
    typist.type("DEAD", upper=True, enter=False)
    typist.pause(1.5)
    typist.type("1A2B3C4D", upper=True)
    out["partial.bin"] = typist.data()

    typist = Typist(base_us + 40_000_000, 8_000, seed=10)
    typist.type("0439041101", hold={3: 300_000})  # the "9"
    out["autorepeat.bin"] = typist.data()
    return out


def main() -> None:
    for name, data in recordings().items():
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data) // struct.calcsize(EVENT_FORMAT)} events")


if __name__ == "__main__":
    main()

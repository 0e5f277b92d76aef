"""Fake of `evdev.ecodes`: the event types and codes `hal.rfid` and its tests use, with their exact
values from the kernel's include/uapi/linux/input-event-codes.h (the ABI; python-evdev generates its
`ecodes` from that header). `KEY` maps a key code back to its name, like python-evdev's `ecodes.KEY`.
"""

from __future__ import annotations

from typing import Final

EV_SYN: Final = 0x00
EV_KEY: Final = 0x01
EV_MSC: Final = 0x04

SYN_REPORT: Final = 0
MSC_SCAN: Final = 0x04

KEY_RESERVED: Final = 0
KEY_ESC: Final = 1
KEY_1: Final = 2
KEY_2: Final = 3
KEY_3: Final = 4
KEY_4: Final = 5
KEY_5: Final = 6
KEY_6: Final = 7
KEY_7: Final = 8
KEY_8: Final = 9
KEY_9: Final = 10
KEY_0: Final = 11
KEY_MINUS: Final = 12
KEY_BACKSPACE: Final = 14
KEY_TAB: Final = 15
KEY_Q: Final = 16
KEY_W: Final = 17
KEY_E: Final = 18
KEY_R: Final = 19
KEY_T: Final = 20
KEY_Y: Final = 21
KEY_U: Final = 22
KEY_I: Final = 23
KEY_O: Final = 24
KEY_P: Final = 25
KEY_ENTER: Final = 28
KEY_A: Final = 30
KEY_S: Final = 31
KEY_D: Final = 32
KEY_F: Final = 33
KEY_G: Final = 34
KEY_H: Final = 35
KEY_J: Final = 36
KEY_K: Final = 37
KEY_L: Final = 38
KEY_LEFTSHIFT: Final = 42
KEY_Z: Final = 44
KEY_X: Final = 45
KEY_C: Final = 46
KEY_V: Final = 47
KEY_B: Final = 48
KEY_N: Final = 49
KEY_M: Final = 50
KEY_COMMA: Final = 51
KEY_RIGHTSHIFT: Final = 54
KEY_SPACE: Final = 57
KEY_CAPSLOCK: Final = 58
KEY_NUMLOCK: Final = 69
KEY_KP7: Final = 71
KEY_KP8: Final = 72
KEY_KP9: Final = 73
KEY_KP4: Final = 75
KEY_KP5: Final = 76
KEY_KP6: Final = 77
KEY_KP1: Final = 79
KEY_KP2: Final = 80
KEY_KP3: Final = 81
KEY_KP0: Final = 82
KEY_KPENTER: Final = 96

#: Key code -> name, as python-evdev's `ecodes.KEY`.
KEY: Final[dict[int, str]] = {
    value: name for name, value in list(globals().items()) if name.startswith("KEY_") and isinstance(value, int)
}
#: Event type -> name, as python-evdev's `ecodes.EV`.
EV: Final[dict[int, str]] = {EV_SYN: "EV_SYN", EV_KEY: "EV_KEY", EV_MSC: "EV_MSC"}

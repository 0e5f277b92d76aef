"""The control pilot's PWM generator on the Linux PWM sysfs interface: `SysfsPwm`.

What it is for: driving the CP oscillator of every EVSE from a hardware PWM channel (on a Raspberry Pi
the BCM283x/RP1 PWM, `dtoverlay=pwm-2chan`), implementing the `set_duty` part of `hal.protocols.Pilot`.
`duty_pct` is the fraction of the period the CP is HIGH: 100 = constant +12 V (X1), 0 = constant -12 V
(state F, "EVSE not available"), in between a 1 kHz PWM with that duty (IEC 61851-1:2017 A.2.2, Table
A.7). A driver stage that inverts is handled with `inverted=True` (polarity "inversed"), so the duty
written to the kernel is always the share of the period the CP spends at +12 V.

What it must never do:

* offer more current than asked: the duty is quantised to 0.1 % and the `duty_cycle` in ns rounded
  DOWN (the duty -> current relation of Table A.8 is increasing, so down is the safe side);
* leave the CP in an undefined state: `open()` ends at the F level with the output enabled, and
  `close()` leaves it there (still enabled, not unexported: a disabled PWM output sits at a level the
  driver chooses, and the CP must keep showing "not available" while the controller is down);
* write a state the kernel refuses: every sysfs store applies the whole state, and the kernel refuses
  it with EINVAL when `period` is 0 or `duty_cycle > period` (drivers/pwm/core.c, pwm_apply_state);
  polarity is changed only while disabled (older kernels answer EBUSY otherwise). `open()` orders its
  writes so that neither happens (see `SysfsPwm.open`);
* return or hide a failure: any OSError becomes `HardwareError("PWM <path>: <strerror>")`, chained.

Blocking: each access is one open/write/close (or read) of a sysfs attribute, a few microseconds of
kernel memory work with no disk and no waiting on hardware, so it is done on the event loop. The one
wait, for udev after an export, is `await asyncio.sleep` polling in `open()`, which is therefore async;
it runs in `__aenter__`, before the control loop starts.

Standard: Linux Documentation/ABI/testing/sysfs-class-pwm (pwmchipN/{export,unexport,npwm},
pwmN/{period,duty_cycle,polarity,enable}; times in ns) and Documentation/driver-api/pwm.rst.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

from firmware.core.errors import HardwareError

__all__ = ["DEFAULT_ROOT", "PwmChannel", "SysfsPwm"]

log = logging.getLogger(__name__)

DEFAULT_ROOT: Final = Path("/sys/class/pwm")
#: The attributes the kernel creates in pwmN/ on export (sysfs-class-pwm).
CHANNEL_ATTRS: Final = ("period", "duty_cycle", "polarity", "enable")
#: Duty resolution: 0.1 % (1000 steps per period), like firmware.core.pilot.DUTY_RESOLUTION_PCT.
DUTY_STEPS: Final = 1000
#: Tolerance when quantising the duty: 53.3 is stored as 53.29999...; without it it would lose 0.1 %.
_QUANT_EPS: Final = 1e-6
#: How often `open()` looks for a freshly exported channel.
EXPORT_POLL_S: Final = 0.01
#: The hint in the error for a missing chip (Raspberry Pi OS; other boards have their own overlay).
CHIP_HINT: Final = "enable it with dtoverlay=pwm-2chan"
_CHIP_RE: Final = re.compile(r"pwmchip(\d+)")


@dataclass(frozen=True, slots=True, kw_only=True)
class PwmChannel:
    """One PWM output: `{root}/pwmchip{chip}/pwm{channel}`."""

    chip: int
    channel: int

    def __post_init__(self) -> None:
        for name in ("chip", "channel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"PwmChannel.{name} must be an integer >= 0, got {value!r}")


def _sysfs_write(path: Path, value: str) -> None:
    """Write one sysfs attribute: a single write(2). O_TRUNC, no O_CREAT: a missing attribute is an
    error, never a new file. Raises OSError. The single point of writing, so that a test can put a
    model of the kernel's checks behind it (tests/support/sysfs_pwm.py)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, value.encode("ascii"))
    finally:
        os.close(fd)


def _write_attr(path: Path, value: str) -> None:
    try:
        _sysfs_write(path, value)
    except OSError as exc:
        raise HardwareError(f"PWM {path}: {exc.strerror}") from exc
    log.debug("PWM %s <- %s", path, value)


def _read_attr(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise HardwareError(f"PWM {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise HardwareError(f"PWM {path}: not ASCII text") from exc


def _read_int(path: Path) -> int:
    text = _read_attr(path)
    try:
        return int(text)
    except ValueError as exc:
        raise HardwareError(f"PWM {path}: expected an integer, read {text!r}") from exc


def _chip_sort_key(name: str) -> tuple[int, str]:
    m = _CHIP_RE.fullmatch(name)
    return (int(m.group(1)) if m else 1 << 30, name)


class SysfsPwm:
    """The CP PWM of several EVSEs, one sysfs PWM channel each (`channels` maps cid -> channel).

    `async with SysfsPwm({1: PwmChannel(chip=0, channel=0)}) as pwm: await pwm.set_duty(1, 26.6)`.
    Opening exports, configures and enables every channel at the F level; `set_duty` then changes
    only `duty_cycle` (idempotent: an unchanged duty writes nothing); leaving sets F again.
    """

    def __init__(
        self,
        channels: Mapping[int, PwmChannel],
        *,
        root: Path = DEFAULT_ROOT,
        frequency_hz: float = 1000.0,
        inverted: bool = False,
        export_timeout_s: float = 1.0,
    ) -> None:
        if not channels:
            raise ValueError("SysfsPwm needs at least one channel")
        seen: dict[PwmChannel, int] = {}
        for cid, ch in channels.items():
            if not isinstance(ch, PwmChannel):
                raise TypeError(f"channel of c{cid} must be a PwmChannel, got {ch!r}")
            if ch in seen:
                raise ValueError(f"c{cid} and c{seen[ch]} share pwmchip{ch.chip}/pwm{ch.channel}")
            seen[ch] = cid
        if not (math.isfinite(frequency_hz) and frequency_hz > 0):
            raise ValueError(f"frequency_hz must be > 0, got {frequency_hz!r}")
        period_ns = round(1e9 / frequency_hz)
        if period_ns < DUTY_STEPS:
            raise ValueError(f"frequency_hz {frequency_hz} is too high for a 0.1 % duty resolution")
        if not (math.isfinite(export_timeout_s) and export_timeout_s >= 0):
            raise ValueError(f"export_timeout_s must be >= 0, got {export_timeout_s!r}")
        self._channels: dict[int, PwmChannel] = dict(channels)
        self._root = root
        self.period_ns: Final = period_ns
        self._polarity: Final = "inversed" if inverted else "normal"
        self._export_timeout_s = export_timeout_s
        #: The duty_cycle (ns) last written per cid; absent: not open, or unknown after a failure.
        self._duty_ns: dict[int, int] = {}
        self._open: set[int] = set()

    # --- paths ---------------------------------------------------------------------------------

    def _chip_dir(self, ch: PwmChannel) -> Path:
        return self._root / f"pwmchip{ch.chip}"

    def _pwm_dir(self, ch: PwmChannel) -> Path:
        return self._chip_dir(ch) / f"pwm{ch.channel}"

    def _channel(self, cid: int) -> PwmChannel:
        try:
            return self._channels[cid]
        except KeyError:
            raise ValueError(f"no PWM channel configured for c{cid} (have {sorted(self._channels)})") from None

    # --- life cycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def open(self) -> None:
        """Export (when needed), configure and enable every channel at the F level.

        Per channel, after checking the chip exists and has the channel (`npwm`), the writes are:
        `enable`=0 (only if enabled: the kernel refuses any store while `period` is 0, which it is on
        a fresh export), `duty_cycle`=0 (only if `period` is set, so it is done before the period
        changes: duty <= period at every step), `period`, `polarity` (only if different, while
        disabled), `duty_cycle`=0 (if not written yet: the F level) and `enable`=1.
        Raises HardwareError naming the path; a channel opened before a failure stays at F.
        """
        for cid, ch in self._channels.items():
            pwm_dir = await self._export(ch)
            self._configure(pwm_dir)
            self._duty_ns[cid] = 0
            self._open.add(cid)
            log.info("PWM c%d: %s at %d ns period, polarity %s, F level", cid, pwm_dir, self.period_ns, self._polarity)

    def _check_chip(self, ch: PwmChannel) -> Path:
        chip_dir = self._chip_dir(ch)
        if not chip_dir.is_dir():
            try:
                names = sorted((p.name for p in self._root.iterdir() if _CHIP_RE.fullmatch(p.name)), key=_chip_sort_key)
            except OSError:
                names = []
            have = ", ".join(names) or "none"
            raise HardwareError(f"PWM chip {chip_dir.name} not found under {self._root} (have: {have}); {CHIP_HINT}")
        npwm = _read_int(chip_dir / "npwm")
        if ch.channel >= npwm:
            raise HardwareError(
                f"PWM {chip_dir}: channel {ch.channel} does not exist (npwm = {npwm}, channels 0..{npwm - 1})"
            )
        return chip_dir

    async def _export(self, ch: PwmChannel) -> Path:
        chip_dir = self._check_chip(ch)
        pwm_dir = self._pwm_dir(ch)
        if self._ready(pwm_dir):
            return pwm_dir
        if not pwm_dir.exists():
            _write_attr(chip_dir / "export", str(ch.channel))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._export_timeout_s
        while not self._ready(pwm_dir):
            if loop.time() >= deadline:
                raise HardwareError(
                    f"PWM {pwm_dir}: not ready {self._export_timeout_s:g} s after export "
                    f"(missing or not writable: {', '.join(self._missing(pwm_dir))}; udev rules for the pwm group?)"
                )
            await asyncio.sleep(EXPORT_POLL_S)
        return pwm_dir

    @staticmethod
    def _missing(pwm_dir: Path) -> list[str]:
        """The attributes of an exported channel that do not exist yet or are not writable for us (udev
        fixes their group and mode a moment after the kernel creates them)."""
        return [name for name in CHANNEL_ATTRS if not os.access(pwm_dir / name, os.W_OK)]

    @classmethod
    def _ready(cls, pwm_dir: Path) -> bool:
        return pwm_dir.is_dir() and not cls._missing(pwm_dir)

    def _configure(self, pwm_dir: Path) -> None:
        period_now = _read_int(pwm_dir / "period")
        if _read_attr(pwm_dir / "enable") != "0":
            _write_attr(pwm_dir / "enable", "0")
        if period_now:
            _write_attr(pwm_dir / "duty_cycle", "0")
        _write_attr(pwm_dir / "period", str(self.period_ns))
        if _read_attr(pwm_dir / "polarity") != self._polarity:
            _write_attr(pwm_dir / "polarity", self._polarity)
        if not period_now:
            _write_attr(pwm_dir / "duty_cycle", "0")
        _write_attr(pwm_dir / "enable", "1")

    def close(self) -> None:
        """Drive every opened channel to the F level (duty 0, left enabled, not unexported). Tries them
        all, then raises the first HardwareError, if any."""
        first: HardwareError | None = None
        for cid in sorted(self._open):
            self._duty_ns.pop(cid, None)
            try:
                _write_attr(self._pwm_dir(self._channels[cid]) / "duty_cycle", "0")
            except HardwareError as exc:
                log.error("PWM c%d: cannot leave the F level on close: %s", cid, exc)  # noqa: TRY400
                first = first or exc
            else:
                self._duty_ns[cid] = 0
        self._open.clear()
        if first is not None:
            raise first

    # --- duty ----------------------------------------------------------------------------------

    def duty_ns(self, duty_pct: float) -> int:
        """The `duty_cycle` in ns for `duty_pct`: quantised DOWN to 0.1 %, then rounded down to 1 ns."""
        if isinstance(duty_pct, bool) or not isinstance(duty_pct, int | float) or not math.isfinite(duty_pct):
            raise ValueError(f"duty_pct must be a number, got {duty_pct!r}")
        if not 0.0 <= duty_pct <= 100.0:
            raise ValueError(f"duty_pct must be within 0..100, got {duty_pct}")
        steps = min(DUTY_STEPS, math.floor(duty_pct * DUTY_STEPS / 100.0 + _QUANT_EPS))
        return self.period_ns * steps // DUTY_STEPS

    async def set_duty(self, cid: int, duty_pct: float) -> None:
        """Drive the CP of `cid` (see the module docstring). Idempotent. HardwareError if the write fails
        (the duty is then unknown and the next call writes again); ValueError for an unknown cid or a
        duty outside 0..100; RuntimeError before `open()`."""
        ch = self._channel(cid)
        duty_ns = self.duty_ns(duty_pct)
        if cid not in self._open:
            raise RuntimeError(f"PWM c{cid}: set_duty before open()")
        if self._duty_ns.get(cid) == duty_ns:
            return
        self._duty_ns.pop(cid, None)
        _write_attr(self._pwm_dir(ch) / "duty_cycle", str(duty_ns))
        self._duty_ns[cid] = duty_ns
        log.debug("PWM c%d: duty %.1f %% = %d ns", cid, duty_pct, duty_ns)

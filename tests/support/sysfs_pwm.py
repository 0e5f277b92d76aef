"""A temporary PWM sysfs tree shaped like the kernel's, and a model of the kernel behind it.

`PwmTree(tmp_path)` builds `pwmchip{N}/{export,unexport,npwm}` and, optionally, exported channels
`pwmchip{N}/pwm{C}/{period,duty_cycle,enable,polarity}` as plain files; `state(chip, channel)` reads a
channel back. Plain files accept anything, so `Kernel(tree).install(monkeypatch)` puts a model of the
kernel behind `hal.pwm._sysfs_write` (the one function through which hal.pwm writes): it creates
`pwm{C}` when `export` is written (at once, after `export_delay_s` on the event loop, or never), and
refuses what drivers/pwm/sysfs.c and core.c refuse, with the same errno:

* `export` of a channel >= npwm: ENODEV; of an exported channel: EBUSY; not a number: EINVAL;
* `period`, `duty_cycle`, `enable`, `polarity`: each store applies the whole state, and
  pwm_apply_state refuses `period == 0` or `duty_cycle > period` with EINVAL (even to disable);
  a polarity change while enabled: EBUSY (pwm_set_polarity of older kernels; many drivers still
  cannot change it on the fly); values that do not parse: EINVAL.

Every write is recorded in `Kernel.writes` (accepted ones) and `Kernel.refused`, so a test can check the
order of the values written, not only the end state.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Self

import pytest

import hal.pwm

ATTRS = ("period", "duty_cycle", "enable", "polarity")


@dataclass(frozen=True, slots=True, kw_only=True)
class PwmState:
    """What a channel's attributes read back."""

    period_ns: int
    duty_ns: int
    enabled: bool
    polarity: str


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class PwmTree:
    """A PWM sysfs tree under `root` (for `SysfsPwm(..., root=tree.root)`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def chip_dir(self, chip: int) -> Path:
        return self.root / f"pwmchip{chip}"

    def path(self, chip: int, channel: int, attr: str | None = None) -> Path:
        d = self.chip_dir(chip) / f"pwm{channel}"
        return d if attr is None else d / attr

    def add_chip(self, chip: int, *, npwm: int = 2) -> Path:
        d = self.chip_dir(chip)
        d.mkdir()
        (d / "npwm").write_text(f"{npwm}\n")
        (d / "export").write_text("")
        (d / "unexport").write_text("")
        return d

    def add_channel(
        self,
        chip: int,
        channel: int,
        *,
        period_ns: int = 0,
        duty_ns: int = 0,
        enabled: bool = False,
        polarity: str = "normal",
    ) -> Path:
        """An exported channel, as the kernel shows it after `echo C > export` (period 0 on most drivers)
        or as a previous run left it."""
        d = self.path(chip, channel)
        d.mkdir()
        self._write_state(chip, channel, PwmState(period_ns=period_ns, duty_ns=duty_ns, enabled=enabled,
                                                  polarity=polarity))
        return d

    def _write_state(self, chip: int, channel: int, s: PwmState) -> None:
        values = {"period": s.period_ns, "duty_cycle": s.duty_ns, "enable": int(s.enabled), "polarity": s.polarity}
        for attr, value in values.items():
            self.path(chip, channel, attr).write_text(f"{value}\n")

    def state(self, chip: int, channel: int) -> PwmState:
        def read(attr: str) -> str:
            return self.path(chip, channel, attr).read_text().strip()

        return PwmState(
            period_ns=int(read("period")),
            duty_ns=int(read("duty_cycle")),
            enabled=read("enable") == "1",
            polarity=read("polarity"),
        )


class Kernel:
    """The kernel's side of the tree: export and the checks of pwm_apply_state (module docstring).

    `export_delay_s`: 0 creates `pwm{C}` within the write (as the kernel does); > 0 creates it that
    long later on the running event loop (udev still fixing permissions); None never (export hangs).
    """

    def __init__(self, tree: PwmTree, *, export_delay_s: float | None = 0.0) -> None:
        self.tree = tree
        self.export_delay_s = export_delay_s
        #: (path relative to the root, value) of every accepted write, in order.
        self.writes: list[tuple[str, str]] = []
        #: (path relative to the root, value, errno) of every refused write.
        self.refused: list[tuple[str, str, int]] = []
        self._plain: Callable[[Path, str], None] = hal.pwm._sysfs_write
        self._timers: list[asyncio.TimerHandle] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> Self:
        monkeypatch.setattr(hal.pwm, "_sysfs_write", self.write)
        return self

    def cancel(self) -> None:
        for timer in self._timers:
            timer.cancel()

    def writes_to(self, chip: int, channel: int) -> list[tuple[str, str]]:
        """The accepted writes to `pwm{channel}`'s attributes: (attribute, value)."""
        prefix = f"pwmchip{chip}/pwm{channel}/"
        return [(p.removeprefix(prefix), v) for p, v in self.writes if p.startswith(prefix)]

    def write(self, path: Path, value: str) -> None:
        rel = path.relative_to(self.tree.root)
        try:
            match rel.parts:
                case (chip_name, "export"):
                    self._export(int(chip_name.removeprefix("pwmchip")), value)
                case (chip_name, channel_name, attr) if attr in ATTRS:
                    self._store(int(chip_name.removeprefix("pwmchip")), int(channel_name.removeprefix("pwm")), attr,
                                value)
                case _:
                    self._plain(path, value)
        except OSError as exc:
            self.refused.append((rel.as_posix(), value, exc.errno or 0))
            raise
        self.writes.append((rel.as_posix(), value))

    def _export(self, chip: int, value: str) -> None:
        try:
            channel = int(value.strip())
        except ValueError:
            raise _oserror(errno.EINVAL) from None
        npwm = int((self.tree.chip_dir(chip) / "npwm").read_text())
        if not 0 <= channel < npwm:
            raise _oserror(errno.ENODEV)
        if self.tree.path(chip, channel).exists():
            raise _oserror(errno.EBUSY)

        def create() -> None:
            if not self.tree.path(chip, channel).exists():
                self.tree.add_channel(chip, channel)

        if self.export_delay_s == 0:
            create()
        elif self.export_delay_s is not None:
            self._timers.append(asyncio.get_running_loop().call_later(self.export_delay_s, create))

    def _store(self, chip: int, channel: int, attr: str, value: str) -> None:
        old = self.tree.state(chip, channel)
        text = value.strip()
        try:
            match attr:
                case "period":
                    new = replace(old, period_ns=int(text))
                case "duty_cycle":
                    new = replace(old, duty_ns=int(text))
                case "enable":
                    if text not in ("0", "1"):
                        raise _oserror(errno.EINVAL)
                    new = replace(old, enabled=text == "1")
                case _:
                    if text not in ("normal", "inversed"):
                        raise _oserror(errno.EINVAL)
                    if old.enabled and text != old.polarity:
                        raise _oserror(errno.EBUSY)
                    new = replace(old, polarity=text)
        except ValueError:
            raise _oserror(errno.EINVAL) from None
        if new.period_ns <= 0 or new.duty_ns < 0 or new.duty_ns > new.period_ns:
            raise _oserror(errno.EINVAL)
        self._plain(self.tree.path(chip, channel, attr), text)

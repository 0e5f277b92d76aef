"""Tests of the keyboard-wedge RFID readers (hal/rfid.py): the UID formats, and recorded reader
sessions (tests/data/rfid/*.bin, made by make_recordings.py there) replayed as real `struct
input_event` bytes through a fake python-evdev (tests/fakes/evdev) whose fds the event loop polls.

No sleeps and no clock: `drain` runs the loop until the reader has read every fed byte, and the
decoder's time comes from the recorded timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, cast

import pytest

from firmware.core.errors import HardwareError
from tests.support.fakes import fresh_fake
from hal.protocols import TokenRead, TokenReader
from hal.rfid import (
    KEY_CHARS,
    MAX_LINE_CHARS,
    EvdevTokenReader,
    ReaderConfig,
    UidFormat,
    mask_uid,
    normalise_uid,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "rfid"
DEV1 = "/dev/input/by-id/usb-Sycreader_RFID_Technology_Co.__Ltd_SYC_ID_IC_USB_Reader_08FF20140315-event-kbd"
DEV2 = "/dev/input/by-id/usb-NXP_MIFARE_USB_Reader-event-kbd"

HEX, HEX_R = UidFormat.HEX, UidFormat.HEX_REVERSED
DEC, DEC_R, EM8 = UidFormat.DECIMAL, UidFormat.DECIMAL_REVERSED, UidFormat.EM4100_DECIMAL


class Fake(Protocol):
    """What the tests use of the fake's `evdev.FakeDevice`."""

    handles: list[object]
    grabbed_by: object

    @property
    def grabbed(self) -> bool: ...

    def feed(self, data: bytes) -> None: ...

    def unread(self) -> int: ...

    def unplug(self) -> None: ...


# --- normalise_uid ----------------------------------------------------------------------------------

UID7 = 0x04E1F23CAB5D80
UID10 = 0x0102030405060708090A


@pytest.mark.parametrize(
    ("typed", "fmt", "uid_bytes", "token"),
    [
        # hex: the bytes as the card sends them; any case; the size comes from the text
        ("1A2B3C4D", HEX, 4, "1A2B3C4D"),
        ("1a2b3c4d", HEX, 4, "1A2B3C4D"),
        ("0000000A", HEX, 4, "0000000A"),
        ("04E1F23CAB5D80", HEX, 4, "04E1F23CAB5D80"),  # 7 bytes on a reader configured for 4: hex tells
        ("0801161DD6", HEX, 4, "0801161DD6"),  # EM4100 "10H" (NITGEN eNCard-i guide)
        ("0102030405060708090A", HEX, 10, "0102030405060708090A"),
        # hex-reversed
        ("4D3C2B1A", HEX_R, 4, "1A2B3C4D"),
        ("e3069d52", HEX_R, 4, "529D06E3"),  # NITGEN: card 52 9D 06 E3 -> "E3069D52"
        ("805dab3cf2e104", HEX_R, 4, "04E1F23CAB5D80"),
        ("0A000000", HEX_R, 4, "0000000A"),
        # decimal, big-endian, zero-padded to the width of the byte count
        ("0439041101", DEC, 4, "1A2B3C4D"),
        ("1386022627", DEC, 4, "529D06E3"),  # NITGEN "10 Digit Decimal"
        ("0018226646", DEC, 4, "01161DD6"),  # NITGEN: the last 4 bytes of EM card 08 01 16 1D D6
        ("0007625328", DEC, 4, "00745A70"),  # StackOverflow 29798566
        ("0000000000", DEC, 4, "00000000"),
        ("4294967295", DEC, 4, "FFFFFFFF"),
        ("0034377965014", DEC, 5, "0801161DD6"),
        (f"{UID7:017d}", DEC, 7, "04E1F23CAB5D80"),
        ("00000000000000001", DEC, 7, "00000000000001"),
        (f"{UID10:025d}", DEC, 10, "0102030405060708090A"),
        # decimal of the byte-reversed UID, little-endian
        ("3808861522", DEC_R, 4, "529D06E3"),  # NITGEN "3,5 Digit Decimal" of the SC card
        ("3220338716", DEC_R, 4, "1C78F2BF"),  # Hamster project: UID 1c78f2bf typed as 3220338716
        ("0000000001", DEC_R, 4, "01000000"),
        (f"{int.from_bytes(UID7.to_bytes(7, 'big'), 'little'):017d}", DEC_R, 7, "04E1F23CAB5D80"),
        # EM4100 "8D": 3 digits for one byte, 5 for two
        ("02207638", EM8, 4, "161DD6"),  # NITGEN: 022 = 0x16, 07638 = 0x1DD6
        ("11623152", EM8, 4, "745A70"),  # StackOverflow 29798566: "116,23152"
        ("00000000", EM8, 7, "000000"),  # uid_bytes does not apply
        ("25565535", EM8, 4, "FFFFFF"),
    ],
)
def test_normalise_uid(typed: str, fmt: UidFormat, uid_bytes: int, token: str) -> None:
    assert normalise_uid(typed, fmt, uid_bytes=uid_bytes) == token


def test_normalise_uid_default_is_4_bytes_and_takes_format_names() -> None:
    assert normalise_uid("0439041101", DEC) == "1A2B3C4D"
    assert normalise_uid("0439041101", "decimal") == "1A2B3C4D"  # type: ignore[arg-type]
    assert normalise_uid("4d3c2b1a", "hex-reversed") == "1A2B3C4D"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("typed", "fmt", "uid_bytes", "match"),
    [
        ("1A2B3C4", HEX, 4, "7 hex digits is not a whole UID"),
        ("1A2B3C", HEX, 4, "6 hex digits is not a whole UID of 4..10 bytes"),
        ("0102030405060708090A0B", HEX, 4, "22 hex digits"),
        ("1A2B3G4D", HEX, 4, "character 6 of 8 is not a hex digit"),
        ("1A2B 3C4D", HEX_R, 4, "character 5 of 9 is not a hex digit"),
        ("", HEX, 4, "non-empty"),
        ("", DEC, 4, "non-empty"),
        ("4294967296", DEC, 4, "does not fit in 4 bytes"),
        ("9999999999", DEC_R, 4, "does not fit in 4 bytes"),
        ("439041101", DEC, 4, "expected 10 digits, got 9"),
        ("04390411011", DEC, 4, "expected 10 digits, got 11"),
        ("0439041101", DEC, 7, "UID of 7 bytes: expected 17 digits, got 10"),
        ("043904110A", DEC, 4, "character 10 of 10 is not a decimal digit"),
        ("+439041101", DEC, 4, "character 1 of 10 is not a decimal digit"),
        ("0439041101", DEC, 3, "uid_bytes must be one of"),
        ("25665535", EM8, 4, "3-digit part must be <= 255"),
        ("25565536", EM8, 4, "5-digit part <= 65535"),
        ("1162315", EM8, 4, "expected 8 digits"),
        ("116,23152", EM8, 4, "character 4 of 9 is not a decimal digit"),
        ("0439041101", "octal", 4, "octal"),
    ],
)
def test_normalise_uid_refuses(typed: str, fmt: UidFormat | str, uid_bytes: int, match: str) -> None:
    with pytest.raises(ValueError, match=match) as caught:
        normalise_uid(typed, fmt, uid_bytes=uid_bytes)  # type: ignore[arg-type]
    if len(typed) > 4:
        assert typed not in str(caught.value)  # a message may end up in a log: never the UID


def test_mask_uid() -> None:
    assert mask_uid("1A2B3C4D") == "****3C4D"
    assert mask_uid("0439041101") == "******1101"
    assert mask_uid("12345") == "*2345"
    assert mask_uid("1234") == "****"
    assert mask_uid("") == ""


def test_key_codes_are_the_kernels(evdev: ModuleType) -> None:
    """hal.rfid's own table of key codes against the names (the fake ecodes is checked against
    include/uapi/linux/input-event-codes.h: KEY_1=2 .. KEY_0=11, KEY_KP0=82, KEY_A=30, ...)."""
    e = evdev.ecodes
    expected = {getattr(e, f"KEY_{d}"): d for d in "0123456789"}
    expected |= {getattr(e, f"KEY_KP{d}"): d for d in "0123456789"}
    expected |= {getattr(e, f"KEY_{x}"): x for x in "ABCDEF"}
    assert expected == KEY_CHARS
    assert (e.KEY_ENTER, e.KEY_KPENTER, e.KEY_LEFTSHIFT, e.KEY_RIGHTSHIFT) == (28, 96, 42, 54)
    assert (e.EV_SYN, e.EV_KEY, e.EV_MSC, e.MSC_SCAN, e.SYN_REPORT) == (0, 1, 4, 4, 0)


# --- config ---------------------------------------------------------------------------------------


def test_reader_config_defaults_and_coercion() -> None:
    config = ReaderConfig(cid=2, device=DEV1, uid_format="hex-reversed")  # type: ignore[arg-type]
    assert config.device == Path(DEV1)
    assert config.uid_format is UidFormat.HEX_REVERSED
    assert (config.uid_bytes, config.key_timeout_s, config.repeat_s) == (4, 0.2, 2.0)
    assert ReaderConfig(cid=1, device=Path(DEV1)).uid_format is UidFormat.DECIMAL


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"cid": 0}, "cid must be an integer >= 1"),
        ({"cid": True}, "cid must be an integer >= 1"),
        ({"device": Path("event3")}, "device must be an absolute path"),
        ({"device": 3}, "device must be an absolute path"),
        ({"uid_format": "octal"}, "uid_format must be one of hex, hex-reversed, decimal"),
        ({"uid_bytes": 6}, r"uid_bytes must be one of \(4, 5, 7, 10\)"),
        ({"key_timeout_s": 0}, "key_timeout_s must be within"),
        ({"key_timeout_s": float("nan")}, "key_timeout_s must be a finite number"),
        ({"repeat_s": -1.0}, "repeat_s must be within"),
        ({"repeat_s": "2"}, "repeat_s must be a finite number"),
    ],
)
def test_reader_config_refuses(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ReaderConfig(**{"cid": 1, "device": Path(DEV1), **changes})


def test_token_reader_refuses_bad_reader_lists() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        EvdevTokenReader([])
    with pytest.raises(ValueError, match="configured once"):
        EvdevTokenReader([ReaderConfig(cid=1, device=Path(DEV1)), ReaderConfig(cid=2, device=Path(DEV1))])


# --- the fake python-evdev and helpers ----------------------------------------------------------------


@pytest.fixture
def evdev(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fake python-evdev, importable as `evdev` for the test."""
    module = fresh_fake(monkeypatch, "evdev")
    yield module
    module.FAKE_DEVICES.clear()


@pytest.fixture
def plug(evdev: ModuleType) -> Iterator[Callable[..., Fake]]:
    """`plug(path, **FakeDevice kwargs)`: a fake reader at `path` (replacing an unplugged one);
    each is closed after the test, with any handle a test left open."""
    made: list[Any] = []

    def plug_(path: str = DEV1, **kwargs: object) -> Fake:
        fake = evdev.FakeDevice(**kwargs)
        made.append(fake)
        evdev.FAKE_DEVICES[path] = fake
        return cast(Fake, fake)

    yield plug_
    for fake in made:
        for handle in list(fake.handles):
            handle.close()
        fake.close()


def recording(name: str) -> bytes:
    return (DATA / name).read_bytes()


def config(cid: int = 1, device: str = DEV1, **kwargs: Any) -> ReaderConfig:  # noqa: ANN401
    return ReaderConfig(cid=cid, device=Path(device), **kwargs)


@contextlib.asynccontextmanager
async def opened(*configs: ReaderConfig) -> AsyncIterator[EvdevTokenReader]:
    async with EvdevTokenReader(configs) as reader:
        yield reader


async def drain(*fakes: Fake) -> None:
    """Run the loop until the readers have read (and so decoded) every byte fed to `fakes`."""
    for _ in range(10_000):
        if not any(fake.unread() for fake in fakes):
            await asyncio.sleep(0)  # one more turn: nothing is half-done between two callbacks
            return
        await asyncio.sleep(0)
    raise AssertionError("the reader never read what was fed")


async def queued(reader: EvdevTokenReader) -> list[TokenRead]:
    """The reads `next_token()` returns without waiting (all of them, after `drain`)."""
    reads: list[TokenRead] = []
    while True:
        task = asyncio.ensure_future(reader.next_token())
        await asyncio.sleep(0)  # one step: next_token completes at once iff a read is queued
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return reads
        reads.append(task.result())


async def replay(fake: Fake, reader: EvdevTokenReader, *names: str) -> list[str]:
    for name in names:
        fake.feed(recording(name))
    await drain(fake)
    return [read.id_token for read in await queued(reader)]


# --- recorded sessions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "settings", "tokens"),
    [
        ("decimal10.bin", {}, ["1A2B3C4D"]),
        ("hex_shift.bin", {"uid_format": HEX}, ["04E1F23CAB5D80"]),
        ("hex_reversed.bin", {"uid_format": HEX_R}, ["529D06E3"]),
        ("keypad.bin", {"uid_format": DEC_R}, ["1C78F2BF"]),
        ("em4100_8d.bin", {"uid_format": EM8}, ["745A70"]),
        ("burst.bin", {}, ["00745A70", "1A2B3C4D"]),
        # held on the antenna: 7 re-sends 0.5 s apart are one read (2 s counted from the last
        # re-send, not the first), the tap 3 s later is a new one; repeat_s 0 keeps every line
        ("held.bin", {}, ["529D06E3", "529D06E3"]),
        ("held.bin", {"repeat_s": 0.0}, ["529D06E3"] * 8),
        ("held.bin", {"repeat_s": 3.5}, ["529D06E3"]),
        # a '-' inside a line and a 40-digit line are discarded; the next line reads fine
        ("garbage.bin", {}, ["1A2B3C4D"]),
        # "DEAD", 1.5 s of nothing, "1A2B3C4D": the partial line is dropped, never merged
        ("partial.bin", {"uid_format": HEX}, ["1A2B3C4D"]),
        ("partial.bin", {"uid_format": HEX, "key_timeout_s": 2.0}, ["DEAD1A2B3C4D"]),
        # a key held 300 ms: its autorepeats never type a second "9"; but it is a 250 ms silence
        # between two key events, more than the default 0.2 s
        ("autorepeat.bin", {"key_timeout_s": 0.5}, ["1A2B3C4D"]),
        ("autorepeat.bin", {}, []),
        # a reader set up for the wrong format: every line is discarded, nothing made up
        ("decimal10.bin", {"uid_bytes": 7}, []),
        ("hex_shift.bin", {}, []),
    ],
)
async def test_recording_gives_tokens(
    plug: Callable[..., Fake], name: str, settings: dict[str, Any], tokens: list[str]
) -> None:
    fake = plug()
    async with opened(config(**settings)) as reader:
        assert await replay(fake, reader, name) == tokens


async def test_recording_fed_in_odd_pieces(plug: Callable[..., Fake]) -> None:
    """Bytes that arrive split inside a record are decoded once the record is whole."""
    fake = plug()
    data = recording("burst.bin")
    async with opened(config()) as reader:
        for start in range(0, len(data), 100):
            fake.feed(data[start:start + 100])
            await drain(fake)
        assert [r.id_token for r in await queued(reader)] == ["00745A70", "1A2B3C4D"]


async def test_next_token_waits_for_a_card(plug: Callable[..., Fake]) -> None:
    fake = plug()
    async with opened(config(cid=3)) as reader:
        assert isinstance(reader, TokenReader)
        task = asyncio.ensure_future(reader.next_token())
        await asyncio.sleep(0)
        assert not task.done()
        fake.feed(recording("decimal10.bin"))
        async with asyncio.timeout(2):
            read = await task
    assert read == TokenRead(cid=3, id_token="1A2B3C4D", token_type="RFID")


async def test_a_line_longer_than_the_limit_is_garbage(
    plug: Callable[..., Fake], caplog: pytest.LogCaptureFixture
) -> None:
    """garbage.bin's 40-digit line stops at MAX_LINE_CHARS (no format takes more than 25)."""
    fake = plug()
    async with opened(config()) as reader:
        assert await replay(fake, reader, "garbage.bin") == ["1A2B3C4D"]
    assert f"longer than {MAX_LINE_CHARS} characters" in caplog.text
    assert "key code 12 is no digit or hex letter" in caplog.text  # the '-'


# --- devices: grab, merge, failures -------------------------------------------------------------------


async def test_device_is_grabbed_while_open_and_released_after(plug: Callable[..., Fake]) -> None:
    fake = plug()
    reader = EvdevTokenReader([config()])
    assert not fake.grabbed
    async with reader:
        assert fake.grabbed
        assert len(fake.handles) == 1
        assert fake.grabbed_by is fake.handles[0]
    assert not fake.grabbed
    assert fake.handles == []
    async with reader:  # it may be entered again
        assert fake.grabbed
        assert await replay(fake, reader, "decimal10.bin") == ["1A2B3C4D"]
    assert not fake.grabbed


async def test_two_readers_merge_with_their_cids(plug: Callable[..., Fake]) -> None:
    first, second = plug(DEV1), plug(DEV2)
    async with opened(config(cid=1, device=DEV1), config(cid=2, device=DEV2, uid_format=HEX)) as reader:
        first.feed(recording("burst.bin"))
        second.feed(recording("hex_shift.bin"))
        await drain(first, second)
        reads = await queued(reader)
    assert sorted((r.cid, r.id_token) for r in reads) == [(1, "00745A70"), (1, "1A2B3C4D"), (2, "04E1F23CAB5D80")]
    assert [r.id_token for r in reads if r.cid == 1] == ["00745A70", "1A2B3C4D"]  # in order per reader
    assert {r.token_type for r in reads} == {"RFID"}
    assert not first.grabbed
    assert not second.grabbed


async def test_unplug_raises_naming_the_device_then_reopen(plug: Callable[..., Fake]) -> None:
    fake = plug()
    async with opened(config()) as reader:
        fake.feed(recording("decimal10.bin"))
        await drain(fake)
        fake.unplug()
        assert (await reader.next_token()).id_token == "1A2B3C4D"  # reads before the unplug first
        with pytest.raises(HardwareError, match=f"RFID reader {DEV1}: gone") as caught:
            async with asyncio.timeout(2):
                await reader.next_token()
        assert isinstance(caught.value.__cause__, OSError)
        assert caught.value.__cause__.errno == 19
        assert fake.handles == []
        assert reader.gone == (Path(DEV1),)
        with pytest.raises(HardwareError, match=f"no RFID reader is open: {DEV1} gone"):
            await reader.next_token()
        with pytest.raises(HardwareError, match=f"RFID reader {DEV1}: not found"):
            await reader.reopen()  # still unplugged
        again = plug()
        await reader.reopen()
        assert again.grabbed
        assert not reader.gone
        assert await replay(again, reader, "burst.bin") == ["00745A70", "1A2B3C4D"]
    assert not again.grabbed


async def test_unplug_of_one_reader_leaves_the_other(plug: Callable[..., Fake]) -> None:
    first, second = plug(DEV1), plug(DEV2)
    async with opened(config(cid=1, device=DEV1), config(cid=2, device=DEV2)) as reader:
        first.unplug()
        with pytest.raises(HardwareError, match=DEV1):
            async with asyncio.timeout(2):
                await reader.next_token()
        second.feed(recording("decimal10.bin"))
        async with asyncio.timeout(2):
            assert await reader.next_token() == TokenRead(cid=2, id_token="1A2B3C4D")


async def test_missing_device(plug: Callable[..., Fake]) -> None:
    with pytest.raises(HardwareError, match=f"RFID reader {DEV2}: not found") as caught:
        async with opened(config(device=DEV2)):
            pass
    assert isinstance(caught.value.__cause__, FileNotFoundError)


async def test_a_failing_reader_closes_those_opened_before(plug: Callable[..., Fake]) -> None:
    first = plug(DEV1)
    with pytest.raises(HardwareError, match=DEV2):
        async with opened(config(cid=1, device=DEV1), config(cid=2, device=DEV2)):
            pass
    assert not first.grabbed
    assert first.handles == []


async def test_permission_denied(plug: Callable[..., Fake]) -> None:
    plug(readable=False)
    with pytest.raises(HardwareError, match="permission denied: add the service user to the input group"):
        async with opened(config()):
            pass


async def test_busy_grab(plug: Callable[..., Fake], evdev: ModuleType) -> None:
    fake = plug()
    other = evdev.InputDevice(DEV1)  # another program holds the reader
    other.grab()
    with pytest.raises(HardwareError, match=f"RFID reader {DEV1}: grabbed by another program") as caught:
        async with opened(config()):
            pass
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == 16
    assert fake.handles == [other]  # ours was closed
    assert fake.grabbed_by is other


async def test_missing_evdev_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "evdev", None)
    with pytest.raises(HardwareError) as caught:
        async with opened(config()):
            pass
    message = str(caught.value)
    assert "evdev" in message
    assert "pip install 'charger-firmware[rpi]'" in message
    assert "\n" not in message


async def test_a_waiting_next_token_ends_when_the_readers_close(plug: Callable[..., Fake]) -> None:
    fake = plug()
    async with opened(config()) as reader:
        task = asyncio.ensure_future(reader.next_token())
        await asyncio.sleep(0)
    with pytest.raises(HardwareError, match="RFID readers closed"):
        async with asyncio.timeout(2):
            await task
    assert not fake.grabbed


async def test_next_token_needs_the_reader_open() -> None:
    with pytest.raises(RuntimeError, match="not open"):
        await EvdevTokenReader([config()]).next_token()


async def test_logs_never_show_a_whole_uid(plug: Callable[..., Fake], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    first, second = plug(DEV1), plug(DEV2)
    async with opened(config(cid=1, device=DEV1), config(cid=2, device=DEV2, uid_format=HEX)) as reader:
        assert await replay(first, reader, "garbage.bin", "held.bin") == ["1A2B3C4D", "529D06E3", "529D06E3"]
        assert await replay(second, reader, "partial.bin", "hex_shift.bin") == ["1A2B3C4D", "04E1F23CAB5D80"]
    text = caplog.text
    assert "discarded" in text  # the garbage, the long line and the partial line were reported ...
    assert "card ****3C4D" in text  # ... and the reads, masked
    assert "card ****06E3" in text
    for uid in ("0439041101", "1A2B3C4D", "1386022627", "529D06E3", "04E1F23CAB5D80", "1234567890", "DEAD"):
        assert uid not in text

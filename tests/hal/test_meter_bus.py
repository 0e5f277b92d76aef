"""`hal.meter_bus`: links and the serial-bus registry, with a stand-in client (no I/O).

The links' behaviour over real serial lines is in tests/integration/test_meter_bus.py; here are the rules
themselves: one link per serial path, the same settings on it, a client opened once and dropped on
demand, the last member out closing it and freeing the path.
"""

from __future__ import annotations

import pytest

from hal.meter_bus import SerialSettings, new_token, private_link, serial_link


class FakeClient:
    """Has what a link needs of a pymodbus client; counts what was done to it."""

    def __init__(self, *, ok: bool = True) -> None:
        self.ok = ok
        self.connected = False
        self.connects = 0
        self.closes = 0

    async def connect(self) -> bool:
        self.connects += 1
        self.connected = self.ok
        return self.ok

    def close(self) -> None:
        self.closes += 1
        self.connected = False


def settings(path: str, parity: str = "N") -> SerialSettings:
    return SerialSettings(path=path, baud=9600, parity=parity, stopbits=1)


async def test_one_link_and_one_client_per_serial_path() -> None:
    made: list[FakeClient] = []

    def factory() -> FakeClient:
        made.append(FakeClient())
        return made[-1]

    t1, t2 = new_token(), new_token()
    one = serial_link(settings("/dev/ttyTEST0"), factory, t1, "meter A")
    two = serial_link(settings("/dev/../dev/ttyTEST0"), factory, t2, "meter B")  # the same path, spelled otherwise
    assert one is two
    assert one.members == ("meter A", "meter B")
    async with one.lock:
        client = await one.client()
        assert client is not None
        assert await two.client() is client  # connected: reused
    assert len(made) == 1
    assert one.connected
    one.leave(t1)
    assert two.connected  # B is still on the bus
    two.leave(t2)
    assert not one.connected
    assert made[0].closes == 1
    # Forgotten: the path may now run with other settings.
    t3 = new_token()
    three = serial_link(settings("/dev/ttyTEST0", parity="E"), factory, t3, "meter C")
    assert three is not one
    three.leave(t3)


def test_other_settings_on_a_path_are_refused_naming_both() -> None:
    t1 = new_token()
    link = serial_link(settings("/dev/ttyTEST1"), FakeClient, t1, "meter SDM630 (device 1)")
    with pytest.raises(ValueError, match=r"^meter EM340 \(device 2\) wants 9600 8E1 on /dev/ttyTEST1, but that bus "
                                         r"already runs at 9600 8N1 for meter SDM630 \(device 1\)"):
        serial_link(settings("/dev/ttyTEST1", parity="E"), FakeClient, new_token(), "meter EM340 (device 2)")
    assert link.members == ("meter SDM630 (device 1)",)  # the refused meter did not join
    link.leave(t1)


async def test_a_client_that_cannot_connect_is_dropped() -> None:
    made: list[FakeClient] = []

    def factory() -> FakeClient:
        made.append(FakeClient(ok=len(made) > 0))  # the first one fails
        return made[-1]

    token = new_token()
    link = private_link("tcp meter", factory, token, "meter A")
    assert await link.client() is None
    assert made[0].closes == 1
    assert await link.client() is made[1]
    link.drop()
    link.drop()  # idempotent
    assert made[1].closes == 1
    assert await link.client() is made[2]  # a fresh one after a drop
    link.leave(token)
    assert not link.connected


def test_private_links_are_not_shared() -> None:
    a = private_link("tcp://h:502", FakeClient, new_token(), "meter A")
    b = private_link("tcp://h:502", FakeClient, new_token(), "meter B")
    assert a is not b
    assert a.settings is None
    assert b.members == ("meter B",)

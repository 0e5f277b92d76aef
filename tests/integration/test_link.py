"""The backend link of API.md §1 and §6 against a real mosquitto: will, online status, TCP_NODELAY,
broker restarts, the fallback current and a broker that is not there at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from firmware.core.events import Status
from firmware.core.pilot import current_to_duty
from tests.support.backend import (
    Backend,
    SyncSubscriber,
    backend_for,
    new_charger_id,
    root_of,
    wait_online,
    wait_status,
)
from tests.support.broker import Broker, running_broker
from tests.support.builders import LOCAL_LIST
from tests.support.codec import as_json, decode, envelope
from tests.support.controller import Running, start_controller, write_config
from tests.support.flows import plug_and_charge
from tests.support.polling import until

pytestmark = pytest.mark.integration


def controller_socket(running: Running) -> socket.socket:
    client = running.controller.link._client  # noqa: SLF001 - the live aiomqtt client
    assert client is not None
    sock = client._client.socket()  # noqa: SLF001 - paho's socket
    assert isinstance(sock, socket.socket)
    return sock


def statuses(backend: Backend) -> list[Any]:
    return backend.on("status")


@contextlib.asynccontextmanager
async def quiet_backend(port: int, root: str) -> AsyncIterator[Backend]:
    """backend_for, for a broker the test stops: leaving it after the broker is gone is not an error."""
    stack = contextlib.AsyncExitStack()
    backend = await stack.enter_async_context(backend_for(port, root))
    try:
        yield backend
    finally:
        with contextlib.suppress(Exception):
            await stack.aclose()


async def test_will_is_offline(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    assert statuses(backend)[-1]["online"] is True
    before = len(statuses(backend))
    controller_socket(running).shutdown(socket.SHUT_RDWR)  # the connection dies without DISCONNECT
    await backend.wait_for(lambda: any(s == {"online": False} for s in statuses(backend)[before:]))
    will = next(p for t, p, r, _ in backend.raw if t == f"{backend.root}/status" and decode(p)["online"] is False)
    assert will == b'{"online":false}' or decode(will) == {"online": False}
    # reconnecting: test_reconnects_quickly_after_abrupt_loss and test_broker_restart


async def test_reconnects_quickly_after_abrupt_loss(charger: tuple[Running, Backend],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    running, backend = charger
    before = len(statuses(backend))
    controller_socket(running).shutdown(socket.SHUT_RDWR)
    await backend.wait_for(lambda: any(s == {"online": False} for s in statuses(backend)[before:]))
    assert not [r for r in caplog.records if "crashed" in r.getMessage()]
    # reconnect_max_s is 0.5 in the tests: back well within 1.5 s
    await wait_online(backend, 1.5)


async def test_request_right_after_online_is_answered(broker: Broker, tmp_path: Path) -> None:
    charger_id = new_charger_id()
    config = write_config(tmp_path, broker.port, charger_id=charger_id)
    root = root_of(charger_id)
    async with backend_for(broker.port, root) as backend:
        sent: list[str] = []

        def on_message(topic: str, payload: bytes) -> None:
            # publish the request the moment online:true arrives, before the test even looks
            if topic == f"{root}/status" and decode(payload).get("online") is True and not sent:
                sent.append("first")
                asyncio.get_running_loop().create_task(backend.send_raw(as_json(envelope("first", "get_state"))))

        backend.hooks.append(on_message)
        running = await start_controller(config)
        try:
            await backend.wait_for(lambda: "first" in backend.replies)
            assert backend.replies["first"]["ok"] is True
            status = statuses(backend)[-1]
            assert status["online"] is True
            assert status["evses"] == [1]
            assert status["boot_id"]
            assert status["boot_id"] == running.controller.boot_id
            await asyncio.wait_for(running.controller.link.connected.wait(), 5)
        finally:
            await running.stop()


async def test_tcp_nodelay(charger: tuple[Running, Backend]) -> None:
    running, _ = charger
    assert controller_socket(running).getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_broker_restart(own_broker: Broker, tmp_path: Path) -> None:
    charger_id = new_charger_id()
    config = write_config(tmp_path, own_broker.port, charger_id=charger_id)
    root = root_of(charger_id)
    running = await start_controller(config)
    link = running.controller.link
    try:
        async with quiet_backend(own_broker.port, root) as backend:
            await wait_online(backend)
            await backend.ok("set_local_auth_list", LOCAL_LIST)
            await backend.ok("reserve_now", {"reservation_id": 1, "id_token": "AA11", "evse_id": 1,
                                             "expiry_time": "2099-01-01T00:00:00Z"})
            await backend.ok("cancel_reservation", {"reservation_id": 1})
            await backend.wait_for(lambda: len(backend.reservation_updates()) == 2 and len(backend.events(1)) == 2)
            last_seq = max(m["seq"] for m in backend.reservation_updates() + backend.events())
            assert last_seq == 4  # Placed, ReservationStart, ReservationEnd, Cancelled
            own_broker.stop()
        await until(lambda: not link.connected.is_set(), 5)

        # while the broker is down: a whole session start, decided on the local list
        await plug_and_charge(running)  # on the board: LOCAL_TOKEN is in the local list
        # the core commits a step's events right after carrying out its outputs: wait for that
        await until(lambda: len(running.controller.store.pending()) >= 3, 3)
        pending = running.controller.store.pending()
        assert [r.seq for r in pending] == list(range(last_seq + 1, last_seq + 1 + len(pending)))

        own_broker.start()  # blocks the loop: the controller cannot reconnect before the subscriber listens
        subscriber = SyncSubscriber(own_broker.port, f"{root}/#")
        try:
            await until(lambda: link.connected.is_set(), 7)
            session_topic = f"{root}/evse/1/session"
            await until(lambda: len(subscriber.decoded(session_topic)) >= len(pending), 5)
            events = subscriber.decoded(session_topic)
            assert [e["seq"] for e in events] == [r.seq for r in pending]  # in seq order, none lost
            assert [e["event"] for e in events] == ["SessionStarted", "AuthRequired", "ChargingStarted"]
            await until(lambda: not running.controller.store.pending(), 5)  # acknowledged
        finally:
            subscriber.close()

        async with quiet_backend(own_broker.port, root) as fresh:  # sees the republished retained documents
            await wait_online(fresh)
            await wait_status(fresh, 1, "Charging")
            retained = {t for t, _, _, r in fresh.raw if r}
            assert {f"{root}/status", f"{root}/evse/1/state"} <= retained
            assert (fresh.state(1) or {})["relay_closed"] is True
            assert await fresh.ok("stop_session", {"evse_id": 1}) is True  # commands work again
            cancelled = await fresh.wait_for(lambda: [e for e in fresh.events(1) if e["event"] == "SessionCancelled"])
            assert cancelled[0]["seq"] == pending[-1].seq + 1
    finally:
        await running.stop()


async def test_fallback_current_on_link_loss(own_broker: Broker, tmp_path: Path) -> None:
    charger_id = new_charger_id()
    config = write_config(tmp_path, own_broker.port, charger_id=charger_id, fallback_after_s=1, fallback_current_a=6.0)
    root = root_of(charger_id)
    running = await start_controller(config)
    charger, sim, link = running.controller.charger, running.sim, running.controller.link
    loop = asyncio.get_running_loop()
    try:
        async with quiet_backend(own_broker.port, root) as backend:
            await wait_online(backend)
            state = await plug_and_charge(running, backend, local_list=LOCAL_LIST)
            assert state["offered_a"] == 32
            assert sim.duty_pct(1) == current_to_duty(32)
            own_broker.stop()
        lost_at = loop.time()
        await until(lambda: not link.connected.is_set(), 5)
        await asyncio.sleep(max(0.0, lost_at + 0.7 - loop.time()))
        assert charger.limit_a(1) == 32  # not before fallback_after_s
        await until(lambda: charger.limit_a(1) == 6, 2)
        assert 0.9 <= loop.time() - lost_at < 2.0
        await until(lambda: sim.duty_pct(1) == current_to_duty(6) == 10.0, 6)  # within the 5 s PWM rule
        assert sim.relay_commanded(1)
        assert charger.status(1) is Status.CHARGING

        own_broker.start()
        await until(lambda: link.connected.is_set(), 7)
        await until(lambda: charger.limit_a(1) == 32, 2)
        await until(lambda: sim.duty_pct(1) == current_to_duty(32), 7)
        assert charger.status(1) is Status.CHARGING
    finally:
        await running.stop()


async def test_no_broker_at_start(broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    charger_id = new_charger_id()
    root = root_of(charger_id)
    # first run: the backend loads the local list (persisted in state_dir)
    config = write_config(tmp_path, broker.port, charger_id=charger_id)
    async with backend_for(broker.port, root) as backend:
        running = await start_controller(config)
        try:
            await wait_online(backend)
            await backend.ok("set_local_auth_list", LOCAL_LIST)
        finally:
            await running.stop()

    # second run: nothing listens on the broker's port
    (tmp_path / "late-broker").mkdir()
    late = Broker(tmp_path / "late-broker")  # its port, with nothing listening yet
    caplog.set_level(logging.DEBUG, logger="firmware.mqtt")
    config = write_config(tmp_path, late.port, charger_id=charger_id)
    running = await start_controller(config)
    try:
        await plug_and_charge(running)  # on the board: LOCAL_TOKEN is in the local list
        assert running.sim.relay_commanded(1)

        def records(level: int, text: str) -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "firmware.mqtt" and r.levelno == level
                    and text in r.getMessage()]

        await until(lambda: len(records(logging.DEBUG, "still unreachable")) >= 3, 5)  # several retries
        assert len(records(logging.WARNING, "unreachable")) == 1
        assert not running.controller.link.connected.is_set()

        with running_broker(late):
            try:
                async with backend_for(late.port, root) as backend:
                    await wait_online(backend)
                    await wait_status(backend, 1, "Charging")
                    assert await backend.ok("get_state")
                assert len(records(logging.WARNING, "unreachable")) == 1
            finally:
                await running.stop()
    finally:
        await running.stop()  # (again: a no-op when it already stopped)


async def test_stops_on_one_cancel_while_connecting(broker: Broker, tmp_path: Path) -> None:
    for attempt in range(150):
        directory = tmp_path / str(attempt)
        directory.mkdir()
        running = await start_controller(write_config(directory, broker.port, charger_id=new_charger_id()))
        # cancel at some point of the link's connect sequence (CONNECT, 2 SUBSCRIBEs, status, retained: ~3 ms)
        await asyncio.sleep((attempt % 16) * 0.00025 * (1 + attempt // 48))
        running.task.cancel()  # what SIGTERM does (firmware/__main__.py)
        done, _ = await asyncio.wait({running.task}, timeout=0.5)
        if not done:
            await running.stop(grace_s=0)  # cancels the controller's tasks directly
        assert done, f"attempt {attempt}: Controller.run() did not return after one cancellation"

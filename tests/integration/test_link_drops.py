"""A broker that dies (`kill -9`) with requests in flight never stops the charger (issue 8 §1).

Against a real mosquitto that is killed, not stopped: the controller stays the same process (same
`boot_id`), comes back online by itself, every request that was executed keeps its reply (the same id
re-sent after the reconnect gets exactly one reply, from the cache, without a second execution), and
nothing is left in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.support.backend import Backend, backend_for, new_charger_id, root_of, wait_online
from tests.support.broker import Broker
from tests.support.codec import as_json, envelope
from tests.support.controller import Running, start_controller, write_config
from tests.support.store import SlowStore

pytestmark = pytest.mark.integration

STORM = 400


async def _publish_storm(backend: Backend, bodies: list[bytes]) -> None:
    """As fast as the client goes, QoS 1; the broker may die under it."""
    with contextlib.suppress(aiomqtt.MqttError):
        await asyncio.gather(*(backend.send_raw(b) for b in bodies))


def _replies_by_id(backend: Backend, since: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for value in backend.all_replies()[since:]:
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            out.setdefault(value["id"], []).append(value)
    return out


def _no_crash(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    """The controller runs on, and none of our code logged an error with a traceback. (paho may log an
    `add_writer` callback error of its own when its socket dies under it; that is the library's.)"""
    assert not running.task.done(), "the controller stopped"
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info is not None
           and (r.name.startswith("firmware") or "never retrieved" in r.getMessage())]
    assert not bad, [r.getMessage() for r in bad]
    assert "InvalidStateError" not in caplog.text


async def test_kill_broker_under_a_storm_of_durable_requests(own_broker: Broker, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Three times in a row: 400 set_max_current in flight, broker killed, restarted, all ids re-sent."""
    caplog.set_level(logging.INFO)
    charger_id = new_charger_id()
    config = write_config(tmp_path, own_broker.port, charger_id=charger_id)
    root = root_of(charger_id)
    # a slow disk keeps many requests between execution and reply when the broker dies
    running = await start_controller(config, store=SlowStore(config.charger.state_dir, fsync_s=0.02))
    boot_id = running.controller.boot_id
    executed_before = running.controller.ops_executed
    try:
        for round_ in range(3):
            bodies = {f"s{round_}-{i}": as_json(envelope(f"s{round_}-{i}", "set_max_current", {
                "evse_id": 1, "current_a": 6 + (i % 27)})) for i in range(STORM)}
            async with backend_for(own_broker.port, root) as backend:
                await wait_online(backend, 15, boot_id=boot_id)
                storm = asyncio.create_task(_publish_storm(backend, list(bodies.values())))
                await backend.wait_for(lambda: len(backend.replies) >= STORM // 8, 10)
                own_broker.kill()  # requests still waiting for their commit, replies unsent
                await storm
            assert not running.task.done(), "the broker's death stopped the controller"
            await asyncio.sleep(0.3)
            own_broker.start()
            async with backend_for(own_broker.port, root) as backend:
                await wait_online(backend, 15, boot_id=boot_id)  # by itself, same process
                mark = len(backend.all_replies())
                for payload in bodies.values():
                    await backend.send_raw(payload)
                await backend.wait_for(lambda m=mark: len(_replies_by_id(backend, m)) >= STORM, 20)
                await asyncio.sleep(0.3)  # a second reply to any id would arrive in this time
                got = _replies_by_id(backend, mark)
                assert set(got) == set(bodies)
                assert all(len(replies) == 1 for replies in got.values()), \
                    {k: len(v) for k, v in got.items() if len(v) != 1}
                assert all(r[0]["ok"] is True and r[0]["result"] == "Success" for r in got.values())
            # each id ran once: the re-sent ones were answered from the reply cache
            assert running.controller.ops_executed - executed_before == STORM * (round_ + 1)
            assert not running.controller.link._in_flight  # noqa: SLF001 - nothing left in flight
        _no_crash(running, caplog)
    finally:
        await running.stop()


async def test_kill_broker_while_authorize_waits_for_the_backend(own_broker: Broker, tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    charger_id = new_charger_id()
    config = write_config(tmp_path, own_broker.port, charger_id=charger_id, auth_timeout_s=1.0)
    root = root_of(charger_id)
    running = await start_controller(config)
    boot_id = running.controller.boot_id
    request = as_json(envelope("auth-1", "authorize", {"id_token": "CAFE01", "evse_id": 1}))
    try:
        async with backend_for(own_broker.port, root) as backend:
            await wait_online(backend, 15, boot_id=boot_id)
            await backend.send_raw(request)
            await backend.wait_for(lambda: backend.raw_on("auth/request"), 5)  # the controller asks; nobody answers
            own_broker.kill()
        await asyncio.sleep(1.5)  # the backend's answer times out while the link is down
        assert not running.task.done(), "the broker's death stopped the controller"
        own_broker.start()
        async with backend_for(own_broker.port, root) as backend:
            await wait_online(backend, 15, boot_id=boot_id)
            executed = running.controller.ops_executed
            mark = len(backend.all_replies())
            await backend.send_raw(request)  # QoS 1 redelivery of the same id
            await backend.wait_for(lambda: _replies_by_id(backend, mark).get("auth-1"), 5)
            await asyncio.sleep(0.3)
            replies = _replies_by_id(backend, mark)["auth-1"]
            assert len(replies) == 1
            assert replies[0]["ok"] is True
            assert replies[0]["result"]["status"] == "Rejected"  # offline, not in the local list
            assert running.controller.ops_executed == executed  # from the cache: not asked again
            assert not backend.raw_on("auth/request")
        assert not running.controller.link._in_flight  # noqa: SLF001
        _no_crash(running, caplog)
    finally:
        await running.stop()

"""The console endpoint (firmware/console_server.py) against a whole simulated controller, no broker:
a raw NDJSON client on the unix socket runs every kind of op, watches, and misbehaves."""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from firmware import console_ops
from firmware.config.meter_url import MeterUrl
from firmware.core.events import Led
from hal.meter import ModbusMeter
from tests.support.broker import free_port
from tests.support.builders import LOCAL_LIST, LOCAL_TOKEN, STATE_KEYS, evses, in_s
from tests.support.controller import Running, start_controller, write_config
from tests.support.modbus import Servers, meter_device
from tests.support.polling import until
from tests.support.store import stored_state

pytestmark = pytest.mark.integration

TIMEOUT_S = 5.0


class Console:
    """A raw NDJSON client of the console socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.events: list[dict[str, Any]] = []  # watch lines read while waiting for a reply
        self._ids = 0

    @classmethod
    async def open(cls, path: Path) -> Console:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()

    async def line(self) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.reader.readline(), TIMEOUT_S)
        assert raw.endswith(b"\n"), raw
        doc = json.loads(raw)
        assert isinstance(doc, dict)
        return doc

    async def send(self, raw: bytes) -> dict[str, Any]:
        """Send raw bytes; the next reply line."""
        self.writer.write(raw)
        await self.writer.drain()
        return await self.line()

    async def call(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        self._ids += 1
        rid = f"c{self._ids}"
        self.writer.write(json.dumps({"id": rid, "op": op, "args": args or {}}).encode() + b"\n")
        await self.writer.drain()
        while True:
            doc = await self.line()
            if doc.get("id") == rid and "event" not in doc:
                assert doc["op"] == op
                return doc
            self.events.append(doc)

    async def ok(self, op: str, args: dict[str, Any] | None = None) -> Any:  # noqa: ANN401
        reply = await self.call(op, args)
        assert reply["ok"] is True, reply
        return reply["result"]

    async def error(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = await self.call(op, args)
        assert reply["ok"] is False, reply
        assert set(reply["error"]) == {"code", "message"}
        return reply["error"]  # type: ignore[no-any-return]


async def start(directory: Path, **kw: Any) -> Running:  # noqa: ANN401
    """A controller with two EVSEs and no broker (the link retries a closed port: offline)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory, free_port(), charger_id="CP-console", evses=evses(1, 2), **kw)
    running = await start_controller(config)
    await asyncio.wait_for(running.controller.console.serving.wait(), TIMEOUT_S)
    return running


@pytest.fixture
async def charger(tmp_path: Path) -> AsyncIterator[Running]:
    running = await start(tmp_path)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def console(charger: Running) -> AsyncIterator[Console]:
    client = await Console.open(charger.controller.console.path)
    try:
        yield client
    finally:
        await client.close()


def without_time(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "updated_at"}


async def disabled_and_idle(console: Console, evse_id: int = 1) -> None:
    assert await console.ok("set_enabled", {"evse_id": evse_id, "enabled": False}) is True


# --- ops ------------------------------------------------------------------------------------------


async def test_status_gives_the_status_and_the_state_documents(charger: Running, console: Console) -> None:
    result = await console.ok("status")
    assert set(result) == {"status", "evses"}
    status = result["status"]
    assert status["online"] is False  # no broker
    assert status["evses"] == [1, 2]
    assert status["boot_id"] == charger.controller.boot_id
    assert [set(doc) for doc in result["evses"]] == [STATE_KEYS, STATE_KEYS]
    published = charger.controller.state_documents()
    assert [without_time(d) for d in result["evses"]] == [without_time(d) for d in published]
    snapshot = await console.ok("get_state")
    assert [without_time(d) for d in snapshot["evses"]] == [without_time(d) for d in result["evses"]]


async def test_every_api_op_goes_through_the_controllers_request_path(charger: Running, console: Console) -> None:
    executed = charger.controller.ops_executed
    assert await console.ok("set_local_auth_list", LOCAL_LIST) is True
    assert "local_list" in stored_state(charger.config.charger.state_dir)  # replied after the commit
    assert await console.ok("sim_plug", {"evse_id": 1, "cp": "B"}) is True
    assert await console.ok("authorize", {"id_token": LOCAL_TOKEN, "evse_id": 1}) == {
        "status": "Accepted", "evse_id": 1, "reservation_id": None}
    assert await console.ok("sim_plug", {"evse_id": 1, "cp": "C"}) is True
    assert charger.sim.relay_commanded(1)
    assert await console.ok("sim_load", {"evse_id": 1, "current_a": 10}) is True
    reserved = await console.ok("reserve_now", {"reservation_id": 7, "id_token": "AA11", "evse_id": 2,
                                                "expiry_time": in_s(3600)})
    assert reserved["status"] == "Accepted"
    assert await console.ok("cancel_reservation", {"reservation_id": 7}) is True
    assert await console.ok("stop_session", {"evse_id": 1}) is True
    assert await console.ok("set_enabled", {"evse_id": 2, "enabled": False}) is True
    state = await console.ok("get_state")
    assert [d["enabled"] for d in state["evses"]] == [True, False]
    assert charger.controller.ops_executed >= executed + 10
    assert (await console.error("set_enabled", {"evse_id": 9, "enabled": True}))["code"] == "invalid_args"
    assert (await console.error("sim_fault", {"evse_id": 1, "fault": "gremlins", "active": True}))["code"] \
        == "invalid_args"
    assert (await console.error("no_such_op"))["code"] == "unknown_op"


async def test_watch_streams_state_changes_session_events_and_transitions(charger: Running, console: Console) -> None:
    assert await console.ok("watch") == {"watching": True}
    other = await Console.open(charger.controller.console.path)
    try:
        assert await other.ok("sim_plug", {"evse_id": 1, "cp": "B"}) is True
    finally:
        await other.close()
    seen: list[dict[str, Any]] = []

    def has(**want: object) -> bool:
        return any(all(e.get(k) == v for k, v in want.items()) for e in seen)

    while not (has(event="session", topic="evse/1/session") and has(event="state", topic="evse/1/state")
               and has(event="transition")):
        line = await console.line()
        assert line["id"] == "c1"
        assert line["op"] == "watch"
        seen.append(line)
    states = [e["doc"] for e in seen if e["event"] == "state"]
    assert states[-1]["status"] == "Preparing"
    assert set(states[-1]) == STATE_KEYS
    sessions = [e["doc"]["event"] for e in seen if e["event"] == "session"]
    assert "SessionStarted" in sessions
    assert any("WAITING_FOR_AUTH" in e["line"] for e in seen if e["event"] == "transition")
    # requests still work on a watching connection
    assert (await console.ok("status"))["evses"][0]["status"] == "Preparing"


async def test_why(console: Console) -> None:
    result = await console.ok("why", {"evse_id": 1})
    assert result["evse_id"] == 1
    codes = [b["code"] for b in result["blocked_by"]]
    assert codes == ["no_ev", "not_authorized"]
    assert all(b["message"] for b in result["blocked_by"])
    await console.ok("sim_plug", {"evse_id": 1, "cp": "B"})
    await console.ok("set_local_auth_list", {"version": 1, "full": True,
                                             "tokens": [{"id_token": "04A2B3C4", "status": "Accepted"}]})
    await console.ok("sim_token", {"evse_id": 1, "id_token": "04A2B3C4"})
    await console.ok("sim_plug", {"evse_id": 1, "cp": "C"})
    assert (await console.ok("why", {"evse_id": 1}))["blocked_by"] == []  # charging
    assert (await console.error("why", {"evse_id": 3}))["code"] == "invalid_args"
    assert (await console.error("why", {}))["code"] == "invalid_args"


async def test_log_gives_the_last_transitions(charger: Running, console: Console) -> None:
    assert await console.ok("sim_plug", {"evse_id": 2, "cp": "B"}) is True
    everything = (await console.ok("log"))["transitions"]
    assert everything == charger.controller.transitions[-50:]
    assert "c2 AVAILABLE/Available -> WAITING_FOR_AUTH/Preparing" in everything[-1]
    assert (await console.ok("log", {"n": 1}))["transitions"] == everything[-1:]
    assert (await console.ok("log", {"n": 0}))["transitions"] == []
    assert (await console.error("log", {"n": -1}))["code"] == "invalid_args"
    assert (await console.error("log", {"lines": 3}))["code"] == "invalid_args"


async def test_meter_of_the_simulated_meter(charger: Running, console: Console) -> None:
    await until(lambda: 1 in charger.controller.last_meter, TIMEOUT_S)
    result = await console.ok("meter", {"evse_id": 1})
    assert {k: result[k] for k in ("evse_id", "model", "url", "device_id", "blocks")} == {
        "evse_id": 1, "model": "sim", "url": None, "device_id": None, "blocks": []}
    sample = result["sample"]
    assert sample["evse_id"] == 1
    assert sample["meter_ok"] is True
    assert sample["voltage_V"] == [230.0, 230.0, 230.0]
    assert (await console.error("meter", {"evse_id": 5}))["code"] == "invalid_args"


async def test_meter_of_a_modbus_meter_shows_its_raw_words(tmp_path: Path) -> None:
    wire = {"voltage_l1": 230.5, "voltage_l2": 231.5, "voltage_l3": 229.5, "current_l1": 16.5, "current_l2": 15.25,
            "current_l3": 14.75, "power_total": 11040.5, "frequency": 49.5, "energy_import": 1234.5,
            "energy_export": 12.5}
    servers = Servers()
    port = await servers.tcp(meter_device("EM340", wire, device_id=3))
    meter = ModbusMeter("EM340", MeterUrl.parse(f"tcp://127.0.0.1:{port}"), device_id=3)
    config = write_config(tmp_path, free_port(), charger_id="CP-modbus", evses=evses(1))
    running = await start_controller(config, meters={1: meter})
    try:
        await asyncio.wait_for(running.controller.console.serving.wait(), TIMEOUT_S)
        await until(lambda: 1 in running.controller.last_meter, TIMEOUT_S)
        client = await Console.open(running.controller.console.path)
        try:
            result = await client.ok("meter", {"evse_id": 1})
        finally:
            await client.close()
    finally:
        await running.stop()
        meter.close()
        await servers.stop_all()
    assert {k: result[k] for k in ("model", "url", "device_id")} == {
        "model": "EM340", "url": f"tcp://127.0.0.1:{port}", "device_id": 3}
    assert [(b["fc"], b["address"]) for b in result["blocks"]] == [(b.fc, b.address) for b in meter.plan]
    for block, planned in zip(result["blocks"], meter.plan, strict=True):
        assert block["words"] is not None
        assert len(block["words"]) == planned.count
    assert result["sample"]["voltage_V"] == [230.5, 231.5, 229.5]
    assert result["sample"]["energy_Wh_import"] == pytest.approx(1_234_500.0)


async def test_dump_writes_the_flight_recorder_to_the_state_dir(charger: Running, console: Console) -> None:
    result = await console.ok("dump")
    assert Path(result["path"]).parent == charger.config.charger.state_dir
    assert Path(result["path"]).is_file()
    assert result["inputs"] > 0


# --- service --------------------------------------------------------------------------------------


async def test_service_is_refused_while_unsafe(charger: Running, console: Console) -> None:
    error = await console.error("service", {"evse_id": 1, "test": "relay"})
    assert error["code"] == "unsafe"
    assert "enabled" in error["message"]
    assert await console.ok("sim_plug", {"evse_id": 1, "cp": "B"}) is True
    await disabled_and_idle(console)
    for test in ("relay", "led", "lock"):
        error = await console.error("service", {"evse_id": 1, "test": test})
        assert error["code"] == "unsafe"
        assert "EV" in error["message"]
    assert not charger.sim.relay_log or charger.sim.relay_log[-1][2] is False
    assert (await console.error("service", {"evse_id": 1, "test": "kettle"}))["code"] == "invalid_args"


async def test_service_relay_closes_briefly_and_opens(charger: Running, console: Console) -> None:
    await disabled_and_idle(console)
    start = len(charger.sim.relay_log)
    result = await console.ok("service", {"evse_id": 1, "test": "relay"})
    assert result["test"] == "relay"
    assert result["passed"] is True, result
    assert "feedback closed" in result["steps"]
    assert "feedback open" in result["steps"]
    log = [entry for entry in charger.sim.relay_log[start:] if entry[1] == 1]
    assert [closed for _, _, closed in log] == [True, False]
    assert log[1][0] - log[0][0] <= console_ops.RELAY_CLOSED_MAX_S
    assert not charger.sim.relay_commanded(1)
    await asyncio.sleep(charger.config.board.relay_feedback_timeout_s)  # supervision saw it all: no Relais
    doc = (await console.ok("status"))["evses"][0]
    assert doc["errors"] == []
    assert doc["status"] == "Unavailable"


async def test_service_led_shows_every_pattern_and_restores(charger: Running, console: Console,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_ops, "LED_STEP_S", 0.01)
    await disabled_and_idle(console)
    result = await console.ok("service", {"evse_id": 1, "test": "led"})
    assert result["passed"] is True
    assert [s.removeprefix("led ") for s in result["steps"][:len(Led)]] == [led.value for led in Led]
    assert charger.sim.led(1) is Led.UNAVAILABLE  # as the core shows a disabled EVSE
    assert charger.sim.led(2) is Led.IDLE


async def test_service_lock_locks_and_unlocks(charger: Running, console: Console) -> None:
    await disabled_and_idle(console)
    result = await console.ok("service", {"evse_id": 1, "test": "lock"})
    assert result == {"test": "lock", "passed": True, "steps": ["locked (confirmed)", "unlocked (confirmed)"]}
    assert not charger.sim.locked(1)


# --- bad clients ----------------------------------------------------------------------------------


async def test_malformed_lines_get_bad_request(console: Console) -> None:
    for raw in (b"hello\n", b"{not json}\n", b"[1, 2]\n", b'{"op": "status"}\n', b'{"id": "x"}\n',
                b'{"id": "", "op": "status"}\n', b"\xff\xfe{\n"):
        reply = await console.send(raw)
        assert reply["ok"] is False, raw
        assert reply["error"]["code"] == "bad_request", raw
    reply = await console.send(b'{"id": "x", "op": "status", "args": [1]}\n')
    assert reply["error"]["code"] == "invalid_args"
    reply = await console.send(b'\n  \n{"id": "y", "op": "status"}\r\n')  # blank lines are skipped
    assert reply["id"] == "y"
    assert reply["ok"] is True


async def test_an_oversized_line_is_refused_and_the_next_one_served(charger: Running, console: Console) -> None:
    limit = charger.config.mqtt.max_payload_bytes
    big = b'{"id": "big", "op": "status", "args": {"pad": "' + b"x" * (3 * limit) + b'"}}\n'
    reply = await console.send(big)
    assert reply["error"]["code"] == "bad_request"
    assert str(limit) in reply["error"]["message"]
    assert (await console.ok("status"))["status"]["evses"] == [1, 2]


async def test_a_client_that_does_not_read_its_watch_is_dropped(charger: Running, console: Console,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    server, link = charger.controller.console, charger.controller.link
    lazy = await Console.open(server.path)
    try:
        assert await lazy.ok("watch") == {"watching": True}
        await until(lambda: server.clients == 2, TIMEOUT_S)
        with caplog.at_level(logging.WARNING, logger="firmware.console_server"):
            for i in range(400):  # 4 MB of documents published, never read
                await link.publish_now(link.topics.evse(1, "flood"), {"i": i, "pad": "x" * 10_000})
                if "does not read" in caplog.text:
                    break
        assert "does not read" in caplog.text
        await until(lambda: server.clients == 1, TIMEOUT_S)
        assert (await console.ok("status"))["status"]["evses"] == [1, 2]  # everybody else is served
        assert charger.controller.charger.evses[1].enabled
    finally:
        lazy.writer.close()


# --- the socket file ------------------------------------------------------------------------------


async def test_the_socket_is_0660_and_removed_at_stop(tmp_path: Path) -> None:
    running = await start(tmp_path)
    path = running.controller.console.path
    try:
        assert path == tmp_path / "state" / "console.sock"
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o660
    finally:
        await running.stop()
    assert not path.exists()


async def test_the_socket_gets_the_configured_group(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    path = tmp_path / "c.sock"
    running = await start(tmp_path, mqtt_extra=f'[console]\nsocket = "{path}"\ngroup = "{group}"\n')
    try:
        assert running.controller.console.path == path
        assert path.stat().st_gid == os.getgid()
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
    finally:
        await running.stop()


async def test_an_unknown_group_is_refused_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(tmp_path, free_port(), charger_id="CP-g", evses=evses(1),
                          mqtt_extra='[console]\ngroup = "no-such-group-xyz"\n')
    with caplog.at_level(logging.ERROR, logger="firmware.console_server"):
        running = await start_controller(config)
        try:
            await until(lambda: "group 'no-such-group-xyz' does not exist" in caplog.text, TIMEOUT_S)
            assert not (tmp_path / "state" / "console.sock").exists()
        finally:
            await running.stop()


async def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "state" / "console.sock"
    path.parent.mkdir(parents=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # a controller that died: the file stays, nobody listens
    dead.close()
    running = await start(tmp_path)
    try:
        client = await Console.open(path)
        try:
            assert (await client.ok("status"))["status"]["evses"] == [1, 2]
        finally:
            await client.close()
    finally:
        await running.stop()


async def test_a_second_controller_on_the_same_socket_is_refused(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    first = await start(tmp_path / "a")
    path = first.controller.console.path
    try:
        (tmp_path / "b").mkdir()
        second_config = write_config(tmp_path / "b", free_port(), charger_id="CP-second", evses=evses(1),
                                     mqtt_extra=f'[console]\nsocket = "{path}"\n')
        with caplog.at_level(logging.ERROR, logger="firmware.console_server"):
            second = await start_controller(second_config)
            try:
                await until(lambda: "another controller serves the console" in caplog.text, TIMEOUT_S)
                assert not second.controller.console.serving.is_set()
            finally:
                await second.stop()
        assert path.exists()  # the refused one leaves the live socket alone
        client = await Console.open(path)
        try:
            status = (await client.ok("status"))["status"]
            assert status["boot_id"] == first.controller.boot_id
        finally:
            await client.close()
    finally:
        await first.stop()


async def test_a_file_that_is_no_socket_is_left_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state" / "console.sock"
    path.parent.mkdir(parents=True)
    path.write_text("notes")
    with caplog.at_level(logging.ERROR, logger="firmware.console_server"):
        running = await start_controller(write_config(tmp_path, free_port(), charger_id="CP-x", evses=evses(1)))
        try:
            await until(lambda: "is not a socket" in caplog.text, TIMEOUT_S)
            assert running.controller.charger.evses[1].enabled  # the charger runs on without its console
        finally:
            await running.stop()
    assert path.read_text() == "notes"

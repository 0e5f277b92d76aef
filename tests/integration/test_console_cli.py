"""`charger-console` against a real `charger-firmware --sim` with its console socket (issue 12, part 3).

The controller runs as a program (`python -m firmware --sim --config FILE`, no broker: offline), one per
module, with a short socket path in /tmp (a unix socket path is at most 107 bytes). The console runs as
a program too, `python -m charger_console.cli`, from this repository's tools/console (a `charger_console`
link to it on PYTHONPATH: what the installed console script runs, without depending on the install).
Every subcommand runs once in human and in --json form; each test leaves the controller as it found it
(EVSEs unplugged, enabled, no session or reservation).

Errors: a missing socket, a refused one and a file that is not a socket give exit 3 and the advice;
permission denied gives exit 4. As root, permissions do not stop a process, so the permission test runs
the console under `setpriv` without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (root then obeys the mode bits
like anyone: a socket of mode 000 is refused); not as root, the mode bits stop it directly.

The interactive prompt and the live watch are driven in a pseudo-terminal with pexpect, as a person
would: typing, TAB completion, the up arrow, Ctrl-C.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from tests.support.broker import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOKEN = "04C0FFEE01"
START_TIMEOUT_S = 20.0
WAIT_S = 10.0
#: An ANSI escape sequence (rich's styles, readline's redraws) for reading a terminal's output as text.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")

CONFIG = """\
[charger]
id = "CP-CONSOLE"
state_dir = "{state}"

[mqtt]
host = "127.0.0.1"
port = {port}
reconnect_min_s = 0.05
reconnect_max_s = 0.5

[pilot]
sample_interval_s = 0.005

[telemetry]
meter_interval_s = 0.2

[auth]
timeout_s = 0.5

[console]
socket = "{socket}"

[[evse]]
id = 1
connectors = ["sType2"]
max_current_a = 32
phases = 3

[[evse]]
id = 2
connectors = ["sType2"]
max_current_a = 16
phases = 3
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Charger:
    """A running `charger-firmware --sim` and where to reach it."""

    socket: Path
    config: Path
    state_dir: Path
    env: dict[str, str]


# --- the console's client, spoken directly (for set-up and checks, not under test here) ----------------

def request(sock_path: Path, op: str, args: dict[str, object] | None = None) -> dict[str, object]:
    """One request on a fresh connection; the whole reply envelope."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(WAIT_S)
        sock.connect(str(sock_path))
        sock.sendall(json.dumps({"id": "t1", "op": op, "args": args or {}}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, f"the controller closed the connection during {op}"
            data += chunk
    reply = json.loads(data)
    assert isinstance(reply, dict)
    return reply


def result(sock_path: Path, op: str, args: dict[str, object] | None = None) -> object:
    reply = request(sock_path, op, args)
    assert reply["ok"] is True, reply
    return reply["result"]


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll a condition of another process (no event crosses the process boundary)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def evse_doc(charger: Charger, evse_id: int) -> dict[str, object]:
    status = result(charger.socket, "status")
    assert isinstance(status, dict)
    return next(d for d in status["evses"] if d["evse_id"] == evse_id)


def blocked_codes(charger: Charger, evse_id: int) -> list[str]:
    why = result(charger.socket, "why", {"evse_id": evse_id})
    assert isinstance(why, dict)
    return [b["code"] for b in why["blocked_by"]]


# --- the controller --------------------------------------------------------------------------------------

def _console_env(directory: Path) -> dict[str, str]:
    shim = directory / "pkg"
    shim.mkdir()
    (shim / "charger_console").symlink_to(REPO / "tools" / "console")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), str(REPO)])
    env["HOME"] = str(directory / "home")
    env.pop("NO_COLOR", None)
    env.pop("COLUMNS", None)
    (directory / "home").mkdir()
    return env


@pytest.fixture(scope="module")
def charger() -> Iterator[Charger]:
    directory = Path(tempfile.mkdtemp(prefix="cc-", dir="/tmp"))  # short: sun_path is 108 bytes
    try:
        sock_path = directory / "console.sock"
        state = directory / "state"
        config = directory / "charger.toml"
        # a port nobody listens on: the controller runs offline, as in the field with the backend down
        config.write_text(CONFIG.format(state=state, port=free_port(), socket=sock_path))
        env = _console_env(directory)
        log = (directory / "controller.log").open("w")
        process = subprocess.Popen([sys.executable, "-m", "firmware", "--sim", "--config", str(config)], cwd=REPO,
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                assert process.poll() is None, f"the controller exited: {(directory / 'controller.log').read_text()}"
                if sock_path.exists():
                    try:
                        if request(sock_path, "status")["ok"] is True:
                            break
                    except OSError:
                        pass
                assert time.monotonic() < deadline, "the controller's console socket did not answer in time"
                time.sleep(0.05)
            result(sock_path, "set_local_auth_list",
                   {"version": 1, "full": True, "tokens": [{"id_token": TOKEN, "status": "Accepted"}]})
            yield Charger(socket=sock_path, config=config, state_dir=state, env=env)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def idle(charger: Charger) -> Iterator[Charger]:
    """The charger as every test finds it, and leaves it: both EVSEs unplugged, enabled, no fault,
    no session, no reservation."""
    yield charger
    for evse_id in (1, 2):
        doc = evse_doc(charger, evse_id)
        if doc["errors"] or doc["status"] == "Faulted":
            for fault in ("rcd", "relay_welded", "relay_stuck_open", "meter_lost", "overtemperature", "pilot"):
                result(charger.socket, "sim_fault", {"evse_id": evse_id, "fault": fault, "active": False})
        result(charger.socket, "stop_session", {"evse_id": evse_id})
        result(charger.socket, "sim_load", {"evse_id": evse_id, "current_a": 0})
        result(charger.socket, "sim_plug", {"evse_id": evse_id, "cp": "A"})
        result(charger.socket, "set_enabled", {"evse_id": evse_id, "enabled": True})
    reservations = result(charger.socket, "list_reservations")
    assert isinstance(reservations, list)
    for r in reservations:
        result(charger.socket, "cancel_reservation", {"reservation_id": r["reservation_id"], "sender": r["sender"]})
    for evse_id in (1, 2):
        wait_until(lambda e=evse_id: evse_doc(charger, e)["status"] == "Available",  # type: ignore[misc]
                   f"EVSE {evse_id} Available again")


# --- running the console ---------------------------------------------------------------------------------

def console_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "charger_console.cli", *args]


def console(charger: Charger, *args: str, socket_path: Path | None = None,
            prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    where = ("--socket", str(socket_path or charger.socket))
    return subprocess.run([*prefix, *console_command(*where, *args)], capture_output=True, text=True,
                          env=charger.env, timeout=60, check=False)


def ok(charger: Charger, *args: str) -> str:
    """Run the console, expect exit 0, return its stdout."""
    done = console(charger, *args)
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    return done.stdout


def ok_json(charger: Charger, *args: str) -> object:
    """`--json`: exit 0 and exactly one JSON document on stdout."""
    return json.loads(ok(charger, "--json", *args))


def charge(charger: Charger, evse_id: int) -> None:
    """An EV that asks for power, and the accepted token: a charging session."""
    ok(charger, "sim", "plug", str(evse_id), "C")
    ok(charger, "authorize", str(evse_id), TOKEN)
    wait_until(lambda: evse_doc(charger, evse_id)["status"] == "Charging", f"EVSE {evse_id} Charging")


# --- status, why -------------------------------------------------------------------------------------------

STATE_FIELDS = {"evse_id", "status", "cp", "pp_max_a", "relay_closed", "pwm_duty_pct", "offered_a", "max_current_a",
                "phases", "connectors", "enabled", "errors", "session", "reservation", "led", "updated_at"}


def test_status_json_is_the_evse_state_documents(idle: Charger) -> None:
    doc = ok_json(idle, "status")
    assert isinstance(doc, dict)
    assert set(doc) == {"status", "evses"}
    assert [e["evse_id"] for e in doc["evses"]] == [1, 2]
    for evse in doc["evses"]:
        assert STATE_FIELDS <= set(evse) <= STATE_FIELDS | {"blocked_by"}, set(evse) ^ STATE_FIELDS
        assert evse["status"] == "Available"
        assert evse["cp"] == "A"
        assert evse["session"] is None
    state = result(idle.socket, "get_state")
    assert isinstance(state, dict)
    strip = [{k: v for k, v in d.items() if k != "updated_at"} for d in doc["evses"]]
    assert strip == [{k: v for k, v in d.items() if k != "updated_at"} for d in state["evses"]]
    assert set(doc["status"]) >= {"online"}


def test_status_human_table(idle: Charger) -> None:
    charge(idle, 2)
    ok(idle, "sim", "load", "2", "10")
    wait_until(lambda: max(result(idle.socket, "meter", {"evse_id": 2})["sample"]["current_A"]) >= 10,  # type: ignore[index]
               "the simulated EV's current on the meter")
    out = ok(idle, "status")
    for header in ("EVSE", "status", "CP", "PP (A)", "relay", "offered A", "measured A", "energy", "session",
                   "reservation", "errors"):
        assert header in out
    row1 = next(line for line in out.splitlines() if re.match(r"\W*1 ", line))
    row2 = next(line for line in out.splitlines() if re.match(r"\W*2 ", line))
    assert "Available" in row1
    assert "open" in row1
    assert "Charging" in row2
    assert "closed" in row2
    assert re.search(r"│\s+10\s+│", row2)
    assert "04C0" in row2
    assert TOKEN not in out  # tokens masked
    assert "\x1b[" not in out  # not a terminal: no colour


def test_why_json_lists_codes_and_messages(idle: Charger) -> None:
    doc = ok_json(idle, "why", "1")
    assert isinstance(doc, dict)
    assert doc["evse_id"] == 1
    assert doc["blocked_by"], "an unplugged EVSE cannot charge"
    for blocker in doc["blocked_by"]:
        assert set(blocker) == {"code", "message"}
        assert re.fullmatch(r"[a-z_]+", blocker["code"])
        assert blocker["message"]
    assert "no_ev" in [b["code"] for b in doc["blocked_by"]]
    out = ok(idle, "why", "1")
    for blocker in doc["blocked_by"]:
        assert re.search(rf"^{blocker['code']}\s+{re.escape(blocker['message'])}$", out, re.M), out


def test_why_json_empty_for_an_evse_that_can_charge(idle: Charger) -> None:
    charge(idle, 1)
    wait_until(lambda: blocked_codes(idle, 1) == [], "EVSE 1 blocked by nothing")
    assert ok_json(idle, "why", "1") == {"evse_id": 1, "blocked_by": []}
    assert ok(idle, "why", "1").strip() == "EVSE 1 can charge"


def test_why_disabled_and_fault(idle: Charger) -> None:
    ok(idle, "disable", "1")
    ok(idle, "sim", "fault", "1", "rcd", "on")
    codes = [b["code"] for b in ok_json(idle, "why", "1")["blocked_by"]]  # type: ignore[index]
    assert "disabled" in codes
    assert "rcd_tripped" in codes


# --- the other subcommands ------------------------------------------------------------------------------

def test_reserve_reservations_cancel(idle: Charger) -> None:
    out = ok(idle, "reserve", "--id", "7", "--token", "CAFE0007", "--evse", "1", "--expiry-minutes", "5")
    assert "reservation 7: Accepted" in out
    doc = ok_json(idle, "reserve", "--id", "8", "--token", "CAFE0008", "--group-token", "FLEET",
                  "--expiry", "2099-01-01T00:00:00Z")
    assert isinstance(doc, dict)
    assert doc["status"] == "Accepted"
    assert doc["uuid"]
    listed = ok_json(idle, "reservations")
    assert isinstance(listed, list)
    assert {(r["reservation_id"], r.get("evse_id")) for r in listed} == {(7, 1), (8, None)}
    table = ok(idle, "reservations")
    assert re.search(r"\b7\b.*\b1\b", table)
    assert re.search(r"\b8\b.*any", table)
    assert evse_doc(idle, 1)["status"] == "Reserved"
    assert "reserved_for_other" in blocked_codes(idle, 1)
    assert "reservation 7 cancelled" in ok(idle, "cancel", "7")
    assert ok_json(idle, "cancel", "8") is True
    again = console(idle, "cancel", "7")
    assert again.returncode == 1
    assert "no reservation 7" in again.stdout
    assert ok(idle, "reservations").strip() == "no reservations"


def test_authorize_and_stop(idle: Charger) -> None:
    ok(idle, "sim", "plug", "1", "B")
    assert "authorize: Accepted on EVSE 1" in ok(idle, "authorize", "1", TOKEN)
    assert "EVSE 1: session stopped" in ok(idle, "stop", "1", "--reason", "Local")
    nothing = console(idle, "--json", "stop", "1")  # nothing left to stop: false, exit 1
    assert nothing.returncode == 1
    assert json.loads(nothing.stdout) is False
    ok(idle, "sim", "plug", "1", "A")
    ok(idle, "sim", "plug", "2", "B")
    doc = ok_json(idle, "authorize", "2", TOKEN)
    assert doc == {"status": "Accepted", "evse_id": 2, "reservation_id": None}
    assert ok_json(idle, "stop", "2") is True
    rejected = console(idle, "authorize", "1", "UNKNOWN99")
    assert rejected.returncode == 1
    assert "Accepted" not in rejected.stdout


def test_enable_disable(idle: Charger) -> None:
    assert "EVSE 2 disabled" in ok(idle, "disable", "2")
    assert evse_doc(idle, 2)["status"] == "Unavailable"
    assert ok_json(idle, "enable", "2") is True
    assert ok_json(idle, "disable", "2") is True
    assert "EVSE 2 enabled" in ok(idle, "enable", "2")
    assert evse_doc(idle, 2)["enabled"] is True


def test_log(idle: Charger) -> None:
    ok(idle, "sim", "plug", "2", "B")
    ok(idle, "sim", "plug", "2", "A")
    doc = ok_json(idle, "log", "-n", "2")
    assert isinstance(doc, dict)
    assert len(doc["transitions"]) == 2
    assert all(isinstance(line, str) and line for line in doc["transitions"])
    out = ok(idle, "log", "-n", "2")
    assert out.splitlines() == doc["transitions"]


def test_meter(idle: Charger) -> None:
    doc = ok_json(idle, "meter", "1")
    assert isinstance(doc, dict)
    assert doc["evse_id"] == 1
    assert doc["model"] == "sim"
    assert doc["url"] is None
    assert doc["blocks"] == []
    wait_until(lambda: result(idle.socket, "meter", {"evse_id": 1})["sample"] is not None,  # type: ignore[index]
               "a meter sample")
    out = ok(idle, "meter", "1")
    assert "meter sim" in out
    assert "energy import" in out
    assert "voltage" in out


def test_service_refused_when_unsafe_then_run_when_disabled(idle: Charger) -> None:
    refused = console(idle, "service", "1", "relay")
    assert refused.returncode == 5, refused
    assert "unsafe" in refused.stderr
    envelope = json.loads(console(idle, "--json", "service", "1", "led").stdout)
    assert envelope["ok"] is False
    assert envelope["error"]["code"] == "unsafe"
    assert envelope["error"]["message"]
    ok(idle, "disable", "1")
    ok(idle, "sim", "plug", "1", "B")
    assert console(idle, "service", "1", "lock").returncode == 5  # an EV is plugged in
    ok(idle, "sim", "plug", "1", "A")
    for test in ("relay", "lock"):
        doc = ok_json(idle, "service", "1", test)
        assert isinstance(doc, dict)
        assert doc["test"] == test
        assert doc["passed"] is True
        assert doc["steps"]
    out = ok(idle, "service", "1", "led")
    assert out.rstrip().endswith("led test passed")


def test_dump_and_replay(idle: Charger) -> None:
    ok(idle, "sim", "plug", "1", "B")
    ok(idle, "sim", "plug", "1", "A")
    doc = ok_json(idle, "dump")
    assert isinstance(doc, dict)
    assert doc["inputs"] > 0
    path = Path(doc["path"])
    assert path.parent == idle.state_dir
    assert path.suffix == ".cbor"
    assert path.is_file()
    assert "flight recorder written to" in ok(idle, "dump")
    replayed = console(idle, "replay", str(path))
    assert replayed.returncode == 0, replayed.stderr  # 0: the replay is identical to the recording
    out = replayed.stdout.splitlines()
    assert out[0].startswith("# request, written ")
    assert out[-1] == "# identical"
    assert any(re.search(r"c1 \S+ -> \S+", line) for line in out[1:-1]), out  # the plug-in's transitions
    replay_json = ok_json(idle, "replay", str(path))
    assert isinstance(replay_json, dict)
    assert replay_json["identical"] is True
    assert replay_json["divergences"] == []
    assert replay_json["transitions"]
    assert replay_json["lines"] == out[1:-1]
    missing = console(idle, "replay", str(idle.state_dir / "nope.cbor"))
    assert missing.returncode == 1
    assert "no such file" in missing.stderr
    junk = idle.state_dir / "junk.cbor"
    junk.write_bytes(b"not cbor")
    refused = console(idle, "--json", "replay", str(junk))
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["code"] == "replay_unavailable"


def test_sim_commands(idle: Charger) -> None:
    assert "sim plug on EVSE 1: done" in ok(idle, "sim", "plug", "1", "B", "--pp", "220")
    assert evse_doc(idle, 1)["cp"] == "B"
    assert evse_doc(idle, 1)["pp_max_a"] == 32
    ok_json(idle, "sim", "token", "1", TOKEN)
    wait_until(lambda: evse_doc(idle, 1)["session"] is not None, "the card's session")
    ok_json(idle, "sim", "plug", "1", "C")
    ok(idle, "sim", "load", "1", "12.5")
    ok_json(idle, "sim", "load", "1", "0")
    ok(idle, "sim", "fault", "1", "overtemperature", "on")
    assert evse_doc(idle, 1)["status"] == "Faulted"
    ok_json(idle, "sim", "fault", "1", "overtemperature", "off")
    ok(idle, "sim", "token", "2", TOKEN)
    bad = console(idle, "sim", "plug", "9", "B")
    assert bad.returncode == 1
    assert "invalid_args" in bad.stderr


def test_op_error_is_code_and_message(idle: Charger) -> None:
    done = console(idle, "why", "99")
    assert done.returncode == 1
    assert done.stderr.startswith("charger-console: invalid_args: ")
    envelope = json.loads(console(idle, "--json", "why", "99").stdout)
    assert envelope["ok"] is False
    assert envelope["error"]["code"] == "invalid_args"


def test_config_file_names_the_socket(idle: Charger) -> None:
    done = subprocess.run(console_command("--config", str(idle.config), "--json", "status"), capture_output=True,
                          text=True, env=idle.env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert [e["evse_id"] for e in json.loads(done.stdout)["evses"]] == [1, 2]


# --- errors: no controller, permissions, usage ------------------------------------------------------------

def test_missing_controller(charger: Charger, tmp_path: Path) -> None:
    gone = tmp_path / "console.sock"
    done = console(charger, "status", socket_path=gone)
    assert done.returncode == 3
    assert done.stderr.strip() == (f"charger-console: no controller on {gone} (is charger-firmware running? "
                                   "systemctl status charger-firmware)")
    envelope = json.loads(console(charger, "--json", "status", socket_path=gone).stdout)
    assert envelope == {"ok": False, "error": {"code": "no_controller", "message": done.stderr.strip()[17:]}}


def test_refused_and_not_a_socket(charger: Charger, tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))  # bound, never listening: what a crashed controller leaves behind
        done = console(charger, "status", socket_path=stale)
    assert done.returncode == 3
    assert "connection refused" in done.stderr
    assert "systemctl status" in done.stderr
    plain = tmp_path / "plain"
    plain.write_text("")
    done = console(charger, "status", socket_path=plain)
    assert done.returncode == 3
    assert "it is not a socket" in done.stderr


def test_permission_denied(charger: Charger) -> None:
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to test permissions as root: apt-get install util-linux"
        caps = "-dac_override,-dac_read_search"
        prefix = (setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}")
    directory = Path(tempfile.mkdtemp(prefix="cc-perm-", dir="/tmp"))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            path = directory / "console.sock"
            server.bind(str(path))
            server.listen()
            path.chmod(0o000)
            done = console(charger, "status", socket_path=path, prefix=prefix)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert done.returncode == 4, (done.stdout, done.stderr)
    assert "permission denied: add your user to the charger group (or use sudo)" in done.stderr


def test_usage_errors_exit_2(charger: Charger) -> None:
    for args in (("why",), ("why", "one"), ("service", "1", "fan"), ("sim", "plug", "1", "X"), ("frobnicate",)):
        assert console(charger, *args).returncode == 2, args
    bad_config = subprocess.run(console_command("--config", "/nonexistent.toml", "status"), capture_output=True,
                                text=True, env=charger.env, timeout=60, check=False)
    assert bad_config.returncode == 2
    assert "nonexistent.toml" in bad_config.stderr
    no_terminal = console(charger)
    assert no_terminal.returncode == 2
    assert "needs a terminal" in no_terminal.stderr


def test_help_documents_exit_codes(charger: Charger) -> None:
    out = ok(charger, "--help")
    for code in ("0  done", "2  usage", "3  no controller", "4  permission denied", "5  unsafe"):
        assert code in out


def test_console_never_imports_the_controller(charger: Charger) -> None:
    probe = ("import sys, charger_console.cli, charger_console.interactive, charger_console.paths; "
             "print(sorted(m for m in sys.modules if m.startswith(('firmware', 'hal'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=charger.env, timeout=60,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_setup_cfg_lists_every_package() -> None:
    """setup.cfg lists its packages (the console's source is tools/console/, which `find:` cannot map)."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(REPO).parts) for top in ("firmware", "hal")
             for p in (REPO / top).rglob("__init__.py")}
    assert found | {"charger_console"} == listed
    assert "charger_console = tools/console" in cfg["options"]["package_dir"]
    assert "charger-console = charger_console.cli:main" in cfg["options.entry_points"]["console_scripts"]


# --- in a terminal: the prompt and the live watch -------------------------------------------------------

def spawn(charger: Charger, *args: str) -> pexpect.spawn:
    command = console_command("--socket", str(charger.socket), *args)
    env = dict(charger.env, TERM="xterm", LANG="C.UTF-8", PYTHONIOENCODING="utf-8")
    return pexpect.spawn(command[0], command[1:], env=env, encoding="utf-8", codec_errors="replace",
                         timeout=WAIT_S, dimensions=(50, 160))


def test_interactive_prompt(idle: Charger) -> None:
    shell = spawn(idle)
    try:
        shell.expect_exact("charger> ")
        shell.sendline("status")
        shell.expect("Available")
        shell.expect_exact("charger> ")
        shell.send("sta\t")  # TAB completes the subcommand
        shell.expect_exact("tus")
        shell.send("\r")
        shell.expect("measured A")
        shell.expect_exact("charger> ")
        shell.send("service 1 re\t")  # ... and its fixed words
        shell.expect_exact("lay")
        shell.send("\r")
        shell.expect("unsafe")
        shell.expect_exact("charger> ")
        shell.sendline("meter 2")
        shell.expect("meter sim")
        shell.expect_exact("charger> ")
        shell.sendline("log -n 1")
        shell.expect_exact("charger> ")
        shell.send("\x1b[A\x1b[A")  # the up arrow, twice: back to `meter 2`
        shell.expect_exact("meter 2")
        shell.send("\r")
        shell.expect("meter sim")
        shell.expect_exact("charger> ")
        shell.sendline("why")  # a usage error does not end the prompt
        shell.expect("the following arguments are required")
        shell.expect_exact("charger> ")
        shell.sendline("quit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close()
    assert shell.exitstatus == 0
    history = (Path(idle.env["HOME"]) / ".charger_console_history").read_text().splitlines()
    # readline keeps a line once when it is typed twice in a row (the two `status`)
    assert history[-7:] == ["status", "service 1 relay", "meter 2", "log -n 1", "meter 2", "why", "quit"]


def test_watch_redraws_live(idle: Charger) -> None:
    watch = spawn(idle, "watch")
    try:
        watch.expect("measured A")
        watch.expect("Available")
        result(idle.socket, "sim_plug", {"evse_id": 2, "cp": "B"})
        watch.expect("Preparing")  # the same table, redrawn in place
        screen = ANSI.sub("", watch.before or "")
        assert "EVSE" in screen
        watch.sendintr()  # Ctrl-C ends it
        watch.expect(pexpect.EOF)
    finally:
        watch.close()
    assert watch.exitstatus == 0, watch.signalstatus


def test_watch_json_one_object_per_line(idle: Charger) -> None:
    with subprocess.Popen(console_command("--socket", str(idle.socket), "--json", "watch"), env=idle.env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            lines = [json.loads(process.stdout.readline()) for _ in range(2)]  # the current state, one per EVSE
            assert [(e["event"], e["doc"]["evse_id"], e["doc"]["cp"]) for e in lines] == [("state", 1, "A"),
                                                                                         ("state", 2, "A")]
            result(idle.socket, "sim_plug", {"evse_id": 2, "cp": "B"})  # subscribed before the first line: seen
            while True:
                line = process.stdout.readline()
                assert line, "the watch ended early"
                event = json.loads(line)
                assert event["op"] == "watch"
                if event["event"] == "state" and event["doc"]["evse_id"] == 2 and event["doc"]["cp"] == "B":
                    break
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()

"""deploy/install.sh and deploy/update.sh (issue 13, parts 3 and 4), the real scripts run into a temporary
root (`--root`): the install, its idempotence, uninstall and purge; the update that switches and passes
its health check, the one that fails it and is rolled back, the wait while an EVSE is charging (a
scripted status, and a real simulated controller asked through its console socket with the release's
own charger-console), and --force.

The wheels are built offline from this tree (tests/support/wheel.py) as three versions: the installed
one, a good new one and a bad new one. Building a venv costs ~3 s, so one module-scoped root is
installed and built once; each test works on a copy of it. The venvs are installed with `--no-deps`
(no network); where a release must run charger-console, a .pth file lends it the test venv's packages.
Without systemd here, the tests pass `--restart-cmd` / `--health-cmd` / `--status-cmd`; under `--root`
the scripts print the systemctl, useradd and usermod commands they would run instead of running them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

from firmware.core.auth import LocalAuthEntry, LocalAuthStatus
from tests.support.broker import free_port
from tests.support.builders import evses
from tests.support.controller import start_controller, write_config
from tests.support.flows import plug_and_charge
from tests.support.polling import until
from tests.support.wheel import build_wheel, source_version

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
INSTALL = DEPLOY / "install.sh"
UPDATE = DEPLOY / "update.sh"
OLD = source_version(REPO)
NEW = f"{OLD}.post1"
BAD = f"{OLD}.post2"
APP = Path("opt/charger-firmware")
# What deploy/charger-firmware.service is replaced with while it is not in this tree (another branch).
STAND_IN_UNIT = """[Unit]
Description=charger-firmware (stand-in for the tests)
[Service]
Type=notify
User=charger-firmware
ExecStart=/opt/charger-firmware/current/bin/charger-firmware --config /etc/charger-firmware/config.toml
[Install]
WantedBy=multi-user.target
"""
IDLE: dict[str, object] = {"status": {"online": False}, "evses": [
    {"evse_id": 1, "status": "Available", "relay_closed": False}]}
CHARGING: dict[str, object] = {"status": {"online": False}, "evses": [
    {"evse_id": 1, "status": "Available", "relay_closed": False},
    {"evse_id": 2, "status": "SuspendedEV", "relay_closed": True}]}


def run(script: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True, timeout=120,
                          check=False)


def current(root: Path) -> str:
    return str((root / APP / "current").readlink())


@dataclass(frozen=True)
class Built:
    root: Path  # installed at OLD; NEW and BAD built beside it, not current
    wheels: dict[str, Path]
    unit: Path
    install: subprocess.CompletedProcess[str]  # the install.sh run that made `root`

    def copy(self, tmp_path: Path, *, without: tuple[str, ...] = ()) -> Path:
        root = tmp_path / "root"
        shutil.copytree(self.root, root, symlinks=True)
        for version in without:
            shutil.rmtree(root / APP / "releases" / version)
        return root


def _build_beside(root: Path, wheel: Path) -> None:
    """install.sh's release builder alone (as update.sh uses it): the release is built, not made current."""
    script = f'. "{INSTALL}"; set_paths "$1"; PYTHON="$2"; PIP_ARGS=(--no-deps); build_release wheel "$3"'
    done = subprocess.run(["bash", "-c", script, "build", str(root), sys.executable, str(wheel)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("install")
    wheels = {v: build_wheel(REPO, base / "wheels", version=v) for v in (OLD, NEW, BAD)}
    unit = DEPLOY / "charger-firmware.service"
    if not unit.exists():
        unit = base / "unit" / "charger-firmware.service"
        unit.parent.mkdir()
        unit.write_text(STAND_IN_UNIT)
    root = base / "root"
    install = run(INSTALL, "--root", root, "--wheel", wheels[OLD], "--unit", unit, "--python", sys.executable,
                  "--pip-arg", "--no-deps")
    assert install.returncode == 0, install.stderr
    for version in (NEW, BAD):
        _build_beside(root, wheels[version])
    # charger-console in the releases needs rich, which --no-deps left out: lend them the test venv's packages
    for site in (root / APP / "releases").glob("*/lib/python*/site-packages"):
        (site / "test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return Built(root, wheels, unit, install)


# --- install.sh -----------------------------------------------------------------------------------


def test_install_lays_out_a_release_the_config_the_state_and_the_unit(built: Built) -> None:
    root, out = built.root, built.install.stdout
    assert current(root) == f"releases/{OLD}"  # relative: the same link works under --root and on /
    python = root / APP / "current" / "bin" / "python"
    version = subprocess.run([python, "-I", "-c", "import firmware; print(firmware.__version__)"], capture_output=True,
                             text=True, check=True)
    assert version.stdout.strip() == OLD
    assert (root / APP / "current" / "bin" / "charger-firmware").exists()
    assert (root / APP / "current" / "bin" / "charger-console").exists()
    console = root / "usr/local/bin/charger-console"
    assert console.readlink() == Path("/opt/charger-firmware/current/bin/charger-console")
    config = root / "etc/charger-firmware/config.toml"
    assert config.read_text() == (DEPLOY / "charger.example.toml").read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "etc/charger-firmware").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "var/lib/charger-firmware").stat().st_mode) == 0o750
    assert (root / "etc/systemd/system/charger-firmware.service").read_text() == built.unit.read_text()
    # under --root nothing of the host is changed: what would be run is said instead
    assert "would run: systemctl daemon-reload" in out
    assert "would run: systemctl enable charger-firmware.service" in out
    assert "useradd --system --user-group --no-create-home" in out
    assert "usermod --append --groups charger,gpio,spi,dialout,input charger-firmware" in out


def test_a_second_run_changes_nothing_and_keeps_the_config(built: Built, tmp_path: Path) -> None:
    root = built.copy(tmp_path)
    config = root / "etc/charger-firmware/config.toml"
    config.write_text('[charger]\nid = "CP-EDITED"\n')
    marker = root / APP / "releases" / OLD / ".complete"
    before = marker.stat().st_mtime_ns
    again = run(INSTALL, "--root", root, "--wheel", built.wheels[OLD], "--unit", built.unit, "--pip-arg", "--no-deps")
    assert again.returncode == 0, again.stderr
    assert f"release {OLD} is already built" in again.stdout
    assert f"current is already release {OLD}" in again.stdout
    assert "keeping the existing config" in again.stdout
    assert "is up to date" in again.stdout  # the unit
    assert config.read_text() == '[charger]\nid = "CP-EDITED"\n'
    assert marker.stat().st_mtime_ns == before  # not rebuilt
    assert current(root) == f"releases/{OLD}"


def test_uninstall_keeps_state_and_config_and_purge_removes_them(built: Built, tmp_path: Path) -> None:
    root = built.copy(tmp_path)
    journal = root / "var/lib/charger-firmware/journal"
    journal.write_text("sessions")
    gone = run(INSTALL, "--root", root, "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert not (root / APP).exists()
    assert not (root / "usr/local/bin/charger-console").is_symlink()
    assert not (root / "etc/systemd/system/charger-firmware.service").exists()
    assert "would run: systemctl disable --now charger-firmware.service" in gone.stdout
    assert journal.read_text() == "sessions"
    assert (root / "etc/charger-firmware/config.toml").exists()
    purged = run(INSTALL, "--root", root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (root / "var/lib/charger-firmware").exists()
    assert not (root / "etc/charger-firmware").exists()
    assert "would run: userdel charger-firmware" in purged.stdout


@pytest.mark.parametrize(("script", "args", "code", "message"), [
    (INSTALL, ["--purge"], 2, "--purge goes with --uninstall"),
    (INSTALL, ["--bogus"], 2, "unknown argument: --bogus"),
    (UPDATE, [], 2, "give the new release"),
    (UPDATE, ["--wheel", "x.whl", "--timeout", "soon"], 2, "--timeout needs a number"),
    (UPDATE, ["--wheel", "x.whl"], 1, "no installed release"),
])
def test_bad_use_is_refused_in_one_line(tmp_path: Path, script: Path, args: list[str], code: int,
                                        message: str) -> None:
    done = run(script, "--root", tmp_path, *args)
    assert done.returncode == code
    assert message in done.stderr
    assert not (tmp_path / APP / "current").exists()


# --- update.sh ------------------------------------------------------------------------------------


def update(root: Path, wheel: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """update.sh into `root`; the restart command logs which release it restarts, to `root`/log."""
    return run(UPDATE, "--root", root, "--wheel", wheel, "--pip-arg", "--no-deps", "--python", sys.executable,
               "--poll", "0.05", "--restart-cmd", f'echo "restart $(basename "$CHARGER_RELEASE")" >> {root}/log',
               *args)


def scripted_status(root: Path, *answers: object) -> str:
    """A --status-cmd answering `answers` in turn (the last one from then on), logging each call."""
    for n, answer in enumerate(answers):
        (root / f"status{n}.json").write_text(json.dumps(answer))
    last = len(answers) - 1
    return (f'touch {root}/log; n=$(grep -c ^status {root}/log || true); [ "$n" -le {last} ] || n={last}; '
            f'echo status >> {root}/log; cat {root}/status$n.json')


def log(root: Path) -> list[str]:
    path = root / "log"
    return path.read_text().splitlines() if path.exists() else []


def test_a_good_release_is_built_beside_switched_to_and_passes_its_health_check(built: Built,
                                                                                tmp_path: Path) -> None:
    root = built.copy(tmp_path, without=(NEW,))  # NEW is really built here
    check_version = f'"$CHARGER_RELEASE/bin/python" -I -c "import firmware; assert firmware.__version__ == \'{NEW}\'"'
    done = update(root, built.wheels[NEW], "--status-cmd", scripted_status(root, IDLE), "--health-cmd", check_version)
    assert done.returncode == 0, done.stderr
    assert f"building release {NEW}" in done.stdout
    assert f"updated: release {OLD} -> {NEW}, healthy" in done.stdout
    assert current(root) == f"releases/{NEW}"
    assert (root / APP / "releases" / OLD / ".complete").exists()  # the old one stays, to roll back to
    assert log(root) == ["status", f"restart {NEW}"]
    again = update(root, built.wheels[NEW], "--force")
    assert again.returncode == 0, again.stderr
    assert f"release {NEW} is already current: nothing to do" in again.stdout
    assert log(root) == ["status", f"restart {NEW}"]


def test_a_release_that_fails_its_health_check_is_rolled_back(built: Built, tmp_path: Path) -> None:
    root = built.copy(tmp_path)
    healthy_unless_bad = f'[ "$(basename "$CHARGER_RELEASE")" != {BAD} ] || {{ echo "no READY"; exit 1; }}'
    done = update(root, built.wheels[BAD], "--force", "--health-timeout", "0", "--health-cmd", healthy_unless_bad)
    assert done.returncode == 1
    assert current(root) == f"releases/{OLD}"
    assert log(root) == [f"restart {BAD}", f"restart {OLD}"]
    assert (f"update to {BAD} failed its health check (no READY); rolled back to {OLD}, which is healthy"
            in done.stderr)


def test_a_rollback_to_an_unhealthy_old_release_says_so_with_exit_3(built: Built, tmp_path: Path) -> None:
    root = built.copy(tmp_path)
    done = update(root, built.wheels[BAD], "--force", "--health-timeout", "0", "--health-cmd", "echo down; false")
    assert done.returncode == 3
    assert current(root) == f"releases/{OLD}"
    assert log(root) == [f"restart {BAD}", f"restart {OLD}"]
    assert f"rolled back to {OLD}, which is NOT healthy either (down)" in done.stderr
    assert "journalctl -u charger-firmware" in done.stderr


def test_it_waits_while_an_evse_charges_then_updates(built: Built, tmp_path: Path) -> None:
    root = built.copy(tmp_path)
    status = scripted_status(root, CHARGING, CHARGING, IDLE)
    done = update(root, built.wheels[NEW], "--status-cmd", status, "--health-cmd", "true")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("waiting: EVSE 2 charging") == 2  # relay closed, even if SuspendedEV
    assert log(root) == ["status", "status", "status", f"restart {NEW}"]  # switched only when idle
    assert current(root) == f"releases/{NEW}"


def test_still_charging_at_the_timeout_changes_nothing(built: Built, tmp_path: Path) -> None:
    root = built.copy(tmp_path)
    done = update(root, built.wheels[NEW], "--timeout", "0", "--status-cmd", scripted_status(root, CHARGING),
                  "--health-cmd", "true")
    assert done.returncode == 1
    assert f"not updated: EVSE 2 charging after 0 s (release {NEW} is built" in done.stderr
    assert current(root) == f"releases/{OLD}"
    assert log(root) == ["status"]


def test_a_controller_that_does_not_answer_is_not_taken_for_idle(built: Built, tmp_path: Path) -> None:
    root = built.copy(tmp_path)
    done = update(root, built.wheels[NEW], "--timeout", "0", "--health-cmd", "true")  # no socket there
    assert done.returncode == 1
    assert "not updated: no status from the controller" in done.stderr
    assert current(root) == f"releases/{OLD}"


def test_force_does_not_wait_for_the_charging_session(built: Built, tmp_path: Path) -> None:
    root = built.copy(tmp_path)
    done = update(root, built.wheels[NEW], "--force", "--status-cmd", scripted_status(root, CHARGING),
                  "--health-cmd", "true")
    assert done.returncode == 0, done.stderr
    assert "--force: not waiting" in done.stdout
    assert log(root) == [f"restart {NEW}"]  # never asked
    assert current(root) == f"releases/{NEW}"


async def test_a_real_controller_is_asked_through_its_console_socket(built: Built, tmp_path: Path) -> None:
    """The simulated controller charges; update.sh asks it with the release's charger-console (default
    status command) and waits; the EV is unplugged, it updates; the default health check (no systemd:
    the console answers status) passes."""
    root = built.copy(tmp_path)
    (tmp_path / "charger").mkdir()
    config = write_config(tmp_path / "charger", free_port(), charger_id="CP-update", evses=evses(1))
    running = await start_controller(config)
    try:
        await asyncio.wait_for(running.controller.console.serving.wait(), 5)
        running.controller.charger.local_list.apply(1, True, [
            LocalAuthEntry(id_token="AA11", status=LocalAuthStatus.ACCEPTED)])
        await plug_and_charge(running, token="AA11")
        proc = await asyncio.create_subprocess_exec(
            "bash", str(UPDATE), "--root", str(root), "--wheel", str(built.wheels[NEW]), "--no-systemd",
            "--socket", str(running.controller.console.path), "--poll", "0.1", "--timeout", "30",
            "--health-timeout", "10", "--restart-cmd", "true",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        lines: list[str] = []
        while not any("waiting: EVSE 1 charging" in line for line in lines):
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, f"update.sh ended before waiting: {lines}"
            lines.append(line)
        assert current(root) == f"releases/{OLD}"
        running.sim.plug(1, "A")  # the EV leaves
        await until(lambda: not running.sim.relay_commanded(1), 5)
        rest, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert f"updated: release {OLD} -> {NEW}, healthy" in rest.decode()
        assert current(root) == f"releases/{NEW}"
    finally:
        await running.stop()

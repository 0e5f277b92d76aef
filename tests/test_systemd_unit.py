"""deploy/charger-firmware.service: systemd accepts it (`systemd-analyze verify`, warnings included) and it
has what issue 13 asks for: Type=notify with a watchdog, Restart=always, the dedicated user and its
directories, and the hardening."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware.config.settings import DEFAULT_CONSOLE_SOCKET, DEFAULT_STATE_DIR
from tests.support.program import REPO

UNIT = REPO / "deploy" / "charger-firmware.service"
EXEC_START = "/opt/charger-firmware/current/bin/charger-firmware --config /etc/charger-firmware/config.toml"
INSTALL_HINT = ("systemd-analyze is missing: install the systemd package (apt-get install systemd); "
                "./tools/test does it when it is missing")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value assigned (systemd.syntax(7): `#`/`;` comments, `key=value`)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        assert current is not None, f"a key before any [section]: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def verify(unit_text: str, directory: Path) -> str:
    """`systemd-analyze verify` on `unit_text` as charger-firmware.service, ExecStart's program replaced
    by one that exists here (verify refuses a missing one); its whole output."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail(INSTALL_HINT)
    true = shutil.which("true")
    assert true is not None
    text, count = re.subn(r"^ExecStart=\S+", f"ExecStart={true}", unit_text, flags=re.MULTILINE)
    assert count == 1
    path = directory / "charger-firmware.service"
    path.write_text(text)
    done = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    assert verify(UNIT.read_text(), tmp_path) == "exit 0\n"


def test_verify_reports_a_mistake_so_the_check_above_means_something(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("Restart=always", "Restart=alwayz").replace("WatchdogSec=", "WatchdogSex=")
    out = verify(broken, tmp_path)
    assert "alwayz" in out
    assert "WatchdogSex" in out


def test_the_unit_has_the_required_settings() -> None:
    unit = parse_unit(UNIT.read_text())
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] == "10"
    assert service["Restart"] == "always"
    assert service["RestartSec"]
    assert service["RestartPreventExitStatus"] == "2"  # a bad config does not loop
    assert service["ExecStart"] == EXEC_START
    assert service["User"] == "charger-firmware"
    assert set(service["SupplementaryGroups"].split()) >= {"gpio", "spi", "dialout", "input"}
    assert service["StateDirectory"] == "charger-firmware"
    assert service["RuntimeDirectory"] == "charger-firmware"
    assert service["RuntimeDirectoryMode"] == "0755"  # the socket itself is 0660 with the console group
    assert service["ConfigurationDirectory"] == "charger-firmware"
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "ProtectKernelTunables"):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] == "strict"
    assert service["CapabilityBoundingSet"] == ""  # no capabilities at all
    assert service["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert service["SystemCallFilter"] == "@system-service"
    # PWM sysfs writes land in /sys/devices/platform (the /sys/class/pwm entries are symlinks to it),
    # read-only under ProtectKernelTunables= unless listed.
    assert "/sys/devices/platform" in service["ReadWritePaths"].split()
    # Either would cut the service off its GPIO/SPI/serial devices.
    assert "PrivateDevices" not in service
    assert "ProtectClock" not in service
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_the_config_defaults_lie_in_the_units_directories() -> None:
    """The state and the console socket go where systemd creates the directories for the user."""
    service = parse_unit(UNIT.read_text())["Service"]
    assert DEFAULT_STATE_DIR == Path("/var/lib") / service["StateDirectory"][-1]
    assert DEFAULT_CONSOLE_SOCKET.parent == Path("/run") / service["RuntimeDirectory"][-1]
    assert EXEC_START.endswith(f"/etc/{service['ConfigurationDirectory'][-1]}/config.toml")

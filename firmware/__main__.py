"""`charger-firmware` / `python -m firmware`: parse the command line, configure logging, run.

Exit status: 0 after a clean stop (SIGTERM, Ctrl-C), 2 for a bad command line or config (the message
names the file and key; no traceback), 1 if the controller stopped on an error (a device that is
missing or does not answer at start is reported in one line naming it, e.g. the ADC's /dev/spidev0.0). Logging is
configured here and nowhere else. It must never decide anything about charging: it only starts the
controller (firmware/app.py) and stops it on a signal.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from firmware import __version__
from firmware.config import Config, check_config_main, load_config
from firmware.boards import BoardNotDescribed
from firmware.core.errors import ConfigError, HardwareError
from firmware.sdnotify import Notifier

log = logging.getLogger("firmware")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="charger-firmware", description="EV charger controller (IEC 61851, MQTT).")
    parser.add_argument("--sim", action="store_true",
                        help="run on the simulated board (GPIO, pilot and RFID simulated; no hardware needed)")
    parser.add_argument("--config", metavar="FILE", help="TOML config (API.md §9); default: one simulated EVSE")
    parser.add_argument("--check-config", metavar="FILE", help="validate FILE and exit (0 ok, 2 invalid)")
    parser.add_argument("--log-level", default=os.environ.get("CHARGER_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"charger-firmware {__version__}")
    return parser


async def _run(config: Config, sim_mode: bool) -> None:
    from firmware.app import Controller
    from firmware.boards import build_board, build_meters
    from firmware.store import Store

    loop = asyncio.get_running_loop()
    board, sim = build_board(config, sim=sim_mode, clock=loop.time)
    controller = Controller(config, board, Store(config.charger.state_dir), meters=build_meters(config, board),
                            sim=sim)
    task = asyncio.current_task()
    assert task is not None  # noqa: S101
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await controller.run()
    except asyncio.CancelledError:
        log.info("stopped by signal")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.check_config:
        return check_config_main(args.check_config)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"charger-firmware: {exc}", file=sys.stderr)
        Notifier().failed(f"bad config: {exc}")  # `systemctl status` says why (exit 2: no restart loop)
        return 2
    if args.config is None:
        # No config: a laptop demo. Keep the durable state next to where it was started.
        state_dir = Path(os.environ.get("CHARGER_STATE_DIR", str(Path.cwd() / "state")))
        config = replace(config, charger=replace(config.charger, state_dir=state_dir))
    log.info("charger-firmware %s (%s), state in %s", __version__, "simulated board" if args.sim else "hardware",
             config.charger.state_dir)
    try:
        asyncio.run(_run(config, args.sim))
    except KeyboardInterrupt:
        pass
    except (HardwareError, BoardNotDescribed) as exc:  # a device missing or not described: one line
        print(f"charger-firmware: {exc}", file=sys.stderr)
        Notifier().failed(str(exc))
        return 1
    except Exception:
        log.exception("controller stopped on an error (outputs were driven safe)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

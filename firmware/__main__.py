"""`charger-firmware` / `python -m firmware`: parse the command line, configure logging, run.

Exit status: 0 after a clean stop (SIGTERM, Ctrl-C), 2 for a bad command line or config (the message
names the file and key; no traceback), 1 if the controller stopped on an error. Logging is
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
from firmware.core.errors import ConfigError

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
    from firmware.store import Store
    from hal.protocols import Meter
    from hal.sim import SimBoard

    loop = asyncio.get_running_loop()
    if not sim_mode:
        raise SystemExit("charger-firmware: the Raspberry Pi hardware backends are not part of this build yet; "
                         "run with --sim (a config's [evse.meter] tables still use real Modbus meters)")
    modbus_ids = {e.id for e in config.evses if e.meter is not None}
    board = SimBoard([e.id for e in config.evses], clock=loop.time,
                     phases={e.id: e.phases for e in config.evses},
                     meter_ids=[e.id for e in config.evses if e.id not in modbus_ids])
    meters: dict[int, Meter] = {}
    for evse in config.evses:
        if evse.meter is not None:
            from hal.meter import (
                ModbusMeter,  # pymodbus is imported only when a meter is configured
            )

            meters[evse.id] = ModbusMeter(evse.meter.model, evse.meter.url, device_id=evse.meter.device_id,
                                          timeout_s=evse.meter.timeout_s)
        else:
            sim_meter = board.meter(evse.id)
            if sim_meter is not None:
                meters[evse.id] = sim_meter
    controller = Controller(config, board, Store(config.charger.state_dir), meters=meters, sim=board)
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
    except Exception:
        log.exception("controller stopped on an error (outputs were driven safe)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""charger-firmware: asyncio controller for EV charger boards.

The async shell (app wiring, MQTT link, durable store, console, config) lives
here; the pure, sans-I/O decision logic lives in ``firmware.core``. The package import must never
import hardware libraries or start anything: it only names the version.
"""

__version__ = "0.1.0"

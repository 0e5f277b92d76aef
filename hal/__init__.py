"""Hardware access for charger-firmware: one small Protocol per device (`hal.protocols`), with a real
backend for the Raspberry Pi and a simulated one (`hal.sim`). No charging logic lives here, and the
package import must never import a Pi-only library (each backend imports its own when chosen)."""

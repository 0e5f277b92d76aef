"""The sans-I/O core of charger-firmware.

Everything that *decides* lives here: CP/PP decoding (`pilot`), the per-EVSE machine (`evse`), the
charger that routes events to its EVSEs (`charger`) and its token desk (`tokens`), the reservation book
(`reservations`), token decisions (`auth`) and link supervision (`supervision`). Modules here take an
event and the current time (an `Instant`: `instant`) and return a list of actions; they never read a
clock, sleep, log, or touch a socket, a file or hardware. `tests/test_layering.py` enforces that.
Standard: IEC 61851-1 (Annex A, Table A.6).
"""

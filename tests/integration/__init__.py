"""Integration tests: real mosquitto, real pymodbus servers, socat pty pairs (marker `integration`)."""

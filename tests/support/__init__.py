"""Helpers shared by every test package (real parts, never mocks of our own modules)."""

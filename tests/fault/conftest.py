"""Fault tests use the real broker fixtures of the integration tests."""

from tests.integration.conftest import broker, own_broker  # noqa: F401 - pytest fixtures

"""Fault tests use the real broker fixtures of the integration tests."""

from tests.integration.conftest import broker, own_broker  # noqa: F401 - pytest fixtures
from tests.support.leaks import no_leaked_tasks  # noqa: F401 - autouse: fails a test that leaks tasks

"""Fault tests use the real broker of tests/support/broker.py."""

from tests.support.broker import broker, own_broker
from tests.support.leaks import no_leaked_tasks

__all__ = ["broker", "no_leaked_tasks", "own_broker"]  # pytest fixtures; no_leaked_tasks is autouse

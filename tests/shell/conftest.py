"""Shell tests: the real TaskGroup on the simulated board."""

from tests.support.leaks import no_leaked_tasks

__all__ = ["no_leaked_tasks"]

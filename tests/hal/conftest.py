"""HAL tests: the simulated board and the meter maps, at the level of bytes and registers."""

from tests.support.leaks import no_leaked_tasks

__all__ = ["no_leaked_tasks"]

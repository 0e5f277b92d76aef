"""Shared pytest configuration for the charger-firmware test suite.

`tests/` and its sub-folders are packages, so helpers can be imported as `tests.core.helpers`
and test modules with the same name in different folders do not clash.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Hypothesis profiles: "ci" (default) keeps the suite fast; "long" is for soak runs outside CI:
#   HYPOTHESIS_PROFILE=long ./tools/test tests/core
settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile(
    "long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

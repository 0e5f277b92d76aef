"""Shared pytest configuration for the charger-firmware test suite.

`tests/` and its sub-folders are packages, so helpers can be imported as `tests.core.helpers`
and test modules with the same name in different folders do not clash.
"""

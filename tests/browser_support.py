"""Where ``tests/test_export.py`` finds Chromium; the browser tests' code is
in :mod:`support.browser`."""

from support.browser import CHROMIUM, CHROMIUM_ARGS

__all__ = ["CHROMIUM", "CHROMIUM_ARGS"]

"""tests/kit: the user test kit (pytest plugin, strategies, state machine, conformance).

``pytester`` is enabled here for this folder only (a non-root conftest may not set
``pytest_plugins``): the plugin is imported when this conftest loads.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")

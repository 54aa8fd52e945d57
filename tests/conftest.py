"""Shared pytest fixtures.  Browser fixtures only; no side effects at import.

``browser`` (module): headless Chromium.  ``page_and_log`` (function): a fresh page that records
console errors and dismisses + records dialogs.  ``jupyter_server`` (function): a factory
``jupyter_server(kind, root_dir)`` that starts JupyterLab or Voila and always stops it (and its
kernels) when the test ends, failed or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: a running sync_playwright() blocks any other one in the same
    # process ("Sync API inside the asyncio loop"), e.g. a test that launches its own browser.
    from support.browser import launch_browser

    with launch_browser() as b:
        yield b


@pytest.fixture
def page_and_log(browser: Any) -> Iterator[tuple[Any, Any]]:
    from support.browser import new_page

    page, log = new_page(browser)
    try:
        yield page, log
    finally:
        page.context.close()


@pytest.fixture
def jupyter_server() -> Iterator[Callable[[str, Path], Any]]:
    from support.browser import JupyterServer, stop_on_sigterm

    stop_on_sigterm()
    started: list[JupyterServer] = []

    def start(kind: str, root_dir: Path) -> JupyterServer:
        server = JupyterServer(kind, root_dir)
        started.append(server)  # registered before start(): stopped even if start() fails
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()

"""Shared pytest fixtures.  Browser fixtures only; no side effects at import.

``browser`` (module): headless Chromium.  ``page_and_log`` (function): a fresh page that records
console errors and dismisses + records dialogs.  ``jupyter_server`` (function): a factory
``jupyter_server(kind, root_dir)`` that starts JupyterLab or Voila and always stops it (and its
kernels) when the test ends, failed or not.  A failed test's report ends with the log of each
server it started (a kernel that died or printed a traceback shows there) and what its page
showed (cell prompts, the kernel's status, open dialogs, console errors).
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
def page_and_log(request: pytest.FixtureRequest, browser: Any) -> Iterator[tuple[Any, Any]]:
    from support.browser import new_page

    page, log = new_page(browser)
    request.node.page_and_log = page, log  # read by pytest_runtest_makereport
    try:
        yield page, log
    finally:
        page.context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        if hasattr(item, "page_and_log"):
            from support.browser import page_state

            report.sections.append(("the page when the test failed", page_state(
                *item.page_and_log)))
        for server in getattr(item, "jupyter_servers", []):
            report.sections.append((f"{server.kind} server log (its last 5,000 characters)",
                                    server.log()))


@pytest.fixture
def jupyter_server(request: pytest.FixtureRequest) -> Iterator[Callable[[str, Path], Any]]:
    from support.browser import JupyterServer, stop_on_sigterm

    stop_on_sigterm()
    started: list[JupyterServer] = []
    request.node.jupyter_servers = started  # read by pytest_runtest_makereport

    def start(kind: str, root_dir: Path) -> JupyterServer:
        server = JupyterServer(kind, root_dir)
        started.append(server)  # registered before start(): stopped even if start() fails
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()

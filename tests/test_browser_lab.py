"""JupyterLab in headless Chromium: the tour runs and the widget answers mouse and keyboard."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_support import (
    TRIVIAL_NOTEBOOK,
    drag_slider,
    lab_run_all,
    lab_wait_all_done,
    press_slider,
    write_notebook,
)

pytestmark = pytest.mark.browser


def test_harness_plain_ipywidgets(jupyter_server, page_and_log, tmp_path: Path) -> None:
    """The harness itself: Lab starts, Run All runs, a plain IntSlider answers keys and mouse."""
    write_notebook(tmp_path / "trivial.ipynb", TRIVIAL_NOTEBOOK)
    lab = jupyter_server("lab", tmp_path)
    page, log = page_and_log
    page.goto(lab.notebook_url("trivial.ipynb"))
    lab_run_all(page)
    lab_wait_all_done(page)
    slider = page.locator(".trivial-slider")
    label = page.locator(".trivial-label")
    press_slider(page, slider, "ArrowRight", 3)
    page.wait_for_function(
        "() => document.querySelector('.trivial-label').textContent === 'value=3'"
    )
    drag_slider(page, slider, 1.0)
    page.wait_for_function(
        "() => document.querySelector('.trivial-label').textContent === 'value=100'"
    )
    assert label.inner_text() == "value=100"
    assert log.dialogs == []
    assert log.real_errors() == []

"""JupyterLab in headless Chromium: the tour runs and its widget answers mouse and keyboard."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.browser import (
    NOTEBOOKS,
    TOUR_FIRST_CELL,
    TRIVIAL_NOTEBOOK,
    drag_slider,
    exercise_tour_widget,
    fresh_colors_in_new_cell,
    open_and_run_all,
    press_slider,
    write_notebook,
)

pytestmark = pytest.mark.browser


def test_harness_plain_ipywidgets(jupyter_server, page_and_log, tmp_path: Path) -> None:
    """The harness itself: Lab starts, Run All runs, a plain IntSlider answers keys and mouse."""
    write_notebook(tmp_path / "trivial.ipynb", TRIVIAL_NOTEBOOK)
    lab = jupyter_server("lab", tmp_path)
    page, log = page_and_log
    open_and_run_all(page, lab, "trivial.ipynb", timeout_ms=30000)
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


def test_lab_tour(jupyter_server, page_and_log, tmp_path: Path) -> None:
    """The tour in JupyterLab: Run All without errors, then one panel per head in each stage's
    image (decoded PNG) titled "head i", mouse + keyboard on three sliders (checked against a
    fresh widget made in a new cell from the live widget's exact values), hostile text shown
    as text, no dialog, no console error, screenshots."""
    tour = NOTEBOOKS / "tour.ipynb"
    assert TOUR_FIRST_CELL in tour.read_text(encoding="utf-8").replace('\\"', '"')
    shutil.copy(tour, tmp_path / "tour.ipynb")  # Lab may save: never touch the repo's copy
    lab = jupyter_server("lab", tmp_path)
    page, log = page_and_log
    open_and_run_all(page, lab, "tour.ipynb")
    widget = page.locator(".jp-NotebookPanel .attention-widget").first
    fresh_colors = fresh_colors_in_new_cell(page)
    shots = exercise_tour_widget(page, log, widget, fresh_colors, "lab")
    assert all(p.stat().st_size > 10_000 for p in shots.values())
    # the package's server extension (enabled by the config file pip installs) was loaded
    server_log = lab.log_path.read_text(errors="replace")
    assert "attention_widget: TCP_NODELAY on kernel websockets" in server_log, lab.log()
    assert shots["overview"].stat().st_size > 10_000  # the default view, shown first

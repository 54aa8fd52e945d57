"""Notebook 7 in headless Chromium: the tour runs and its widget answers mouse and keyboard.

Notebook 7 is built from JupyterLab's components (the same notebook panel, menus and widget
manager), so the Lab helpers drive it; what differs is the server (``jupyter notebook``),
the page (``/notebooks/<name>``, one document, no status bar) and the kernel status.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.browser import (
    NOTEBOOKS,
    TOUR_FIRST_CELL,
    TRIVIAL_NOTEBOOK,
    exercise_tour_widget,
    fresh_colors_in_new_cell,
    open_and_run_all,
    press_slider,
    write_notebook,
)

pytestmark = pytest.mark.browser


def test_notebook7_tour(jupyter_server, page_and_log, tmp_path: Path) -> None:
    """The tour in Notebook 7: Run All without errors, then one panel per head in each
    stage's image titled "head i", two rounds of mouse drags on three sliders (each checked
    against a fresh widget made in a new cell from the live widget's exact values), hostile
    text typed key by key and shown as text, no dialog, no console error of ours,
    screenshots; the package's server extension is loaded by Notebook 7's server too."""
    tour = NOTEBOOKS / "tour.ipynb"
    assert TOUR_FIRST_CELL in tour.read_text(encoding="utf-8").replace('\\"', '"')
    shutil.copy(tour, tmp_path / "tour.ipynb")  # the server may save: never the repo's copy
    server = jupyter_server("notebook", tmp_path)
    page, log = page_and_log
    open_and_run_all(page, server, "tour.ipynb")
    assert page.locator("#jp-main-statusbar").count() == 0  # Notebook 7's page, not Lab's
    widget = page.locator(".jp-NotebookPanel .attention-widget").first
    fresh_colors = fresh_colors_in_new_cell(page)
    # the second round of slider moves uses the mouse: see the xfail test below
    shots = exercise_tour_widget(page, log, widget, fresh_colors, "notebook7", keyboard=False)
    assert all(p.stat().st_size > 10_000 for p in shots.values())
    server_log = server.log_path.read_text(errors="replace")
    assert "attention_widget: TCP_NODELAY on kernel websockets" in server_log, server.log()


@pytest.mark.xfail(
    strict=True,
    reason="Notebook 7.6.5 runs its keyboard shortcuts before any widget sees the key (the "
    "keydown is already handled in the document's capture phase; JupyterLab starts its "
    "application with bubblingKeydown and runs them after the widget): the arrow keys of a "
    "focused ipywidgets slider move between or fold the notebook's headings "
    "(notebook:move-cursor-heading-*) instead of moving the slider. Documented in the README; "
    "strict, so a Notebook that fixes it turns this test red.",
)
def test_notebook7_arrow_keys_reach_sliders(jupyter_server, page_and_log, tmp_path: Path) -> None:
    """A plain ipywidgets IntSlider (not this package's) answers arrow keys in Notebook 7."""
    write_notebook(tmp_path / "trivial.ipynb", TRIVIAL_NOTEBOOK)
    server = jupyter_server("notebook", tmp_path)
    page, _log = page_and_log
    open_and_run_all(page, server, "trivial.ipynb")
    press_slider(page, page.locator(".trivial-slider"), "ArrowRight", 3)
    page.wait_for_function(
        "() => document.querySelector('.trivial-label').textContent === 'value=3'",
        timeout=5000,
    )

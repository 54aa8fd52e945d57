"""Voila (the classroom dashboard) in headless Chromium: the tour renders and answers."""

from __future__ import annotations

import shutil
import urllib.parse
from pathlib import Path

import pytest
from support.browser import (
    NOTEBOOKS,
    REFERENCE_NOTEBOOK,
    TOUR_FIRST_CELL,
    TOUR_TEXT,
    exercise_tour_widget,
    new_page,
    stage_colors,
    wait_summary,
    write_notebook,
)

pytestmark = pytest.mark.browser


def test_voila_tour(jupyter_server, browser, page_and_log, tmp_path: Path) -> None:
    """The tour in Voila: one panel per head in each stage's image (decoded PNG) titled
    "head i", mouse + keyboard on three sliders (checked against a fresh render), hostile
    text shown as text, no dialog, no console error, screenshots."""
    tour = NOTEBOOKS / "tour.ipynb"
    assert TOUR_FIRST_CELL in tour.read_text(encoding="utf-8").replace('\\"', '"')
    shutil.copy(tour, tmp_path / "tour.ipynb")
    write_notebook(tmp_path / "reference.ipynb", REFERENCE_NOTEBOOK)
    voila = jupyter_server("voila", tmp_path)
    page, log = page_and_log

    def fresh_colors(values: dict) -> dict:
        """Render a new widget with ``values`` in a second page (its own kernel)."""
        query = urllib.parse.urlencode({"text": TOUR_TEXT, **{k: repr(v) for k, v in
                                                              values.items()}})
        ref_page, ref_log = new_page(browser)
        try:
            ref_page.goto(voila.notebook_url("reference.ipynb", query), timeout=60000)
            ref = ref_page.locator(".aw-reference").first
            ref.wait_for(timeout=60000)
            wait_summary(ref_page, ref, {"n_heads": str(values["n_heads"])})
            assert ref_log.real_errors() == [], ref_log.real_errors()
            return stage_colors(ref)
        finally:
            ref_page.context.close()

    page.goto(voila.notebook_url("tour.ipynb"), timeout=60000)
    widget = page.locator(".attention-widget").first
    shots = exercise_tour_widget(page, log, widget, fresh_colors, "voila")
    assert all(p.stat().st_size > 10_000 for p in shots.values())
    # Voila shows outputs and markdown only: no code of the tour reaches the page.
    html = page.content()
    assert "np.set_printoptions" not in html and "softmax_rows" not in html
    assert "Multi-head" in html or "multi-head" in html  # the markdown did
    # the documented opt-in (server.VOILA_OPTION) gave Voila the TCP_NODELAY connection
    server_log = voila.log_path.read_text(errors="replace")
    assert "attention_widget: TCP_NODELAY on this kernel websocket" in server_log, voila.log()

"""A long prompt in JupyterLab: 8,192 tokens drawn as overviews, a dragged zoom, a step.

The page is checked against the kernel: the focus head's overview decoded from the image the
browser shows is the kernel's overview, one pixel a tile (grey where the tile is masked); a box
dragged with the mouse on it zooms on the tokens under the box, and the zoom's axes show those
tokens; a temperature step by keyboard repaints the overview.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from support.browser import (
    figure_panels,
    lab_append_cell_and_run,
    open_and_run_all,
    page_screenshot,
    press_slider,
    screenshot,
    shown_axes,
    wait_stable_hrefs,
    write_notebook,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WORDS = ("the animal did not cross the street because it was too tired and the cat sat on "
         "the mat while a dog ran after it").split()
SETUP = (
    "from attention_widget import AttentionWidget\n"
    f"words = {WORDS!r}\n"
    "text = ' '.join(words[i % len(words)] for i in range(8192))\n"
    "w = AttentionWidget(text, d_model=64, n_heads=8, mask='causal')\n"
    "w.add_class('aw-under-test')\n"
    "w"
)
MASK_RGB = (150 << 16) | (150 << 8) | 150


def wait_text(widget, selector: str, pattern: str, timeout: float = 90.0) -> str:
    """The text of ``selector`` in ``widget`` once it matches ``pattern``."""
    deadline = time.monotonic() + timeout
    while True:
        text = widget.locator(selector).first.text_content() or ""
        if re.search(pattern, text):
            return text
        assert time.monotonic() < deadline, (selector, pattern, text)
        widget.page.wait_for_timeout(100)


def kernel_json(page, code: str, tag: str) -> dict:
    """Run ``code`` (which prints ``tag`` and a JSON line) in a new cell; return the JSON."""
    lab_append_cell_and_run(page, code)
    out = page.locator(".jp-NotebookPanel .jp-OutputArea-output", has_text=tag).last
    out.wait_for(timeout=60000)
    # textContent: JupyterLab skips rendering cells out of view (innerText would be empty)
    return json.loads(out.text_content().split(tag, 1)[1])


def test_lab_long_prompt(jupyter_server, page_and_log, tmp_path: Path) -> None:
    write_notebook(tmp_path / "long.ipynb", [SETUP])
    lab = jupyter_server("lab", tmp_path)
    page, log = page_and_log
    open_and_run_all(page, lab, "long.ipynb")
    widget = page.locator(".aw-under-test").first
    wait_text(widget, ".aw-summary", r"seq_len=8192, .*temperature=1,")
    wait_text(widget, ".aw-long-status", r"drawn \(")

    # the overviews draw: 8 thumbnails, and the focus head one pixel a tile of 16 x 16 cells
    assert len(figure_panels(widget, ".aw-fig-long-heads")["panels"]) == 8
    focus = figure_panels(widget, ".aw-fig-long-focus")
    panel, = focus["panels"]
    assert (panel["w"], panel["h"]) == (512, 512)
    # the kernel's colour of every 7th row and 5th column: the overview's level, or grey
    expected = kernel_json(page, (
        "import json, numpy as np\n"
        "from attention_widget.colors import MASK_RGB, levels, palette\n"
        "ov = w.trace.weights_overview[w.head][::7, ::5]\n"
        "rgb = palette(w.colormap)[levels(np.nan_to_num(ov), 0.0, 1.0)].astype(int)\n"
        "rgb[np.isnan(ov)] = MASK_RGB\n"
        "print('AW-OVERVIEW', json.dumps(((rgb[..., 0] << 16) | (rgb[..., 1] << 8) "
        "| rgb[..., 2]).tolist()))"), "AW-OVERVIEW")
    shown = [row[::5] for row in panel["colors"][::7]]
    assert shown == expected
    assert any(MASK_RGB in row for row in shown) and any(MASK_RGB not in row for row in shown)
    assert "1 px = max of 16×16 cells" in widget.locator(".aw-long-focus-note").text_content()

    # a box dragged on the overview: the zoom shows the exact cells of the tokens under it
    image = widget.locator(".aw-fig-long-focus image").first
    image.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    scr, height = focus["screen"], focus["height"]
    cell_w = (scr["right"] - scr["left"]) / focus["width"]
    cell_h = (scr["bottom"] - scr["top"]) / height
    box = image.bounding_box()  # (the screen box after scrolling)

    def at(row: float, col: float) -> tuple[float, float]:
        return (box["x"] + (panel["x"] + col) * cell_w, box["y"] + (panel["y"] + row) * cell_h)

    page.mouse.move(*at(300.5, 200.5))  # overview rows 300..311, columns 200..207
    page.mouse.down()
    page.mouse.move(*at(311.5, 207.5), steps=8)
    page.mouse.up()
    note = wait_text(widget, ".aw-long-zoom-note", r"queries 4,8\d\d")
    rows, cols = (tuple(int(v.replace(",", "")) for v in m) for m in re.findall(
        r"(\d[\d,]*)–(\d[\d,]*)", note)[:2])
    # tokens 4,800..4,991 and 3,200..3,327: the middle 128 of the rows, all 128 columns
    assert abs(rows[0] - 4832) <= 16 and rows[1] - rows[0] == 127, note
    assert abs(cols[0] - 3200) <= 16 and cols[1] - cols[0] in (127, 111, 143), note
    axes = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the axes follow the zoom's tokens
        axes = shown_axes(widget)["long-zoom"]
        if axes["x"] and axes["y"] and axes["y"][0] == WORDS[rows[0] % len(WORDS)]:
            break
        page.wait_for_timeout(100)
    assert axes["y"][0] == WORDS[rows[0] % len(WORDS)], (axes, rows)
    assert axes["x"][0] == WORDS[cols[0] % len(WORDS)], (axes, cols)
    assert len(axes["x"]) >= 10 and set(axes["x"]) <= set(WORDS)

    # the query lens, a query typed in: its ten heaviest keys, as the engine's softmax of
    # that one row of scores gives them
    lens = widget.locator(".aw-long-query input").first
    lens.fill("4900")
    lens.press("Enter")
    wait_text(widget, ".aw-long-lens-note", r"query 4,900 .*heaviest keys")
    widget.locator(".aw-fig-long-lens image").first.wait_for(timeout=30000)
    top = kernel_json(page, (
        "import json, numpy as np\n"
        "from attention_widget.engine import softmax\n"
        "tr, q = w.trace, 4900\n"
        "s = tr.q[w.head, q] @ tr.k[tr.kv_head(w.head)].T / np.sqrt(tr.d_head)\n"
        "p = softmax(s.astype(np.float64)[None], mask=(np.arange(tr.seq_len) <= q)[None])[0]\n"
        "top = np.argsort(-p)[:10]\n"
        "print('AW-LENS', json.dumps([[int(j), float(p[j])] for j in top]))"), "AW-LENS")
    shown = widget.locator(".aw-long-top").first.evaluate(
        "t => [...t.rows].slice(1).map(r => [...r.cells].map(c => c.textContent))")
    assert [int(r[1].replace(",", "")) for r in shown] == [j for j, _ in top], (shown, top)
    assert [r[2].strip() for r in shown] == [WORDS[j % len(WORDS)] for j, _ in top], shown
    assert all(abs(float(r[3]) - p) < 1e-4 for r, (_, p) in zip(shown, top, strict=True))
    # the strip at its own height, 16 lines of 6 px (a figure that entered the page while its
    # height changed drew its plot at the old height: 16 lines in 30 px, labels overlapping)
    strip = widget.locator(".aw-fig-long-lens image").first.bounding_box()
    assert strip["height"] >= 16 * 5, strip

    # a temperature step by keyboard repaints the overview
    before = wait_stable_hrefs(page, widget, ".aw-fig-long-focus image")
    press_slider(page, widget.locator(".aw-temperature").first, "ArrowLeft", 30)
    wait_text(widget, ".aw-summary", r"temperature=0\.5")
    after = wait_stable_hrefs(page, widget, ".aw-fig-long-focus image")
    assert after != before
    screenshot(page, widget.locator(".aw-long").first, "lab_long_8192")
    page_screenshot(page, "long-8192", top=widget.locator(".aw-long"))
    assert log.dialogs == [] and log.real_errors() == [], log.real_errors()

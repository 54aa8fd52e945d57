"""JupyterLab in headless Chromium: BART's cross-attention and a DeepSeek V4 compressed layer.

Tiny random checkpoints saved here (as in tests/test_widget_families.py).  The BART widget opens
on its cross-attention: target tokens on the query axis, source tokens on the key axis; the V4
widget on a compressed sparse layer, whose key axis ends with the compressed entries.  No
console errors; screenshots of each at 1280 px wide.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from support.browser import SCREENSHOTS, open_and_run_all, screenshot, write_notebook

pytestmark = pytest.mark.browser


def _save(name: str, folder: Path) -> Path:
    import torch
    from support import tiny
    from test_widget_families import FAMILIES, _tokenizer

    config_class, model_class, config = FAMILIES[name]
    torch.manual_seed(5)
    tok = _tokenizer(end=name == "bart")
    model = model_class(config_class(vocab_size=tok.get_vocab_size(), **config))
    tiny.randomize(model, {"sinks": 1.0}, matrix_std=0.25)
    return tiny.save(model, tok, folder)


def test_bart_cross_attention_and_v4_entries(jupyter_server, page_and_log,
                                             tmp_path: Path) -> None:
    from test_widget_families import SOURCE, TARGET, TEXT

    bart, v4 = _save("bart", tmp_path / "bart"), _save("deepseek_v4", tmp_path / "v4")
    write_notebook(tmp_path / "families.ipynb", [
        "from attention_widget import AttentionWidget\n"
        f"bw = AttentionWidget.from_pretrained({os.fspath(bart)!r}, {SOURCE!r},\n"
        f"    target={TARGET!r}, part='cross', layer=1, view='detailed', progress=False)\n"
        "bw.add_class('aw-bart')\n"
        "bw",
        f"vw = AttentionWidget.from_pretrained({os.fspath(v4)!r}, {TEXT!r}, layer=1,\n"
        "    view='detailed', progress=False)\n"
        "vw.add_class('aw-v4')\n"
        "vw",
    ])
    lab = jupyter_server("lab", tmp_path)
    page, log = page_and_log
    page.set_viewport_size({"width": 1280, "height": 720})
    open_and_run_all(page, lab, "families.ipynb")

    bw = page.locator(".jp-NotebookPanel .aw-bart").first
    bw.locator(".aw-fig-focus image").first.wait_for(timeout=60000)
    assert bw.locator(".aw-part button.mod-active").inner_text() == "cross"
    for button in bw.locator(".aw-part button").all():  # "encoder", not "enco…"
        assert button.evaluate("e => e.scrollWidth <= e.clientWidth"), button.inner_text()
    focus = bw.locator(".aw-fig-focus")
    page.wait_for_function("() => [...document.querySelectorAll('.aw-bart .aw-fig-focus text')]"
                           ".some(t => t.textContent.includes('head 0: weights (10 × 8)'))",
                           timeout=30000)
    ticks = focus.locator(".tick text").all_text_contents()
    assert "mat" in ticks and "dog" in ticks  # a source token (a key), a target token (a query)
    shots = [screenshot(page, bw.locator(".aw-stage-4"), "families-bart-cross")]

    vw = page.locator(".jp-NotebookPanel .aw-v4").first
    vw.locator(".aw-fig-focus image").first.wait_for(timeout=60000)
    page.wait_for_function("() => [...document.querySelectorAll('.aw-v4 .aw-fig-focus .tick "
                           "text')].some(t => /^c0 0-\\d+$/.test(t.textContent))",
                           timeout=30000)
    layer = vw.locator(".aw-layer select")
    assert "compressed sparse" in layer.locator("option:checked").inner_text().replace("\xa0", " ")
    shots.append(screenshot(page, vw.locator(".aw-stage-4"), "families-deepseek_v4"))
    shots.append(screenshot(page, vw.locator(".aw-controls"), "families-deepseek_v4-controls"))

    assert log.dialogs == []
    assert log.real_errors() == []
    out = Path(os.environ.get("AW_SHOTS", SCREENSHOTS))
    out.mkdir(parents=True, exist_ok=True)
    for shot in shots:
        if out != shot.parent:
            shutil.copy(shot, out / shot.name)

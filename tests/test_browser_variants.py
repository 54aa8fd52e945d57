"""Each attention variant drawn in JupyterLab at 1280 x 720, with no console error.

One notebook holds a widget per variant (RoPE, ALiBi with the soft-cap, sinks, top-k,
cross-attention, latent attention, grouped-query attention); each widget's overview is measured
on the page (no text overlaps, none is cut or sticks out of its figure), the variant's own
marks are on screen (the sink label, the source's tokens, the latent column's title), and the
detailed view draws too.  A 1280 x 720 screenshot of each overview is saved to
``build/screenshots/variants/<name>.png`` (or the folder ``AW_VARIANT_SHOTS`` names).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.browser import (
    PAGE_1280X720,
    SCREENSHOTS,
    open_and_run_all,
    show_view,
    text_boxes,
    text_problems,
    wait_stable_hrefs,
    widget_fit,
    write_notebook,
)

pytestmark = pytest.mark.browser

TEXT = "The animal didn't cross the street because it was too tired."
SOURCE = "Das Tier überquerte die Straße nicht, weil es zu müde war."
#: Each variant: the widget's keyword arguments, and a text its overview must show.
VARIANTS = {
    "rope": ("rope=10000.0, positional=False", "Q · RoPE"),
    "alibi_softcap": ("alibi=True, softcap=3.0, mask='causal'", "c·tanh((QKᵀ/√d + B)/c)"),
    "sinks": ("sinks=True", "sink"),
    "top_k": ("top_k=3, mask='causal'", "softmax(top-k S / T)"),
    "cross": (f"kind='cross', source_text={SOURCE!r}", "source X"),
    "latent": ("kind='latent', kv_rank=16, rope_dim=4, rope=10000.0, mask='causal'", "c_kv"),
    "gqa": ("n_kv_heads=2", "K · 2 kv heads"),
}


def _shots() -> Path:
    folder = Path(os.environ.get("AW_VARIANT_SHOTS", SCREENSHOTS / "variants"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_lab_draws_every_variant(jupyter_server, page_and_log, tmp_path: Path) -> None:
    cells = ["from attention_widget import AttentionWidget"]
    for name, (kwargs, _) in VARIANTS.items():
        cells.append(f"w_{name} = AttentionWidget(text={TEXT!r}, d_model=64, n_heads=4, "
                     f"{kwargs})\nw_{name}.add_class('aw-case-{name}')\nw_{name}")
    write_notebook(tmp_path / "variants.ipynb", cells)
    lab = jupyter_server("lab", tmp_path)
    page, log = page_and_log
    page.set_viewport_size(PAGE_1280X720)
    open_and_run_all(page, lab, "variants.ipynb")
    folder = _shots()
    for name, (_, shown) in VARIANTS.items():
        widget = page.locator(f".jp-NotebookPanel .aw-case-{name}").first
        widget.wait_for(state="attached", timeout=60000)
        widget.evaluate("e => e.scrollIntoView({block: 'start'})")  # (Lab lays out what shows)
        widget.locator(".aw-overview image").first.wait_for(timeout=60000)
        wait_stable_hrefs(page, widget, ".aw-overview image", quiet_ms=300)
        texts = [b["text"] for b in text_boxes(widget.locator(".aw-overview").first)]
        assert shown in texts, (name, shown, texts)
        if name == "cross":
            assert {"Straße", "müde"} & set(texts), texts  # the source's tokens are on screen
        fit = widget_fit(widget)
        assert not fit["sideways"] and fit["right"] <= PAGE_1280X720["width"], (name, fit)
        # the picture whole on the screen (with a variant on, the controls take more room)
        widget.locator(".aw-overview-box").first.evaluate(
            "e => e.scrollIntoView({block: 'end'})")
        page.wait_for_timeout(300)
        page.screenshot(path=str(folder / f"{name}.png"))
        assert "⚠" not in (widget.locator(".aw-error").first.text_content() or ""), name
        assert text_problems(widget) == [], name
        show_view(page, widget, "detailed")
        assert text_problems(widget, page=page) == [], (name, "detailed")
        show_view(page, widget, "overview")
    assert log.real_errors() == [], log.real_errors()

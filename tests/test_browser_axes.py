"""Every axis label and panel title the page shows is the kernel's, after every kind of change.

A generic check of what the figures draw from text: bqplot redraws ticks in transitions, and a
redraw that kept old labels once left X's rows numbered instead of labelled (2e978af).  Here the
kernel prints what each figure's axes and titles should read, and the page must show exactly
that -- tick by tick, in order -- after each change of a sequence that moves every layout.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support.browser import (
    XSS_TEXT,
    lab_append_cell_and_run,
    open_and_run_all,
    shown_axes,
    wait_summary,
    write_notebook,
)

pytestmark = pytest.mark.browser

SETUP = [
    "import json\n"
    "from attention_widget import AttentionWidget\n"
    "from attention_widget.plots import _key\n"
    "w = AttentionWidget('The cat sat on the mat.', d_model=32, n_heads=4, view='detailed')\n"
    "w.add_class('aw-under-test')\n"
    "w",
    "def expected():\n"
    "    out = {}\n"
    "    for name, f in w.figs.items():\n"
    "        out[name] = {side: [a.tick_labels[_key(v)] for v in a.tick_values]\n"
    "                     for side, a in (('x', f.x_axis), ('y', f.y_axis))}\n"
    "        # panel titles, then the heads' roles on their second line (the marks' order)\n"
    "        out[name]['titles'] = [t for t in [*f.titles.text, *f.roles.text] if t]\n"
    "    return json.dumps(out)",
]

# each change, and the summary's seq_len after it
CHANGES = [
    ("w.text = ' '.join(f'w{i}' for i in range(25))", "25"),
    (f"w.text = {XSS_TEXT!r}", "31"),
    ("w.n_heads = 8", None),
    ("w.d_model = 64", None),
    ("w.n_kv_heads = 2", None),
    ("w.mask = 'causal'", None),
    ("w.text = 'three small words'", "3"),
    ("w.text = ' '.join(f'token{i}' for i in range(64))", "64"),
    ("w.n_heads = 1", None),
    ("w.text = 'one'", "1"),
]

def _run_and_expect(page, code: str) -> dict:
    """Run ``code`` in a new cell, then print and return the kernel's expected() JSON."""
    outputs = page.locator(".jp-NotebookPanel .jp-OutputArea-output", has_text="AW-EXPECT")
    before = outputs.count()
    lab_append_cell_and_run(page, f"{code}\nprint('AW-EXPECT', expected())")
    page.wait_for_function(
        """n => [...document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output')]
            .filter(o => o.textContent.includes('AW-EXPECT')).length > n""",
        arg=before,
        timeout=30000,
    )
    text = outputs.nth(before).inner_text()
    return json.loads(text.split("AW-EXPECT", 1)[1])


def test_lab_axes_and_titles_follow_the_kernel(
    jupyter_server, page_and_log, tmp_path: Path
) -> None:
    write_notebook(tmp_path / "axes.ipynb", SETUP)
    lab = jupyter_server("lab", tmp_path)
    page, log = page_and_log
    open_and_run_all(page, lab, "axes.ipynb")
    widget = page.locator(".aw-under-test").first
    widget.wait_for(timeout=60000)
    wait_summary(page, widget, {"seq_len": "7"})
    for change, seq_len in [("pass", None), *CHANGES]:
        want = _run_and_expect(page, change)
        if seq_len is not None:
            wait_summary(page, widget, {"seq_len": seq_len})
        deadline = time.monotonic() + 10
        while True:  # (the page has the new images; its axes follow within a frame or two)
            shown = shown_axes(widget)
            diff = {
                (name, part): (shown[name][part], expect)
                for name, parts in want.items() if name in shown  # (figures on the page)
                for part, expect in parts.items()
                if expect and shown[name][part] != expect  # (no ticks: bqplot's own numbers)
            }
            if not diff or time.monotonic() > deadline:
                break
            page.wait_for_timeout(100)
        assert not diff, (change, diff)
    assert log.real_errors() == [], log.real_errors()

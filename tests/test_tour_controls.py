"""The tour survives its own invitation: move a control, re-run the cells below.

Each case inserts one control change right after the cell that builds the widget and executes
the whole tour; every cell must run without error, and the cells must have read the change.
"""

from __future__ import annotations

import re

import nbformat
import pytest
from test_notebooks import NOTEBOOKS, execute, outputs_text

TOUR = NOTEBOOKS / "tour.ipynb"

# (what the student does, the code it amounts to, a line the summary cell must then print)
CHANGES = [
    ("causal mask", 'w.mask = "causal"', "mask=causal"),
    ("2 kv heads", "w.n_kv_heads = 2", "n_kv_heads=2"),
    ("positional encodings off", "w.positional = False", "positional encodings: off"),
    ("d_model 32", "w.d_model = 32", "d_model=32"),
    ("8 heads at temperature 0.3", "w.n_heads = 8\nw.temperature = 0.3", "temperature=0.3"),
    ("sliding window of 3", 'w.mask = "sliding"\nw.window = 3', "mask=sliding, window=3"),
    ("a sentence without 'it'", 'w.text = "The cat sat on the mat."', "seq_len=7"),
    ("a one-word text", 'w.text = "Hello"', "seq_len=1"),
]


def _widget_cell(nb: nbformat.NotebookNode) -> int:
    return next(
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and "= AttentionWidget(" in c.source
    )


@pytest.mark.parametrize(("what", "change", "expect"), CHANGES, ids=[c[0] for c in CHANGES])
def test_tour_runs_after_a_control_change(what: str, change: str, expect: str) -> None:
    nb = nbformat.read(TOUR, as_version=4)
    at = _widget_cell(nb) + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell(change + "\nassert not w.error, w.error"))
    execute(nb)
    printed = "".join(outputs_text(c) for c in nb.cells if c.cell_type == "code")
    assert expect in printed, f"after {what}, the tour never printed {expect!r}"
    assert not re.search(r"\bnan\b", printed, re.IGNORECASE), f"NaN printed after {what}"

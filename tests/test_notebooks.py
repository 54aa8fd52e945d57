"""Every notebook in notebooks/ runs top to bottom, offline, and is committed without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
CELL_TIMEOUT_S = 60  # the per-notebook budget; no single cell may take longer


def test_the_teaching_notebooks_exist() -> None:
    names = {p.name for p in ALL}
    assert {"tour.ipynb", "lesson.ipynb", "custom_arrays.ipynb"} <= names, names


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_is_stripped(path: Path) -> None:
    raw = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(raw["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs: strip them"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has a count"
    assert raw["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_runs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert errors == []
    # the first code cell shows the widget: it must have produced a widget view
    first = next(c for c in nb.cells if c.cell_type == "code")
    if "AttentionWidget" in first.source:
        mimes = {m for out in first.outputs for m in out.get("data", {})}
        assert "application/vnd.jupyter.widget-view+json" in mimes, mimes

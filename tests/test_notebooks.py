"""Every notebook in notebooks/ (and notebooks/teacher/) runs top to bottom, offline, and is
committed without outputs.

``execute`` and ``outputs_text`` are shared with test_tour_controls.py and test_lesson.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted([*NOTEBOOKS.glob("*.ipynb"), *NOTEBOOKS.glob("teacher/*.ipynb")])
CELL_TIMEOUT_S = 60  # the per-notebook budget; no single cell may take longer


def execute(nb: nbformat.NotebookNode, folder: Path = NOTEBOOKS) -> nbformat.NotebookNode:
    """Run ``nb`` in a fresh kernel whose working folder is ``folder``; raise on any error."""
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
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
    return nb


def outputs_text(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "text/plain" in out.get("data", {}):
            parts.append(out.data["text/plain"])
    return "".join(parts)


def test_the_teaching_notebooks_exist() -> None:
    names = {p.relative_to(NOTEBOOKS).as_posix() for p in ALL}
    assert {
        "tour.ipynb",
        "lesson.ipynb",
        "custom_arrays.ipynb",
        "real_model.ipynb",
        "variants.ipynb",
        "teacher/lesson_key.ipynb",
        "teacher/homework_solution.ipynb",
    } <= names, names


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_is_stripped(path: Path) -> None:
    raw = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(raw["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {i} has outputs: strip them"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has a count"
    assert raw["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in raw["metadata"], f"{path.name} carries saved widget state: strip it"


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_runs(path: Path) -> None:
    nb = execute(nbformat.read(path, as_version=4), path.parent)
    # a cell that builds a widget and ends with it must show a widget view
    shown = 0
    for cell in nb.cells:
        last = cell.source.strip().splitlines()[-1:] if cell.cell_type == "code" else []
        if last and re.search(rf"^{re.escape(last[0])} = AttentionWidget\b", cell.source, re.M):
            mimes = {m for out in cell.outputs for m in out.get("data", {})}
            assert "application/vnd.jupyter.widget-view+json" in mimes, (cell.source, mimes)
            shown += 1
    if path.stem in {"tour", "lesson", "custom_arrays", "real_model"}:
        assert shown, f"{path.name} shows no widget"

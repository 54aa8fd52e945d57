"""The lesson and the homework keep their answers apart.

* Run as handed out, every check says "not answered yet" and no answer of the key is printed.
* Run with the teacher's answers (the cells of notebooks/teacher/ that carry the same
  ``answer:...`` tag as the student's answer cell), every check says "correct".
* The checker's feedback on wrong answers never contains the right answer.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from fractions import Fraction
from typing import Any

import nbformat
import numpy as np
import pytest
from test_notebooks import NOTEBOOKS, execute, outputs_text

PAIRS = {
    "lesson": ("lesson.ipynb", "teacher/lesson_key.ipynb"),
    "homework": ("custom_arrays.ipynb", "teacher/homework_solution.ipynb"),
}
STATUS = re.compile(r"^([\w.]+): (correct|not answered yet|not yet)\b", re.MULTILINE)
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def _tag(cell: nbformat.NotebookNode, prefix: str) -> str | None:
    return next((t for t in cell.metadata.get("tags", []) if t.startswith(prefix)), None)


def _answer_cells(nb: nbformat.NotebookNode) -> dict[str, str]:
    return {tag: c.source for c in nb.cells if (tag := _tag(c, "answer:"))}


def _check_statuses(nb: nbformat.NotebookNode) -> list[list[tuple[str, str]]]:
    """For every cell tagged "check": the (part, status) lines it printed."""
    return [
        STATUS.findall(outputs_text(c))
        for c in nb.cells
        if c.cell_type == "code" and "check" in c.metadata.get("tags", [])
    ]


def _printed(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook printed, widget views left out."""
    return "".join(
        outputs_text(c)
        for c in nb.cells
        if c.cell_type == "code" and not any(WIDGET_MIME in o.get("data", {}) for o in c.outputs)
    )


def _key_answers() -> dict[str, dict[str, Any]]:
    """The teacher's lesson answers, as values (each key cell run on its own)."""
    from attention_widget import shift_matrix

    answers = {}
    for tag, source in _answer_cells(_read(PAIRS["lesson"][1])).items():
        space: dict[str, Any] = {"np": np, "shift_matrix": shift_matrix}
        exec(source, space)
        name = tag.split(":", 1)[1]
        answers[name] = space[name]
    return answers


def _forms(value: Any) -> set[str]:
    """How a number of the key would look if printed, for numbers distinctive enough to search."""
    if isinstance(value, str):
        try:
            value = float(Fraction(value))
        except ValueError:
            return set()
    if isinstance(value, (bool, np.ndarray, dict)) or value is None:
        return set()
    if isinstance(value, (list, tuple)):
        return set().union(*(_forms(v) for v in value))
    v = float(value)
    forms = {f"{v:.3f}", f"{v:.4f}"} | ({f"{int(v)}", f"{int(v):,}"} if v == int(v) else set())
    return {f for f in forms if len(re.sub(r"[^0-9]", "", f).strip("0")) >= 3}


# --------------------------------------------------------------------------------------------
# the notebooks
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", list(PAIRS))
def test_teacher_material_fills_every_answer_cell(which: str) -> None:
    student, teacher = (_read(name) for name in PAIRS[which])
    assert set(_answer_cells(student)) == set(_answer_cells(teacher)), which
    assert _answer_cells(student), f"{which} has no answer cells"
    for c in student.cells:
        if c.cell_type == "code":
            assert "teacher" not in c.source, f"{which}'s cell {c.id} reads the teacher's material"


@pytest.mark.parametrize("which", list(PAIRS))
def test_handed_out_notebook_answers_nothing(which: str) -> None:
    nb = execute(_read(PAIRS[which][0]))
    statuses = _check_statuses(nb)
    assert statuses and all(statuses), f"a check cell of {which} printed no status"
    wrong = [s for cell in statuses for s in cell if s[1] != "not answered yet"]
    assert wrong == [], f"{which} run as handed out: {wrong}"
    if which == "lesson":
        printed = _printed(nb)
        leaked = {f for a in _key_answers().values() for v in a.values() for f in _forms(v)}
        leaked = {f for f in leaked if f in printed}
        assert not leaked, f"the lesson prints answers of the key: {sorted(leaked)}"


@pytest.mark.parametrize("which", list(PAIRS))
def test_teacher_answers_pass_every_check(which: str) -> None:
    student, teacher = (_read(name) for name in PAIRS[which])
    key = _answer_cells(teacher)
    for c in student.cells:
        if tag := _tag(c, "answer:"):
            c.source = key[tag]
    execute(student)
    statuses = _check_statuses(student)
    assert statuses and all(statuses), f"a check cell of {which} printed no status"
    wrong = [s for cell in statuses for s in cell if s[1] != "correct"]
    assert wrong == [], f"{which} with the teacher's answers: {wrong}"


# --------------------------------------------------------------------------------------------
# the checker, in this process
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checks() -> Any:
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import checks
    finally:
        sys.path.remove(str(NOTEBOOKS))
    return checks


def _feedback(checks: Any, question: str, answer: dict) -> list[tuple[str, str, str]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        checks.check(question, answer)
    return re.findall(r"^([\w.]+): (correct|not answered yet|not yet)(.*)$", out.getvalue(), re.M)


def _wrong_values(value: Any) -> list[Any]:
    """Plausible wrong answers: factors a student might slip by, or every other option."""
    options = [
        ("a", "b", "c", "d"),
        ("rises", "falls", "stays"),
        ("same", "changed"),
        ("equal", "different"),
    ]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, str) and any(value in o for o in options):
        return [o for opts in options if value in opts for o in opts if o != value]
    if isinstance(value, list):
        v = np.asarray(value, dtype=float)
        return [list(v[::-1]), list(v * 0.5), list(np.full_like(v, 1 / v.size))]
    v = float(Fraction(value)) if isinstance(value, str) else float(value)
    return [v * f for f in (0.5, 2, 4, 0.25, 1 / 32, 8, 10, 1.5)] + [0, 1]


def test_feedback_on_wrong_answers_never_contains_the_answer(checks: Any) -> None:
    key = _key_answers()
    for question, answer in key.items():
        if question == "previous":
            continue  # arrays: checked below
        assert {s for _, s, _ in _feedback(checks, question, answer)} == {"correct"}, question
        for part, right in answer.items():
            quoted = {f"'{right}'", f'"{right}"'} if isinstance(right, str) else set()
            forms = _forms(right) | quoted
            for wrong in _wrong_values(right):
                lines = _feedback(checks, question, {part: wrong})
                mine = [line for line in lines if line[0] == f"{question}.{part}"]
                assert mine and mine[0][1] == "not yet", (question, part, wrong, lines)
                others = [s for name, s, _ in lines if name != f"{question}.{part}"]
                assert set(others) == {"not answered yet"}, (question, part, others)
                said = mine[0][2]
                if "answer with one of" not in said:  # (that names every option alike)
                    assert not any(f in said for f in forms), (question, part, wrong, said)


def test_previous_token_check_tells_wrong_heads_apart(checks: Any) -> None:
    from attention_widget import shift_matrix

    w_k = np.zeros((64, 64))
    w_k[32:, 32:] = np.eye(32)
    cases = {
        "self": np.eye(32) * 8,  # asks for its own position
        "next": shift_matrix(16, by=-1) * 8,  # asks for the following position
        "soft": shift_matrix(16),  # right key, too flat
    }
    expect = {"self": "'self", "next": "'next token", "soft": "not by enough"}
    for name, block in cases.items():
        w_q = np.zeros((64, 64))
        w_q[32:, 32:] = block
        [(part, status, said)] = _feedback(checks, "previous", {"w_q": w_q, "w_k": w_k})
        assert (part, status) == ("previous.head", "not yet"), (name, status)
        assert expect[name] in said, (name, said)
    right = _key_answers()["previous"]
    assert _feedback(checks, "previous", right)[0][1] == "correct"


def test_homework_pieces_feedback(checks: Any) -> None:
    def fails(*_: Any) -> Any:
        raise NotImplementedError

    def transposed_reshape(m: np.ndarray, h: int) -> np.ndarray:
        return m.reshape(h, m.shape[0], -1)

    def unscaled(q: np.ndarray, k: np.ndarray) -> np.ndarray:
        return q @ k.transpose(0, 2, 1)

    def masked_after(s: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        w = e / e.sum(axis=-1, keepdims=True)
        return w if mask is None else w * mask

    def statuses(piece: str, fn: Any) -> list[str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            checks.check_piece(piece, fn)
        return [s for _, s in STATUS.findall(out.getvalue())]

    assert statuses("split_heads", fails) == ["not answered yet"]
    assert statuses("split_heads", transposed_reshape) == ["not yet"]
    assert statuses("scores", unscaled) == ["not yet"]
    assert statuses("weights", masked_after) == ["correct", "not yet"]

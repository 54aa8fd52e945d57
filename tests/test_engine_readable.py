"""The engine stays readable: a small call runs few lines in few functions; modules stay short."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

import attention_widget
from attention_widget import embed, init_params, multi_head_attention

PACKAGE = Path(attention_widget.__file__).resolve().parent
MODULES = ["engine.py", "fast.py", "_checks.py"]


def executed(call) -> tuple[set[tuple[str, int]], set[tuple[str, int, str]]]:
    """The distinct (file, line) pairs and functions of package code that ``call()`` runs.

    Lines are those the interpreter reports running ("line" events); a ``def`` line runs when
    its module is imported, not when the function is called.
    """
    lines: set[tuple[str, int]] = set()
    functions: set[tuple[str, int, str]] = set()

    def tracer(frame, event, arg):
        path = Path(frame.f_code.co_filename).resolve()
        if not path.is_relative_to(PACKAGE):
            return None  # NumPy, the standard library, ...: not ours, not followed
        code = frame.f_code
        functions.add((str(path), code.co_firstlineno, code.co_name))

        def local(frame, event, arg):
            if event == "line":
                lines.add((str(path), frame.f_lineno))
            return local

        return local

    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(None)
    return lines, functions


def small_call_counts(**kwargs):
    x = embed(["the", "cat", "sat", "on", "the", "mat", "and", "slept"], 16)
    params = init_params(16, 2)
    return executed(lambda: multi_head_attention(x, params, n_heads=2, **kwargs))


def test_a_small_call_runs_few_lines_in_few_functions():
    lines, functions = small_call_counts()
    names = sorted(name for _, _, name in functions)
    assert len(lines) <= 80, f"{len(lines)} lines in {names}"
    assert len(functions) <= 10, names
    assert "multi_head_attention" in names and "attend" in names  # the tracer does see them


def test_the_counter_counts():
    """The counter can fail: a call through more package code counts more."""
    lines, functions = small_call_counts()
    lines_causal, functions_causal = small_call_counts(mask="causal", temperature=0.5)
    assert functions < functions_causal and len(lines) < len(lines_causal)
    assert any(name == "causal_mask" for _, _, name in functions_causal)


@pytest.mark.parametrize("module", MODULES)
def test_module_and_function_sizes(module):
    source = (PACKAGE / module).read_text()
    assert source.count("\n") <= 700, module
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 80, f"{module}: {node.name} has {length} lines"


def test_the_call_is_the_same_as_the_formula():
    """What the counted call computes is attention (so the count is of a real call)."""
    x = embed(["a", "b", "c"], 16)
    params = init_params(16, 2)
    trace = multi_head_attention(x, params, n_heads=2)
    q = (x @ params.w_q).reshape(3, 2, 8).transpose(1, 0, 2)
    k = (x @ params.w_k).reshape(3, 2, 8).transpose(1, 0, 2)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(8)
    np.testing.assert_allclose(trace.scores, scores, rtol=0, atol=1e-12)

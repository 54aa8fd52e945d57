"""Every module of the package stays small enough to read: size limits read from the syntax tree.

No module over 700 lines, no class over 400, no function (or method) over 80. A function's
length runs from its ``def`` line to its last line, docstring included (decorators not
counted, as in test_engine_readable.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import attention_widget

PACKAGE = Path(attention_widget.__file__).resolve().parent
MODULES = sorted(path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py"))
MAX_MODULE, MAX_CLASS, MAX_FUNCTION = 700, 400, 80
#: Modules over a limit today, each to be split by job; an entry fails (strict xfail) as soon
#: as its module is back within the limits, and is then removed from this list.
OVER_TODAY: dict[str, str] = {}


def oversized(source: str) -> list[str]:
    """Each part of ``source`` over its limit, as "what name: n lines (limit m)"."""
    problems = []
    n_lines = len(source.splitlines())
    if n_lines > MAX_MODULE:
        problems.append(f"module: {n_lines} lines (limit {MAX_MODULE})")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            kind, limit = "class", MAX_CLASS
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            kind, limit = "function", MAX_FUNCTION
        else:
            continue
        length = node.end_lineno - node.lineno + 1
        if length > limit:
            problems.append(f"{kind} {node.name}: {length} lines (limit {limit})")
    return problems


def test_the_package_has_modules():
    assert "engine.py" in MODULES and "pretrained/__init__.py" in MODULES


@pytest.mark.parametrize("module", [
    pytest.param(m, marks=pytest.mark.xfail(reason=OVER_TODAY[m], strict=True))
    if m in OVER_TODAY else m
    for m in MODULES
])
def test_module_class_and_function_sizes(module):
    assert oversized((PACKAGE / module).read_text(encoding="utf-8")) == []


def test_the_check_sees_each_kind_of_excess():
    """The check can fail: built sources just over each limit are caught, just under are not."""
    body = "    x = 1\n"
    function = "def f():\n" + body * (MAX_FUNCTION - 1)
    assert oversized(function) == []
    assert oversized(function + body) == [f"function f: {MAX_FUNCTION + 1} lines (limit 80)"]
    # a function of 80 lines inside another: the inner one passes, the outer (82 lines) not
    nested = "def outer():\n" + "    " + function.replace("\n    ", "\n        ") + body
    assert oversized(nested) == [f"function outer: {MAX_FUNCTION + 2} lines (limit 80)"]

    method = "    def m(self):\n" + "        pass\n" * 9  # 10 lines each
    klass = "class C:\n" + method * ((MAX_CLASS - 1) // 10) + "    y = 2\n" * 9
    assert oversized(klass) == []
    assert oversized(klass + "    y = 2\n") == [f"class C: {MAX_CLASS + 1} lines (limit 400)"]

    module = "z = 0\n" * MAX_MODULE
    assert oversized(module) == []
    assert oversized(module + "z = 0\n") == [f"module: {MAX_MODULE + 1} lines (limit 700)"]

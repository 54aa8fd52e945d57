"""The engine is pure NumPy: importing it (or the package) loads no Jupyter machinery."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
before = set(sys.modules)
import {module}
new = sorted({{name.split(".")[0] for name in set(sys.modules) - before}})
print(json.dumps({{"new": new, "stdlib": sorted(sys.stdlib_module_names)}}))
"""

HEAVY = {"ipywidgets", "bqplot", "traitlets", "IPython", "ipykernel", "torch", "matplotlib"}


def imported_by(module: str) -> tuple[set[str], set[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], check=True,
                         capture_output=True, text=True)
    data = json.loads(out.stdout)
    return set(data["new"]), set(data["stdlib"])


@pytest.mark.parametrize("module", ["attention_widget.engine", "attention_widget.inputs",
                                    "attention_widget"])
def test_import_loads_no_widget_libraries(module):
    new, _ = imported_by(module)
    assert "attention_widget" in new and "numpy" in new  # the probe does see imports
    assert not new & HEAVY, f"importing {module} loaded {sorted(new & HEAVY)}"


def test_engine_imports_only_numpy_and_the_standard_library():
    new, stdlib = imported_by("attention_widget.engine")
    third_party = {name for name in new - stdlib if not name.startswith("_")}
    assert third_party <= {"attention_widget", "numpy"}, third_party


def test_probe_detects_a_widget_import():
    """The check can fail: importing the widget module does load ipywidgets."""
    new, _ = imported_by("ipywidgets")
    assert "ipywidgets" in new and "traitlets" in new

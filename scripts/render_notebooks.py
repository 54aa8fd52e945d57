"""Render the notebooks with their outputs, for a preview without a kernel.

Usage::

    python scripts/render_notebooks.py                  # the student notebooks -> build/notebooks/
    python scripts/render_notebooks.py tour lesson      # only these
    python scripts/render_notebooks.py --teacher        # also notebooks/teacher/ (the answer keys)
    python scripts/render_notebooks.py --out site/      # another folder

Each notebook runs in a fresh kernel started in its own folder, as JupyterLab would run it, and
is written twice: as ``.ipynb`` with its outputs (GitHub and nbviewer show them) and as ``.html``.
The notebooks in the repository stay without outputs; ``build/`` is git-ignored.

The HTML page keeps the widgets' state and loads MathJax and the widget scripts from the web
(jsDelivr, unpkg) to draw the formulas and the widgets; without network access it shows the code
and every printed output, the formulas as LaTeX source and the widgets blank.  Run the script
with the package importable (installed, or ``PYTHONPATH=.`` from the repository root).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def render(path: Path, out_dir: Path, timeout: int = 120) -> float:
    """Execute ``path`` and write ``<out_dir>/<stem>.ipynb`` and ``.html``; return the seconds."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    where = {"metadata": {"path": str(path.parent)}}  # the kernel starts in the notebook's folder
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources=where).execute()
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / path.name)
    html, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    (out_dir / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Render the notebooks named on the command line (all of them by default)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names without .ipynb (default: all)")
    parser.add_argument("--teacher", action="store_true", help="also render notebooks/teacher/")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "notebooks",
                        help="output folder (default: build/notebooks)")
    args = parser.parse_args(argv)

    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.teacher:
        paths += sorted((NOTEBOOKS / "teacher").glob("*.ipynb"))
    if args.names:
        unknown = set(args.names) - {p.stem for p in paths}
        if unknown:
            parser.error(f"no notebook named {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(p.stem for p in paths)}")
        paths = [p for p in paths if p.stem in args.names]

    for path in paths:
        out_dir = args.out / path.parent.relative_to(NOTEBOOKS)
        seconds = render(path, out_dir)
        html = os.path.relpath(out_dir / f"{path.stem}.html")
        print(f"{path.relative_to(REPO)}: {seconds:.1f} s -> {html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

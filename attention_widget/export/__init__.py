"""Export an attention diagram: SVG (pure Python), PNG/PDF (matplotlib), standalone HTML.

Every function takes an :class:`~attention_widget.engine.AttentionTrace`, so it works on a
widget's state (``w.trace``) or on any trace computed in a script; a long prompt's
:class:`~attention_widget.long.LongTrace` is drawn as its overviews, and the zoom when one is
chosen (:mod:`.long_layout`).

* :func:`diagram_svg` draws the diagram as an SVG string with nothing but NumPy and the standard
  library: heatmaps as ``<rect>`` cells (or an embedded PNG for large panels), tokens and titles
  as real ``<text>``, one colour bar per stage.
* :func:`save_figure` writes ``.svg`` (pure), ``.png`` or ``.pdf`` (matplotlib, the optional
  ``export`` extra); the vector formats keep text as text.
* :func:`to_html` writes one offline HTML page (no network, no CDN) that can switch between
  several precomputed traces without a kernel.
* :func:`diagram_data_url` and :func:`download_link` put a diagram in a browser download link.

Every format draws the same layout (:mod:`.layout`) in the colours of the widget's figures
(:mod:`attention_widget.colors`): attention weights on the fixed sequential scale 0..1; every
signed array (X, Q, K, V, scores, outputs) on a diverging scale symmetric around 0, one per
step of the computation, shared by all its heads; masked cells grey, hatched, never drawn as 0.
Stage names, titles and formulas come from :mod:`attention_widget.stages`.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .._checks import output_path
from ..engine import AttentionTrace
from ..stages import STAGE_NAMES
from .html import to_html
from .layout import build, check_trace
from .mpl import check_dpi, diagram_png_bytes, figure_bytes
from .svg import diagram_svg, escape, render

__all__ = [
    "STAGES",
    "diagram_data_url",
    "diagram_png_bytes",
    "diagram_svg",
    "download_link",
    "save_figure",
    "to_html",
]

#: Stage names accepted by ``stages=``, in the order of the computation.
STAGES = STAGE_NAMES
_FORMATS = ("svg", "png", "pdf")


def diagram_data_url(
    trace: AttentionTrace,
    tokens: Sequence[str] | None = None,
    *,
    format: str = "svg",
    stages: Sequence[str] | str | None = None,
    heads: Sequence[int] | int | None = None,
    colormap: str = "viridis",
    dpi: float = 150,
    title: str | None = None,
    diverging: str | None = None,
    scales: Mapping[str, str] | None = None,
    zoom: tuple | None = None,
    key_tokens: Sequence[str] | None = None,
) -> str:
    """A ``data:`` URL of the diagram for a browser download link (``<a download href=...>``).

    Parameters
    ----------
    format : {"svg", "png"}
        SVG needs nothing; PNG needs matplotlib.
    stages, heads, colormap, dpi, title, diverging, scales, zoom, key_tokens
        As :func:`diagram_svg` and :func:`diagram_png_bytes`.

    Returns
    -------
    str
        ``data:image/svg+xml;base64,...`` or ``data:image/png;base64,...``.
    """
    options = {"stages": stages, "heads": heads, "colormap": colormap, "title": title,
               "diverging": diverging, "scales": scales, "zoom": zoom, "key_tokens": key_tokens}
    if format == "svg":
        data, mime = diagram_svg(trace, tokens, **options).encode("utf-8"), "image/svg+xml"
    elif format == "png":
        data, mime = diagram_png_bytes(trace, tokens, dpi=dpi, **options), "image/png"
    else:
        raise ValueError(f'format must be "svg" or "png", got {format!r}')
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def download_link(
    trace: AttentionTrace,
    tokens: Sequence[str] | None = None,
    *,
    format: str = "svg",
    filename: str | None = None,
    label: str | None = None,
    stages: Sequence[str] | str | None = None,
    heads: Sequence[int] | int | None = None,
    colormap: str = "viridis",
    dpi: float = 150,
    title: str | None = None,
    diverging: str | None = None,
    scales: Mapping[str, str] | None = None,
    zoom: tuple | None = None,
    key_tokens: Sequence[str] | None = None,
) -> str:
    """An HTML ``<a download>`` link that saves the diagram in the browser (for an HTML widget).

    Parameters
    ----------
    format : {"svg", "png"}
        File type; PNG needs matplotlib.
    filename : str, optional
        Suggested file name; default ``"attention.svg"`` / ``"attention.png"``.
    label : str, optional
        Link text; default ``"Download SVG"`` / ``"Download PNG"``.
    stages, heads, colormap, dpi, title, diverging, scales, zoom, key_tokens
        As :func:`diagram_data_url`.

    Returns
    -------
    str
        ``<a class="aw-download aw-download-<format>" download="..." href="data:...">...</a>``,
        with the file name and label HTML-escaped.
    """
    url = diagram_data_url(
        trace, tokens, format=format, stages=stages, heads=heads, colormap=colormap, dpi=dpi,
        title=title, diverging=diverging, scales=scales, zoom=zoom, key_tokens=key_tokens,
    )
    filename = filename if filename is not None else f"attention.{format}"
    label = label if label is not None else f"Download {format.upper()}"
    if not isinstance(filename, str) or not filename or "/" in filename or "\\" in filename:
        raise ValueError(f"filename must be a plain file name, got {filename!r}")
    return (
        f'<a class="aw-download aw-download-{format}" download="{escape(filename)}" '
        f'href="{url}">{escape(str(label))}</a>'
    )


def _format(path: Path, format: object) -> str:
    """The file format: ``format`` if given, else the suffix of ``path``."""
    if format is None:
        fmt = path.suffix.lower().lstrip(".")
        if fmt not in _FORMATS:
            raise ValueError(
                f"path {str(path)!r} has suffix {path.suffix!r}; use .svg, .png or .pdf "
                "(or pass format=...)"
            )
        return fmt
    fmt = str(format).lower().lstrip(".")
    if fmt not in _FORMATS:
        raise ValueError(f'format must be "svg", "png" or "pdf", got {format!r}')
    return fmt


def save_figure(
    trace: AttentionTrace,
    path: str | os.PathLike,
    tokens: Sequence[str] | None = None,
    *,
    format: str | None = None,
    stages: Sequence[str] | str | None = None,
    heads: Sequence[int] | int | None = None,
    colormap: str = "viridis",
    dpi: float = 150,
    title: str | None = None,
    diverging: str | None = None,
    scales: Mapping[str, str] | None = None,
    zoom: tuple | None = None,
    key_tokens: Sequence[str] | None = None,
) -> Path:
    """Write the diagram to an SVG, PNG or PDF file.

    Parameters
    ----------
    trace : AttentionTrace
        What to draw.
    path : str or PathLike
        Where to write; the suffix (``.svg``, ``.png``, ``.pdf``) chooses the format unless
        ``format`` is given.
    tokens, stages, heads, colormap, title, diverging, zoom, key_tokens
        As :func:`diagram_svg` (a LongTrace's picture: its overviews and the zoom).
    format : {"svg", "png", "pdf"}, optional
        Overrides the suffix.
    dpi : float, default 150
        Resolution of PNG files (and of the few raster parts of a PDF).

    Returns
    -------
    pathlib.Path
        The file written.

    Warns
    -----
    UserWarning
        Once, for PNG and PDF, when no installed font has glyphs for some characters of the
        tokens or title (e.g. Chinese, Japanese or Korean text without a CJK font), naming
        what to install.

    Notes
    -----
    SVG is written by :func:`diagram_svg` (no dependency, tokens as ``<text>``).  PNG and PDF
    need matplotlib (``pip install attention-widget[export]``).  They draw text in DejaVu Sans
    and, for characters it lacks, in an installed font that has them (Noto Sans CJK,
    WenQuanYi, Droid Sans Fallback, ...; see :mod:`attention_widget.export.fonts`).  PDF text
    is embedded TrueType, so it stays selectable and searchable -- unless such a fallback font
    has PostScript outlines only (Noto Sans CJK does), which matplotlib can embed only as
    Type 3 glyph drawings; a font with TrueType outlines (WenQuanYi Zen Hei) is preferred.
    """
    trace = check_trace(trace)
    p = output_path(path, "the figure")
    fmt = _format(p, format)
    dpi = check_dpi(dpi)
    layout = build(trace, tokens, stages, heads, colormap, title, diverging, scales=scales,
                   zoom=zoom, key_tokens=key_tokens)
    data = render(layout).encode("utf-8") if fmt == "svg" else figure_bytes(layout, fmt, dpi)
    p.write_bytes(data)
    return p

"""PNG and PDF: the layout drawn with matplotlib (the optional ``export`` extra).

One Figure with one full-size Axes in layout pixels (y down, 96 layout pixels an inch): texts
with ``Axes.text``, heatmaps with ``imshow`` of their exact colours (no interpolation), the
hatch over masked cells as one hatched path per panel.  Text is never mathtext; PDF text is
embedded TrueType (see :mod:`.fonts` for the one exception).
"""

from __future__ import annotations

import io
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..colors import MASK_HATCH_RGB
from ..engine import AttentionTrace
from .fonts import Fonts, fonts_for, quiet_matplotlib, warn_missing
from .layout import Group, Heat, Layout, Text, build, check_trace

__all__ = ["check_dpi", "diagram_png_bytes", "figure_bytes"]

PX = 1 / 96  # inches per layout pixel
_ANCHORS = {"start": "left", "middle": "center", "end": "right"}


def _matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "PNG and PDF export need matplotlib: pip install attention-widget[export] "
            "(SVG export works without it)"
        ) from err
    return matplotlib, Figure


def check_dpi(dpi: object) -> float:
    """``dpi`` as a float if it is a number in 10..1200; TypeError/ValueError otherwise."""
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Real):
        raise TypeError(f"dpi must be a number, got {dpi!r}")
    if not (10 <= float(dpi) <= 1200):
        raise ValueError(f"dpi must be between 10 and 1200, got {dpi!r}")
    return float(dpi)


def _walk(node: Group | Heat | Text) -> Iterator[Heat | Text]:
    if isinstance(node, Group):
        for item in node.items:
            yield from _walk(item)
    else:
        yield node


def _masked_path(heat: Heat) -> Any:
    """One path of rectangles over the masked cells (a run of a row at a time)."""
    from matplotlib.path import Path

    vertices, codes = [], []
    for i, row in enumerate(heat.masked):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            x0, x1 = heat.x + start * heat.cw, heat.x + stop * heat.cw
            y0, y1 = heat.y + i * heat.ch, heat.y + (i + 1) * heat.ch
            vertices += [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
            codes += [Path.MOVETO, Path.LINETO, Path.LINETO, Path.LINETO, Path.CLOSEPOLY]
    return Path(vertices, codes)


def _draw_heat(ax: Any, heat: Heat) -> None:
    ax.imshow(heat.rgb, interpolation="none", aspect="auto", zorder=1,
              extent=(heat.x, heat.x + heat.width, heat.y + heat.height, heat.y))
    if heat.masked is not None and heat.masked.any():
        from matplotlib.patches import PathPatch

        # the cells are MASK_RGB grey in the image; white '/' lines over them
        ax.add_patch(PathPatch(_masked_path(heat), facecolor="none", linewidth=0, zorder=2,
                               edgecolor=np.array(MASK_HATCH_RGB) / 255, hatch="////"))


def _figure(layout: Layout, dpi: float, fonts: Fonts) -> Any:
    _, figure_cls = _matplotlib()
    fig = figure_cls(figsize=(layout.width * PX, layout.height * PX), dpi=dpi,
                     facecolor="white")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    for node in _walk(layout.root):
        if isinstance(node, Heat):
            _draw_heat(ax, node)
        else:
            ax.text(node.x, node.y, node.text, fontsize=node.size * 72 * PX,
                    ha=_ANCHORS[node.anchor], va="baseline", rotation=-node.rotate,
                    rotation_mode="anchor", fontweight=node.weight, zorder=3,
                    family=fonts.family(node.text),
                    parse_math=False)  # a token "$x$" is text, not mathtext
    ax.set_xlim(0, layout.width)  # (after imshow, which sets the limits to its image)
    ax.set_ylim(layout.height, 0)
    return fig


def figure_bytes(layout: Layout, fmt: str, dpi: float) -> bytes:
    """The layout as a ``"png"`` or ``"pdf"`` file.

    Vector formats keep text as text (PDF: embedded TrueType, Type 42) and each heatmap its
    own small image.  Characters DejaVu Sans lacks are drawn with an installed font that has
    them; when none has, one warning says what to install.
    """
    matplotlib, _ = _matplotlib()
    texts = [n.text for n in _walk(layout.root) if isinstance(n, Text)]
    fonts = fonts_for(texts, truetype_first=fmt == "pdf")
    if fonts.missing:
        warn_missing(fonts.missing)
    rc = {"pdf.fonttype": 3 if fonts.postscript else 42, "image.composite_image": False}
    buf = io.BytesIO()
    with quiet_matplotlib(), matplotlib.rc_context(rc):
        _figure(layout, dpi, fonts).savefig(buf, format=fmt, dpi=dpi, facecolor="white")
    return buf.getvalue()


def diagram_png_bytes(
    trace: AttentionTrace,
    tokens: Sequence[str] | None = None,
    *,
    stages: Sequence[str] | str | None = None,
    heads: Sequence[int] | int | None = None,
    colormap: str = "viridis",
    dpi: float = 150,
    title: str | None = None,
    diverging: str | None = None,
    scales: Mapping[str, str] | None = None,
    zoom: tuple | None = None,
    key_tokens: Sequence[str] | None = None,
) -> bytes:
    """The diagram of :func:`diagram_svg` as PNG bytes (needs matplotlib, the ``export`` extra).

    Parameters are those of :func:`~attention_widget.export.diagram_svg` (``zoom`` too);
    ``dpi`` sets the resolution (96 gives one image pixel per layout pixel).

    Returns
    -------
    bytes
        A PNG file.
    """
    trace = check_trace(trace)
    dpi = check_dpi(dpi)
    layout = build(trace, tokens, stages, heads, colormap, title, diverging, scales=scales,
                   zoom=zoom, key_tokens=key_tokens)
    return figure_bytes(layout, "png", dpi)

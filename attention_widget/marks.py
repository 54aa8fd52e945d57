"""The marks the figures share: palette images switched without a flash, and fitted text.

:class:`ImageMark` is a bqplot ``Image`` fed palette PNGs (:mod:`attention_widget.png`) whose
colours are the levels of :mod:`attention_widget.colors`; both the detailed view's
:class:`~attention_widget.plots.PanelFigure` and the :mod:`~attention_widget.overview` draw
their heatmaps with it.  :func:`fit` and :func:`fit_title` cut text to the room it has;
:func:`bar_label` and :func:`scale_caption` say what a colour scale stands for.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from functools import cache

import bqplot as bq
import ipywidgets as W
import numpy as np

from .colors import DROPPED_RGB, LEVELS, MASK_RGB, Limits, palette
from .export.layout import text_width
from .png import palette_png

__all__ = [
    "DROPPED", "FIXED", "MASKED", "PNG_URL_PREFIX", "TRANSPARENT", "ImageMark", "bar_label",
    "fit", "fit_title", "image_palette", "scale_caption",
]

# Scales have explicit ranges: marks must not recompute them (a domain change makes every mark
# of the figure redraw, so each heatmap update would redraw all of them).
FIXED = {"x": True, "y": True, "color": True}
PNG_URL_PREFIX = b"data:image/png;base64,"  # how a figure's Image widget holds its PNG
# The image's palette: the LEVELS colours of the figure's table (attention_widget.colors), then
# the masked grey, the rose of keys dropped by top-k, then transparency (outside the panels).
MASKED = LEVELS  # palette index of a masked cell
DROPPED = LEVELS + 1  # palette index of a key dropped by top-k
TRANSPARENT = 255  # palette index outside the panels


def bar_label(limits: Sequence[Limits], label: str = "") -> str:
    """A colour bar's own label, short enough for the figure's margin beside the bar.

    Its name, and "per head", "robust" or "clipped ◂▸" (values beyond the ends).
    """
    lim = limits[0] if limits else Limits(0.0, 1.0)
    note = ""
    if lim.mode == "per head" and len(limits) > 1:
        note = "per head"
    elif lim.mode == "robust":
        note = "clipped ◂▸" if any(x.clipped for x in limits) else "robust"
    return " · ".join(p for p in (label, note) if p)


def scale_caption(limits: Sequence[Limits], label: str = "") -> str:
    """What a colour bar stands for, beyond its numbers: per-head ends, clipped values."""
    lim = limits[0] if limits else Limits(0.0, 1.0)
    parts = [label] if label else []
    if lim.mode == "per head" and len(limits) > 1:
        parts.append("per head: own ends")
    elif lim.mode == "robust":
        parts.append(f"robust ±{lim.high:.3g} (99th pct.)" + (
            ", clipped beyond" if any(x.clipped for x in limits) else ""))
    return " · ".join(parts)


def png_buffer(layout: W.Layout, value: bytes = b"") -> W.Image:
    """An ``ipywidgets.Image`` that carries a PNG (as a ``data:`` URL) to a bqplot ``Image`` mark.

    A buffer is never drawn as a widget of its own, so the buffers of a figure can share one
    ``layout``: a widget model less to open in the browser for each.
    """
    return W.Image(value=value, format="url", layout=layout)


class ImageMark:
    """A bqplot ``Image`` mark that shows palette PNGs, switched without a flash.

    bqplot's ``Image`` mark redraws only when it is pointed at another ``ipywidgets.Image``, so
    it keeps two and alternates: :meth:`fill` writes the hidden one, :meth:`show_pending`
    switches the mark to it (two small messages per update).  The PNG travels as a ``data:``
    URL, which bqplot uses as the image's href as it is.

    Parameters
    ----------
    x_scale, y_scale : bqplot scales
        Of the figure the mark is drawn in.
    layout : ipywidgets.Layout, optional
        The layout of the two buffers (see :func:`png_buffer`); a new one by default.
    """

    def __init__(self, x_scale: bq.Scale, y_scale: bq.Scale,
                 layout: W.Layout | None = None) -> None:
        layout = W.Layout() if layout is None else layout
        self._buffers = (png_buffer(layout), png_buffer(layout))
        self.mark = bq.Image(image=self._buffers[0], x=[-0.5, 0.5], y=[0.5, -0.5],
                             pixelated=True, preserve_domain=FIXED,
                             scales={"x": x_scale, "y": y_scale})
        self.png = b""
        self._extent: tuple = ()  # the image's x and y on screen
        self._pending: tuple | None = None  # (buffer, extent) filled but not shown yet

    def fill(self, grid: np.ndarray, table: str, extent: tuple) -> int:
        """Encode ``grid`` (palette indices, :func:`image_palette`) into the hidden buffer.

        ``extent`` is the mark's ``(x, y)``.  Returns the bytes sent (0 if unchanged).
        """
        png = palette_png(grid, image_palette(table), transparent=(TRANSPARENT,))
        if png == self.png:
            if extent != self._extent and self._pending is None:
                self._pending = (self.mark.image, extent)
            return 0
        self.png = png
        if self._pending is not None:  # filled but not shown yet: fill it again
            back = self._pending[0]
        else:
            back = self._buffers[1] if self.mark.image is self._buffers[0] else self._buffers[0]
        # a data: URL, not PNG bytes: bqplot then sets it as the href as it is, where PNG bytes
        # cost the browser a Blob and an object URL on its main thread for every image
        back.value = PNG_URL_PREFIX + base64.b64encode(png)
        self._pending = (back, extent)
        return len(png)

    def show_pending(self) -> None:
        """Point the mark at the buffer filled last, if it is not shown yet."""
        if self._pending is None:
            return
        back, extent = self._pending
        self._pending = None
        with self.mark.hold_sync():
            if self._extent != extent:
                self.mark.x, self.mark.y = extent
                self._extent = extent
            if self.mark.image is not back:
                self.mark.image = back


@cache
def image_palette(table: str) -> np.ndarray:
    """The ``(256, 3)`` uint8 palette of a figure's PNG on colour table ``table``."""
    out = np.zeros((256, 3), dtype=np.uint8)
    out[:LEVELS] = palette(table)
    out[MASKED] = MASK_RGB
    out[DROPPED] = DROPPED_RGB
    out.flags.writeable = False  # shared by every figure (cached)
    return out


def fit(text: str, size: float, room: float, bold: bool = False) -> str:
    """``text``, cut with an ellipsis to fit ``room`` pixels (estimated widths)."""
    scale = 1.08 if bold else 1.0
    if text_width(text, size) * scale <= room:
        return text
    while text and text_width(text + "…", size) * scale > room:
        text = text[:-1]
    return text.rstrip(" ·") + "…" if text else ""


def fit_title(title: str, room: float, size: float = 12) -> str:
    """A panel title that fits ``room`` px.

    Whole, else its part before " · " or ":" (``"head 2"``), else its last word (the head's
    number), else cut.
    """
    first = title.split(" · ")[0]
    for candidate in (title, first, first.split(":")[0], first.split(" ")[-1]):
        if text_width(candidate, size) * 1.08 <= room:
            return candidate
    return fit(first.split(" ")[-1], size, room, bold=True)

"""bqplot figures for the attention diagram: arrays in, marks out, no attention maths.

Each stage is one :class:`PanelFigure`: a bqplot ``Figure`` holding a grid of ``HeatMap`` marks
(one per head, or one per matrix) that share a colour scale and a colour bar.  ``HeatMap`` draws
one canvas image per mark, so a 512-token sequence costs the browser one image per head, not a
DOM element per cell.  Updates are in place: only marks whose array changed are sent, as
float32 binary buffers.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import bqplot as bq
import ipywidgets as W
import numpy as np

__all__ = ["COLORMAPS", "DIVERGING", "Panel", "PanelFigure", "tick_positions"]

# Colour-blind-safe maps as anchor colours (the browser interpolates between them).
COLORMAPS: dict[str, list[str]] = {
    "viridis": ["#440154", "#472c7a", "#3b518b", "#2c718e", "#21908d", "#27ad81", "#5cc863",
                "#aadc32", "#fde725"],
    "cividis": ["#00204c", "#213d6b", "#555b6c", "#7b7a77", "#a59c74", "#d3c064", "#ffe945"],
    "magma": ["#000004", "#1c1044", "#4f127b", "#812581", "#b5367a", "#e55964", "#fb8761",
              "#fec287", "#fcfdbf"],
    "greys": ["#ffffff", "#d9d9d9", "#969696", "#525252", "#000000"],
}
#: Diverging map (negative .. 0 .. positive) paired with each sequential map.
DIVERGING: dict[str, list[str]] = {
    "viridis": ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582",
                "#d6604d", "#b2182b"],
    "cividis": ["#542788", "#8073ac", "#b2abd2", "#d8daeb", "#f7f7f7", "#fee0b6", "#fdb863",
                "#e08214", "#b35806"],
    "magma": ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582",
              "#d6604d", "#b2182b"],
    "greys": ["#000000", "#525252", "#969696", "#d9d9d9", "#ffffff", "#d9d9d9", "#969696",
              "#525252", "#000000"],
}
MASK_RGBA = (150, 150, 150, 235)  # masked cells: grey, nearly opaque
GAP = 1.0  # empty cells between panels
# Scales have explicit ranges: marks must not recompute them (a domain change makes every mark
# of the figure redraw, so each heatmap update would redraw all of them).
FIXED = {"x": True, "y": True, "color": True}
PLOT_WIDTH_PX = 640  # widest plot area of a square-celled figure: fits JupyterLab at 1280 px
MAX_CELL_PX = 36
MAX_TICKS = 32  # axis labels per panel before they are thinned out


def tick_positions(n: int, max_ticks: int = MAX_TICKS) -> np.ndarray:
    """Indices ``0..n-1`` to label, every one up to ``max_ticks``, then evenly thinned."""
    step = max(1, int(np.ceil(n / max_ticks)))
    return np.arange(0, n, step)


@dataclass
class Panel:
    """One heatmap of a figure: its array, axis labels and title.

    Attributes
    ----------
    array : ndarray, shape (rows, cols)
    title : str
        Drawn above the panel (as SVG text, never HTML).
    row_labels, col_labels : sequence of str, optional
        One label per row/column (tokens); None for plain indices.
    boundaries : sequence of int, optional
        Column indices before which a vertical separator is drawn (head boundaries).
    """

    array: np.ndarray
    title: str = ""
    row_labels: Sequence[str] | None = None
    col_labels: Sequence[str] | None = None
    boundaries: Sequence[int] = ()
    boundary_color: str = "#888888"


class PanelFigure:
    """A bqplot Figure showing a grid of heatmap panels with one shared colour scale.

    Parameters
    ----------
    css_class : str
        Added to the figure's DOM classes (``aw-fig-weights`` ...), for tests and styling.
    signed : bool
        True: diverging colours symmetric around 0; False: fixed ``0..1`` sequential scale.
    colormap : str
        Key of :data:`COLORMAPS`.
    cell_px : float
        Preferred pixel height of a cell; the figure height follows from it (clamped).
    square : bool
        Keep cells square (attention matrices): the figure gets a pixel width and height
        from the data's shape.
    """

    def __init__(self, css_class: str, *, signed: bool, colormap: str = "viridis",
                 cell_px: float = 14.0, max_height: int = 420, min_height: int = 160,
                 label: str = "", square: bool = False) -> None:
        self.square = square
        self.signed = signed
        self.cell_px = cell_px
        self.max_height = max_height
        self.min_height = min_height
        self.x_scale = bq.LinearScale(allow_padding=False)
        self.y_scale = bq.LinearScale(allow_padding=False, reverse=True)
        self.color_scale = bq.ColorScale(min=-1.0 if signed else 0.0, max=1.0)
        if signed:
            self.color_scale.mid = 0.0
        self.set_colormap(colormap)
        self._mask_image = W.Image(format="png")
        self.x_axis = bq.Axis(scale=self.x_scale, side="top",
                              tick_values=np.array([]), tick_labels={}, grid_lines="none",
                              tick_style={"font-size": "10px"}, tick_rotate=-45)
        self.y_axis = bq.Axis(scale=self.y_scale, side="left",
                              tick_values=np.array([]), tick_labels={}, grid_lines="none",
                              tick_style={"font-size": "10px"})
        # bqplot draws a colour bar 200 px shorter than its side of the plot: below the plot
        # (wide figures) it is visible; on the right of a short figure it would vanish.
        self.c_axis = bq.ColorAxis(scale=self.color_scale, side="bottom",
                                   label=label, num_ticks=5, tick_format=".2g")
        self.titles = bq.Label(x=[0.0], y=[0.0], text=[""], colors=["#808080"],
                               preserve_domain=FIXED,
                               scales={"x": self.x_scale, "y": self.y_scale},
                               align="start", default_size=12, font_weight="bold")
        self.lines = bq.Lines(x=np.zeros((1, 2)), y=np.zeros((1, 2)), colors=["#888888"],
                              preserve_domain=FIXED,
                              scales={"x": self.x_scale, "y": self.y_scale}, stroke_width=2)
        self.highlight = bq.Lines(x=np.zeros((1, 2)), y=np.zeros((1, 2)), colors=["#ff3d8b"],
                                  preserve_domain=FIXED,
                                  scales={"x": self.x_scale, "y": self.y_scale}, stroke_width=2,
                                  visible=False)
        self.figure = bq.Figure(
            marks=[], axes=[self.x_axis, self.y_axis, self.c_axis],
            fig_margin={"top": 70, "bottom": 50, "left": 90, "right": 20},
            padding_x=0.0, padding_y=0.0, animation_duration=0,
            layout={"width": "100%", "max_width": "100%", "height": f"{min_height}px"},
        )
        self.figure.add_class("aw-figure")
        self.figure.add_class(css_class)
        self._heatmaps: list[bq.HeatMap] = []
        self._masks: list[bq.HeatMap] = []
        self._sent: list[np.ndarray] = []
        self._geometry: tuple = ()
        self._offsets: list[tuple[float, float]] = []
        self._range = None
        self._extra: list[bq.Mark] = []
        self._label_key: tuple = ()

    # ---------------------------------------------------------------------------------------
    def set_colormap(self, name: str) -> None:
        """Switch the colour scheme (sequential for weights, diverging for signed arrays)."""
        self.color_scale.colors = (DIVERGING if self.signed else COLORMAPS)[name]

    def panel_offsets(self) -> list[tuple[float, float]]:
        """``(x0, y0)`` data offset of each panel's top-left cell."""
        return self._offsets

    def update(self, panels: Sequence[Panel], *, ncols: int | None = None,
               mask: np.ndarray | None = None) -> int:
        """Show ``panels``; return the number of array bytes sent.

        Existing marks are reused: a mark is sent only the arrays of it that changed (colours,
        or cell positions when the layout moved), and marks are created only for panels that
        did not exist before.  ``mask`` (bool, True = allowed) is drawn over every panel as grey
        where False.
        """
        ncols = ncols or len(panels)
        geometry = (tuple(p.array.shape for p in panels), ncols)
        sent = 0
        with self.figure.hold_sync():
            if geometry != self._geometry:
                self._layout(panels, ncols)
            marks_before = len(self._heatmaps)
            for i, p in enumerate(panels):
                arr = np.asarray(p.array, dtype=np.float32)
                x0, y0 = self._offsets[i]
                rows, cols = arr.shape
                if i >= marks_before:
                    hm = bq.HeatMap(preserve_domain=FIXED,
                        x=_centers(cols, x0), y=_centers(rows, y0), color=_drawable(arr),
                        scales={"x": self.x_scale, "y": self.y_scale,
                                "color": self.color_scale})
                    self._heatmaps.append(hm)
                    self._sent.append(arr)
                    sent += arr.nbytes
                    continue
                hm = self._heatmaps[i]
                same_color = arr.shape == self._sent[i].shape and np.array_equal(arr, self._sent[i])
                with hm.hold_sync():
                    sent += _set_if_changed(hm, "x", _centers(cols, x0))
                    sent += _set_if_changed(hm, "y", _centers(rows, y0))
                    if not same_color:
                        hm.color = _drawable(arr)
                        self._sent[i] = arr
                        sent += arr.nbytes
            del self._heatmaps[len(panels):], self._sent[len(panels):]
            self._update_mask(mask)
            self._update_labels(panels)
            self._update_range(panels)
            marks = [*self._heatmaps, *self._extra, *self._masks, self.lines, self.highlight,
                     self.titles]
            if list(self.figure.marks) != marks:
                self.figure.marks = marks
        return sent

    def add_mark(self, mark: bq.Mark) -> None:
        """Draw ``mark`` above the panels (e.g. an interactive grid over the focus panel)."""
        if mark not in self._extra:
            self._extra.append(mark)
            marks = list(self.figure.marks)
            marks.insert(len(self._heatmaps), mark)
            self.figure.marks = marks

    def _layout(self, panels: Sequence[Panel], ncols: int) -> None:
        """Place the panels in a grid: rows of ``ncols``, each cell as large as its largest."""
        row_heights: list[int] = []
        col_widths: list[int] = []
        for i, p in enumerate(panels):
            r, c = divmod(i, ncols)
            if r == len(row_heights):
                row_heights.append(0)
            row_heights[r] = max(row_heights[r], p.array.shape[0])
            while len(col_widths) <= c:
                col_widths.append(0)
            col_widths[c] = max(col_widths[c], p.array.shape[1])
        title_gap = 2.0
        y_starts = np.cumsum([0.0] + [h + GAP + title_gap for h in row_heights])
        x_starts = np.cumsum([0.0] + [w + 2 * GAP for w in col_widths])
        self._offsets = []
        for i in range(len(panels)):
            r, c = divmod(i, ncols)
            self._offsets.append((float(x_starts[c]), float(y_starts[r] + title_gap)))
        width = float(x_starts[-1] - 2 * GAP)
        height = float(y_starts[-1] - GAP)
        self.x_scale.min, self.x_scale.max = -0.5, width - 0.5
        self.y_scale.min, self.y_scale.max = -0.5, height - 0.5
        m = self.figure.fig_margin
        if self.square:
            # Square cells whatever the notebook's width: the figure gets a pixel size (cells
            # of at most MAX_CELL_PX, the plot at most PLOT_WIDTH_PX wide and max_height tall).
            cell = min(MAX_CELL_PX, PLOT_WIDTH_PX / width,
                       (self.max_height - m["top"] - m["bottom"]) / height)
            self.figure.layout.width = f"{int(cell * width + m['left'] + m['right'])}px"
            self.figure.layout.height = f"{int(cell * height + m['top'] + m['bottom'])}px"
            self.c_axis.num_ticks = 5 if cell * height >= 200 else 3  # a short bar, fewer ticks
        else:
            px = self.cell_px * height + m["top"] + m["bottom"]
            self.figure.layout.height = f"{int(np.clip(px, self.min_height, self.max_height))}px"
        self._geometry = (tuple(p.array.shape for p in panels), ncols)

    def _update_labels(self, panels: Sequence[Panel]) -> None:
        titles = [p.title for p in panels]
        xs = [x0 - 0.5 for x0, _ in self._offsets]
        ys = [y0 - 1.6 for _, y0 in self._offsets]
        if (list(self.titles.text) != titles or list(self.titles.x) != xs
                or list(self.titles.y) != ys):
            with self.titles.hold_sync():
                self.titles.x, self.titles.y, self.titles.text = xs, ys, titles
        key = (self._geometry, tuple(
            (None if p.row_labels is None else tuple(p.row_labels),
             None if p.col_labels is None else tuple(p.col_labels),
             tuple(p.boundaries), p.boundary_color) for p in panels))
        if key == self._label_key:
            return  # ticks and head boundaries are already on screen
        self._label_key = key
        x_ticks: dict[float, str] = {}
        y_ticks: dict[float, str] = {}
        lx: list[list[float]] = []
        ly: list[list[float]] = []
        colors: list[str] = []
        for p, (x0, y0) in zip(panels, self._offsets, strict=True):
            rows, cols = p.array.shape
            if p.col_labels is not None:
                for j in tick_positions(cols):
                    x_ticks.setdefault(x0 + j, p.col_labels[j])
            if p.row_labels is not None and x0 == 0.0:
                for i in tick_positions(rows):
                    y_ticks[y0 + i] = p.row_labels[i]
            for b in p.boundaries:
                lx.append([x0 + b - 0.5, x0 + b - 0.5])
                ly.append([y0 - 0.5, y0 + rows - 0.5])
                colors.append(p.boundary_color)
        self._set_ticks(self.x_axis, x_ticks)
        self._set_ticks(self.y_axis, y_ticks)
        if lx:
            with self.lines.hold_sync():  # x, y and colours must arrive together
                self.lines.x, self.lines.y = np.array(lx), np.array(ly)
                self.lines.colors = colors
                self.lines.visible = True
        else:
            self.lines.visible = False

    @staticmethod
    def _set_ticks(axis: bq.Axis, ticks: dict[float, str]) -> None:
        values = np.array(sorted(ticks), dtype=float)
        labels = {_key(v): ticks[v] for v in values}
        if axis.tick_labels != labels:
            axis.tick_values = values
            axis.tick_labels = labels

    def _update_range(self, panels: Sequence[Panel]) -> None:
        if not self.signed:
            return
        peak = max(float(np.max(np.abs(p.array))) for p in panels)
        peak = _nice_ceiling(peak)
        if peak != self._range:
            self._range = peak
            self.color_scale.min, self.color_scale.max = -peak, peak

    def _update_mask(self, mask: np.ndarray | None) -> None:
        """Grey, pixel-exact image over masked cells: one shared PNG, one Image mark a panel.

        An image (not a HeatMap) keeps "one HeatMap per head" true and costs one small PNG.
        """
        show = mask is not None and not mask.all()
        if not show:
            for mk in self._masks:
                if mk.visible:
                    mk.visible = False
            return
        png = mask_png(mask)
        if bytes(self._mask_image.value) != png:
            self._mask_image.value = png
        rows, cols = mask.shape
        for i, (x0, y0) in enumerate(self._offsets):
            x = np.array([x0 - 0.5, x0 + cols - 0.5])
            # bqplot draws an Image from y[0] at the bottom edge up to y[1]; on this reversed
            # y scale the first image row must therefore start at the larger y
            y = np.array([y0 + rows - 0.5, y0 - 0.5])
            if i == len(self._masks):
                self._masks.append(bq.Image(image=self._mask_image, x=x, y=y, pixelated=True,
                                            preserve_domain=FIXED,
                                            scales={"x": self.x_scale, "y": self.y_scale}))
                continue
            mk = self._masks[i]
            with mk.hold_sync():
                _set_if_changed(mk, "x", x)
                _set_if_changed(mk, "y", y)
                mk.visible = True
        for mk in self._masks[len(self._offsets):]:
            mk.visible = False

    def show_highlight(self, segments: list[tuple[list[float], list[float]]] | None) -> None:
        """Draw rectangles (closed polylines in data coordinates), or hide them with None."""
        if not segments:
            self.highlight.visible = False
            return
        with self.highlight.hold_sync():  # x, y and colours must arrive together
            self.highlight.x = np.array([s[0] for s in segments])
            self.highlight.y = np.array([s[1] for s in segments])
            self.highlight.colors = ["#ff3d8b"] * len(segments)
            self.highlight.visible = True

    def row_box(self, panel: int, row: int) -> tuple[list[float], list[float]]:
        """The outline of row ``row`` of panel ``panel`` as a closed polyline."""
        x0, y0 = self._offsets[panel]
        cols = self._sent[panel].shape[1]
        left, right = x0 - 0.5, x0 + cols - 0.5
        top, bottom = y0 + row - 0.5, y0 + row + 0.5
        return [left, right, right, left, left], [top, top, bottom, bottom, top]

    def displayed(self) -> list[np.ndarray]:
        """The colour arrays currently held by the heatmap marks (what the browser draws).

        A panel with one row or column is sent doubled along that axis (bqplot's HeatMap needs
        two); this returns it at its own shape.
        """
        out = []
        for hm, sent in zip(self._heatmaps, self._sent, strict=True):
            arr = np.asarray(hm.color)
            out.append(arr[: sent.shape[0], : sent.shape[1]])
        return out


def mask_png(mask: np.ndarray) -> bytes:
    """PNG (RGBA, one pixel a cell) that is grey where ``mask`` is False, transparent elsewhere.

    Parameters
    ----------
    mask : ndarray of bool, shape (rows, cols)
        True where attention is allowed.
    """
    rows, cols = mask.shape
    rgba = np.zeros((rows, cols, 4), dtype=np.uint8)
    rgba[~mask] = MASK_RGBA
    raw = b"".join(b"\x00" + rgba[r].tobytes() for r in range(rows))  # filter 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", cols, rows, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def _set_if_changed(mark: bq.Mark, name: str, value: np.ndarray) -> int:
    """Set an array trait only if it differs; return the bytes sent."""
    old = getattr(mark, name)
    if old is not None and old.shape == value.shape and np.array_equal(old, value):
        return 0
    setattr(mark, name, value)
    return value.nbytes


def _centers(n: int, offset: float) -> np.ndarray:
    """Cell centres of ``n`` unit cells starting at ``offset``; one cell is drawn as two halves."""
    if n == 1:
        return np.array([offset - 0.25, offset + 0.25], dtype=np.float32)
    return np.arange(n, dtype=np.float32) + np.float32(offset)


def _drawable(arr: np.ndarray) -> np.ndarray:
    """``arr`` with any length-1 axis doubled: bqplot's HeatMap squeezes it away otherwise."""
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 2, axis=0)
    if arr.shape[1] == 1:
        arr = np.repeat(arr, 2, axis=1)
    return arr


def _key(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _nice_ceiling(x: float) -> float:
    """Round ``x`` up to two significant digits (stable colour ranges, fewer messages)."""
    if not np.isfinite(x) or x <= 0:
        return 1.0
    exp = np.floor(np.log10(x)) - 1
    return float(np.ceil(x / 10**exp) * 10**exp)

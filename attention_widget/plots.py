"""bqplot figures for the attention diagram: arrays in, marks out, no attention maths.

Each stage is one :class:`PanelFigure`: a bqplot ``Figure`` showing a grid of heatmap panels
(one per head, or one per matrix) that share a colour scale and a colour bar.  The panels are
drawn as one image: NumPy maps every cell to a colour of the figure's scale and the figure's
bqplot ``Image`` mark shows the result, one pixel per cell (drawn pixelated, so cells stay
sharp).  Axes, panel titles, head boundaries and the colour bar are ordinary bqplot marks and
axes around it.  One image per stage, rather than a ``HeatMap`` mark per head, because every
widget message costs the browser milliseconds and a ``HeatMap`` repaints cell by cell: a
temperature step now sends two small messages per stage instead of one per head
(``benchmarks/browser.py``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import bqplot as bq
import numpy as np

from .colors import PAIRED_DIVERGING, Limits, as_drawn, hex_colors, levels, scale_limits
from .marks import (
    DROPPED,
    FIXED,
    MASKED,
    PNG_URL_PREFIX,
    TRANSPARENT,
    ImageMark,
    bar_label,
    fit,
    fit_title,
)

__all__ = [
    "MASKED", "PNG_URL_PREFIX", "TRANSPARENT", "Panel", "PanelFigure", "shown_together",
    "tick_positions",
]

GAP = 1  # empty cells between panels
PLOT_WIDTH_PX = 640  # widest plot area of a square-celled figure: fits JupyterLab at 1280 px
MAX_CELL_PX = 36
MIN_PLOT_PX = 300  # narrowest plot area: its colour bar keeps 100 px
MAX_TICKS = 32  # axis labels per panel before they are thinned out
LABEL_PX = 14  # room one slanted (-45 degree) column label needs along the axis
VERTICAL_LABEL_PX = 9  # the same for a vertical one (10 px text): columns narrower than
#                         LABEL_PX get vertical labels, so that short sequences keep them all
ROW_LABEL_PX = 12  # room one row label (10 px text, a 12 px box) needs down the axis
#: Rows of panels far wider than tall (a long source's keys), where the height allows: one
#: row label each
MIN_ROW_PX = ROW_LABEL_PX
NUMBER_PX = 2 * LABEL_PX  # room between two column numbers (feature indices)
MAX_LABEL_CHARS = 11  # longer column labels are cut (with an ellipsis) to fit the top margin
# bqplot rotates a tick label about the tick, where d3 centres it 9 px above the axis: a long
# label then hangs below the axis, over the panel titles.  Each label is instead rotated about
# its own start, which sits on the tick (CSS transform-box/-origin apply to SVG transforms).
COLUMN_LABEL_STYLE = {"font-size": "10px", "text-anchor": "start", "transform-box": "fill-box",
                      "transform-origin": "0% 50%"}
TITLE_PX = 16  # panel titles: a 14 px text box (12 px bold) and a 2 px gap above the panel
TITLE_ROOM_PX = TITLE_PX + 4  # room above every row of panels: its titles, clear of the axis
ROLE_PX = 13  # a second title line (a head's role: the title's part after " · "), 10 px text


def tick_positions(n: int, max_ticks: int = MAX_TICKS) -> np.ndarray:
    """Indices ``0..n-1`` to label, every one up to ``max_ticks``, then evenly thinned."""
    step = max(1, int(np.ceil(n / max_ticks)))
    return np.arange(0, n, step)


def index_ticks(cols: int, cell_px: float) -> np.ndarray:
    """Columns to number on a panel of ``cols`` feature columns ``cell_px`` wide each.

    0 and every ``step``-th column, ``step`` the smallest power of two (head sizes are) that
    leaves ``NUMBER_PX`` between two numbers.
    """
    step = 1
    while step * cell_px < NUMBER_PX and step < cols:
        step *= 2
    return np.arange(0, cols, step)


@dataclass
class Panel:
    """One heatmap of a figure: its array, axis labels and title.

    Attributes
    ----------
    array : ndarray, shape (rows, cols)
    title : str
        Drawn above the panel (as SVG text, never HTML).
    row_labels, col_labels : sequence of str, optional
        One label per row/column (tokens).  None: rows are left unlabelled, columns are
        numbered 0, 1, ... within the panel (feature indices; see :func:`index_ticks`).
    boundaries : sequence of int, optional
        Column indices before which a vertical separator is drawn (head boundaries).
    """

    array: np.ndarray
    title: str = ""
    row_labels: Sequence[str] | None = None
    col_labels: Sequence[str] | None = None
    boundaries: Sequence[int] = ()
    boundary_color: str = "#888888"


@dataclass(frozen=True)
class _Ticks:
    """What :meth:`PanelFigure._plan_ticks` computed: axis ticks and head boundary lines."""

    key: tuple  # the labels and boundaries it was computed for
    rotate: int  # the column labels' angle
    x: tuple[np.ndarray, dict[str, str]]  # (tick values, labels by _key(value))
    y: tuple[np.ndarray, dict[str, str]]
    lx: list[list[float]]  # boundary lines: x, y of each, and its colour
    ly: list[list[float]]
    colors: list[str]


def _tick_labels(ticks: dict[float, str]) -> tuple[np.ndarray, dict[str, str]]:
    """``(sorted tick values, {key: label})`` as a bqplot axis takes them."""
    values = np.array(sorted(ticks), dtype=float)
    return values, {_key(v): ticks[v] for v in values}


def _square_cells(width: float, height: float, room_h: float, wide: bool) -> tuple[float, float]:
    """A square figure's cell width and height (px) for a grid of ``width x height`` cells.

    Cells of at most MAX_CELL_PX, the plot at most PLOT_WIDTH_PX wide and ``room_h`` tall.
    Panels far wider than tall (``wide``: the keys of a long source) keep rows of MIN_ROW_PX
    where the height allows, their columns as narrow as the width needs.
    """
    cell = min(MAX_CELL_PX, PLOT_WIDTH_PX / width, room_h / height)
    return cell, (max(cell, min(MIN_ROW_PX, room_h / height)) if wide else cell)


class PanelFigure:
    """A bqplot Figure showing a grid of heatmap panels with one shared colour scale.

    Parameters
    ----------
    css_class : str
        Added to the figure's DOM classes (``aw-fig-weights`` ...), for tests and styling.
    signed : bool
        True: diverging colours symmetric around 0; False: fixed ``0..1`` sequential scale.
    colormap : str
        A sequential table of :mod:`attention_widget.colors` (``SEQUENTIAL``); signed figures
        draw with its paired diverging table (``PAIRED_DIVERGING``).
    cell_px : float
        Preferred pixel height of a cell; the figure height follows from it (clamped).
    square : bool
        Keep cells square (attention matrices): the figure gets a pixel width and height
        from the data's shape.

    Notes
    -----
    The panels reach the browser as one palette PNG, one pixel per cell, a colour level each
    (:mod:`attention_widget.colors`); outside the panels it is transparent, masked cells grey.
    bqplot's ``Image`` mark redraws only when it is pointed at another ``ipywidgets.Image``, so
    the figure keeps two and alternates: fill the hidden one, then show it (two small messages
    per update; see :func:`shown_together` for several figures).  The PNG travels as a
    ``data:`` URL, which bqplot uses as the image's href as it is.
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
        self._panels: list[np.ndarray] = []  # the arrays on screen, one per panel (as_drawn)
        self.set_colormap(colormap)
        self.x_axis = bq.Axis(scale=self.x_scale, side="top",
                              tick_values=np.array([]), tick_labels={}, grid_lines="none",
                              tick_style=COLUMN_LABEL_STYLE, tick_rotate=-45)
        self.y_axis = bq.Axis(scale=self.y_scale, side="left",
                              tick_values=np.array([]), tick_labels={}, grid_lines="none",
                              tick_style={"font-size": "10px"})
        # bqplot draws a colour bar 200 px shorter than its side of the plot: below the plot
        # (wide figures) it is visible; on the right of a short figure it would vanish.
        self.label = label
        self.c_axis = bq.ColorAxis(scale=self.color_scale, side="bottom",
                                   label=label, num_ticks=5, tick_format=".2g")
        self._image = ImageMark(self.x_scale, self.y_scale)
        self.titles = bq.Label(x=[0.0], y=[0.0], text=[""], colors=["#808080"],
                               preserve_domain=FIXED,
                               scales={"x": self.x_scale, "y": self.y_scale},
                               align="start", default_size=12, font_weight="bold",
                               # anchored at the panel's top edge; bqplot centres a label's
                               # text on anchor + y_offset: its 14 px box ends 2 px above the
                               # panel (measured in Chromium)
                               y_offset=-(TITLE_PX // 2 + 1))
        # a head's role, under its title and just above the panel (the title moves up a line)
        self.roles = bq.Label(x=[0.0], y=[0.0], text=[""], colors=["#606060"],
                              preserve_domain=FIXED,
                              scales={"x": self.x_scale, "y": self.y_scale},
                              align="start", default_size=10, font_weight="normal",
                              y_offset=-(ROLE_PX // 2 + 1))
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
            padding_x=0.0, padding_y=0.0, animation_duration=0, display_toolbar=False,
            layout={"width": "100%", "max_width": "100%", "height": f"{min_height}px"},
            _dom_classes=("aw-figure", css_class),
        )
        self._mask: np.ndarray | None = None
        self._dropped: list[np.ndarray] | None = None  # per panel: keys dropped by top-k
        self._shown: np.ndarray | None = None  # palette indices of the image on screen
        self._limits: list[Limits] = []  # each panel's colour scale
        self.scale = "shared" if signed else "fixed"  # the rule (colors.scale_limits)
        self._geometry: tuple = ()
        self._offsets: list[tuple[float, float]] = []
        self._size = (1, 1)  # (height, width) of the grid, in cells
        self._deferred = False  # inside shown_together(): switch images at its end
        self._cell_px: float | None = None  # pixel side of a cell (square figures)
        self._cell_h = 1.0  # pixel height of a cell (every figure)
        self._fig_height = min_height  # pixel height of the figure, as laid out last
        self._range: tuple = ()
        self._extra: list[bq.Mark] = []
        self._label_key: tuple = ()

    # ---------------------------------------------------------------------------------------
    def set_colormap(self, name: str) -> None:
        """Switch the colour scheme (sequential for weights, diverging for signed arrays)."""
        self.table = PAIRED_DIVERGING[name] if self.signed else name
        self.color_scale.colors = hex_colors(self.table)
        if self._panels:
            self._draw()

    def panel_offsets(self) -> list[tuple[float, float]]:
        """``(x0, y0)`` data offset of each panel's top-left cell."""
        return self._offsets

    def update(self, panels: Sequence[Panel], *, ncols: int | None = None,
               mask: np.ndarray | None = None,
               dropped: Sequence[np.ndarray] | None = None) -> int:
        """Show ``panels``; return the number of bytes sent (the image, when it changed).

        ``mask`` (bool, True = allowed) is drawn grey over every panel where False;
        ``dropped`` (bool, one per panel, True = dropped by top-k) in its own colour.  Nothing
        is sent when the image would not change.
        """
        dropped = None if dropped is None else [np.asarray(d, dtype=bool) for d in dropped]
        ncols = ncols or len(panels)
        geometry = (tuple(p.array.shape for p in panels), ncols)
        with self.figure.hold_sync():
            moved = geometry != self._geometry
            if moved:
                self._layout(panels, ncols)  # where everything goes; nothing sent yet
            ticks = self._plan_ticks(panels)
            if ticks is not None:
                # bqplot redraws an axis's ticks in a (zero-length) transition that keeps the
                # tick labels the axis had when the transition was scheduled, and a transition
                # scheduled before new labels arrived put the old ones back (X's rows once
                # showed numbers after a longer sentence).  So every axis learns its new labels
                # first, before a scale or a tick value moves.
                self._announce_ticks(ticks)
            if moved:
                self._apply_layout()
            arrays = [as_drawn(p.array) for p in panels]
            mask = None if mask is None or mask.all() else mask
            same = not moved and _same_cells(dropped, self._dropped) and (
                len(arrays) == len(self._panels) and (
                mask is None if self._mask is None else (
                    mask is not None and np.array_equal(mask, self._mask)))
                and all(a.shape == b.shape and np.array_equal(a, b)
                        for a, b in zip(arrays, self._panels, strict=False)))
            sent = 0
            if not same:  # (an unchanged stage costs no colouring, no PNG, no message)
                self._panels, self._mask, self._dropped = arrays, mask, dropped
                self._update_range()
                # a new layout switches at once (axes and image together); a new image on
                # the same layout may wait for shown_together() to switch with the others
                sent = self._draw(defer=self._deferred and not moved)
            self._update_labels(panels, ticks)
            marks = [self.image, *self._extra, self.lines, self.highlight, self.titles,
                     self.roles]
            if list(self.figure.marks) != marks:
                self.figure.marks = marks
        return sent

    def _draw(self, defer: bool = False) -> int:
        """Colour the panels into the grid image; send it if it changed; return its bytes.

        The PNG goes into the hidden buffer at once; the mark is switched to it now, or by
        :meth:`show_pending` when ``defer``.
        """
        height, width = self._size
        grid = np.full((height, width), TRANSPARENT, dtype=np.uint8)
        for arr, (x0, y0), lim in zip(self._panels, self._offsets, self._limits, strict=True):
            rows, cols = arr.shape
            cells = grid[int(y0):int(y0) + rows, int(x0):int(x0) + cols]
            levels(arr, lim.low, lim.high, out=cells)
            if self._mask is not None and self._mask.shape == arr.shape:
                cells[~self._mask] = MASKED
        for cells_of, (x0, y0), arr in zip(self._dropped or [], self._offsets, self._panels,
                                           strict=False):
            rows, cols = arr.shape
            grid[int(y0):int(y0) + rows, int(x0):int(x0) + cols][cells_of] = DROPPED
        # bqplot draws an Image from y[0] at its bottom edge up to y[1]; on this reversed
        # y scale the first image row must therefore start at the larger y
        sent = self._image.fill(grid, self.table, ([-0.5, width - 0.5], [height - 0.5, -0.5]))
        if sent:
            self._shown = grid
        if not defer:
            self.show_pending()
        return sent

    def show_pending(self) -> None:
        """Point the image mark at the buffer filled last, if it is not shown yet."""
        self._image.show_pending()

    @property
    def image(self) -> bq.Image:
        """The figure's image mark (every panel, one pixel per cell)."""
        return self._image.mark

    def add_mark(self, mark: bq.Mark) -> None:
        """Draw ``mark`` above the panels (e.g. an interactive grid over the focus panel)."""
        if mark not in self._extra:
            self._extra.append(mark)
            marks = list(self.figure.marks)
            marks.insert(1, mark)
            self.figure.marks = marks

    def _layout(self, panels: Sequence[Panel], ncols: int) -> None:
        """Place the panels in a grid: rows of ``ncols``, each cell as large as its largest."""
        row_heights, col_widths = _tracks([p.array.shape for p in panels], ncols)
        x_starts = np.cumsum([0] + [w + 2 * GAP for w in col_widths])
        width = float(x_starts[-1] - 2 * GAP)
        wide = all(cols > 2 * rows for rows, cols in (p.array.shape for p in panels))

        def rows_at(gap: int) -> tuple[np.ndarray, float, tuple[float | None, float, int]]:
            y_starts = np.cumsum([0] + [h + GAP + gap for h in row_heights])
            height = float(y_starts[-1] - GAP)
            return y_starts, height, self._cell_size(width, height, wide)

        # Every row of panels has TITLE_ROOM_PX above it for its titles: cells (one if a cell
        # is that tall) whose number depends on the cells' size, which depends on the grid's
        # height: a fixed point, reached in a step or two.  Where the titles alone would not
        # fit (e.g. 16 rows of heads in one figure) the panels keep the room: a 2-cell gap.
        title_gap = 1
        room = TITLE_ROOM_PX + (ROLE_PX if any(" · " in p.title for p in panels) else 0)
        for _ in range(6):
            need = math.ceil(room / rows_at(title_gap)[2][1])
            if need <= title_gap:
                break
            title_gap = need
        else:
            title_gap = 2
        y_starts, height, (cell_w, cell_h, fig_height) = rows_at(title_gap)
        self._offsets = []
        for i in range(len(panels)):
            r, c = divmod(i, ncols)
            self._offsets.append((float(x_starts[c]), float(y_starts[r] + title_gap)))
        self._size = (int(height), int(width))
        self._cell_h = cell_h
        if self.square:
            self._cell_px = cell_w
        self._fig_height = fig_height
        self._geometry = (tuple(p.array.shape for p in panels), ncols)

    def _apply_layout(self) -> None:
        """Send what :meth:`_layout` computed: the scales' extent and the figure's size."""
        height, width = self._size
        self.x_scale.min, self.x_scale.max = -0.5, width - 0.5
        self.y_scale.min, self.y_scale.max = -0.5, height - 0.5
        self.figure.layout.height = f"{self._fig_height}px"
        if self.square:
            # Square cells whatever the notebook's width: the figure gets a pixel size (cells
            # of at most MAX_CELL_PX, the plot at most PLOT_WIDTH_PX wide and max_height tall).
            # bqplot's colour bar is 200 px shorter than the plot: a narrower plot would draw
            # it reversed, so the plot keeps MIN_PLOT_PX and the panels their square cells.
            m = self.figure.fig_margin
            plot_w = max(self._cell_px * width, MIN_PLOT_PX)
            self.x_scale.max = plot_w / self._cell_px - 0.5
            self.figure.layout.width = f"{int(plot_w + m['left'] + m['right'])}px"
            # a short bar: fewer ticks (bqplot's bar is 200 px shorter than the plot)
            self.c_axis.num_ticks = 5 if plot_w - 200 >= 250 else 3

    def _cell_size(self, width: float, height: float, wide: bool
                   ) -> tuple[float | None, float, int]:
        """``(cell width px or None, cell height px, figure height px)`` for a grid this size.

        Square figures: :func:`_square_cells`.  Others: ``cell_px`` high, the figure clamped to
        ``min_height .. max_height``; their width follows the notebook's (unknown here).
        """
        m = self.figure.fig_margin
        margins = m["top"] + m["bottom"]
        if self.square:
            cell, cell_h = _square_cells(width, height, self.max_height - margins, wide)
            return cell, cell_h, int(cell_h * height + margins)
        px = int(np.clip(self.cell_px * height + margins, self.min_height, self.max_height))
        return None, (px - margins) / height, px

    def _plan_ticks(self, panels: Sequence[Panel]) -> _Ticks | None:
        """The axes' ticks and the head boundaries for ``panels``; None if already shown."""
        key = (self._geometry, tuple(
            (None if p.row_labels is None else tuple(p.row_labels),
             None if p.col_labels is None else tuple(p.col_labels),
             tuple(p.boundaries), p.boundary_color) for p in panels))
        if key == self._label_key:
            return None  # ticks and head boundaries are already on screen
        return _ticks(key, panels, self._offsets, self._cell_px, self._cell_h, self._size)

    def _announce_ticks(self, ticks: _Ticks) -> None:
        """Give each axis its new tick labels, added to its current ones (see :meth:`update`).

        The union keeps the ticks on screen labelled until the new ticks replace them, and
        maps every new tick to its new label in whatever order the browser then applies the
        tick values, the labels and the scales.
        """
        for axis, (_values, labels) in ((self.x_axis, ticks.x), (self.y_axis, ticks.y)):
            merged = {**(axis.tick_labels or {}), **labels}
            if merged != axis.tick_labels:
                axis.tick_labels = merged

    def _update_labels(self, panels: Sequence[Panel], ticks: _Ticks | None) -> None:
        # each title fits its panel and the gap after it: else its first part, its number;
        # a role (the part after " · ") goes on a second line, cut to fit
        cell = self._cell_px or PLOT_WIDTH_PX / max(self._size[1], 1)
        rooms = [(p.array.shape[1] + 2 * GAP) * cell for p in panels]
        heads = [p.title.split(" · ", 1) for p in panels]
        titles = [fit_title(h[0], r) for h, r in zip(heads, rooms, strict=True)]
        roles = [fit(h[1], 10, r) if len(h) > 1 else "" for h, r in zip(heads, rooms, strict=True)]
        xs = [x0 - 0.5 for x0, _ in self._offsets]
        ys = [y0 - 0.5 for _, y0 in self._offsets]
        offset = -(TITLE_PX // 2 + 1) - (ROLE_PX if any(roles) else 0)
        if (list(self.titles.text) != titles or list(self.titles.x) != xs
                or list(self.titles.y) != ys or self.titles.y_offset != offset):
            with self.titles.hold_sync():
                self.titles.x, self.titles.y, self.titles.text = xs, ys, titles
                self.titles.y_offset = offset
        if list(self.roles.text) != roles or list(self.roles.x) != xs or (
                list(self.roles.y) != ys):
            with self.roles.hold_sync():
                self.roles.x, self.roles.y, self.roles.text = xs, ys, roles
        if ticks is None:
            return
        self._label_key = ticks.key
        if self.x_axis.tick_rotate != ticks.rotate:
            self.x_axis.tick_rotate = ticks.rotate
        for axis, (values, labels) in ((self.x_axis, ticks.x), (self.y_axis, ticks.y)):
            if axis.tick_labels != labels or not np.array_equal(axis.tick_values, values):
                with axis.hold_sync():
                    axis.tick_values = values
                    axis.tick_labels = labels
        if ticks.lx:
            with self.lines.hold_sync():  # x, y and colours must arrive together
                self.lines.x, self.lines.y = np.array(ticks.lx), np.array(ticks.ly)
                self.lines.colors = ticks.colors
                self.lines.visible = True
        else:
            self.lines.visible = False

    def set_scale(self, mode: str) -> None:
        """Colour the panels on scale rule ``mode`` (see :func:`.colors.scale_limits`)."""
        if mode != self.scale:
            self.scale = mode
            if self._panels:
                self._update_range()
                self._draw()

    def _update_range(self) -> None:
        """Each panel's scale; the colour bar shows the shared one, or says what it stands for."""
        self._limits = scale_limits(self._panels, self.scale, signed=self.signed)
        lim = self._limits[0]
        per_head = self.scale == "per head" and len(self._limits) > 1
        low, high = (-1.0, 1.0) if per_head and self.signed else (
            (0.0, 1.0) if per_head else (lim.low, lim.high))
        label = bar_label(self._limits, self.label)
        key = (low, high, label)
        if key != self._range:
            self._range = key
            with self.color_scale.hold_sync():
                self.color_scale.min, self.color_scale.max = low, high
            if self.c_axis.label != label:
                self.c_axis.label = label

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
        cols = self._panels[panel].shape[1]
        left, right = x0 - 0.5, x0 + cols - 0.5
        top, bottom = y0 + row - 0.5, y0 + row + 0.5
        return [left, right, right, left, left], [top, top, bottom, bottom, top]

    def displayed(self) -> list[np.ndarray]:
        """The arrays on screen, one per panel, as coloured (:func:`.colors.as_drawn`)."""
        return list(self._panels)

    def displayed_cells(self) -> list[np.ndarray]:
        """The palette index of every cell of every panel in the image on screen.

        Read back from the grid the PNG was made of: ``0 .. LEVELS - 1`` colour levels of the
        scale (see :func:`attention_widget.colors.levels`), :data:`MASKED` for masked cells.
        """
        out = []
        for arr, (x0, y0) in zip(self._panels, self._offsets, strict=True):
            rows, cols = arr.shape
            out.append(self._shown[int(y0):int(y0) + rows, int(x0):int(x0) + cols].copy())
        return out

    @property
    def png(self) -> bytes:
        """The PNG on screen (what the figure's ``Image`` mark shows)."""
        return self._image.png

    def limits(self) -> list[Limits]:
        """Each panel's colour scale, as drawn (:func:`attention_widget.colors.scale_limits`)."""
        return list(self._limits)


@contextlib.contextmanager
def shown_together(figures: Sequence[PanelFigure]) -> Iterator[None]:
    """Send new images as the figures update, but switch their marks to them at the end.

    Each image switch makes the browser repaint; switches that arrive back to back are
    painted in one frame, where switches spread over the burst of messages of one update
    (each waiting for the next figure's PNG) cost a frame each (measured: a ~9 ms frame
    in the middle of a temperature step).  Figures whose layout changes switch at once.
    """
    figures = list(figures)
    for fig in figures:
        fig._deferred = True
    try:
        yield
    finally:
        for fig in figures:
            fig._deferred = False
        for fig in figures:
            fig.show_pending()


def _ticks(key: tuple, panels: Sequence[Panel], offsets: list[tuple[float, float]],
           cell_px: float | None, cell_h: float, size: tuple[int, int]) -> _Ticks:
    """:meth:`PanelFigure._plan_ticks`'s work: axis ticks and boundary lines of ``panels``."""
    x_ticks: dict[float, str] = {}
    y_ticks: dict[float, str] = {}
    cell = cell_px  # (None: the figure's width, and so the columns', is not fixed)
    slanted = cell is None or cell >= LABEL_PX
    lx: list[list[float]] = []
    ly: list[list[float]] = []
    colors: list[str] = []
    for p, (x0, y0) in zip(panels, offsets, strict=True):
        rows, cols = p.array.shape
        if p.col_labels is not None:
            # token labels need about LABEL_PX each slanted, VERTICAL_LABEL_PX upright, or
            # they run into each other
            fit = MAX_TICKS if cell is None else int(cols * cell / (
                LABEL_PX if slanted else VERTICAL_LABEL_PX))
            for j in tick_positions(cols, max(1, min(MAX_TICKS, fit))):
                x_ticks.setdefault(x0 + j, _short(p.col_labels[j]))
        else:
            # feature columns: numbered within their panel, so K's and V's (and every
            # head's) first column reads 0, as it is -- not its place in the whole grid.
            # Non-square figures are as wide as the notebook: PLOT_WIDTH_PX is a guess.
            px = cell if cell is not None else PLOT_WIDTH_PX / max(size[1], 1)
            for j in index_ticks(cols, px):
                x_ticks.setdefault(x0 + j, str(j))
        if p.row_labels is not None and x0 == 0.0:
            fit = int(rows * cell_h / ROW_LABEL_PX)
            for i in tick_positions(rows, max(1, min(MAX_TICKS, fit))):
                y_ticks[y0 + i] = p.row_labels[i]
        for b in p.boundaries:
            lx.append([x0 + b - 0.5, x0 + b - 0.5])
            ly.append([y0 - 0.5, y0 + rows - 0.5])
            colors.append(p.boundary_color)
    return _Ticks(key, -45 if slanted else -90, _tick_labels(x_ticks),
                  _tick_labels(y_ticks), lx, ly, colors)


def _tracks(shapes: Sequence[tuple[int, ...]], ncols: int) -> tuple[list[int], list[int]]:
    """Row heights and column widths of a grid of panels of ``shapes``, rows of ``ncols``.

    Each row is as high as its highest panel, each column as wide as its widest.
    """
    rows = [max(s[0] for s in shapes[i:i + ncols]) for i in range(0, len(shapes), ncols)]
    cols = [max(s[1] for s in shapes[c::ncols]) for c in range(min(ncols, len(shapes)))]
    return rows, cols


def _same_cells(a: Sequence[np.ndarray] | None, b: Sequence[np.ndarray] | None) -> bool:
    """Whether two lists of boolean panels (or None) are equal."""
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _short(label: str) -> str:
    """``label`` cut to MAX_LABEL_CHARS characters, the last an ellipsis, if longer."""
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def _key(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))

"""The overview: the whole layer in one picture, from X to the output, live.

Left to right, as in the diagram the project started from: the tokens and X; its projections
Q, K and V (in their colours, one above the other); then each head as a lane -- its scores,
their softmax (the weights, the picture's centre) and its output -- and the heads'
concatenation and W_O.  Arrows carry the flow; each column has its title, its formula and
its shape above it and its colour bar below it.  Every cell is a number of the trace.

:func:`plan` is the geometry alone (pure: boxes and texts in pixels, testable without a
browser); :class:`Overview` draws a plan and a trace into one bqplot figure whose scales are
pixels.  Up to :data:`MAX_LANES` heads are drawn as lanes: the group of the focus head, and a
line says which heads are not drawn.  A stage inserted where it acts (a rotation of Q and K, a
sink column beside the weights) is one more column or one more lane panel of the plan.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import bqplot as bq
import ipywidgets as W
import numpy as np

from .colors import LEVELS, PAIRED_DIVERGING, Limits, levels, scale_limits
from .controls import readout
from .engine import AttentionTrace
from .export.layout import text_width
from .marks import (
    FIXED,
    MASKED,
    PNG_URL_PREFIX,
    TRANSPARENT,
    ImageMark,
    fit,
    image_palette,
    scale_caption,
)
from .png import palette_png
from .sources import Traced
from .stages import SECTIONS

__all__ = ["MAX_LANES", "Overview", "Plan", "TextItem", "lane_heads", "plan"]

Q_COLOR, K_COLOR, V_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c"  # as in the detailed view
ARROW_COLOR, TEXT_COLOR, TITLE_COLOR = "#777777", "#333333", "#222222"
MAX_LANES = 4  # heads drawn as lanes at once
ARROW_PX = 26  # room between two columns, for the arrow
BAR_PX = 8  # colour bar thickness
MAX_CELL_PX = 16  # largest square cell of the lanes
MAX_ROW_PX = {False: 14, True: 20}  # largest row of X, concat and output (room for a label)
FEATURE_PX = 72  # width of a feature panel (X, Q, K, V, concat, output)
#: Font sizes (px): tokens, column titles, formulas and head titles, numbers and shapes.
FONTS = {False: {"token": 11, "title": 12, "text": 11, "small": 10},
         True: {"token": 14, "title": 15, "text": 14, "small": 13}}
#: The picture's size: it fits JupyterLab's notebook beside the file browser at 1280 px, and
#: the projector's larger text takes the width of a full-screen page.
WIDTH = {False: 840, True: 1180}
MAX_HEIGHT = {False: 430, True: 600}
#: Each column of the picture: its key (its colour bar's stage), title, short formula, section.
COLUMNS = (
    ("x", "1 · X", "a row per token", 1),
    ("qkv", "2 · Q K V", "X W_Q, X W_K, X W_V", 2),
    ("scores", "3 · scores", "Q Kᵀ / √d_head", 3),
    ("weights", "4 · weights", "softmax(S / T)", 4),
    ("outputs", "5 · heads", "weights · V", 5),
    ("concat", "6 · concat", "[head 0 … h]", 6),
    ("output", "output", "concat W_O", 6),
)


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels (y down)."""

    x: float
    y: float
    w: float
    h: float

    @property
    def right(self) -> float:
        """Its right edge."""
        return self.x + self.w

    @property
    def bottom(self) -> float:
        """Its bottom edge."""
        return self.y + self.h


@dataclass(frozen=True)
class TextItem:
    """A line of text: ``y`` is its vertical centre; ``anchor`` start, middle or end."""

    x: float
    y: float
    text: str
    size: int
    section: int
    bold: bool = False
    anchor: str = "start"
    color: str = TEXT_COLOR

    def box(self) -> Box:
        """The room it takes, estimated (:func:`~attention_widget.export.layout.text_width`)."""
        w = text_width(self.text, self.size) * (1.08 if self.bold else 1.0)
        x = {"start": self.x, "middle": self.x - w / 2, "end": self.x - w}[self.anchor]
        return Box(x, self.y - self.size * 0.6, w, self.size * 1.2)


@dataclass
class Plan:
    """Where everything of the overview goes, in pixels.

    Attributes
    ----------
    width, height : int
    panels : dict of str to Box
        ``x``, ``q``, ``k``, ``v``, ``concat``, ``output``; and per lane ``scores 0``,
        ``weights 0``, ``outputs 0`` ... (the lane's index, not the head's).
    lanes : list of int
        The heads drawn as lanes, top to bottom.
    cell : float
        Pixel side of a lane's square cell: whole pixels, or below 1 for long texts.
    bars : dict of str to Box
        Each column's colour bar.
    texts : list of TextItem
    arrows : list of (xs, ys, colour, section)
        Polylines, each ending in an arrow head.
    """

    width: int
    height: int
    panels: dict[str, Box] = field(default_factory=dict)
    lanes: list[int] = field(default_factory=list)
    cell: float = 1.0
    bars: dict[str, Box] = field(default_factory=dict)
    texts: list[TextItem] = field(default_factory=list)
    arrows: list[tuple[list[float], list[float], str, int]] = field(default_factory=list)


def lane_heads(n_heads: int, head: int) -> list[int]:
    """The heads drawn as lanes: all up to :data:`MAX_LANES`, else the focus head's group."""
    if n_heads <= MAX_LANES:
        return list(range(n_heads))
    start = min(head - head % MAX_LANES, n_heads - MAX_LANES)
    return list(range(start, start + MAX_LANES))


def plan(tokens: Sequence[str], trace: AttentionTrace, lanes: Sequence[int],
         titles: Sequence[str], projector: bool = False) -> Plan:
    """The overview's geometry for ``trace`` with heads ``lanes`` drawn large.

    Parameters
    ----------
    tokens : sequence of str
        One per row.
    trace : AttentionTrace
        Only its shapes are read.
    lanes : sequence of int
        Heads drawn as lanes (:func:`lane_heads`).
    titles : sequence of str
        Every head's title (``"head 2 · previous token 0.98"``).
    projector : bool
        Large text (token labels and titles >= 14 px) on a wider picture.
    """
    f = FONTS[projector]
    n, n_keys = trace.seq_len, trace.weights.shape[-1]  # queries; keys (tokens, or more)
    header = 1.2 * (f["title"] + f["text"] + f["small"]) + 18  # three lines above the columns
    footer = BAR_PX + f["small"] + 10  # colour bar and its numbers
    body_h = MAX_HEIGHT[projector] - header - footer
    lane_title, lane_gap = f["text"] + 4, 8
    labels_w = min(max(text_width(t, f["token"]) for t in _labels(tokens)) + 6, 9 * f["token"])
    out_w = float(FEATURE_PX * 0.6)
    need = {key: max(text_width(title, f["title"]) * 1.08, text_width(formula, f["text"]))
            - ARROW_PX + 6 for key, title, formula, _ in COLUMNS}

    def panels(cell: float) -> dict[str, float]:  # each column's panel width
        return {"x": FEATURE_PX, "qkv": FEATURE_PX, "scores": n_keys * cell,
                "weights": n_keys * cell, "outputs": out_w, "concat": FEATURE_PX,
                "output": FEATURE_PX}

    def widths(cell: float) -> dict[str, float]:
        return {key: max(w, need[key]) for key, w in panels(cell).items()}

    # the lanes' square cells: as large as the height and the width allow
    by_height = (body_h / len(lanes) - lane_title - lane_gap) / n
    # whole pixels while a cell has one; below that (long texts) a lane shows one pixel row
    # per screen row, the rows between them left out (the detailed view has every one)
    cell = min(MAX_CELL_PX, by_height)
    cell = float(int(cell)) if cell >= 1 else max(cell, 0.05)
    while cell > 1 and labels_w + sum(widths(cell).values()) + 6 * ARROW_PX > WIDTH[projector]:
        cell -= 1
    lane_h = lane_title + n * cell + lane_gap
    body_h = max(len(lanes) * lane_h, 3 * (f["text"] + 6 + min(n, 40)) + 12)
    p = Plan(WIDTH[projector], int(header + body_h + footer), lanes=list(lanes), cell=cell)
    top = header
    panel_w = panels(cell)
    x = labels_w
    lefts = {}
    for key, col_w in widths(cell).items():
        lefts[key] = (x + (col_w - panel_w[key]) / 2, col_w, x)
        x += col_w + ARROW_PX
    mid = top + body_h / 2
    # X, concat and output: bands of the tokens' rows, in the middle of the body
    row = min(MAX_ROW_PX[projector], (body_h - 4) / n)
    for key in ("x", "concat", "output"):
        p.panels[key] = Box(lefts[key][0], mid - n * row / 2, FEATURE_PX, n * row)
    # Q, K, V: one above the other, each under its own title
    qkv_h = (body_h - 3 * (f["text"] + 4) - 2 * 6) / 3
    q_row = min(MAX_ROW_PX[projector], qkv_h / n)
    y = mid - (3 * (f["text"] + 4 + n * q_row) + 12) / 2
    for key in ("q", "k", "v"):
        y += f["text"] + 4
        p.panels[key] = Box(lefts["qkv"][0], y, FEATURE_PX, n * q_row)
        y += n * q_row + 6
    # the lanes
    for i, _h in enumerate(lanes):
        ly = top + i * lane_h + lane_title
        for key in ("scores", "weights", "outputs"):
            p.panels[f"{key} {i}"] = Box(lefts[key][0], ly, panel_w[key], n * cell)
    _texts(p, tokens, trace, titles, lefts, row, f, top)
    _arrows(p, lanes)
    bar_y = top + body_h + 4
    for key, _, _, _ in COLUMNS:
        left, col_w, _ = lefts[key]
        width = max(panel_w[key], min(col_w, 90))
        p.bars[key] = Box(left + panel_w[key] / 2 - width / 2, bar_y, width, BAR_PX)
    return p


def _labels(tokens: Sequence[str]) -> list[str]:
    return [t.replace("\n", "⏎").replace("\t", "⇥") for t in tokens]


def _texts(p: Plan, tokens: Sequence[str], trace: AttentionTrace, titles: Sequence[str],
           lefts: dict, row: float, f: dict, top: float) -> None:
    """The column headers, the token labels, Q/K/V titles and the lanes' titles."""
    n, h, kv = trace.seq_len, trace.n_heads, trace.n_kv_heads
    n_keys, dv = trace.weights.shape[-1], trace.v.shape[2]
    qkv = (f"heads × {n} × {trace.d_head}" if (n_keys, dv) == (n, trace.d_head) else
           f"heads × {n}|{n_keys} × {trace.d_head}|{dv}")  # queries|keys × d_head|d_v
    shapes = {"x": f"{n} × {trace.d_model}", "qkv": qkv,
              "scores": f"{h} × {n} × {n_keys}", "weights": f"{h} × {n} × {n_keys}",
              "outputs": f"{h} × {n} × {dv}",
              "concat": f"{n} × {trace.concat.shape[1]}", "output": f"{n} × {trace.d_model}"}
    for key, title, formula, section in COLUMNS:
        _, col_w, start = lefts[key]
        cx = start + col_w / 2
        y = 4 + f["title"] / 2 + 2
        p.texts.append(TextItem(cx, y, title, f["title"], section, True, "middle", TITLE_COLOR))
        y += f["title"] / 2 + f["text"] / 2 + 4
        p.texts.append(TextItem(cx, y, formula, f["text"], section, anchor="middle"))
        y += f["text"] / 2 + f["small"] / 2 + 4
        p.texts.append(TextItem(cx, y, shapes[key], f["small"], section, anchor="middle"))
    # token labels left of X, every k-th where rows are close
    box = p.panels["x"]
    step = max(1, math.ceil(1.25 * f["token"] / row))
    room = box.x - 6
    for i in range(0, n, step):
        p.texts.append(TextItem(box.x - 4, box.y + (i + 0.5) * row,
                                fit(_labels(tokens)[i], f["token"], room), f["token"], 1,
                                anchor="end"))
    names = {"q": (f"Q · {h} heads", Q_COLOR), "k": (f"K · {kv} kv heads", K_COLOR),
             "v": (f"V · {kv} kv heads", V_COLOR)}
    qkv_room = lefts["qkv"][1] + ARROW_PX - 8 - (lefts["qkv"][0] - lefts["qkv"][2])
    for key, (text, color) in names.items():
        b = p.panels[key]
        short = text if text_width(text, f["text"]) * 1.08 <= qkv_room else text.split(" · ")[0]
        p.texts.append(TextItem(b.x, b.y - f["text"] / 2 - 2, short, f["text"], 2, True,
                                color=color))
    for i, head in enumerate(p.lanes):
        s, o = p.panels[f"scores {i}"], p.panels[f"outputs {i}"]
        text = fit(titles[head], f["text"], o.right - s.x, bold=True)
        p.texts.append(TextItem(s.x, s.y - f["text"] / 2 - 2, text, f["text"], 3, True))


def _arrows(p: Plan, lanes: Sequence[int]) -> None:
    """X to Q, K, V; Q and K to each lane's scores, V to its outputs; lanes to concat."""
    P = p.panels
    x = P["x"]
    for key, color in (("q", Q_COLOR), ("k", K_COLOR), ("v", V_COLOR)):
        b = P[key]
        p.arrows.append(([x.right + 3, b.x - 3], [x.y + x.h / 2, b.y + b.h / 2], color, 2))
    for i in range(len(lanes)):
        s, w, o = P[f"scores {i}"], P[f"weights {i}"], P[f"outputs {i}"]
        cy = s.y + s.h / 2
        for key, color, dy in (("q", Q_COLOR, -3.0), ("k", K_COLOR, 3.0)):
            b = P[key]
            p.arrows.append(([b.right + 3, s.x - 3], [b.y + b.h / 2, cy + dy], color, 3))
        v = P["v"]
        under = s.bottom + 4  # V runs below the lane's scores and weights, then up
        p.arrows.append(([v.right + 3, s.x - 8, o.x - 10, o.x - 3],
                         [v.y + v.h / 2, under, under, o.bottom - 3], V_COLOR, 5))
        p.arrows.append(([s.right + 3, w.x - 3], [cy, cy], ARROW_COLOR, 4))
        p.arrows.append(([w.right + 3, o.x - 3], [cy - 4, cy - 4], ARROW_COLOR, 5))
        c = P["concat"]
        p.arrows.append(([o.right + 3, c.x - 3], [cy, c.y + c.h / 2], ARROW_COLOR, 6))
    c, out = P["concat"], P["output"]
    p.arrows.append(([c.right + 3, out.x - 3], [c.y + c.h / 2] * 2, ARROW_COLOR, 6))


def _arrow_lines(arrows: list) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every arrow as a 7-point polyline: its path (padded to 4 points), then its head."""
    xs, ys, colors = [], [], []
    for px, py, color, _ in arrows:
        (x0, y0), (x1, y1) = (px[-2], py[-2]), (px[-1], py[-1])
        angle = math.atan2(y1 - y0, x1 - x0)
        left = (x1 - 5 * math.cos(angle - 0.5), y1 - 5 * math.sin(angle - 0.5))
        right = (x1 - 5 * math.cos(angle + 0.5), y1 - 5 * math.sin(angle + 0.5))
        path_x = list(px) + [px[-1]] * (4 - len(px))
        path_y = list(py) + [py[-1]] * (4 - len(py))
        xs.append([*path_x[:4], left[0], x1, right[0]])  # the path, then its head
        ys.append([*path_y[:4], left[1], y1, right[1]])
        colors.append(color)
    return np.array(xs), np.array(ys), colors


class Overview:
    """The overview figure: :func:`plan` drawn with a trace's numbers.

    Attributes
    ----------
    figure : bqplot.Figure
        CSS classes ``aw-figure aw-overview``.
    notes : ipywidgets.HTML
        Below the figure: what the input is, which heads are not drawn, designed heads' notes.
    """

    def __init__(self) -> None:
        self.x_scale = bq.LinearScale(min=0.0, max=1.0, allow_padding=False)
        self.y_scale = bq.LinearScale(min=0.0, max=1.0, allow_padding=False, reverse=True)
        sc = {"x": self.x_scale, "y": self.y_scale}
        self.images = {key: ImageMark(self.x_scale, self.y_scale)
                       for key in ("x", "qkv", "scores", "weights", "outputs", "concat",
                                   "output")}
        self._strips = {}  # colour bar images, one per table
        # every mark keeps the scales' fixed ranges: a mark that recomputed them would have
        # the figure redraw all its marks at each image switch
        self.bar_marks = {key: bq.Image(image=W.Image(format="url"), x=[0, 1], y=[1, 0],
                                        scales=sc, preserve_domain=FIXED)
                          for key, *_ in COLUMNS}
        self.arrows = bq.Lines(x=np.zeros((1, 7)), y=np.zeros((1, 7)), scales=sc,
                               colors=[ARROW_COLOR], stroke_width=1.5, preserve_domain=FIXED)
        self.highlight = bq.Lines(x=np.zeros((1, 5)), y=np.zeros((1, 5)), scales=sc,
                                  colors=["#ff3d8b"], stroke_width=2, visible=False,
                                  preserve_domain=FIXED)
        self._labels: dict[tuple, bq.Label] = {}
        self.figure = bq.Figure(
            marks=[], axes=[], fig_margin={"top": 0, "bottom": 0, "left": 0, "right": 0},
            padding_x=0.0, padding_y=0.0, animation_duration=0, display_toolbar=False,
            min_aspect_ratio=0.01, max_aspect_ratio=100.0,
            layout={"width": "840px", "height": "400px"})
        self.figure.add_class("aw-figure")
        self.figure.add_class("aw-overview")
        self.notes = readout("aw-overview-notes")
        # beside the picture where the page is wide enough (Voila), else under it
        self.notes.layout = W.Layout(flex="1 1 300px", min_width="300px", margin="0 0 0 12px")
        self.box = W.HBox([self.figure, self.notes], layout={"flex_flow": "row wrap"})
        self.box.add_class("aw-overview-box")
        self.table = "viridis"
        self._plan: Plan | None = None
        self._traced: Traced | None = None
        self._key: tuple = ()
        self._limits: dict[str, list[Limits]] = {}
        self._front: tuple | None = None  # the arrays before the softmax drawn last
        self._step = len(SECTIONS)

    def shown(self, step: int) -> tuple[W.Widget, ...]:
        """The overview's widgets (every stage; the player hides later ones)."""
        return (self.box,)

    def set_colormap(self, name: str) -> None:
        """Draw with colour table ``name`` (and its paired diverging table) from the next draw."""
        self.table = name
        self._key = ()
        self._front = None

    def draw(self, traced: Traced, head: int, query: int, *, step: int,
             scales: Mapping[str, str], projector: bool) -> int:
        """Show ``traced`` with the focus head's group as lanes; return the bytes sent."""
        tr, toks = traced.trace, traced.tokens
        lanes = lane_heads(tr.n_heads, head)
        titles = traced.head_titles()
        key = (tuple(toks), tr.n_heads, tr.n_kv_heads, tr.d_model, tuple(lanes),
               tuple(titles), projector, self.table)
        self._traced, self._step = traced, step
        if key != self._key or self._plan is None:
            self._plan = plan(toks, tr, lanes, titles, projector)
            self._key = key
        p = self._plan
        sent = 0
        with self.figure.hold_sync():
            self._size(p)
            # a temperature step keeps X, Q, K, V and the scores (the same arrays): not again
            front = (tr.x, tr.q, tr.k, tr.v, tr.scores)
            drawn_as = (tuple(lanes), projector, self.table, dict(scales), p.width, p.height,
                        p.cell, tuple(p.panels.values()))
            same = self._front is not None and self._front[1] == drawn_as and all(
                a is b for a, b in zip(front, self._front[0], strict=True))
            self._front = (front, drawn_as)
            for name, (arrays, shown) in _stage_arrays(tr, lanes).items():
                if same and name in ("x", "qkv", "scores"):
                    continue
                signed = name != "weights"
                mode = scales.get(name, "shared" if signed else "fixed")
                # the scale of every head, as the detailed view and the exports have it
                every = scale_limits(arrays, mode, signed=signed)
                limits = self._limits[name] = [every[i] for i in shown]
                drawn = [arrays[i] for i in shown]
                if name == "concat":  # concat and output: one step, one scale rule
                    sent += self._fill("concat", drawn[:1], limits[:1], p, tr.mask)
                    sent += self._fill("output", drawn[1:], limits[1:], p, tr.mask)
                else:
                    sent += self._fill(name, drawn, limits, p, tr.mask)
            for img in self.images.values():
                img.show_pending()
            self._bars(p)
            self._show_texts(p, step)
            self._show_arrows(p, step)
            self._visible(step)
            self._query(query)
        self.notes.value = _notes_html(traced, lanes, self._limits)
        return sent

    def needs_draw(self, head: int, step: int) -> bool:
        """Whether a new focus head or step changes more than the outlined query row."""
        if self._traced is None or self._plan is None:
            return True
        return (lane_heads(self._traced.trace.n_heads, head) != self._plan.lanes
                or step != self._step)

    def show_query(self, query: int) -> None:
        """Outline row ``query`` of X and of every lane's weights (-1: none)."""
        self._query(query)

    # -- drawing ------------------------------------------------------------------------------
    def _size(self, p: Plan) -> None:
        if (self.x_scale.max, self.y_scale.max) != (p.width, p.height):
            with self.x_scale.hold_sync(), self.y_scale.hold_sync():
                self.x_scale.max, self.y_scale.max = float(p.width), float(p.height)
            self.figure.layout.width = f"{p.width}px"
            self.figure.layout.height = f"{p.height}px"

    def _fill(self, name: str, arrays: list[np.ndarray], limits: list[Limits], p: Plan,
              mask: np.ndarray) -> int:
        """Colour one column's panels into its image; returns the bytes sent."""
        table = self.table if name == "weights" else PAIRED_DIVERGING[self.table]
        if name in ("x", "concat", "output"):
            box = p.panels[name]
            grid = levels(np.asarray(arrays[0], dtype=np.float32), limits[0].low,
                          limits[0].high)
            extent = ([box.x, box.right], [box.bottom, box.y])
        else:
            names = (["q", "k", "v"] if name == "qkv"
                     else [f"{name} {i}" for i in range(len(p.lanes))])
            boxes = [p.panels[k] for k in names]
            grid = _stacked(arrays, limits, boxes, mask if name != "outputs" else None)
            extent = ([boxes[0].x, boxes[0].right], [boxes[0].y + grid.shape[0], boxes[0].y])
        return self.images[name].fill(grid, table, extent)

    def _bars(self, p: Plan) -> None:
        for key, box in p.bars.items():
            mark = self.bar_marks[key]
            table = self.table if key == "weights" else PAIRED_DIVERGING[self.table]
            if mark.image is not self._strip(table):
                mark.image = self._strip(table)
            extent = ([box.x, box.right], [box.bottom, box.y])
            if (list(mark.x), list(mark.y)) != (extent[0], extent[1]):
                mark.x, mark.y = extent

    def _strip(self, table: str) -> W.Image:
        """The colour bar's image of ``table``: every level, low to high (made once)."""
        if table not in self._strips:
            png = palette_png(np.arange(LEVELS, dtype=np.uint8)[None, :], image_palette(table),
                              transparent=(TRANSPARENT,))
            self._strips[table] = W.Image(value=PNG_URL_PREFIX + base64.b64encode(png),
                                          format="url")
        return self._strips[table]

    def _show_texts(self, p: Plan, step: int) -> None:
        items = [t for t in p.texts if t.section <= step] + _bar_texts(p, self._limits, step)
        groups: dict[tuple, list[TextItem]] = {}
        for t in items:
            groups.setdefault((t.size, t.bold, t.anchor, t.color), []).append(t)
        for style in set(self._labels) - set(groups):
            groups[style] = []
        for style, texts in groups.items():
            label = self._labels.get(style)
            if label is None:
                size, bold, anchor, color = style
                label = self._labels[style] = bq.Label(
                    x=[0.0], y=[0.0], text=[""], colors=[color], default_size=size,
                    font_weight="bold" if bold else "normal", align=anchor,
                    scales={"x": self.x_scale, "y": self.y_scale}, preserve_domain=FIXED)
            xs, ys = [t.x for t in texts] or [0.0], [t.y for t in texts] or [0.0]
            text = [t.text for t in texts] or [""]
            if list(label.text) != text or list(label.x) != xs or list(label.y) != ys:
                with label.hold_sync():
                    label.x, label.y, label.text = xs, ys, text

    def _show_arrows(self, p: Plan, step: int) -> None:
        arrows = [a for a in p.arrows if a[3] <= step]
        if not arrows:
            self.arrows.visible = False
            return
        xs, ys, colors = _arrow_lines(arrows)
        if not (np.array_equal(self.arrows.x, xs) and np.array_equal(self.arrows.y, ys)):
            with self.arrows.hold_sync():
                self.arrows.x, self.arrows.y, self.arrows.colors = xs, ys, colors
        self.arrows.visible = True

    def _visible(self, step: int) -> None:
        sections = {key: section for key, _, _, section in COLUMNS}
        for key, img in self.images.items():
            show = sections[key] <= step
            if img.mark.visible != show:
                img.mark.visible = show
        for key, mark in self.bar_marks.items():
            show = sections[key] <= step
            if mark.visible != show:
                mark.visible = show
        marks = [*(i.mark for i in self.images.values()), *self.bar_marks.values(),
                 self.arrows, self.highlight, *self._labels.values()]
        if list(self.figure.marks) != marks:
            self.figure.marks = marks

    def _query(self, query: int) -> None:
        """Outline row ``query`` of X and of every lane's weights (-1: none)."""
        p = self._plan
        if p is None or query < 0 or query >= (self._traced.trace.seq_len if self._traced
                                               else 0):
            self.highlight.visible = False
            return
        boxes = [p.panels["x"], *(p.panels[f"weights {i}"] for i in range(len(p.lanes)))]
        n = self._traced.trace.seq_len
        xs, ys = [], []
        for b in boxes:
            top, bottom = b.y + query * b.h / n, b.y + (query + 1) * b.h / n
            xs.append([b.x, b.right, b.right, b.x, b.x])
            ys.append([top, top, bottom, bottom, top])
        with self.highlight.hold_sync():
            self.highlight.x, self.highlight.y = np.array(xs), np.array(ys)
            self.highlight.colors = ["#ff3d8b"] * len(xs)
            self.highlight.visible = True


def _stage_arrays(tr: AttentionTrace, lanes: Sequence[int]
                  ) -> dict[str, tuple[list[np.ndarray], list[int]]]:
    """Each image's step: all its arrays (every head: they decide the scale) and those drawn."""

    def flat(a: np.ndarray) -> np.ndarray:  # [heads, rows, d] -> [rows, heads * d]
        return a.transpose(1, 0, 2).reshape(a.shape[1], -1)

    heads = list(range(tr.n_heads))
    return {
        "x": ([tr.x], [0]),
        "qkv": ([flat(tr.q), flat(tr.k), flat(tr.v)], [0, 1, 2]),
        "scores": ([tr.scores[h] for h in heads], list(lanes)),
        "weights": ([tr.weights[h] for h in heads], list(lanes)),
        "outputs": ([tr.head_outputs[h] for h in heads], list(lanes)),
        "concat": ([tr.concat, tr.output], [0, 1]),
    }


def _stacked(arrays: list[np.ndarray], limits: list[Limits], boxes: list[Box],
             mask: np.ndarray | None = None) -> np.ndarray:
    """Panels one above the other in one image: a row per screen pixel, a column per cell.

    The image spans from the first box's top to the last one's bottom; each panel's rows are
    repeated over its box, the rows between boxes are transparent.  ``mask`` (True = may
    attend) greys the masked cells of every panel.
    """
    top = boxes[0].y
    height = max(1, round(boxes[-1].bottom - top))
    width = max(a.shape[1] for a in arrays)
    grid = np.full((height, width), TRANSPARENT, dtype=np.uint8)
    for arr, lim, b in zip(arrays, limits, boxes, strict=True):
        lv = levels(np.asarray(arr, dtype=np.float32), lim.low, lim.high)  # [seq, cols]
        if mask is not None and mask.shape == lv.shape and not mask.all():
            lv[~mask] = MASKED
        y0, y1 = round(b.y - top), round(b.bottom - top)
        rows = np.minimum((np.arange(y1 - y0) * lv.shape[0]) // max(y1 - y0, 1),
                          lv.shape[0] - 1)
        cols = np.minimum((np.arange(width) * lv.shape[1]) // width, lv.shape[1] - 1)
        grid[y0:y1] = lv[rows][:, cols]
    return grid


def _bar_texts(p: Plan, limits: dict[str, list[Limits]], step: int) -> list[TextItem]:
    """Each colour bar's ends, and what it stands for when not a plain shared scale."""
    out = []
    size = FONTS[p.width > WIDTH[False]]["small"]
    sections = {key: section for key, _, _, section in COLUMNS}
    for key, box in p.bars.items():
        lims = {"concat": limits.get("concat", [])[:1],
                "output": limits.get("concat", [])[1:]}.get(key, limits.get(key))
        if not lims or sections[key] > step:
            continue
        y = box.bottom + size / 2 + 3
        lim = lims[0]
        if lim.mode == "per head" and len(lims) > 1:
            out.append(TextItem(box.x + box.w / 2, y, "per head", size, sections[key],
                                anchor="middle"))
            continue
        clipped = any(x.clipped for x in lims)
        low, high = _number(lim.low), _number(lim.high)
        mark = "◂" if clipped else ""
        out.append(TextItem(box.x, y, mark + low, size, sections[key]))
        out.append(TextItem(box.right, y, high + ("▸" if clipped else ""), size,
                            sections[key], anchor="end"))
    return out


def _number(v: float) -> str:
    return "0" if v == 0 else f"{v:.2g}"


def _notes_html(traced: Traced, lanes: list[int], limits: dict[str, list[Limits]]) -> str:
    """The lines under the overview (escaped): hidden heads, the input, clipped scales."""
    tr = traced.trace
    lines = []
    if tr.n_heads > len(lanes):
        lines.append(f"Heads {lanes[0]}–{lanes[-1]} of {tr.n_heads} drawn as lanes; the focus "
                     "head picks the group of four shown; every head is in the detailed view.")
    x = traced.stages["x"]
    lines.append(f"X: {x.title} · {x.formula}")
    for name in ("q", "k"):
        st = traced.stages[name]
        if "RoPE" in st.formula or "+ b" in st.formula:
            lines.append(f"{st.title}: {st.formula}")
    clipped = [k for k, lims in limits.items() if any(x.clipped for x in lims)]
    if clipped:
        lines.append(f"{', '.join(clipped)}: {scale_caption(limits[clipped[0]])} (◂ ▸ on the "
                     "bars).")
    lines += list(traced.notes[:2])
    return "<div style='font-size:12px;line-height:1.35'>" + "<br>".join(
        html.escape(line) for line in lines) + "</div>"

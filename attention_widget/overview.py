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

import bqplot as bq
import ipywidgets as W
import numpy as np

from .colors import LEVELS, PAIRED_DIVERGING, Limits, levels, scale_limits
from .controls import readout
from .engine import AttentionTrace
from .marks import (
    DROPPED,
    FIXED,
    MASKED,
    PNG_URL_PREFIX,
    TRANSPARENT,
    ImageMark,
    image_palette,
    png_buffer,
    scale_caption,
)
from .overview_plan import (
    ARROW_COLOR,
    COLUMNS,
    FONTS,
    MAX_LANES,
    WIDTH,
    Box,
    Plan,
    TextItem,
    lane_heads,
    plan,
)
from .png import palette_png
from .sources import Traced
from .stages import SECTIONS, weights_marks

__all__ = ["FONTS", "MAX_LANES", "WIDTH", "Overview", "Plan", "TextItem", "lane_heads", "plan"]
#: The images of the figure: a column's panels each, the source's X with X, sinks apart.
IMAGES = ("x", "latent", "qkv", "scores", "weights", "sinks", "outputs", "concat", "output")
#: The section of each image and colour bar (the stage player reveals them in order).
SECTION_OF = {**{key: section for key, _, _, section in COLUMNS}, "latent": 2, "sinks": 4}


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
        self._buffer_layout = W.Layout()  # of every PNG buffer (see marks.png_buffer)
        self.images = {key: ImageMark(self.x_scale, self.y_scale, self._buffer_layout)
                       for key in IMAGES}
        self._strips = {}  # colour bar images, one per table
        # every mark keeps the scales' fixed ranges: a mark that recomputed them would have
        # the figure redraw all its marks at each image switch
        self.bar_marks = {key: bq.Image(image=png_buffer(self._buffer_layout), x=[0, 1], y=[1, 0],
                                        scales=sc, preserve_domain=FIXED)
                          for key in (*SECTION_OF, )}
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
            layout={"width": "840px", "height": "400px"}, _dom_classes=("aw-figure", "aw-overview"))
        # beside the picture where the page is wide enough (Voila), else under it
        self.notes = readout("aw-overview-notes", layout={"flex": "1 1 300px", "min_width": "300px",
                                                          "margin": "0 0 0 12px"})
        self.box = W.HBox([self.figure, self.notes], layout={"flex_flow": "row wrap"},
                          _dom_classes=("aw-overview-box",))
        self.table = "viridis"
        self._plan: Plan | None = None
        self._traced: Traced | None = None
        self._key: tuple = ()
        self._limits: dict[str, list[Limits]] = {}
        self._front: tuple | None = None  # the arrays before the softmax drawn last
        self._step = len(SECTIONS)
        self._shown: dict[str, list[np.ndarray]] = {}  # the arrays of each image

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
        keys = None if traced.key_tokens is None else list(traced.key_tokens)
        key = (tuple(toks), tr.n_heads, tr.n_kv_heads, tr.d_model, tuple(lanes),
               tuple(titles), projector, self.table, tr.q.shape, tr.k.shape,
               None if keys is None else tuple(keys), _variant_key(tr))
        self._traced, self._step = traced, step
        if key != self._key or self._plan is None:
            self._plan = plan(toks, tr, lanes, titles, projector, keys=keys)
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
            self._shown.pop("sinks", None)
            if not same:
                self._shown.pop("latent", None)
            for name, (arrays, shown) in _stage_arrays(tr, lanes).items():
                if same and name in ("x", "qkv", "scores"):
                    continue
                signed = name != "weights"
                mode = scales.get(name, "shared" if signed else "fixed")
                # the scale of every head, as the detailed view and the exports have it
                every = scale_limits(arrays, mode, signed=signed)
                limits = self._limits[name] = [every[i] for i in shown]
                drawn = [arrays[i] for i in shown]
                self._shown[name] = drawn
                if name in ("concat", "qkv") and len(drawn) in (2, 4):  # one step, one scale
                    first, rest = ("concat", "output") if name == "concat" else ("latent", "qkv")
                    self._shown[first], self._shown[rest] = drawn[:1], drawn[1:]
                    sent += self._fill(first, drawn[:1], limits[:1], p, tr.mask)
                    sent += self._fill(rest, drawn[1:], limits[1:], p, tr.mask)
                    continue
                dropped = None
                if tr.kept is not None and name in ("scores", "weights"):
                    dropped = [tr.mask & ~tr.kept[h] for h in shown]  # allowed, not kept
                sent += self._fill(name, drawn, limits, p, tr.mask, dropped)
                if name == "weights" and tr.sink_weights is not None:  # on the weights' scale
                    sinks = self._shown["sinks"] = [tr.sink_weights[h][:, None] for h in shown]
                    sent += self._fill("sinks", sinks, limits, p, tr.mask)
            for img in self.images.values():
                img.show_pending()
            self._bars(p)
            self._show_texts(p, step)
            self._show_arrows(p, step)
            self._visible(step)
            self._query(query)
        self.notes.value = _notes_html(traced, lanes, self._limits)
        return sent

    def displayed(self, name: str) -> list[np.ndarray]:
        """The arrays image ``name`` (of :data:`IMAGES`) shows, one per panel, as drawn last."""
        return list(self._shown.get(name, []))

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
              mask: np.ndarray, dropped: list[np.ndarray] | None = None) -> int:
        """Colour one column's panels into its image; returns the bytes sent.

        ``dropped`` (one bool array per panel) marks keys dropped by top-k.
        """
        table = self.table if name in ("weights", "sinks") else PAIRED_DIVERGING[self.table]
        if name in ("latent", "concat", "output") or (name == "x" and len(arrays) == 1):
            box = p.panels[name]
            grid = levels(arrays[0], limits[0].low, limits[0].high)
            extent = ([box.x, box.right], [box.bottom, box.y])
        else:
            names = {"qkv": ["q", "k", "v"], "x": ["x", "x_kv"]}.get(name) or [
                f"{'sink' if name == 'sinks' else name} {i}" for i in range(len(p.lanes))]
            boxes = [p.panels[k] for k in names]
            masked = mask if name in ("scores", "weights") else None
            grid = _stacked(arrays, limits, boxes, masked, dropped)
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
            self._strips[table] = png_buffer(self._buffer_layout,
                                             PNG_URL_PREFIX + base64.b64encode(png))
        return self._strips[table]

    def _show_texts(self, p: Plan, step: int) -> None:
        items = [t for t in p.texts if t.section <= step] + _bar_texts(p, self._limits, step)
        groups: dict[tuple, list[TextItem]] = {}
        for t in items:
            groups.setdefault((t.size, t.bold, t.anchor, t.color, t.rotate), []).append(t)
        for style in set(self._labels) - set(groups):
            groups[style] = []
        for style, texts in groups.items():
            label = self._labels.get(style)
            if label is None:
                size, bold, anchor, color, rotate = style
                label = self._labels[style] = bq.Label(
                    x=[0.0], y=[0.0], text=[""], colors=[color], default_size=size,
                    font_weight="bold" if bold else "normal", align=anchor, rotate_angle=rotate,
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
        p = self._plan
        drawn = {"x", "qkv", "scores", "weights", "outputs", "concat", "output",
                 *(("latent",) if "latent" in p.panels else ()),
                 *(("sinks",) if "sink 0" in p.panels else ())}
        for key, img in self.images.items():
            show = key in drawn and SECTION_OF[key] <= step
            if img.mark.visible != show:
                img.mark.visible = show
        for key, mark in self.bar_marks.items():
            show = key in p.bars and SECTION_OF[key] <= step
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
    x = [tr.x] if tr.x_kv is None else [tr.x, tr.x_kv]  # the source's X with the text's
    # the latent is drawn on the scale of Q, K and V (as in the detailed view)
    qkv = [flat(tr.q), flat(tr.k), flat(tr.v)]
    qkv = qkv if tr.latent is None else [tr.latent, *qkv]
    return {
        "x": (x, list(range(len(x)))),
        "qkv": (qkv, list(range(len(qkv)))),
        "scores": ([tr.scores[h] for h in heads], list(lanes)),
        "weights": ([tr.weights[h] for h in heads], list(lanes)),
        "outputs": ([tr.head_outputs[h] for h in heads], list(lanes)),
        "concat": ([tr.concat, tr.output], [0, 1]),
    }


def _variant_key(tr: AttentionTrace) -> tuple:
    """What of ``tr``'s variants changes the plan (its columns, formulas and panels)."""
    return (tr.rope, tr.alibi, tr.softcap, tr.top_k, tr.sinks is not None,
            tr.sink_weights is not None, None if tr.latent is None else tr.latent.shape,
            None if tr.x_kv is None else tr.x_kv.shape, tr.weights.shape)


def _stacked(arrays: list[np.ndarray], limits: list[Limits], boxes: list[Box],
             mask: np.ndarray | None = None, dropped: list[np.ndarray] | None = None
             ) -> np.ndarray:
    """Panels one above the other in one image: a row per screen pixel, a column per cell.

    The image spans from the first box's top to the last one's bottom; each panel's rows are
    repeated over its box, the rows between boxes are transparent.  ``mask`` (True = may
    attend) greys the masked cells of every panel; ``dropped`` (one per panel, True = dropped
    by top-k) shades those cells apart.
    """
    top = boxes[0].y
    height = max(1, round(boxes[-1].bottom - top))
    width = max(a.shape[1] for a in arrays)
    grid = np.full((height, width), TRANSPARENT, dtype=np.uint8)
    grid_rows: list[Box] = []  # the panels done
    for arr, lim, b in zip(arrays, limits, boxes, strict=True):
        lv = levels(arr, lim.low, lim.high)  # [seq, cols]
        if mask is not None and mask.shape == lv.shape and not mask.all():
            lv[~mask] = MASKED
        if dropped is not None:
            lv[dropped[len(grid_rows)]] = DROPPED
        grid_rows.append(b)
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
    sections = SECTION_OF
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
    stages = traced.shown_stages
    for name in ("latent", "q", "k", "v", "scores", "weights"):
        st = stages[name]
        if name == "latent" and tr.latent is None:
            continue
        if (st.formula != traced.stages[name].formula or "RoPE" in st.formula
                or "+ b" in st.formula or name == "latent"):
            lines.append(f"{st.title}: {st.formula}")
    if tr.kept is not None and (marks := weights_marks(tr)):
        lines.append(marks)
    if tr.sink_weights is not None:
        lines.append("The column apart, right of each lane's weights: what each query gave "
                     "the head's sink (rows of the weights sum to 1 minus it).")
    clipped = [k for k, lims in limits.items() if any(x.clipped for x in lims)]
    if clipped:
        lines.append(f"{', '.join(clipped)}: {scale_caption(limits[clipped[0]])} (◂ ▸ on the "
                     "bars).")
    lines += list(traced.notes[:2])
    return "<div style='font-size:12px;line-height:1.35'>" + "<br>".join(
        html.escape(line) for line in lines) + "</div>"

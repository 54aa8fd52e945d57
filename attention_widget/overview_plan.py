"""The overview's geometry: where every panel, text and arrow goes, in pixels (pure).

:func:`plan` reads only a trace's shapes and the variants it was computed with, so it is
testable without a browser; :class:`~attention_widget.overview.Overview` draws a plan with the
trace's numbers.  A variant is drawn where it acts:

* latent attention: a column ``c_kv`` between X and Q K V, from which K and V are rebuilt;
* cross-attention: the source text's X under the text's, K and V taken from it, and the lanes'
  columns labelled with the source tokens;
* RoPE, ALiBi, the soft-cap, sinks and top-k: the columns' formulas
  (:func:`~attention_widget.stages.column_formula`); sinks also as a column apart from the
  keys, right of each lane's weights, under the label "sink".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .colors import K_COLOR, LATENT_COLOR, Q_COLOR, V_COLOR
from .engine import AttentionTrace
from .export.layout import text_width
from .marks import fit
from .stages import column_formula

__all__ = ["COLUMNS", "FONTS", "MAX_LANES", "WIDTH", "Box", "Plan", "TextItem", "columns",
           "lane_heads", "plan"]

ARROW_COLOR, TEXT_COLOR, TITLE_COLOR = "#777777", "#333333", "#222222"
MAX_LANES = 4  # heads drawn as lanes at once
ARROW_PX = 26  # room between two columns, for the arrow
BAR_PX = 8  # colour bar thickness
MAX_CELL_PX = 16  # largest square cell of the lanes
MIN_ROW_PX = 4  # smallest row of a lane whose keys are another sequence's, while the height allows
MAX_ROW_PX = {False: 14, True: 20}  # largest row of X, concat and output (room for a label)
FEATURE_PX = 72  # width of a feature panel (X, Q, K, V, concat, output)
LATENT_PX = 40  # width of the latent c_kv
SINK_GAP = 8  # room between a lane's weights and its sink column
SOURCE_GAP = 10  # room between the text's X and the source's (cross-attention)
MAX_KEY_LABEL_PX = 64  # height of the band of (vertical) key labels under the lanes
EDGE_PX = 16  # room kept at the right edge (the last colour bar's number)
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
_LATENT_COLUMN = ("latent", "c_kv", "X W_DKV", 2)


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
    """A line of text: ``y`` is its vertical centre; ``anchor`` start, middle or end.

    ``rotate`` -90 turns it to run upwards (key labels under the lanes): then ``(x, y)`` is
    its anchor point, and with anchor ``"end"`` the text hangs below it.
    """

    x: float
    y: float
    text: str
    size: int
    section: int
    bold: bool = False
    anchor: str = "start"
    color: str = TEXT_COLOR
    rotate: float = 0.0

    def box(self) -> Box:
        """The room it takes, estimated (:func:`~attention_widget.export.layout.text_width`)."""
        w = text_width(self.text, self.size) * (1.08 if self.bold else 1.0)
        if self.rotate:  # vertical, hanging below (x, y)
            return Box(self.x - self.size * 0.6, self.y, self.size * 1.2, w)
        x = {"start": self.x, "middle": self.x - w / 2, "end": self.x - w}[self.anchor]
        return Box(x, self.y - self.size * 0.6, w, self.size * 1.2)


@dataclass
class Plan:
    """Where everything of the overview goes, in pixels.

    Attributes
    ----------
    width, height : int
    panels : dict of str to Box
        ``x``, ``q``, ``k``, ``v``, ``concat``, ``output`` (and ``latent``, ``x_kv`` where the
        trace has them); per lane ``scores 0``, ``weights 0``, ``outputs 0`` ... (the lane's
        index, not the head's), and ``sink 0`` ... with sinks.
    lanes : list of int
        The heads drawn as lanes, top to bottom.
    cell : float
        Pixel side of a lane's square cell: whole pixels, or below 1 for long texts.
    key_cell : float
        Pixel width of a key column of the scores and weights: ``cell``, or less where the keys
        outnumber the width (cross-attention over a long source).
    bars : dict of str to Box
        Each column's colour bar.
    texts : list of TextItem
    arrows : list of (xs, ys, colour, section)
        Polylines, each ending in an arrow head.
    columns : tuple
        The columns drawn (:func:`columns`).
    """

    width: int
    height: int
    panels: dict[str, Box] = field(default_factory=dict)
    lanes: list[int] = field(default_factory=list)
    cell: float = 1.0
    key_cell: float = 1.0
    bars: dict[str, Box] = field(default_factory=dict)
    texts: list[TextItem] = field(default_factory=list)
    arrows: list[tuple[list[float], list[float], str, int]] = field(default_factory=list)
    columns: tuple = COLUMNS


def lane_heads(n_heads: int, head: int) -> list[int]:
    """The heads drawn as lanes: all up to :data:`MAX_LANES`, else the focus head's group."""
    if n_heads <= MAX_LANES:
        return list(range(n_heads))
    start = min(head - head % MAX_LANES, n_heads - MAX_LANES)
    return list(range(start, start + MAX_LANES))


def columns(trace: AttentionTrace) -> tuple:
    """The columns of ``trace``'s picture, with the short formulas of its variants."""
    cols = list(COLUMNS)
    if trace.latent is not None:
        cols.insert(1, _LATENT_COLUMN)
    if trace.x_kv is not None:
        cols[0] = ("x", "1 · X, source", "a row per token", 1)
    return tuple((key, title, column_formula(key, trace) or formula, section)
                 for key, title, formula, section in cols)


def _labels(tokens: Sequence[str]) -> list[str]:
    return [t.replace("\n", "⏎").replace("\t", "⇥") for t in tokens]


@dataclass(frozen=True)
class _Room:
    """What the plan's parts share: fonts, rows, keys, the header and the key band."""

    f: dict
    projector: bool
    n: int  # query rows
    n_keys: int  # key columns of the scores and weights
    sink: bool
    keys: list[str] | None  # key labels drawn under the lanes (None: the rows' tokens)
    header: float
    band: float  # height of the key labels' band under the lanes

    def panel_widths(self, cell: float, trace: AttentionTrace,
                     key_cell: float | None = None) -> dict[str, float]:
        """Each column's panel width at lane cell ``cell`` (key columns ``key_cell`` wide)."""
        keys_w = self.n_keys * (cell if key_cell is None else key_cell)
        return {"x": FEATURE_PX, "latent": LATENT_PX, "qkv": FEATURE_PX, "scores": keys_w,
                "weights": keys_w + (SINK_GAP + cell if self.sink else 0.0),
                "outputs": FEATURE_PX * 0.6, "concat": FEATURE_PX, "output": FEATURE_PX}


def plan(tokens: Sequence[str], trace: AttentionTrace, lanes: Sequence[int],
         titles: Sequence[str], projector: bool = False,
         keys: Sequence[str] | None = None) -> Plan:
    """The overview's geometry for ``trace`` with heads ``lanes`` drawn large.

    Parameters
    ----------
    tokens : sequence of str
        One per row (query).
    trace : AttentionTrace
        Only its shapes and variants are read.
    lanes : sequence of int
        Heads drawn as lanes (:func:`lane_heads`).
    titles : sequence of str
        Every head's title (``"head 2 · previous token 0.98"``).
    projector : bool
        Large text (token labels and titles >= 14 px) on a wider picture.
    keys : sequence of str, optional
        One label per key column where the keys are not the rows' tokens (cross-attention's
        source, a model's extra entries): drawn under the lanes.
    """
    f = FONTS[projector]
    sink = trace.sink_weights is not None
    band = 0.0
    if keys is not None:
        band = min(MAX_KEY_LABEL_PX, max(text_width(t, f["small"]) for t in _labels(keys)) + 6)
    elif sink:
        band = f["small"] + 6
    room = _Room(f, projector, trace.seq_len, trace.weights.shape[-1], sink,
                 None if keys is None else _labels(keys),
                 1.2 * (f["title"] + f["text"] + f["small"]) + 18, band)
    cols = columns(trace)
    footer = BAR_PX + f["small"] + 10  # colour bar and its numbers
    body_h = MAX_HEIGHT[projector] - room.header - footer - band
    lane_title, lane_gap = f["text"] + 4, 8
    labels_w = min(max(text_width(t, f["token"]) for t in _labels(tokens)) + 6, 9 * f["token"])
    need = {key: max(text_width(title, f["title"]) * 1.08, text_width(formula, f["text"]))
            - ARROW_PX + 6 for key, title, formula, _ in cols}

    def widths(cell: float, key_cell: float | None = None) -> dict[str, float]:
        panel = room.panel_widths(cell, trace, key_cell)
        return {key: max(panel[key], need[key]) for key, *_ in cols}

    # the lanes' square cells: as large as the height and the width allow
    cell = min(MAX_CELL_PX, (body_h / len(lanes) - lane_title - lane_gap) / room.n)
    # whole pixels while a cell has one; below that (long texts) a lane shows one pixel row
    # per screen row, the rows between them left out (the detailed view has every one)
    cell = float(int(cell)) if cell >= 1 else max(cell, 0.05)
    cell, key_cell = _lane_cells(room, cell, labels_w + (len(cols) - 1) * ARROW_PX, widths,
                                 WIDTH[projector] - EDGE_PX)
    lane_h = lane_title + room.n * cell + lane_gap
    body_h = max(len(lanes) * lane_h, 3 * (f["text"] + 6 + min(room.n, 40)) + 12)
    p = Plan(WIDTH[projector], int(room.header + body_h + band + footer), lanes=list(lanes),
             cell=cell, key_cell=key_cell, columns=cols)
    panel_w = room.panel_widths(cell, trace, key_cell)
    x, lefts = labels_w, {}
    for key, col_w in widths(cell, key_cell).items():
        lefts[key] = (x + (col_w - panel_w[key]) / 2, col_w, x)
        x += col_w + ARROW_PX
    rows = _feature_panels(p, trace, room, lefts, body_h)
    for i, _h in enumerate(lanes):
        ly = room.header + i * lane_h + lane_title
        for key in ("scores", "weights", "outputs"):
            w = room.n_keys * key_cell if key == "weights" else panel_w[key]
            p.panels[f"{key} {i}"] = Box(lefts[key][0], ly, w, room.n * cell)
        if sink:
            p.panels[f"sink {i}"] = Box(lefts["weights"][0] + room.n_keys * key_cell + SINK_GAP,
                                        ly, cell, room.n * cell)
    _texts(p, tokens, trace, titles, lefts, rows, room)
    _key_labels(p, room, room.header + len(lanes) * lane_h)
    _arrows(p, trace, lanes)
    bar_y = room.header + body_h + band + 4
    for key, *_ in cols:
        left, col_w, _ = lefts[key]
        width = max(panel_w[key], min(col_w, 90))
        p.bars[key] = Box(left + panel_w[key] / 2 - width / 2, bar_y, width, BAR_PX)
    return p


def _lane_cells(room: _Room, cell: float, fixed_w: float,
                widths: Callable[[float], dict[str, float]], width: float
                ) -> tuple[float, float]:
    """The lanes' cell (a row's height) and key column width, from the cell the height allows.

    ``fixed_w`` is the width of the token labels and the arrows, ``widths(cell)`` each
    column's at ``cell``, ``width`` the picture's room.  Cells stay square, shrinking a pixel
    at a time while the picture is too wide; keys of another sequence (a source) keep the rows
    at least :data:`MIN_ROW_PX` high, and beyond that the key columns narrow instead.
    """
    floor = 1 if room.keys is None else min(cell, MIN_ROW_PX)
    while cell > floor and fixed_w + sum(widths(cell).values()) > width:
        cell -= 1
    other = fixed_w + sum(w for key, w in widths(cell).items() if key not in ("scores", "weights"))
    keys_room = (width - other - (SINK_GAP + cell if room.sink else 0.0)) / 2
    if room.n_keys * cell > keys_room:  # more keys than the width holds: narrower columns
        return cell, max(keys_room, 1.0) / room.n_keys
    return cell, cell


def _feature_panels(p: Plan, trace: AttentionTrace, room: _Room, lefts: dict,
                    body_h: float) -> dict[str, float]:
    """X (and the source's X), the latent, Q, K, V, concat and output; their row heights."""
    f, n, top = room.f, room.n, room.header
    mid = top + body_h / 2
    max_row = MAX_ROW_PX[room.projector]
    n_src = 0 if trace.x_kv is None else trace.x_kv.shape[0]
    # X, concat and output: bands of the tokens' rows, in the middle of the body; the
    # source's X under the text's.  A source longer than the text is given the text's share
    # of the height at most: its rows get narrower, the text's keep their height.
    room_h = body_h - 4 - (SOURCE_GAP + f["text"] + 4) * bool(n_src)
    row = min(max_row, room_h / (n + min(n_src, n)))
    src_row = min(max_row, (room_h - n * row) / n_src) if n_src else row
    x_top = mid - (n * row + n_src * src_row) / 2 - (SOURCE_GAP + f["text"] + 4) * bool(n_src) / 2
    p.panels["x"] = Box(lefts["x"][0], x_top, FEATURE_PX, n * row)
    if n_src:
        p.panels["x_kv"] = Box(lefts["x"][0], x_top + n * row + SOURCE_GAP + f["text"] + 4,
                               FEATURE_PX, n_src * src_row)
    for key in ("concat", "output"):
        p.panels[key] = Box(lefts[key][0], mid - n * row / 2, FEATURE_PX, n * row)
    if trace.latent is not None:
        p.panels["latent"] = Box(lefts["latent"][0], mid - n * row / 2, LATENT_PX, n * row)
    # Q, K, V: one above the other, each under its own title (K and V: a row per key)
    n_k = trace.k.shape[1]
    qkv_h = body_h - 3 * (f["text"] + 4) - 2 * 6
    q_row = min(max_row, qkv_h / (n + 2 * min(n_k, n)))  # (many keys: as for the source's X)
    k_row = min(max_row, (qkv_h - n * q_row) / (2 * n_k))
    y = mid - (3 * (f["text"] + 4) + n * q_row + 2 * n_k * k_row + 12) / 2
    for key, rows, height in (("q", n, q_row), ("k", n_k, k_row), ("v", n_k, k_row)):
        y += f["text"] + 4
        p.panels[key] = Box(lefts["qkv"][0], y, FEATURE_PX, rows * height)
        y += rows * height + 6
    return {"x": row, "x_kv": src_row}


def _token_labels(p: Plan, box: Box, tokens: Sequence[str], row: float, size: int) -> None:
    """Labels left of ``box``'s rows, every k-th where rows are close."""
    step = max(1, math.ceil(1.25 * size / row))
    labels = _labels(tokens)
    for i in range(0, len(tokens), step):
        p.texts.append(TextItem(box.x - 4, box.y + (i + 0.5) * row,
                                fit(labels[i], size, box.x - 6), size, 1, anchor="end"))


def _texts(p: Plan, tokens: Sequence[str], trace: AttentionTrace, titles: Sequence[str],
           lefts: dict, rows: dict[str, float], room: _Room) -> None:
    """The column headers, the token labels, Q/K/V titles and the lanes' titles."""
    f = room.f
    n, h, kv, nk = trace.seq_len, trace.n_heads, trace.n_kv_heads, room.n_keys
    dq, dv = trace.q.shape[2], trace.v.shape[2]
    qkv = (f"heads × {n} × {dq}" if (nk, dv) == (n, dq) else
           f"heads × {n}|{nk} × {dq}|{dv}")  # queries|keys × d_head|d_v
    shapes = {"x": f"{n} × {trace.d_model}", "qkv": qkv,
              "scores": f"{h} × {n} × {nk}", "weights": f"{h} × {n} × {nk}",
              "outputs": f"{h} × {n} × {dv}",
              "concat": f"{n} × {trace.concat.shape[1]}", "output": f"{n} × {trace.d_model}"}
    if trace.latent is not None:
        shapes["latent"] = f"{n} × {trace.latent.shape[1]}"
    if trace.x_kv is not None:
        shapes["x"] = f"{n} + {trace.x_kv.shape[0]} × {trace.d_model}"
    for key, title, formula, section in p.columns:
        _, col_w, start = lefts[key]
        cx = start + col_w / 2
        y = 4 + f["title"] / 2 + 2
        color = LATENT_COLOR if key == "latent" else TITLE_COLOR
        p.texts.append(TextItem(cx, y, title, f["title"], section, True, "middle", color))
        y += f["title"] / 2 + f["text"] / 2 + 4
        p.texts.append(TextItem(cx, y, formula, f["text"], section, anchor="middle"))
        y += f["text"] / 2 + f["small"] / 2 + 4
        p.texts.append(TextItem(cx, y, shapes[key], f["small"], section, anchor="middle"))
    _token_labels(p, p.panels["x"], tokens, rows["x"], f["token"])
    if "x_kv" in p.panels:
        b = p.panels["x_kv"]
        _token_labels(p, b, room.keys or [], rows["x_kv"], f["token"])
        p.texts.append(TextItem(b.x, b.y - f["text"] / 2 - 2, "source X", f["text"], 1, True))
    rope = " · RoPE" if trace.rope else ""
    qkv_room = lefts["qkv"][1] + ARROW_PX - 8 - (lefts["qkv"][0] - lefts["qkv"][2])
    # Q, K and V named alike: the most detailed of these that fits all three
    names = next((n for n in (
        (f"Q{rope} · {h} heads", f"K{rope} · {kv} kv heads", f"V · {kv} kv heads"),
        (f"Q{rope} · {h} heads", f"K{rope} · {kv} heads", f"V · {kv} heads"),
        (f"Q{rope}", f"K{rope}", "V"),
    ) if all(text_width(t, f["text"]) * 1.08 <= qkv_room for t in n)), ("Q", "K", "V"))
    for key, text, color in zip("qkv", names, (Q_COLOR, K_COLOR, V_COLOR), strict=True):
        b = p.panels[key]
        p.texts.append(TextItem(b.x, b.y - f["text"] / 2 - 2, text, f["text"], 2, True,
                                color=color))
    for i, head in enumerate(p.lanes):
        s, o = p.panels[f"scores {i}"], p.panels[f"outputs {i}"]
        text = fit(titles[head], f["text"], o.right - s.x, bold=True)
        p.texts.append(TextItem(s.x, s.y - f["text"] / 2 - 2, text, f["text"], 3, True))


def _key_labels(p: Plan, room: _Room, top: float) -> None:
    """Under the last lane: each key column's label (vertical), and "sink" under the sinks."""
    last = len(p.lanes) - 1
    size = room.f["small"]
    if room.keys is not None:
        step = max(1, math.ceil((size + 1) / p.key_cell))
        for key, section in (("scores", 3), ("weights", 4)):
            b = p.panels[f"{key} {last}"]
            for j in range(0, room.n_keys, step):
                p.texts.append(TextItem(b.x + (j + 0.5) * p.key_cell + size * 0.35, top - 4,
                                        fit(room.keys[j], size, room.band - 4), size, section,
                                        anchor="end", rotate=-90.0))
    if room.sink:
        b = p.panels[f"sink {last}"]
        p.texts.append(TextItem(b.x + b.w / 2, top - 4 + size / 2 + 2, "sink", size, 4,
                                anchor="middle"))


def _arrows(p: Plan, trace: AttentionTrace, lanes: Sequence[int]) -> None:
    """X to Q, K, V (through the latent, or from the source); Q, K to scores, V to outputs."""
    P = p.panels
    x = P["x"]
    kv_from = P.get("latent", P.get("x_kv", x))
    if "latent" in P:
        lat = P["latent"]
        p.arrows.append(([x.right + 3, lat.x - 3], [lat.y + lat.h / 2] * 2, LATENT_COLOR, 2))
    for key, color in (("q", Q_COLOR), ("k", K_COLOR), ("v", V_COLOR)):
        b, start = P[key], x if key == "q" else kv_from
        p.arrows.append(([start.right + 3, b.x - 3], [start.y + start.h / 2, b.y + b.h / 2],
                         color, 2))
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
        after = P[f"sink {i}"] if f"sink {i}" in P else w
        p.arrows.append(([after.right + 3, o.x - 3], [cy - 4, cy - 4], ARROW_COLOR, 5))
        c = P["concat"]
        p.arrows.append(([o.right + 3, c.x - 3], [cy, c.y + c.h / 2], ARROW_COLOR, 6))
    c, out = P["concat"], P["output"]
    p.arrows.append(([c.right + 3, out.x - 3], [c.y + c.h / 2] * 2, ARROW_COLOR, 6))

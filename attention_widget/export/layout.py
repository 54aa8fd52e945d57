"""The diagram's layout, shared by every format: texts and heatmaps placed in pixels.

:func:`build` checks the arguments of an export and turns a trace into a :class:`Layout`, a
tree of :class:`Group`, :class:`Text` and :class:`Heat` items in layout pixels (y down).
:mod:`.svg` writes it as SVG, :mod:`.mpl` draws it with matplotlib (PNG, PDF).

Every colour is decided here, through :mod:`attention_widget.colors`, on the scales of the
widget's figures, by the one rule both use (:func:`~attention_widget.colors.scale_limits`):
by default attention weights on the fixed scale 0..1 and every other stage on a scale
symmetric around 0 shared by its step of the diagram (X; Q, K, V; scores; head outputs;
concat and output) and by all heads of the trace; or the scale chosen on screen (``scales``:
per head, or robust with clipped ends, which the colour bar then says).  So a value has the
same colour on screen and in every file, whichever stages and heads are exported.  Masked
cells are :data:`~attention_widget.colors.MASK_RGB` grey; the renderers draw
:data:`~attention_widget.colors.MASK_HATCH_RGB` lines across them.  Keys dropped by top-k are
:data:`~attention_widget.colors.DROPPED_RGB`; a trace with sinks gets a sink column beside each
head's weights, apart from the keys; cross-attention's key axis is the source's tokens
(``key_tokens``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..colors import (
    DIVERGING,
    DROPPED_RGB,
    MASK_RGB,
    PAIRED_DIVERGING,
    SEQUENTIAL,
    as_drawn,
    check_colormap,
    check_scale_mode,
    scale_limits,
    to_rgb,
)
from ..engine import AttentionTrace
from ..long import LongTrace
from ..stages import SECTIONS, STAGE_NAMES, STAGES, stage, summary, variant_stages

__all__ = [
    "Group",
    "Heat",
    "Layout",
    "Scale",
    "Text",
    "build",
    "check_head_selection",
    "check_stages",
    "check_tokens",
    "check_trace",
    "colorbar",
    "stage_scale",
    "text_width",
]

MAX_WIDTH = 1400  # px; panels wrap onto a new line beyond this
BAR_W = 90  # px reserved for a stage's colour bar
GAP = 14  # px between panels
LEFT = 16  # px margin left of the titles


# --------------------------------------------------------------------------------------------
# the items of a layout
# --------------------------------------------------------------------------------------------
@dataclass
class Text:
    """A line of text; ``y`` is its baseline."""

    x: float
    y: float
    text: str
    size: float
    anchor: str = "start"  # start | middle | end
    rotate: float = 0.0  # degrees, SVG sense (negative = counter-clockwise)
    weight: str = "normal"
    cls: str = ""
    full: str | None = None  # untruncated text, shown as a tooltip


@dataclass
class Heat:
    """A heatmap: one ``cw`` x ``ch`` pixel cell per entry of ``rgb``.

    ``rgb`` holds every cell's final colour, :data:`~attention_widget.colors.MASK_RGB` on the
    masked ones; ``masked`` says which cells a renderer hatches.
    """

    x: float
    y: float
    cw: int  # cell width, px
    ch: int  # cell height, px
    rgb: np.ndarray  # (rows, cols, 3) uint8
    masked: np.ndarray | None = None  # (rows, cols) bool, True = masked
    tips: list[str] | None = None  # one tooltip per cell, row-major
    cls: str = "aw-cells"
    raster: bool = False  # drawn as one embedded image instead of one <rect> per cell

    @property
    def width(self) -> int:
        """Width in pixels."""
        return self.rgb.shape[1] * self.cw

    @property
    def height(self) -> int:
        """Height in pixels."""
        return self.rgb.shape[0] * self.ch


@dataclass
class Group:
    """Items drawn together; ``cls`` and ``attrs`` become the SVG group's attributes."""

    cls: str
    attrs: dict[str, str] = field(default_factory=dict)
    items: list[Any] = field(default_factory=list)


@dataclass
class Layout:
    """The whole diagram: its size in pixels, its items and its title."""

    width: int
    height: int
    root: Group
    title: str


@dataclass(frozen=True)
class Scale:
    """A stage's colour scale: table ``table`` over ``low .. high``."""

    table: str
    low: float
    high: float
    fixed: bool  # the weights' fixed 0..1 (else symmetric around 0)
    mode: str = "shared"  # the rule (colors.SCALE_MODES, WEIGHT_SCALE_MODES)
    clipped: bool = False  # values beyond the ends, drawn in the end colours


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def check_trace(trace: object, name: str = "trace") -> AttentionTrace | LongTrace:
    """``trace`` if it is an AttentionTrace or a LongTrace; TypeError naming ``name`` otherwise."""
    if not isinstance(trace, (AttentionTrace, LongTrace)):
        raise TypeError(
            f"{name} must be an AttentionTrace (from multi_head_attention or w.trace) or a "
            f"LongTrace, got {type(trace).__name__}"
        )
    return trace


def check_tokens(tokens: object, seq_len: int, name: str = "tokens") -> list[str]:
    """One label per token (``"0", "1", ...`` when None)."""
    if tokens is None:
        return [str(i) for i in range(seq_len)]
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(f"{name} must be a list of str, got {type(tokens).__name__}")
    tokens = list(tokens)
    bad = [t for t in tokens if not isinstance(t, str)]
    if bad:
        raise TypeError(f"{name} must be a list of str, got an element {bad[0]!r}")
    if len(tokens) != seq_len:
        raise ValueError(
            f"{name} has {len(tokens)} entries but the trace has seq_len={seq_len}: "
            "give one token per row of x"
        )
    return tokens


def check_stages(stages: object, name: str = "stages") -> list[str]:
    """The chosen stage names (all when None), in the order of the computation."""
    if stages is None:
        return list(STAGE_NAMES)
    if isinstance(stages, str):
        stages = [stages]
    if not isinstance(stages, (Sequence, set, frozenset)):
        raise TypeError(f"{name} must be a list of stage names, got {type(stages).__name__}")
    unknown = [s for s in stages if s not in STAGE_NAMES]
    if unknown:
        raise ValueError(
            f"{name} contains unknown stage {unknown[0]!r}; the stages are {STAGE_NAMES}")
    if not stages:
        raise ValueError(f"{name} is empty; choose at least one of {STAGE_NAMES}")
    return [s for s in STAGE_NAMES if s in stages]


def check_head_selection(heads: object, n_heads: int) -> list[int]:
    """The chosen query heads (all when None), sorted, each once."""
    if heads is None:
        return list(range(n_heads))
    if isinstance(heads, numbers.Integral) and not isinstance(heads, bool):
        heads = [heads]
    if isinstance(heads, (str, bytes)) or not isinstance(heads, (Sequence, np.ndarray, set)):
        raise TypeError(f"heads must be a list of head indices, got {type(heads).__name__}")
    out: set[int] = set()
    for h in heads:
        if isinstance(h, bool) or not isinstance(h, numbers.Integral):
            raise TypeError(f"heads must hold integers, got {h!r} ({type(h).__name__})")
        if not 0 <= int(h) < n_heads:
            raise ValueError(
                f"heads contains {int(h)} but the trace has n_heads={n_heads}: "
                f"use indices 0..{n_heads - 1}"
            )
        out.add(int(h))
    if not out:
        raise ValueError(f"heads is empty; choose at least one of 0..{n_heads - 1}")
    return sorted(out)


def check_colormaps(colormap: object, diverging: object) -> str:
    """Check both tables; return the diverging one (paired with ``colormap`` when None)."""
    colormap = check_colormap(colormap, SEQUENTIAL, "colormap")
    if diverging is None:
        return PAIRED_DIVERGING[colormap]
    return check_colormap(diverging, DIVERGING, "diverging")


# --------------------------------------------------------------------------------------------
# colour scales and panels
# --------------------------------------------------------------------------------------------
_SECTION_STAGES = {name: section.stages for section in SECTIONS for name in section.stages}


#: The key of each stage in the widget's ``scales`` (one choice per step of the diagram).
SCALE_KEYS = {"x": "x", "latent": "qkv", "q": "qkv", "k": "qkv", "v": "qkv", "scores": "scores",
              "weights": "weights", "outputs": "outputs", "concat": "concat", "output": "concat"}


def check_scales(scales: object) -> dict[str, str]:
    """The colour scale choices, by key of :data:`SCALE_KEYS` (ValueError for a bad one)."""
    if scales is None:
        return {}
    if not isinstance(scales, Mapping):
        raise TypeError(f"scales must be a dict of step to scale, got {type(scales).__name__}")
    keys = set(SCALE_KEYS.values())
    for key, mode in scales.items():
        if key not in keys:
            raise ValueError(f"scales has an unknown step {key!r}; the steps are {sorted(keys)}")
        check_scale_mode(mode, key != "weights", f"scales[{key!r}]")
    return dict(scales)


def stage_scale(trace: AttentionTrace, name: str, colormap: str, diverging: str,
                scales: Mapping[str, str] | None = None, head: int | None = None) -> Scale:
    """The colour scale of stage ``name`` (of head ``head``'s panel): the widget's for its step.

    The rule is :func:`attention_widget.colors.scale_limits` over the arrays the widget's
    figure of the step shows (all heads, masked scores included, as drawn), with the
    step's choice in ``scales`` (default: shared; weights 0..1).  Per head, the scores,
    weights and head outputs of each head get their own end, and X, Q, K, V, concat and
    output each theirs (as the widget's panels of them).
    """
    st = stage(name)
    key = SCALE_KEYS[name]
    mode = (scales or {}).get(key, "shared" if st.signed else "fixed")
    table = diverging if st.signed else colormap
    # as the screen holds the arrays (float32): the same peak, the same rounding
    present = [s for s in _SECTION_STAGES[name] if stage(s).present(trace)]
    step = [as_drawn(getattr(trace, stage(s).attr)) for s in present]
    arrays = [a[i] for a in step for i in range(a.shape[0])] if (
        mode == "per head" and name in ("scores", "weights", "outputs")) else step
    limits = scale_limits(arrays, mode, signed=st.signed)
    if mode == "per head" and name in ("scores", "weights", "outputs"):
        lim = limits[head or 0]
    else:
        lim = limits[present.index(name)] if mode == "per head" else limits[0]
    return Scale(table, lim.low, lim.high, fixed=not st.signed, mode=mode,
                 clipped=any(x.clipped for x in limits))


def _stage_panels(trace: AttentionTrace, name: str, heads: list[int]
                 ) -> list[tuple[str, str, np.ndarray, np.ndarray | None]]:
    """``(label, head, (rows, cols) array, masked or None)`` for each panel of a stage.

    K and V show the key/value heads the chosen query heads read; only scores and weights
    carry the mask (True = masked).  Cross-attention's X has the source's X beside it.
    """
    arr = getattr(trace, stage(name).attr)
    if name == "x" and trace.x_kv is not None:
        return [("X", "", arr, None), ("source X", "source", trace.x_kv, None)]
    if arr.ndim == 2:  # x, latent, concat, output
        return [("", "", arr, None)]
    if name in ("k", "v"):
        group = trace.n_heads // trace.n_kv_heads
        out = []
        for g in sorted({trace.kv_head(h) for h in heads}):
            label = f"kv head {g}"
            if group > 1:
                label += f" (heads {g * group}–{(g + 1) * group - 1})"
            out.append((label, str(g), arr[g], None))
        return out
    masked = None if trace.mask.all() or name not in ("scores", "weights") else ~trace.mask
    return [(f"head {h}", str(h), arr[h], masked) for h in heads]


def _colored(values: np.ndarray, scale: Scale, masked: np.ndarray | None = None) -> np.ndarray:
    """``(rows, cols, 3)`` uint8 colours of ``values`` on ``scale``; masked cells grey."""
    rgb = to_rgb(values, scale.table, scale.low, scale.high)
    if masked is not None:
        rgb[masked] = MASK_RGB
    return rgb


# --------------------------------------------------------------------------------------------
# the layout
# --------------------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    """A number as the diagram prints it."""
    return f"{v:.3g}"


def _short(token: str, limit: int = 12) -> str:
    """A token as a label: line breaks and tabs visible, cut to ``limit`` characters."""
    token = token.replace("\n", "⏎").replace("\t", "⇥")
    return token if len(token) <= limit else token[: limit - 1] + "…"


def text_width(text: str, size: float) -> float:
    """The width of ``text`` in pixels, estimated (CJK and friends are about 1 em wide)."""
    wide = sum(1 for c in text if ord(c) > 0x2E80)
    return size * (0.62 * (len(text) - wide) + 1.0 * wide)


def _text_right(node: Group) -> float:
    """The right end of the widest horizontal text that starts at its x."""
    right = 0.0
    for item in node.items:
        if isinstance(item, Group):
            right = max(right, _text_right(item))
        elif isinstance(item, Text) and item.anchor == "start" and not item.rotate:
            bold = 1.1 if item.weight == "bold" else 1.0
            right = max(right, item.x + bold * text_width(item.text, item.size))
    return right


@dataclass(frozen=True)
class _Rows:
    """What every stage shares: the row height and the token labels."""

    tokens: list[str]
    labels: list[str]  # shortened
    keys: list[str]  # one per key column: the tokens, or the keys' own labels
    key_labels: list[str]  # shortened
    ch: int  # row height, px
    fs: float  # label font size
    step: int  # a label on every step-th row
    label_w: int  # room left of the panels for the row labels
    col_label_h: int  # room below a square panel for the (vertical) key labels

    @classmethod
    def of(cls, tokens: list[str], keys: list[str] | None = None) -> _Rows:
        keys = tokens if keys is None else keys
        ch = int(min(16, max(2, 280 // max(len(tokens), len(keys)))))
        fs = float(min(11, max(7, ch - 1)))
        labels, key_labels = [_short(t) for t in tokens], [_short(t) for t in keys]
        widest = max(text_width(t, fs) for t in labels + key_labels + ["sink"])
        return cls(tokens, labels, keys, key_labels, ch, fs, max(1, math.ceil((fs + 1) / ch)),
                   int(min(110, widest + 6)), int(min(110, widest + 8)))

    def axis(self, on_keys: bool) -> tuple[list[str], list[str]]:
        """The full and short labels of the tokens, or of the keys."""
        return (self.keys, self.key_labels) if on_keys else (self.tokens, self.labels)


def build(trace: AttentionTrace, tokens: Any, stages: Any, heads: Any, colormap: Any,
          title: Any, diverging: Any, tooltips: bool = False, vector_stages: Any = None,
          scales: Any = None, zoom: Any = None, key_tokens: Any = None) -> Layout:
    """Check the arguments of an export and lay out its diagram.

    Parameters are those of :func:`~attention_widget.export.diagram_svg` (``trace`` already
    checked); ``key_tokens`` labels the key columns where they are not the tokens (one per
    column of ``trace.weights``).  Stages not in ``vector_stages`` (default: all) are marked
    ``raster``.  A :class:`~attention_widget.long.LongTrace` is laid out by
    :func:`~attention_widget.export.long_layout.build_long` (its overviews, and ``zoom``).
    """
    if isinstance(trace, LongTrace):
        from .long_layout import build_long  # (it builds on this module)

        return build_long(trace, tokens, stages, heads, colormap, title, diverging, zoom)
    if zoom is not None:
        raise ValueError("zoom is for a LongTrace (above LONG_THRESHOLD tokens): the full "
                         "trace's picture draws every cell")
    tokens = check_tokens(tokens, trace.seq_len)
    keys = None if key_tokens is None else check_tokens(key_tokens, trace.weights.shape[-1],
                                                        "key_tokens")
    n_keys = trace.weights.shape[-1]
    if keys is None and n_keys != trace.seq_len:  # keys of their own, not named: numbered
        first = tokens if n_keys > trace.seq_len else []  # (extra columns after the tokens)
        keys = first + [f"key {j}" for j in range(len(first), n_keys)]
    rows = _Rows.of(tokens, keys)
    chosen = _present(check_stages(stages), trace, explicit=stages is not None)
    heads = check_head_selection(heads, trace.n_heads)
    diverging = check_colormaps(colormap, diverging)
    vector = check_stages(vector_stages, "vector_stages")
    scales = check_scales(scales)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    if title is None:
        title = f"Multi-head self-attention: {summary(trace)}"
    root = Group("aw-diagram", items=[Text(LEFT, 28, title, 16, weight="bold", cls="aw-title")])
    y, right = 44, LEFT + rows.label_w + 200
    bars = []
    for name in chosen:
        scale = stage_scale(trace, name, colormap, diverging, scales, heads[0])
        group, bottom, bar, edge = _stage(trace, name, heads, (colormap, diverging, scales),
                                          rows, y, bool(tooltips), name not in vector)
        bars.append((group, bar, scale))
        root.items.append(group)
        y, right = bottom, max(right, edge)
    bar_x = right + 8  # one column of colour bars, each beside its stage's first line
    for (group, (top, height, has_mask), scale), name in zip(bars, chosen, strict=True):
        dropped = trace.kept is not None and name in ("scores", "weights")
        group.items.append(colorbar(bar_x, top, height, scale, has_mask, dropped))
    width = max(bar_x + BAR_W, _text_right(root))  # long titles and formulas widen the page
    return Layout(int(width + LEFT), int(y), root, title)


def _present(chosen: list[str], trace: AttentionTrace, explicit: bool) -> list[str]:
    """The chosen stages the trace holds; ValueError for one asked for and absent."""
    missing = [s for s in chosen if not stage(s).present(trace)]
    if explicit and missing:
        raise ValueError(f"stages contains {missing[0]!r}, which this trace does not have (the "
                         "latent is latent attention's)")
    return [s for s in chosen if s not in missing]


def _stage(trace: AttentionTrace, name: str, heads: list[int], scaling: tuple, rows: _Rows,
           y: float, tooltips: bool, raster: bool
           ) -> tuple[Group, float, tuple[float, float, bool], float]:
    """One stage's title line and panels, from ``y`` down.

    ``scaling`` is ``(colormap, diverging, scales)`` for :func:`stage_scale`.

    Returns the group, the y below it, its colour bar's ``(top, height, has_mask)`` and the x
    right of its widest line.
    """
    st = variant_stages({s.name: s for s in STAGES}, trace)[name]
    formula = st.formula + (f", T = {_fmt(trace.temperature)}" if name == "weights" else "")
    group = Group("aw-stage", {"data-stage": name}, [
        Text(LEFT, y + 14, st.title, 13, weight="bold", cls="aw-stage-title"),
        Text(LEFT + text_width(st.title, 13) + 14, y + 14,
             f"{formula}  ·  shape {st.shape} = {st.dims(trace)}", 12, cls="aw-formula"),
    ])
    x0 = LEFT + rows.label_w
    x, line_top, line_h, right = x0, y + 26, 0.0, x0
    bar: tuple[float, float, bool] | None = None
    has_mask = False
    sinks = trace.sink_weights if name == "weights" else None
    for label, head, data, masked in _stage_panels(trace, name, heads):
        square = name in ("scores", "weights")  # columns are keys: one token per column
        cw = rows.ch if square else int(min(rows.ch, max(1, 256 // data.shape[1])))
        room = (rows.ch + GAP) if sinks is not None else 0
        if x > x0 and (head == "source" or x + data.shape[1] * cw + room > MAX_WIDTH - BAR_W):
            line_top, x, line_h = line_top + line_h + GAP, x0, 0.0
        top = line_top + (16 if label else 0)
        scale = stage_scale(trace, name, *scaling, int(head) if head.isdigit() else None)
        rgb = _colored(data, scale, masked)
        if square and trace.kept is not None:  # allowed by the mask, dropped by top-k
            rgb[trace.mask & ~trace.kept[int(head)]] = DROPPED_RGB
        heat = Heat(x, top, cw, rows.ch, rgb, masked, raster=raster)
        if tooltips and square:
            heat.tips = _tips(rows.tokens, rows.keys, data, masked)
        on_keys = head == "source" or name in ("k", "v")
        group.items.append(_panel(name, label, head, heat, rows, square, first=x == x0,
                                  label_y=line_top + 11, on_keys=on_keys))
        has_mask = has_mask or (masked is not None and bool(masked.any()))
        bar = bar or (top, max(60, min(heat.height, 160)), False)
        x += heat.width + GAP
        if sinks is not None:  # the sink column, apart from the keys
            group.items.append(_sink(sinks[int(head)], scale, x - GAP / 2, top, rows, head))
            x += rows.ch + GAP
        line_h = max(line_h, top - line_top + heat.height + (rows.col_label_h if square else 16))
        right = max(right, x)
    assert bar is not None  # every stage has at least one panel
    return group, line_top + line_h + 2 * GAP, (bar[0], bar[1], has_mask), right


def _sink(column: np.ndarray, scale: Scale, x: float, top: float, rows: _Rows,
          head: str) -> Group:
    """What each query gave head ``head``'s sink: a column labelled "sink"."""
    heat = Heat(x, top, rows.ch, rows.ch, _colored(column[:, None], scale), cls="aw-sink")
    bottom = top + heat.height
    return Group("aw-panel aw-sink", {"data-stage": "sinks", "data-head": head}, [
        heat, Text(x + rows.ch / 2 + rows.fs * 0.35, bottom + 4, "sink", rows.fs, anchor="end",
                   rotate=-90, cls="aw-sink-label")])


def _tips(tokens: list[str], keys: list[str], data: np.ndarray,
          masked: np.ndarray | None) -> list[str]:
    """``"query → key: value"`` for each cell of a square panel, row-major."""
    n_rows, n_cols = data.shape
    return [f"{tokens[i]} → {keys[j]}: "
            + ("masked" if masked is not None and masked[i, j] else f"{data[i, j]:.4g}")
            for i in range(n_rows) for j in range(n_cols)]


def _panel(name: str, label: str, head: str, heat: Heat, rows: _Rows, square: bool,
           first: bool, label_y: float, on_keys: bool = False) -> Group:
    """A panel: its title, its heatmap, row labels (first of a line) and column labels.

    ``on_keys``: its rows are the keys (K, V, and cross-attention's source X), not the
    queries.
    """
    full, short = rows.axis(on_keys)
    group = Group("aw-panel", {"data-stage": name, "data-head": head})
    if label:
        group.items.append(Text(heat.x, label_y, label, 11, cls="aw-panel-title"))
    group.items.append(heat)
    fs, n_rows, n_cols = rows.fs, *heat.rgb.shape[:2]
    if first:  # query / row labels on the first panel of each line
        group.items.append(Group("aw-row-labels", items=[
            Text(heat.x - 4, heat.y + i * heat.ch + heat.ch / 2 + fs * 0.35, short[i],
                 fs, anchor="end", cls="aw-token", full=full[i])
            for i in range(0, n_rows, rows.step)]))
    bottom = heat.y + heat.height
    if square:  # key labels, vertical, hanging below the panel
        cols = [Text(heat.x + j * heat.cw + heat.cw / 2 + fs * 0.35, bottom + 4,
                     rows.key_labels[j], fs, anchor="end", rotate=-90, cls="aw-token",
                     full=rows.keys[j])
                for j in range(0, n_cols, rows.step)]
    else:  # feature columns: first and last index
        cols = [Text(heat.x, bottom + 12, "0", 9, cls="aw-dim")]
        if n_cols > 1:
            cols.append(Text(heat.x + heat.width, bottom + 12, str(n_cols - 1), 9,
                             anchor="end", cls="aw-dim"))
    group.items.append(Group("aw-col-labels", items=cols))
    return group


def colorbar(x: float, y: float, h: float, scale: Scale, has_mask: bool,
             dropped: bool = False) -> Group:
    """A stage's colour bar (high at the top), its three ticks and the masked swatch.

    With ``dropped``, also the swatch of keys dropped by top-k.
    """
    n = 32
    cell_h = max(1, int(h // n))
    values = np.linspace(scale.high, scale.low, n)[:, None]
    group = Group("aw-colorbar", {
        "data-colormap": scale.table,
        "data-vmin": repr(float(scale.low)),
        "data-vmax": repr(float(scale.high)),
        "data-scale": "fixed" if scale.fixed else "symmetric",
        "data-mode": scale.mode,
        "data-clipped": "true" if scale.clipped else "false",
    }, [Heat(x, y, 12, cell_h, _colored(values, scale), cls="aw-bar")])
    bottom = y + n * cell_h
    for v, ty in ((scale.high, y), ((scale.low + scale.high) / 2, (y + bottom) / 2),
                  (scale.low, bottom)):
        group.items.append(Text(x + 16, ty + 3.5, _fmt(v), 10, cls="aw-tick"))
    note = {"per head": "per head", "robust": "robust"}.get(scale.mode)
    if note and scale.clipped:
        note += ": beyond = end"
    if note:  # the panels' own ends (per head), or values clipped at the ends (robust)
        group.items.append(Text(x, bottom + 32, note, 9, cls="aw-tick aw-scale-note"))
        bottom += 16
    if has_mask:
        swatch = np.array([[MASK_RGB]], dtype=np.uint8)
        group.items.append(Heat(x, bottom + 8, 12, 12, swatch, np.ones((1, 1), bool),
                                cls="aw-bar-mask"))
        group.items.append(Text(x + 16, bottom + 18, "masked", 10, cls="aw-tick"))
        bottom += 18
    if dropped:
        swatch = np.array([[DROPPED_RGB]], dtype=np.uint8)
        group.items.append(Heat(x, bottom + 8, 12, 12, swatch, cls="aw-bar-dropped"))
        group.items.append(Text(x + 16, bottom + 18, "top-k dropped", 10, cls="aw-tick"))
    return group

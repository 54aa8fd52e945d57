"""The picture of a long trace: each head's overview, and the zoom when one is chosen.

A :class:`~attention_widget.long.LongTrace` keeps no ``(seq_len, seq_len)`` arrays: its
picture shows what the widget shows of it.  Each chosen head's weights overview (each pixel the
largest weight of a square of cells, as the caption says; masked squares grey and hatched) and,
with ``stages=["scores", ...]``, the scores overview (each pixel the score of largest magnitude
of its square), on the widget's colour scales; then the zoom, exact weights of a query range
against a key range with token labels.  Every format draws this layout as it draws the full
diagram's (:mod:`.svg`, :mod:`.mpl`; overviews always as embedded images).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ..colors import MASK_RGB, symmetric_limit, to_rgb
from ..long import LongTrace
from ..stages import STAGE_NAMES, stage, summary
from .layout import (
    BAR_W,
    GAP,
    LEFT,
    MAX_WIDTH,
    Group,
    Heat,
    Layout,
    Scale,
    Text,
    check_colormaps,
    check_head_selection,
    check_tokens,
    colorbar,
)

__all__ = ["LONG_STAGES", "build_long", "check_zoom", "long_summary"]

#: The stages a long trace's picture can show (as overviews), in the order drawn.
LONG_STAGES = ("scores", "weights")
OVERVIEW_PX = 512  # largest side of a head's overview in the picture, in pixels
ZOOM_PX = 512  # largest side of the zoom in the picture, in pixels
LABEL_FONT = 9  # px: the zoom's token labels
TOKEN_CHARS = 10  # a zoom label's longest text


def long_summary(trace: LongTrace) -> str:
    """The one-line summary of a long trace (its mask named as the widget names it)."""
    mask = (f"sliding, window={trace.window}" if trace.mask_kind == "sliding"
            else trace.mask_kind)
    return summary(trace, mask=mask)


def check_zoom(zoom: object, trace: LongTrace) -> tuple[int, range, range] | None:
    """``zoom`` as ``(head, query positions, key positions)``, checked against ``trace``.

    ``zoom`` is None or ``(head, (q0, q1), (k0, k1))``: queries ``q0 .. q1 - 1`` against keys
    ``k0 .. k1 - 1`` of head ``head``, at most :data:`ZOOM_PX` a side.
    """
    if zoom is None:
        return None
    try:
        head, (q0, q1), (k0, k1) = zoom
    except (TypeError, ValueError):
        raise TypeError(f"zoom must be (head, (q0, q1), (k0, k1)), got {zoom!r}") from None
    values = (head, q0, q1, k0, k1)
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in values):
        raise TypeError(f"zoom must hold integers, got {zoom!r}")
    n = trace.seq_len
    if not (0 <= head < trace.n_heads and 0 <= q0 < q1 <= n and 0 <= k0 < k1 <= n
            and max(q1 - q0, k1 - k0) <= ZOOM_PX):
        raise ValueError(f"zoom must be a head of 0..{trace.n_heads - 1} and two ranges within "
                         f"0..{n} of at most {ZOOM_PX} positions, got {zoom!r}")
    return int(head), range(int(q0), int(q1)), range(int(k0), int(k1))


def _stages(stages: object) -> list[str]:
    """The chosen overviews (default: both), in the order drawn."""
    if stages is None:
        return list(LONG_STAGES)
    chosen = [stages] if isinstance(stages, str) else list(stages)
    bad = [s for s in chosen if s not in LONG_STAGES]
    if bad or not chosen:
        known = f"; the stages are {STAGE_NAMES}" if any(s not in STAGE_NAMES for s in bad) else ""
        raise ValueError(f"a long trace's picture shows the overviews of {LONG_STAGES}, got "
                         f"stages={stages!r}{known}")
    return [s for s in LONG_STAGES if s in chosen]


def _scale(trace: LongTrace, name: str, colormap: str, diverging: str) -> Scale:
    """The widget's scale: weights 0..1; scores symmetric around 0 over every head."""
    if name == "weights":
        return Scale(colormap, 0.0, 1.0, fixed=True)
    limit = symmetric_limit(float(np.nanmax(np.abs(trace.scores_overview), initial=0.0)))
    return Scale(diverging, -limit, limit, fixed=False)


def _heat(values: np.ndarray, masked: np.ndarray, scale: Scale, x: float, y: float, px: int,
          cls: str) -> Heat:
    rgb = to_rgb(np.where(masked, 0.0, values), scale.table, scale.low, scale.high)
    rgb[masked] = MASK_RGB
    return Heat(x, y, px, px, rgb, masked if masked.any() else None, cls=cls, raster=True)


def _overviews(trace: LongTrace, name: str, heads: list[int], scale: Scale, y: float
               ) -> tuple[Group, float, float]:
    """One stage's overviews, a panel per head, from ``y`` down: the group, y below, right."""
    t, n = trace.tile, trace.seq_len
    what = "max of" if name == "weights" else "the largest-magnitude score of"
    st = stage(name)
    formula = st.formula + (f", T = {trace.temperature:.3g}" if name == "weights" else "")
    group = Group("aw-stage", {"data-stage": name}, [
        Text(LEFT, y + 14, f"{st.title} · overview", 13, weight="bold", cls="aw-stage-title"),
        Text(LEFT, y + 32, f"{formula}  ·  1 px = {what} {t}×{t} cells  ·  shape {st.shape} = "
             f"{trace.n_heads} × {n:,} × {n:,}", 12, cls="aw-formula")])
    overview = trace.weights_overview if name == "weights" else trace.scores_overview
    masked = np.isnan(overview[0])
    px = max(1, OVERVIEW_PX // overview.shape[1])
    side = overview.shape[1] * px
    x0 = LEFT + 40
    x, top, right = x0, y + 44, x0
    for h in heads:
        if x > x0 and x + side > MAX_WIDTH - BAR_W:  # wrap onto a new line
            x, top = x0, top + side + 16 + GAP
        panel = Group("aw-panel", {"data-stage": name, "data-head": str(h)}, [
            Text(x, top + 11, f"head {h}", 11, cls="aw-panel-title"),
            _heat(overview[h], masked, scale, x, top + 16, px, "aw-overview"),
            Text(x - 4, top + 26, "0", 9, anchor="end", cls="aw-dim"),
            Text(x - 4, top + 16 + side, f"{n - 1:,}", 9, anchor="end", cls="aw-dim"),
            Text(x + side, top + 11, f"keys 0–{n - 1:,} →", 9, anchor="end", cls="aw-dim")])
        group.items.append(panel)
        x += side + GAP + 40
        right = max(right, x)
    return group, top + side + 16 + 2 * GAP, right


def _zoom(trace: LongTrace, tokens: list[str], zoom: tuple[int, range, range], scale: Scale,
          y: float) -> tuple[Group, float, float]:
    """The zoom: exact weights with token labels, from ``y`` down."""
    head, rows, cols = zoom
    cells = trace.block(head, rows, cols).astype(np.float64)
    masked = ~trace.visible(rows, cols)
    px = max(1, min(12, ZOOM_PX // max(len(rows), len(cols))))
    step = max(1, math.ceil((LABEL_FONT + 1) / px))  # a label every step-th row and column
    labels = [tok if len(tok) <= TOKEN_CHARS else tok[: TOKEN_CHARS - 1] + "…"
              for tok in (t.replace("\n", "⏎").replace("\t", "⇥") for t in tokens)]
    x, top = LEFT + 8 + 6 * TOKEN_CHARS, y + 44
    heat = _heat(cells, masked, scale, x, top, px, "aw-zoom")
    group = Group("aw-stage", {"data-stage": "zoom"}, [
        Text(LEFT, y + 14, "zoom · exact weights", 13, weight="bold", cls="aw-stage-title"),
        Text(LEFT, y + 32, f"head {head} · queries {rows[0]:,}–{rows[-1]:,} × keys "
             f"{cols[0]:,}–{cols[-1]:,} · one cell each", 12, cls="aw-formula"), heat])
    bottom = top + len(rows) * px
    group.items += [Text(x - 4, top + i * px + px / 2 + 3, labels[rows[i]], LABEL_FONT,
                         anchor="end", cls="aw-token", full=tokens[rows[i]])
                    for i in range(0, len(rows), step)]
    group.items += [Text(x + j * px + px / 2 + 3, bottom + 4, labels[cols[j]], LABEL_FONT,
                         anchor="end", rotate=-90, cls="aw-token", full=tokens[cols[j]])
                    for j in range(0, len(cols), step)]
    return group, bottom + 8 + 6 * TOKEN_CHARS + GAP, x + len(cols) * px


def build_long(trace: LongTrace, tokens: Any, stages: Any, heads: Any, colormap: Any,
               title: Any, diverging: Any, zoom: Any = None) -> Layout:
    """Check the arguments of a long trace's export and lay out its picture.

    Arguments as :func:`~attention_widget.export.layout.build`; ``stages`` chooses among
    :data:`LONG_STAGES` (default both), ``zoom`` as :func:`check_zoom`.
    """
    tokens = check_tokens(tokens, trace.seq_len)
    chosen = _stages(stages)
    heads = check_head_selection(heads, trace.n_heads)
    diverging = check_colormaps(colormap, diverging)
    zoom = check_zoom(zoom, trace)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    if title is None:
        title = f"Multi-head self-attention: {long_summary(trace)}"
    root = Group("aw-diagram", items=[
        Text(LEFT, 28, title, 16, weight="bold", cls="aw-title"),
        Text(LEFT, 46, f"{trace.seq_len:,} tokens, computed block by block: each head is drawn "
             "as an overview, one pixel for a square of cells; grey hatched = masked", 12,
             cls="aw-caption")])
    y, right, bars = 56.0, 0.0, []
    for name in chosen:
        scale = _scale(trace, name, colormap, diverging)
        group, bottom, edge = _overviews(trace, name, heads, scale, y)
        bars.append((group, y + 60, scale))
        root.items.append(group)
        y, right = bottom, max(right, edge)
    if zoom is not None:
        scale = _scale(trace, "weights", colormap, diverging)
        group, bottom, edge = _zoom(trace, tokens, zoom, scale, y)
        bars.append((group, y + 44, scale))
        root.items.append(group)
        y, right = bottom, max(right, edge)
    masked = bool(np.isnan(trace.weights_overview[0]).any())
    for group, top, scale in bars:
        group.items.append(colorbar(right + 8, top, 160, scale, masked))
    lines = [t for g in root.items for t in getattr(g, "items", [g])[:2] if isinstance(t, Text)]
    width = max(right + 8 + BAR_W, *(LEFT + 0.62 * t.size * len(t.text) for t in lines))
    return Layout(int(width + LEFT), int(y), root, title)

"""The diagram: a trace in, panels and readouts out (no attention maths beyond slicing).

:class:`Diagram` is the stacked, detailed view: one section per step of the computation
(token strip and X; Q, K, V; scores; weights with the entropy line; head outputs; concat and
output), each under a header with its formula and shapes, then a focus panel (one head large,
per-cell hover, and a query's output row as a weighted sum of V rows).  Section titles,
formulas, shapes and the summary line come from :mod:`attention_widget.stages`; the figures
are :class:`attention_widget.plots.PanelFigure`.

A temperature step changes nothing before the softmax: when the trace's x, q, k, v and scores
are the very arrays drawn last, those sections are not looked at again.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import bqplot as bq
import ipywidgets as W
import numpy as np

from .controls import readout
from .engine import AttentionTrace
from .plots import Panel, PanelFigure, shown_together
from .sources import MAX_TOKENS, Traced
from .stages import SECTIONS, Section, Stage

__all__ = ["Diagram", "formula_html"]

Q_COLOR, K_COLOR, V_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c"  # one colour code, every stage
GRID_FOCUS_MAX = 40  # focus panel with per-cell hover up to this many tokens
HEADS_PER_ROW = 4  # scores and weights: one square panel per head, rows of at least this many
#: What the figures add to a stage's formula.
CAPTIONS = {"v": "the lines across Q, K and V, in their colours, mark the heads",
            "weights": "grey = masked"}
#: Which figure draws each colour-scale choice of the widget's ``scales``.
SCALE_FIGURES = {"x": "x", "qkv": "qkv", "scores": "scores", "weights": "weights",
                 "outputs": "outputs", "concat": "concat"}
_SYMBOL_COLORS = {"Q": Q_COLOR, "K": K_COLOR, "V": V_COLOR}


def formula_html(formula: str) -> str:
    """A plain-text formula of :mod:`attention_widget.stages` as HTML.

    ``a_b`` and ``a_(b c)`` become subscripts; Q, K and V take their colours.
    """
    out = html.escape(formula)
    out = re.sub(r"_\(([^)]*)\)|_(\w+)", lambda m: f"<sub>{m[1] or m[2]}</sub>", out)
    return re.sub(r"(?<![\w>])([QKV])(?![a-z0-9_])",
                  lambda m: f"<b style='color:{_SYMBOL_COLORS[m[1]]}'>{m[1]}</b>", out)


def section_head(section: Section, trace: AttentionTrace, stages: Mapping[str, Stage]) -> str:
    """The header of a section: its title, its stages' formulas and shapes.

    The formulas are the ones the source gives (``Traced.stages``).
    """
    chosen = [stages[name] for name in section.stages]
    formulas = "; ".join(formula_html(s.formula) + (f" ({CAPTIONS[s.name]})"
                                                    if s.name in CAPTIONS else "")
                         for s in chosen)
    shapes = " · ".join(f"{s.title}: {s.dims(trace)}" for s in chosen)
    return (f"<b>{html.escape(section.title)}</b> &nbsp; <span class='aw-formula'>{formulas}"
            f"</span> &nbsp; <span class='aw-shape'>[{html.escape(shapes)}]</span>")


def heads_per_row(n_heads: int) -> int:
    """Square panels per row: at least HEADS_PER_ROW, about a square grid of many heads."""
    return min(n_heads, max(HEADS_PER_ROW, math.ceil(math.sqrt(n_heads))))


def _token_strip(tokens: Sequence[str], trace: AttentionTrace | None) -> str:
    spans = "".join(
        f"<span class='aw-token' title='token {i}' style='display:inline-block;margin:1px;"
        f"padding:0 4px;border:1px solid #8888;border-radius:3px'>{html.escape(t)}</span>"
        for i, t in enumerate(tokens[:MAX_TOKENS]))
    if trace is None:  # (no X: the widths are not known)
        return f"<div>{spans}</div>"
    h, dh, dv = trace.n_heads, trace.d_head, trace.v.shape[2]
    if h * dh == trace.d_model:
        widths = f"d_head = d_model / n_heads = {trace.d_model} / {h} = <b>{dh}</b>"
    else:  # a model's own head width (Qwen3, DeepSeek)
        widths = f"d_head = <b>{dh}</b> (n_heads · d_head = {h * dh}, d_model = {trace.d_model})"
    if dv != dh:
        widths += f", values d_v = <b>{dv}</b>"
    return f"<div>{spans}</div><div style='font-size:90%'>{widths}</div>"


def _entropy_text(trace: AttentionTrace) -> str:
    uniform = float(np.mean(np.log(trace.mask.sum(axis=1))))
    cells = " · ".join(f"h{i}: {e:.2f}" for i, e in enumerate(trace.head_entropy))
    return (f"<span style='font-size:90%'>mean row entropy per head (nats; 0 = one-hot, "
            f"{uniform:.2f} = uniform): {cells}</span>")


def _grid_index(values: np.ndarray, got: object) -> int:
    """Index of the grid row/column whose value is ``got`` (-1 if none)."""
    try:
        got = float(got)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1
    hit = np.flatnonzero(np.isclose(np.asarray(values, dtype=float), got))
    return int(hit[0]) if hit.size else -1


def _figures() -> dict[str, PanelFigure]:
    return {
        "x": PanelFigure("aw-fig-x", signed=True, cell_px=13, max_height=320, label="X"),
        "qkv": PanelFigure("aw-fig-qkv", signed=True, cell_px=13, max_height=320),
        "scores": PanelFigure("aw-fig-scores", signed=True, square=True, max_height=640),
        "weights": PanelFigure("aw-fig-weights", signed=False, square=True, max_height=640),
        "outputs": PanelFigure("aw-fig-outputs", signed=True, cell_px=8, max_height=520),
        "concat": PanelFigure("aw-fig-concat", signed=True, cell_px=13, max_height=320),
        "focus": PanelFigure("aw-fig-focus", signed=False, square=True, max_height=560,
                             min_height=260),
        "contrib": PanelFigure("aw-fig-contrib", signed=True, cell_px=12, max_height=420),
    }


class Diagram:
    """The detailed view of a trace: one section per stage, then the focus panel.

    Parameters
    ----------
    focus_controls : ipywidgets.Widget
        Shown in the focus panel (the focus head and query controls).

    Attributes
    ----------
    figs : dict of str to PanelFigure
        ``x, qkv, scores, weights, outputs, concat, focus, contrib``.
    summary : ipywidgets.HTML
        The one-line summary (``aw-summary``), written last in every update.
    """

    def __init__(self, focus_controls: W.Widget) -> None:
        self.figs = _figures()
        self.summary = readout("aw-summary")
        self._tokens_html, self._entropy_html, self._focus_html, self._hover_html = (
            readout(f"aw-{n}") for n in ("tokens", "entropy", "focus-readout", "hover"))
        self._notes_html = readout("aw-weights-notes")
        f = self.figs
        bodies = ((self._tokens_html, f["x"].figure), (f["qkv"].figure,),
                  (f["scores"].figure,),
                  (self._entropy_html, f["weights"].figure, self._notes_html),
                  (f["outputs"].figure,), (f["concat"].figure,))
        self._heads: list[tuple[W.HTML, Section]] = []
        self._sections: list[W.VBox] = []
        self._bodies = bodies
        for i, (section, body) in enumerate(zip(SECTIONS, bodies, strict=True)):
            head = readout("aw-stage-head")
            self._heads.append((head, section))
            box = W.VBox([head, *body])
            box.add_class("aw-stage")
            box.add_class(f"aw-stage-{i + 1}")
            self._sections.append(box)
        self._focus_parts = (
            W.HTML("<b>Focus</b> &nbsp; one head large; a query row as a weighted sum of V rows"),
            focus_controls, self._hover_html, f["focus"].figure, self._focus_html)
        self._focus_box = W.VBox(self._focus_parts)
        self._focus_box.add_class("aw-focus")
        self._missing = [readout("aw-unavailable") for _ in SECTIONS]
        self._focus_grid: Any = None
        self._drawn: Traced | None = None
        self._drawn_front: tuple | None = None  # tokens and arrays of the stages before softmax
        self._head = 0

    def shown(self, step: int) -> tuple[W.Widget, ...]:
        """The sections the stage player shows at ``step`` (1 .. 6); the focus at the end.

        Hidden parts leave the DOM: a bqplot figure laid out inside ``display: none`` has a
        0 x 0 size and draws rectangles of negative size.
        """
        focus = (self._focus_box,) if step >= len(SECTIONS) else ()
        return (*self._sections[:step], *focus)

    def set_scales(self, scales: Mapping[str, str]) -> None:
        """Colour each figure on its stage's scale rule (missing: shared, weights 0..1)."""
        for key, fig in SCALE_FIGURES.items():
            self.figs[fig].set_scale(scales.get(key, "shared" if key != "weights" else "fixed"))

    def set_colormap(self, name: str) -> None:
        """Draw with colour table ``name`` (and its paired diverging table)."""
        for fig in self.figs.values():
            fig.set_colormap(name)

    def displayed(self, name: str) -> list[np.ndarray]:
        """The arrays figure ``name``'s panels show (float32, as coloured into its image)."""
        return self.figs[name].displayed()

    def draw(self, traced: Traced, head: int, query: int) -> int:
        """Show ``traced``; return the bytes of the images sent."""
        tr, toks, keys = traced.trace, traced.tokens, traced.keys
        h, dv = tr.n_heads, tr.head_outputs.shape[2]  # d_v: the values' width
        self._drawn = traced
        self._show_available(traced)
        if traced.unavailable:
            return self._draw_weights_only(traced, head, query)
        sent = 0
        # the stages before the softmax are the same arrays after a temperature step
        # (with_temperature; a real model's cached layer): nothing to compare or redraw there
        front = (tuple(toks), tr.x, tr.q, tr.k, tr.v, tr.scores)
        drawn = self._drawn_front
        same_front = drawn is not None and front[0] == drawn[0] and all(
            a is b for a, b in zip(front[1:], drawn[1:], strict=True))
        with shown_together(self.figs.values()):
            if not same_front:
                sent += self._draw_front(traced)
            self._drawn_front = front
            # (each head's entropy is in the line above the figure: titles that change with
            # every temperature step would cost the browser one more message per step)
            titles = traced.head_titles()
            sent += self.figs["weights"].update(
                [Panel(tr.weights[i], titles[i], toks, keys) for i in range(h)],
                ncols=heads_per_row(h), mask=tr.mask)
            sent += self.figs["outputs"].update(
                [Panel(tr.head_outputs[i], f"head {i}", toks, None) for i in range(h)],
                ncols=min(h, 8))
            sent += self.figs["concat"].update([
                Panel(tr.concat, f"concat ({tr.seq_len} × {h * dv})", toks, None,
                      [i * dv for i in range(1, h)]),
                Panel(tr.output, f"output = concat W_O ({tr.seq_len} × {tr.d_model})", toks),
            ])
            sent += self.draw_focus(head, query)
        # text last, after the images switched: a DOM change before them would have the
        # browser paint a frame in the middle of the step
        self._entropy_html.value = _entropy_text(tr)
        self._notes_html.value = "<br>".join(html.escape(line) for line in traced.notes)
        self.summary.value = html.escape(traced.summary)
        return sent

    def _show_available(self, traced: Traced) -> None:
        """Every section's figures, or, where the source has no such arrays, a note instead."""
        for i, (box, (head_html, section), body) in enumerate(
                zip(self._sections, self._heads, self._bodies, strict=True)):
            children = (head_html, *body)
            if traced.unavailable and "weights" not in section.stages:
                tokens = (self._tokens_html,) if i == 0 else ()  # (the tokens are known)
                children = (head_html, *tokens, self._missing[i])
            if box.children != children:
                box.children = children

    def _draw_weights_only(self, traced: Traced, head: int, query: int) -> int:
        """The weights, their entropy, the focus head; a note where the other stages were."""
        tr, toks = traced.trace, traced.tokens
        self._drawn_front = None
        self._tokens_html.value = _token_strip(toks, None)
        for i, (head_html, section) in enumerate(self._heads):
            if "weights" in section.stages:
                head_html.value = section_head(section, tr, traced.stages)
            else:
                head_html.value = f"<b>{html.escape(section.title)}</b>"
                self._missing[i].value = f"<i>Not available: {html.escape(traced.unavailable)}.</i>"
        with shown_together(self.figs.values()):
            titles = traced.head_titles()
            sent = self.figs["weights"].update(
                [Panel(tr.weights[i], titles[i], toks, traced.keys) for i in range(tr.n_heads)],
                ncols=heads_per_row(tr.n_heads), mask=tr.mask)
            sent += self.draw_focus(head, query)
        notes = "".join(f"<br>{html.escape(line)}" for line in traced.notes)
        self._entropy_html.value = _entropy_text(tr) + notes
        self.summary.value = html.escape(traced.summary)
        return sent

    def _draw_front(self, traced: Traced) -> int:
        """Token strip, X, Q/K/V, scores and the headers' shapes; returns the bytes sent."""
        tr, toks, keys = traced.trace, traced.tokens, traced.keys
        h, kv, dh, n = tr.n_heads, tr.n_kv_heads, tr.d_head, tr.seq_len
        n_keys, dv = tr.k.shape[1], tr.v.shape[2]  # key rows (tokens, entries); d_v
        self._tokens_html.value = _token_strip(toks, tr)
        for head_html, section in self._heads:  # (every shape follows from these arrays)
            value = section_head(section, tr, traced.stages)
            if head_html.value != value:
                head_html.value = value
        sent = self.figs["x"].update([Panel(tr.x, f"X  ({n} × {tr.d_model})", toks, None)])
        q2 = tr.q.transpose(1, 0, 2).reshape(n, h * dh)
        k2 = tr.k.transpose(1, 0, 2).reshape(n_keys, kv * dh)
        v2 = tr.v.transpose(1, 0, 2).reshape(n_keys, kv * dv)
        sent += self.figs["qkv"].update([
            Panel(q2, f"Q ({n} × {h * dh}), {h} heads", toks, None,
                  [i * dh for i in range(1, h)], Q_COLOR),
            Panel(k2, f"K ({n_keys} × {kv * dh}), {kv} kv heads", keys, None,
                  [i * dh for i in range(1, kv)], K_COLOR),
            Panel(v2, f"V ({n_keys} × {kv * dv}), {kv} kv heads", keys, None,
                  [i * dv for i in range(1, kv)], V_COLOR),
        ])
        kv_note = "" if kv == h else " → kv"
        sent += self.figs["scores"].update(
            [Panel(tr.scores[i], f"head {i}{kv_note}{tr.kv_head(i) if kv_note else ''}",
                   toks, keys) for i in range(h)], ncols=heads_per_row(h))
        return sent

    # -- focus ---------------------------------------------------------------------------------
    def draw_focus(self, head: int, query: int) -> int:
        """Head ``head`` large, query row ``query`` (-1: none) outlined; returns bytes sent."""
        if self._drawn is None:
            return 0
        tr, toks, keys = self._drawn.trace, self._drawn.tokens, self._drawn.keys
        h = self._head = min(head, tr.n_heads - 1)
        weights = tr.weights[h]
        fig = self.figs["focus"]
        use_grid = 2 <= tr.seq_len <= GRID_FOCUS_MAX  # bqplot squeezes a 1x1 grid away
        with fig.figure.hold_sync():
            sent = fig.update([Panel(weights, f"head {h}: weights ({tr.seq_len} × {len(keys)})",
                                     toks, keys)], mask=tr.mask)
            self._set_focus_grid(weights, fig, use_grid)
            wfig = self.figs["weights"]
            if query >= 0:
                wfig.show_highlight([wfig.row_box(i, query) for i in range(tr.n_heads)])
                fig.show_highlight([fig.row_box(0, query)])
            else:
                wfig.show_highlight(None)
                fig.show_highlight(None)
        self._hover_html.value = ("<i>hover a cell for its query, key and weight</i>" if use_grid
                                  else f"<i>per-cell hover is available up to {GRID_FOCUS_MAX} "
                                  "tokens; pick a query below to read its row</i>")
        return sent + self._draw_contributions(h, query)

    def _set_focus_grid(self, weights: np.ndarray, fig: PanelFigure, use_grid: bool) -> None:
        """At small seq_len, an invisible GridHeatMap over the focus panel gives per-cell hover.

        Its cells are transparent (the panel's image shows through) and only its geometry
        follows the data: the hover readout reads the weight from the trace, so a new
        temperature sends the grid nothing.
        """
        if not use_grid:
            if self._focus_grid is not None:
                self._focus_grid.visible = False
            return
        n, m = weights.shape  # queries, keys
        x0, y0 = fig.panel_offsets()[0]
        rows = np.arange(n, dtype=float) + y0 - 0.5
        cols = np.arange(m, dtype=float) + x0 - 0.5
        if self._focus_grid is None:
            self._focus_grid = bq.GridHeatMap(
                row=rows, column=cols, color=np.zeros((n, m)), row_align="start",
                column_align="start", stroke=None,
                # transparent fill: still hit by the pointer (SVG paints a transparent colour)
                scales={"row": fig.y_scale, "column": fig.x_scale,
                        "color": bq.ColorScale(min=0.0, max=1.0,
                                               colors=["rgba(0,0,0,0)", "rgba(0,0,0,0)"])},
                interactions={"hover": "tooltip"},
            )
            self._focus_grid.on_hover(self._on_hover)
        grid = self._focus_grid
        if grid.color.shape != (n, m) or not np.array_equal(grid.row, rows) or not (
                np.array_equal(grid.column, cols)):
            # One comm message: a GridHeatMap that gets new rows before the matching colours
            # falls back to an alignment mode that fails on a LinearScale in the browser.
            with grid.hold_sync(), grid.hold_trait_notifications():
                grid.row, grid.column, grid.color = rows, cols, np.zeros((n, m))
        if not grid.visible:
            grid.visible = True
        fig.add_mark(grid)

    def _on_hover(self, mark: Any, event: dict) -> None:
        data, grid = event.get("data", {}), self._focus_grid
        if self._drawn is None or grid is None:
            return
        tr, toks, keys = self._drawn.trace, self._drawn.tokens, self._drawn.keys
        # bqplot reports the hovered cell's row and column *values* (the grid's data
        # coordinates); map them back to token indices
        i = _grid_index(grid.row, data.get("row", -1))
        j = _grid_index(grid.column, data.get("column", -1))
        if not (0 <= i < tr.seq_len and 0 <= j < len(keys)):
            return
        h = self._head
        what = f"{tr.weights[h, i, j]:.4f}" if tr.mask[i, j] else "masked"
        self._hover_html.value = (
            f"head {h}: query <b>{html.escape(toks[i])}</b> ({i}) → key "
            f"<b>{html.escape(keys[j])}</b> ({j}): weight <b>{what}</b>")

    def _draw_contributions(self, h: int, i: int) -> int:
        """Query ``i``'s output row of head ``h`` as the weighted sum of V rows."""
        assert self._drawn is not None
        tr, toks, keys = self._drawn.trace, self._drawn.tokens, self._drawn.keys
        fig = self.figs["contrib"]
        if i < 0:
            self._focus_box.children = self._focus_parts  # figure out of the DOM, see shown()
            self._focus_html.value = (
                "<i>choose a query token to see how its output row is built</i>")
            return 0
        if self._drawn.unavailable:
            self._focus_box.children = self._focus_parts
            self._focus_html.value = ("<i>the output row (a weighted sum of V rows) is not "
                                      "available: no values V were given</i>")
            return 0
        self._focus_box.children = (*self._focus_parts, fig.figure)
        w_row = tr.weights[h, i]  # [n_keys]
        v = tr.v[tr.kv_head(h)]  # [n_keys, d_v]
        contrib = w_row[:, None] * v  # [n_keys, d_v]: w_ij v_j
        out_row = tr.head_outputs[h, i][None, :]  # [1, d_v] = sum_j w_ij v_j
        sent = fig.update([
            Panel(contrib, f"w[{i},j] · v_j  (head {h})", keys, None),
            Panel(out_row, "Σ_j = output row", [toks[i]], None),
        ], ncols=1)
        top = np.argsort(-w_row)[:5]
        parts = " + ".join(f"{w_row[j]:.2f}·v[{html.escape(keys[j])}]" for j in top)
        self._focus_html.value = (
            f"output of head {h} for <b>{html.escape(toks[i])}</b> = Σ<sub>j</sub> "
            f"w<sub>{i}j</sub> v<sub>j</sub> ≈ {parts}{' + …' if len(w_row) > 5 else ''}")
        return sent

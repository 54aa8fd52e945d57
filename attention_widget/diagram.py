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

from .colors import K_COLOR, LATENT_COLOR, Q_COLOR, V_COLOR
from .controls import readout
from .engine import AttentionTrace
from .plots import Panel, PanelFigure, shown_together
from .sources import MAX_TOKENS, Traced
from .stages import SECTIONS, Section, Stage, weights_marks

__all__ = ["Diagram", "formula_html"]

GRID_FOCUS_MAX = 40  # focus panel with per-cell hover up to this many tokens
HEADS_PER_ROW = 4  # scores and weights: one square panel per head, rows of at least this many
#: What the figures add to a stage's formula (the weights' marks: see ``_caption``).
CAPTIONS = {"v": "the lines across Q, K and V, in their colours, mark the heads"}
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
    chosen = [stages[name] for name in section.stages if stages[name].present(trace)]
    formulas = "; ".join(formula_html(s.formula) + (f" ({caption})"
                                                    if (caption := _caption(s, trace)) else "")
                         for s in chosen)
    shapes = " · ".join(f"{s.title}: {s.dims(trace)}" for s in chosen)
    return (f"<b>{html.escape(section.title)}</b> &nbsp; <span class='aw-formula'>{formulas}"
            f"</span> &nbsp; <span class='aw-shape'>[{html.escape(shapes)}]</span>")


def _caption(stage: Stage, trace: AttentionTrace) -> str:
    """What the figure of ``stage`` adds to its formula (the weights: the marks it shows)."""
    return weights_marks(trace, short=True) if stage.name == "weights" else CAPTIONS.get(
        stage.name, "")


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


def _qkv_panels(tr: AttentionTrace, toks: list[str], keys: list[str]) -> list[Panel]:
    """The latent c_kv (latent attention), then Q, K and V, heads side by side."""
    h, kv, dq, dv = tr.n_heads, tr.n_kv_heads, tr.q.shape[2], tr.v.shape[2]
    n, n_k = tr.seq_len, tr.k.shape[1]
    rope = ", after RoPE" if tr.rope else ""
    panels = []
    if tr.latent is not None:
        panels.append(Panel(tr.latent, f"latent c_kv ({n} × {tr.latent.shape[1]}): K and V "
                            "are rebuilt from it", toks, None, (), LATENT_COLOR))
    panels += [
        Panel(tr.q.transpose(1, 0, 2).reshape(n, h * dq), f"Q ({n} × {h * dq}), {h} heads{rope}",
              toks, None, [i * dq for i in range(1, h)], Q_COLOR),
        Panel(tr.k.transpose(1, 0, 2).reshape(n_k, -1),
              f"K ({n_k} × {tr.k.shape[0] * tr.k.shape[2]}), {kv} kv heads{rope}", keys, None,
              [i * tr.k.shape[2] for i in range(1, kv)], K_COLOR),
        Panel(tr.v.transpose(1, 0, 2).reshape(n_k, -1), f"V ({n_k} × {kv * dv}), {kv} kv "
              "heads", keys, None, [i * dv for i in range(1, kv)], V_COLOR),
    ]
    return panels


def _dropped(tr: AttentionTrace) -> list[np.ndarray] | None:
    """Per head, the keys top-k dropped (allowed by the mask, not kept); None without top-k."""
    return None if tr.kept is None else [tr.mask & ~tr.kept[i] for i in range(tr.n_heads)]


def _variant_notes(tr: AttentionTrace) -> list[str]:
    """What the weights' colours mean for the trace's variants."""
    out = [marks] if tr.kept is not None and (marks := weights_marks(tr)) else []
    if tr.sink_weights is not None:
        out.append("Sinks: each row of the weights sums to 1 minus what its query gave the "
                   "head's sink (the panel beside the weights).")
    return out


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
    summary : ipywidgets.HTML
        The widget's one-line summary (``aw-summary``), written last in every update.

    Attributes
    ----------
    figs : dict of str to PanelFigure
        ``x, qkv, scores, weights, outputs, concat, focus, contrib``.
    sinks : PanelFigure
        With sinks only: what each query gave each head's sink, apart from the keys.
    """

    def __init__(self, focus_controls: W.Widget, summary: W.HTML) -> None:
        self.figs = _figures()
        # (in the DOM with sinks only: a bqplot figure laid out hidden draws negative sizes)
        self.sinks = PanelFigure("aw-fig-sinks", signed=False, cell_px=13, max_height=320)
        self.summary = summary
        self._tokens_html, self._entropy_html, self._focus_html, self._hover_html = (
            readout(f"aw-{n}") for n in ("tokens", "entropy", "focus-readout", "hover"))
        self._notes_html = readout("aw-weights-notes")
        f = self.figs
        bodies = ((self._tokens_html, f["x"].figure), (f["qkv"].figure,),
                  (f["scores"].figure,),
                  (self._entropy_html, f["weights"].figure, self.sinks.figure,
                   self._notes_html),
                  (f["outputs"].figure,), (f["concat"].figure,))
        self._heads: list[tuple[W.HTML, Section]] = []
        self._sections: list[W.VBox] = []
        self._bodies = bodies
        for i, (section, body) in enumerate(zip(SECTIONS, bodies, strict=True)):
            head = readout("aw-stage-head")
            self._heads.append((head, section))
            self._sections.append(W.VBox([head, *body],
                                         _dom_classes=("aw-stage", f"aw-stage-{i + 1}")))
        self._focus_parts = (
            W.HTML("<b>Focus</b> &nbsp; one head large; a query row as a weighted sum of V rows"),
            focus_controls, self._hover_html, f["focus"].figure, self._focus_html)
        self._focus_box = W.VBox(self._focus_parts, _dom_classes=("aw-focus",))
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
        for fig in (*self.figs.values(), self.sinks):
            fig.set_colormap(name)

    def displayed(self, name: str) -> list[np.ndarray]:
        """The arrays figure ``name``'s panels show, as coloured (:func:`.colors.as_drawn`)."""
        return self.figs[name].displayed()

    def draw(self, traced: Traced, head: int, query: int) -> int:
        """Show ``traced``; return the bytes of the images sent."""
        tr, toks = traced.trace, traced.tokens
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
            sent += self._draw_weights(traced)
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
        self._notes_html.value = "<br>".join(html.escape(line) for line in (
            *_variant_notes(tr), *traced.notes))
        self.summary.value = html.escape(traced.summary)
        return sent

    def _show_available(self, traced: Traced) -> None:
        """Every section's figures, or, where the source has no such arrays, a note instead."""
        for i, (box, (head_html, section), body) in enumerate(
                zip(self._sections, self._heads, self._bodies, strict=True)):
            children = (head_html, *(b for b in body if b is not self.sinks.figure
                                     or traced.trace.sink_weights is not None))
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
                head_html.value = section_head(section, tr, traced.shown_stages)
            else:
                head_html.value = f"<b>{html.escape(section.title)}</b>"
                self._missing[i].value = f"<i>Not available: {html.escape(traced.unavailable)}.</i>"
        with shown_together(self.figs.values()):
            sent = self._draw_weights(traced)
            sent += self.draw_focus(head, query)
        notes = "".join(f"<br>{html.escape(line)}" for line in traced.notes)
        self._entropy_html.value = _entropy_text(tr) + notes
        self.summary.value = html.escape(traced.summary)
        return sent

    def _draw_front(self, traced: Traced) -> int:
        """Token strip, X, Q/K/V, scores and the headers' shapes; returns the bytes sent."""
        tr, toks = traced.trace, traced.tokens
        h, kv, n = tr.n_heads, tr.n_kv_heads, tr.seq_len
        self._tokens_html.value = _token_strip(toks, tr)
        for head_html, section in self._heads:  # (every shape follows from these arrays)
            value = section_head(section, tr, traced.shown_stages)
            if head_html.value != value:
                head_html.value = value
        keys = traced.keys
        xs = [Panel(tr.x, f"X  ({n} × {tr.d_model})", toks, None)]
        if tr.x_kv is not None:  # cross-attention: the source's X, keys and values come from
            xs.append(Panel(tr.x_kv, f"source X  ({len(keys)} × {tr.d_model})", keys, None))
        sent = self.figs["x"].update(xs, ncols=1)
        sent += self.figs["qkv"].update(_qkv_panels(tr, toks, keys))
        kv_note = "" if kv == h else " → kv"
        sent += self.figs["scores"].update(
            [Panel(tr.scores[i], f"head {i}{kv_note}{tr.kv_head(i) if kv_note else ''}",
                   toks, keys) for i in range(h)], ncols=heads_per_row(h), mask=None,
            dropped=_dropped(tr))
        return sent

    def _draw_weights(self, traced: Traced) -> int:
        """Every head's weights (keys dropped by top-k apart), and the sinks' column."""
        tr, toks, h = traced.trace, traced.tokens, traced.trace.n_heads
        titles = traced.head_titles()
        sent = self.figs["weights"].update(
            [Panel(tr.weights[i], titles[i], toks, traced.keys) for i in range(h)],
            ncols=heads_per_row(h), mask=tr.mask, dropped=_dropped(tr))
        if tr.sink_weights is None:  # (then out of the DOM: see _show_available)
            return sent
        return sent + self.sinks.update([Panel(
            tr.sink_weights.T, "sink: what each query gave its head's sink (apart from the "
            "keys)", toks, [f"head {i}" for i in range(h)])])

    # -- focus ---------------------------------------------------------------------------------
    def draw_focus(self, head: int, query: int) -> int:
        """Head ``head`` large, query row ``query`` (-1: none) outlined; returns bytes sent."""
        if self._drawn is None:
            return 0
        tr, toks, keys = self._drawn.trace, self._drawn.tokens, self._drawn.keys
        h = self._head = min(head, tr.n_heads - 1)
        weights = tr.weights[h]
        fig = self.figs["focus"]
        # bqplot squeezes a 1x1 grid away
        use_grid = 2 <= min(weights.shape) and max(weights.shape) <= GRID_FOCUS_MAX
        dropped = _dropped(tr)
        with fig.figure.hold_sync():
            sent = fig.update([Panel(weights, f"head {h}: weights ({tr.seq_len} × {len(keys)})",
                                     toks, keys)],
                              mask=tr.mask, dropped=None if dropped is None else [dropped[h]])
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
        n, n_k = weights.shape
        x0, y0 = fig.panel_offsets()[0]
        rows = np.arange(n, dtype=float) + y0 - 0.5
        cols = np.arange(n_k, dtype=float) + x0 - 0.5
        if self._focus_grid is None:
            self._focus_grid = bq.GridHeatMap(
                row=rows, column=cols, color=np.zeros((n, n_k)), row_align="start",
                column_align="start", stroke=None,
                # transparent fill: still hit by the pointer (SVG paints a transparent colour)
                scales={"row": fig.y_scale, "column": fig.x_scale,
                        "color": bq.ColorScale(min=0.0, max=1.0,
                                               colors=["rgba(0,0,0,0)", "rgba(0,0,0,0)"])},
                interactions={"hover": "tooltip"},
            )
            self._focus_grid.on_hover(self._on_hover)
        grid = self._focus_grid
        if grid.color.shape != (n, n_k) or not np.array_equal(grid.row, rows) or not (
                np.array_equal(grid.column, cols)):
            # One comm message: a GridHeatMap that gets new rows before the matching colours
            # falls back to an alignment mode that fails on a LinearScale in the browser.
            with grid.hold_sync(), grid.hold_trait_notifications():
                grid.row, grid.column, grid.color = rows, cols, np.zeros((n, n_k))
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
        if not (0 <= i < tr.seq_len and 0 <= j < tr.weights.shape[-1]):
            return
        h = self._head
        what = f"{tr.weights[h, i, j]:.4f}" if tr.mask[i, j] else "masked"
        if tr.kept is not None and tr.mask[i, j] and not tr.kept[h, i, j]:
            what = "dropped by top-k"
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
        # into the page once laid out (see longview.LongView._draw_lens)
        self._focus_box.children = (*self._focus_parts, fig.figure)
        return sent

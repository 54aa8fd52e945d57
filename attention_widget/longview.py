"""Long prompts on screen: each head's overview, a zoom, a query lens; work in a thread.

Above :data:`~attention_widget.long.LONG_THRESHOLD` tokens the widget's trace is a
:class:`~attention_widget.long.LongTrace`, and :class:`LongView` draws it instead of the
detailed diagram:

* every head's weights overview as a thumbnail: one pixel the largest weight of a square of
  cells, and the page says how many ("1 px = max of 64×64 cells"); masked squares grey;
* the focus head's overview at full size ("1 px = max of 16×16 cells"); a box dragged on it
  (or a click) chooses the zoom;
* the zoom: the exact weights of a range of queries against a range of keys, with token labels
  (also chosen with two range sliders);
* the query lens: one query's full row of weights as a strip, one pixel a key, and its ten
  heaviest keys listed with positions and tokens;
* each head's mean row entropy, and a token strip that summarises.

:class:`Jobs` runs the long computations in a worker thread: a newer change cancels the older
one, and only the newest result is drawn, under the widget's lock.  :class:`LongPrompts` is the
widget's part (a mixin of :class:`~attention_widget.widget.AttentionWidget`).
"""

from __future__ import annotations

import contextlib
import html
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import bqplot as bq
import ipywidgets as W
import numpy as np

from .controls import made, readout
from .long import AttentionCancelled, LongTrace
from .plots import Panel, PanelFigure, shown_together
from .sources import Progress, Traced

__all__ = ["Jobs", "LongPrompts", "LongView", "overview_pooled", "uniform_entropy"]

HEADS_PER_ROW = 8  # thumbnails side by side
THUMBS_PX = 600  # a row of thumbnails fits in this many pixels (one pixel a value)
ZOOM_MAX = 128  # largest side of the zoom, in cells
ZOOM_DEFAULT = 64  # side of the zoom at first, and of one chosen by a click
LENS_WIDTH = 512  # keys per line of the query lens' strip
TOP_KEYS = 10  # heaviest keys the lens lists
STRIP_TOKENS = 20  # tokens the token strip shows at each end of the text
REPORT_EVERY_S = 0.25  # least time between two progress messages sent to the browser
BOX_COLOR = "#ff3d8b"


def overview_pooled(overview: np.ndarray, factor: int) -> np.ndarray:
    """The maximum of each ``factor x factor`` square of an overview (NaN where all are NaN).

    Parameters
    ----------
    overview : ndarray, shape (n_heads, P, P)
        Tile maxima, NaN on masked tiles (``LongTrace.weights_overview``).
    factor : int

    Returns
    -------
    ndarray, shape (n_heads, ceil(P / factor), ceil(P / factor))
    """
    heads, side, _ = overview.shape
    out = -(-side // factor)
    padded = np.full((heads, out * factor, out * factor), np.nan, overview.dtype)
    padded[:, :side, :side] = overview
    squares = padded.reshape(heads, out, factor, out, factor)
    return np.fmax.reduce(np.fmax.reduce(squares, axis=4), axis=2)  # fmax: NaN only if all are


def uniform_entropy(trace: LongTrace) -> float:
    """Mean row entropy (nats) of uniform weights over each query's visible keys."""
    seen = np.arange(1, trace.seq_len + 1, dtype=np.float64)  # causal: query i sees i + 1 keys
    if trace.mask_kind == "none":
        seen[:] = trace.seq_len
    elif trace.mask_kind == "sliding":
        seen = np.minimum(seen, trace.window)
    return float(np.mean(np.log(seen)))


#: what the dropped colour means where an indexer chose the keys (DeepSeek V3.2)
_DROPPED_NOTE = "rose = visible, but not among the keys the indexer kept"


def _marks(tr: LongTrace) -> list[str]:
    """The notes of the cells drawn outside the colour scale: grey and rose, where drawn."""
    return ["grey = masked"] * (tr.mask_kind != "none") + [_DROPPED_NOTE] * bool(tr.select)


def _sink_share(tr: LongTrace, head: int, query: int) -> str:
    """What the query gave its head's sink, for the lens's note; ``""`` without sinks."""
    if tr.sink_weights is None:
        return ""
    share = float(tr.sink_weights[head, query])
    return f" · its head's sink took {share:.4f} (the weights sum to {1 - share:.4f})"


def _box(fig: PanelFigure, panel: int, rows: tuple[float, float], cols: tuple[float, float]
         ) -> tuple[list[float], list[float]]:
    """The outline of cells ``rows[0] .. rows[1] - 1`` x ``cols[0] .. cols[1] - 1`` of a panel."""
    x0, y0 = fig.panel_offsets()[panel]
    left, right = x0 + cols[0] - 0.5, x0 + cols[1] - 0.5
    top, bottom = y0 + rows[0] - 0.5, y0 + rows[1] - 0.5
    return [left, right, right, left, left], [top, top, bottom, bottom, top]


def _span(start: int, stop: int, n: int, most: int) -> tuple[int, int]:
    """``start .. stop`` within ``0 .. n``, at least one and at most ``most`` long (centred)."""
    start, stop = max(0, min(start, n - 1)), max(1, min(stop, n))
    if stop <= start:
        stop = start + 1
    if stop - start > most:
        start = (start + stop - most) // 2
        stop = start + most
    return start, stop


class Jobs:
    """Long computations in worker threads: the newest one is drawn, older ones are cancelled.

    :meth:`start` sets the token (a ``threading.Event``) of the job running, if any, and
    starts ``compute(token)`` in a new thread.  Computations run one at a time (they hold
    :attr:`computing`, as computations on the caller's thread must: a source's caches belong
    to one thread at a time); a cancelled one ends with ``AttentionCancelled`` at its next
    block.  ``done(result)`` or ``failed(error)`` then run holding ``lock``, for the newest
    job only.  Nothing here holds ``lock`` while it waits for :attr:`computing`.

    Parameters
    ----------
    lock : threading.RLock
        Held by whatever changes what is drawn (the widget's handlers, and here).
    """

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.computing = threading.Lock()
        self._job: tuple[threading.Event, threading.Thread] | None = None

    def start(self, compute: Callable[[threading.Event], Any], done: Callable[[Any], None],
              failed: Callable[[Exception], None]) -> threading.Event:
        """Cancel the running job; run ``compute`` in a new thread; return its token."""
        self.cancel()
        token = threading.Event()
        thread = threading.Thread(target=self._run, args=(token, compute, done, failed),
                                  name="attention-widget-job", daemon=True)
        self._job = (token, thread)
        thread.start()
        return token

    @contextlib.contextmanager
    def computing_here(self) -> Iterator[None]:
        """For a computation on the caller's thread: cancel the running job, wait for its end."""
        self.cancel()
        with self.computing:
            yield

    def cancel(self) -> None:
        """Set the token of the running job (it stops at its next block and draws nothing)."""
        job = self._job
        if job is not None:
            job[0].set()

    def newest(self, token: threading.Event) -> bool:
        """Whether ``token`` is the newest job's and not cancelled."""
        job = self._job
        return job is not None and job[0] is token and not token.is_set()

    @property
    def running(self) -> bool:
        """Whether a job is computing or about to draw."""
        job = self._job
        return job is not None and job[1].is_alive()

    def _run(self, token: threading.Event, compute: Callable, done: Callable,
             failed: Callable) -> None:
        try:
            with self.computing:
                if token.is_set():
                    return
                result = compute(token)
        except AttentionCancelled:
            return
        except Exception as err:  # shown by failed(), as the widget shows any failure
            result = err
        with self.lock:
            if self.newest(token):
                (failed if isinstance(result, Exception) else done)(result)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the newest job has drawn (or failed); False if ``timeout`` s passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self._job
            if job is None:
                return True
            job[1].join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if job[1].is_alive():
                return False
            if self._job is job:
                return True


class LongView:
    """The view of a :class:`~attention_widget.long.LongTrace` (see the module docstring).

    Parameters
    ----------
    on_change : callable(name, value)
        Called when the user picks a focus ``"head"`` or a lens ``"query"`` here (the widget
        sets its trait of that name).
    lock : threading.RLock
        The widget's: held while a brush or a zoom slider redraws.
    summary : ipywidgets.HTML
        The widget's one-line summary, written last in every :meth:`draw`.

    Attributes
    ----------
    figs : dict of str to PanelFigure
        ``long-heads`` (thumbnails), ``long-focus``, ``long-zoom``, ``long-lens``.
    zoom : tuple of (int, int), (int, int)
        The zoom's query range and key range (``start, stop``).
    zoom_chosen : bool
        Whether the user chose the zoom (a box, a click or a slider).
    """

    def __init__(self, on_change: Callable[[str, Any], None], lock: Any, summary: W.HTML
                 ) -> None:
        self._on_change, self._lock, self._summary = on_change, lock, summary
        self.figs = {
            "long-heads": PanelFigure("aw-fig-long-heads", signed=False, square=True,
                                      max_height=520, min_height=60),
            "long-focus": PanelFigure("aw-fig-long-focus", signed=False, square=True,
                                      max_height=600),
            "long-zoom": PanelFigure("aw-fig-long-zoom", signed=False, square=True,
                                     max_height=540),
            "long-lens": PanelFigure("aw-fig-long-lens", signed=False, cell_px=6,
                                     max_height=260, min_height=150),
        }
        for name, margin, axes in (
                ("long-heads", {"top": 4, "bottom": 4, "left": 10, "right": 10}, []),
                ("long-focus", {"top": 48, "bottom": 6, "left": 56, "right": 10}, ["x", "y"])):
            fig = self.figs[name]  # (the zoom's colour bar is the scale of every figure)
            fig.figure.fig_margin = margin
            fig.figure.axes = [getattr(fig, f"{a}_axis") for a in axes]
        self._texts = {n: readout(f"aw-long-{n}") for n in (
            "caption", "entropy", "tokens", "heads-note", "focus-note", "zoom-note", "lens-note")}
        self._bar = W.FloatProgress(min=0.0, max=1.0, value=1.0, bar_style="info",
                                    description="long prompt")
        self._status = W.Label()
        status = W.HBox([self._bar, self._status], _dom_classes=("aw-long-status",))
        c = self.controls = made({
            "head": (W.Dropdown, dict(description="focus head", options=[0],
                                      layout={"width": "180px"})),
            "query": (W.BoundedIntText, dict(value=-1, min=-1, max=0, description="lens query",
                                             layout={"width": "200px"})),
            "zoom-queries": (W.IntRangeSlider, dict(description="zoom queries",
                                                    continuous_update=False,
                                                    layout={"width": "440px"})),
            "zoom-keys": (W.IntRangeSlider, dict(description="zoom keys", continuous_update=False,
                                                 layout={"width": "440px"})),
        }, prefix="aw-long-")
        for ctrl in c.values():
            ctrl.observe(self._changed, "value")
        self._syncing = False
        self.brush = bq.interacts.BrushSelector(
            x_scale=self.figs["long-focus"].x_scale, y_scale=self.figs["long-focus"].y_scale,
            color=BOX_COLOR)
        self.brush.observe(self._brushed, "brushing")
        self.figs["long-focus"].figure.interaction = self.brush
        self.zoom = ((0, ZOOM_DEFAULT), (0, ZOOM_DEFAULT))
        self.zoom_chosen = False
        self._traced: Traced | None = None
        self._head, self._query = 0, -1
        self._factor = 1  # overview values per thumbnail pixel, along each side
        self._last_report = 0.0
        t, f = self._texts, self.figs
        wrap = {"flex_flow": "row wrap", "align_items": "flex-start"}
        self._lens_parts = (t["lens-note"],)
        self._lens = W.VBox(self._lens_parts)
        self.box = W.VBox([
            status, t["caption"], t["tokens"], t["entropy"],
            W.HBox([c["head"], c["query"], c["zoom-queries"], c["zoom-keys"]], layout=wrap),
            t["heads-note"], f["long-heads"].figure,
            W.HBox([W.VBox([t["focus-note"], f["long-focus"].figure]),
                    W.VBox([t["zoom-note"], f["long-zoom"].figure])], layout=wrap),
            self._lens], _dom_classes=("aw-long",))

    # -- what the widget calls -----------------------------------------------------------------
    def shown(self) -> tuple[W.Widget, ...]:
        """The widgets the page shows for a long trace."""
        return (self.box,)

    def set_colormap(self, name: str) -> None:
        """Draw with colour table ``name``."""
        for fig in self.figs.values():
            fig.set_colormap(name)

    def report(self, fraction: float, message: str) -> None:
        """Show how far a computation is (at most every ``REPORT_EVERY_S``, and at its end)."""
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_report < REPORT_EVERY_S:
            return
        self._last_report = now
        self._bar.value, self._bar.bar_style = float(np.clip(fraction, 0.0, 1.0)), "info"
        self._status.value = str(message)

    def reporter(self, token: threading.Event, also: Progress | None = None) -> Progress:
        """A ``report(fraction, message)`` that stays silent once ``token`` is set."""
        def report(fraction: float, message: str) -> None:
            if not token.is_set():
                (also or self.report)(fraction, message)
        return report

    def done(self, seconds: float) -> None:
        """Say that the newest result is drawn."""
        self._bar.value, self._bar.bar_style = 1.0, "success"
        self._status.value = f"drawn ({seconds:.2f} s)"

    def draw(self, traced: Traced, head: int, query: int) -> int:
        """Show ``traced`` (its trace a LongTrace); return the bytes of the images sent."""
        tr = traced.trace
        first = self._traced is None or self._traced.trace.seq_len != tr.seq_len
        self._traced = traced
        if first:  # a new text: the zoom starts at its beginning
            side = (0, min(tr.seq_len, ZOOM_DEFAULT))
            self.zoom, self.zoom_chosen = (side, side), False
        per_row = min(tr.n_heads, HEADS_PER_ROW)
        self._factor = max(1, -(-tr.weights_overview.shape[1] * per_row // THUMBS_PX))
        with shown_together(self.figs.values()):
            sent = self._draw_heads(tr) + self.draw_focus(head, query)
        self._write_texts(traced)
        self._summary.value = html.escape(traced.summary)  # last: the step is drawn
        return sent

    def draw_focus(self, head: int, query: int) -> int:
        """Head ``head`` large, the zoom, query ``query``'s lens (-1: none); bytes sent."""
        if self._traced is None:
            return 0
        tr = self._traced.trace
        self._head, self._query = min(head, tr.n_heads - 1), query
        self._sync_controls()
        sent = self._draw_overview(tr) + self._draw_zoom(tr) + self._draw_lens(tr)
        self._draw_boxes(tr)
        return sent

    def displayed(self, name: str) -> list[np.ndarray]:
        """The arrays figure ``name`` shows (float32; masked cells 0, drawn grey)."""
        return self.figs[name].displayed()

    # -- the figures -------------------------------------------------------------------------------
    def _draw_heads(self, tr: LongTrace) -> int:
        pooled = overview_pooled(tr.weights_overview, self._factor)
        visible = ~np.isnan(pooled[0])
        panels = [Panel(np.nan_to_num(p), f"head {h}") for h, p in enumerate(pooled)]
        cells = tr.tile * self._factor
        self._texts["heads-note"].value = " · ".join(
            [f"<b>all heads</b> · 1 px = max of {cells}×{cells} cells", *_marks(tr)])
        return self.figs["long-heads"].update(panels, ncols=min(tr.n_heads, HEADS_PER_ROW),
                                              mask=visible)

    def _draw_overview(self, tr: LongTrace) -> int:
        h, t = self._head, tr.tile
        overview = tr.weights_overview[h]
        side = overview.shape[0]
        labels = [f"{i * t:,}" for i in range(side)]
        self._texts["focus-note"].value = (
            f"<b>head {h}</b> · 1 px = max of {t}×{t} cells · drag a box (or click) to zoom")
        return self.figs["long-focus"].update(
            [Panel(np.nan_to_num(overview), f"head {h}", labels, labels)],
            mask=~np.isnan(overview))

    def _draw_zoom(self, tr: LongTrace) -> int:
        (r0, r1), (c0, c1) = self.zoom
        toks = self._traced.tokens
        cells = tr.block(self._head, slice(r0, r1), slice(c0, c1))  # exact weights
        self._texts["zoom-note"].value = (
            f"<b>zoom</b> · head {self._head} · queries {r0:,}–{r1 - 1:,} × keys {c0:,}–"
            f"{c1 - 1:,} · exact weights" + (f" · {_DROPPED_NOTE}" if tr.select else ""))
        visible = tr.visible(slice(r0, r1), slice(c0, c1))
        kept = tr.kept(slice(r0, r1), slice(c0, c1))
        return self.figs["long-zoom"].update(
            [Panel(cells, f"head {self._head}: exact", toks[r0:r1], toks[c0:c1])],
            mask=visible, dropped=None if kept is None else [visible & ~kept])

    def _draw_lens(self, tr: LongTrace) -> int:
        fig, q, n = self.figs["long-lens"], self._query, tr.seq_len
        if q < 0:
            self._texts["lens-note"].value = (
                "<b>query lens</b> · <i>pick a lens query to see its whole row of weights and "
                "its heaviest keys</i>")
            self._lens.children = self._lens_parts  # (out of the DOM: see Diagram.shown)
            return 0
        width = min(n, LENS_WIDTH)
        lines = -(-n // width)
        strip = np.zeros(lines * width, np.float32)
        seen = np.zeros(lines * width, bool)
        strip[:n], seen[:n] = tr.row(self._head, q), tr.visible(q, slice(None))[0]
        kept = tr.kept(q, slice(None))  # None without an indexer
        dropped = np.zeros(lines * width, bool)
        if kept is not None:
            dropped[:n] = seen[:n] & ~kept[0]
        top = tr.top_keys(self._head, q, TOP_KEYS)
        toks = self._traced.tokens
        marks = "; ".join(_marks(tr))
        rows = "".join(
            f"<tr><td>{k + 1}</td><td>{int(j):,}</td><td class='aw-token'>"
            f"{html.escape(toks[j])}</td><td>{w:.4f}</td></tr>"
            for k, (j, w) in enumerate(zip(top.positions, top.weights, strict=True)))
        self._texts["lens-note"].value = (
            f"<b>query lens</b> · head {self._head} · query {q:,} "
            f"<span class='aw-token'>{html.escape(toks[q])}</span>: its {n:,} weights, one px a "
            f"key, {width:,} keys a line{f' ({marks})' if marks else ''}"
            f"{_sink_share(tr, self._head, q)}; its {len(top.positions)} heaviest keys "
            "(boxed): <table class='aw-long-top' style='line-height:1.35;border-spacing:10px 1px'>"
            "<tr><th>#</th><th>key</th><th>token</th>"
            f"<th>weight</th></tr>{rows}</table>")
        starts = [f"{i * width:,}" for i in range(lines)]
        sent = fig.update([Panel(strip.reshape(lines, width), f"query {q:,}", starts)],
                          mask=seen.reshape(lines, width),
                          dropped=None if kept is None else [dropped.reshape(lines, width)])
        fig.show_highlight([_box(fig, 0, (j // width, j // width + 1),
                                 (j % width, j % width + 1)) for j in top.positions])
        # into the page once laid out: a bqplot figure that enters the page while its height
        # changes draws its plot at the old height
        self._lens.children = (*self._lens_parts, fig.figure)
        return sent

    def _draw_boxes(self, tr: LongTrace) -> None:
        """The zoom's box on the overview and every thumbnail, the lens query's row."""
        (r0, r1), (c0, c1) = self.zoom
        t, f = tr.tile, self._factor
        focus, heads = self.figs["long-focus"], self.figs["long-heads"]
        box = ((r0 / t, r1 / t), (c0 / t, c1 / t))
        segments = [_box(focus, 0, *box)]
        if self._query >= 0:
            row = self._query // t
            segments.append(_box(focus, 0, (row, row + 1), (0, tr.weights_overview.shape[2])))
        focus.show_highlight(segments)
        small = ((box[0][0] / f, max(box[0][1] / f, box[0][0] / f + 1)),
                 (box[1][0] / f, max(box[1][1] / f, box[1][0] / f + 1)))
        side = -(-tr.weights_overview.shape[1] // f)
        heads.show_highlight([_box(heads, h, *small) for h in range(tr.n_heads)]
                             + [_box(heads, self._head, (-1, side + 1), (-1, side + 1))])
        zoom = self.figs["long-zoom"]
        if r0 <= self._query < r1:
            zoom.show_highlight([zoom.row_box(0, self._query - r0)])
        else:
            zoom.show_highlight(None)

    def _write_texts(self, traced: Traced) -> None:
        tr, toks = traced.trace, traced.tokens
        n, t = tr.seq_len, tr.tile
        self._texts["caption"].value = (
            f"<b>Long prompt: {n:,} tokens</b>, attention computed block by block (no "
            f"{n:,}×{n:,} array is kept). Each head's weights are drawn as an overview, rows "
            f"the queries and columns the keys: <b>1 px = max of {t}×{t} cells</b>, so a single "
            f"sharp weight stays visible{''.join('; ' + m for m in _marks(tr))}. "
            "The zoom and the query lens show exact "
            "weights; the zoom's colour bar is the scale of every picture.")
        chips = "".join(f"<span class='aw-token' title='token {i:,}'>{html.escape(toks[i])}"
                        "</span> " for i in range(min(n, STRIP_TOKENS)))
        tail = "".join(f"<span class='aw-token' title='token {i:,}'>{html.escape(toks[i])}"
                       "</span> " for i in range(max(STRIP_TOKENS, n - STRIP_TOKENS), n))
        self._texts["tokens"].value = (
            f"<div style='font-size:90%'>tokens 0–{STRIP_TOKENS - 1}: {chips}… tokens "
            f"{max(STRIP_TOKENS, n - STRIP_TOKENS):,}–{n - 1:,}: {tail}</div>")
        cells = " · ".join(f"h{i}: {e:.2f}" for i, e in enumerate(tr.head_entropy))
        sinks = "" if tr.sink_weights is None else (
            "<br>mean share each head's queries give its sink (their rows of weights sum to 1 "
            "minus it): " + " · ".join(f"h{i}: {s:.2f}"
                                       for i, s in enumerate(tr.sink_weights.mean(axis=1))))
        self._texts["entropy"].value = (
            f"<span style='font-size:90%'>mean row entropy per head (nats; 0 = one-hot, "
            f"{uniform_entropy(tr):.2f} = uniform): {cells}{sinks}</span>")

    # -- the user's choices ------------------------------------------------------------------------
    def _sync_controls(self) -> None:
        tr, c = self._traced.trace, self.controls
        self._syncing = True
        try:
            if c["head"].options != tuple(range(tr.n_heads)):
                c["head"].options = list(range(tr.n_heads))
            for name in ("zoom-queries", "zoom-keys"):
                if c[name].max != tr.seq_len - 1:
                    c[name].max = tr.seq_len - 1
            c["query"].max = tr.seq_len - 1
            values = {"head": self._head, "query": self._query,
                      "zoom-queries": (self.zoom[0][0], self.zoom[0][1] - 1),
                      "zoom-keys": (self.zoom[1][0], self.zoom[1][1] - 1)}
            for name, value in values.items():
                if c[name].value != value:
                    c[name].value = value
        finally:
            self._syncing = False

    def _changed(self, change: dict) -> None:
        if self._syncing or self._traced is None:
            return
        name = next(n for n, c in self.controls.items() if c is change["owner"])
        if name in ("head", "query"):
            self._on_change(name, change["new"])
            return
        rows, cols = self.controls["zoom-queries"].value, self.controls["zoom-keys"].value
        self.set_zoom((rows[0], rows[1] + 1), (cols[0], cols[1] + 1))

    def set_zoom(self, queries: tuple[int, int], keys: tuple[int, int]) -> None:
        """Zoom on queries ``start .. stop - 1`` against keys ``start .. stop - 1``.

        Each range is clipped to the text and, when longer than ``ZOOM_MAX``, cut to its
        middle ``ZOOM_MAX``.
        """
        with self._lock:
            if self._traced is None:
                return
            n = self._traced.trace.seq_len
            self.zoom = (_span(*queries, n, ZOOM_MAX), _span(*keys, n, ZOOM_MAX))
            self.zoom_chosen = True
            self.draw_focus(self._head, self._query)

    def _brushed(self, change: dict) -> None:
        """A box was dragged (or a point clicked) on the focus overview: zoom there."""
        if change["new"] or self._traced is None or self.brush.selected_x is None:
            return
        t = self._traced.trace.tile
        x0, y0 = self.figs["long-focus"].panel_offsets()[0]
        xs = np.sort(np.asarray(self.brush.selected_x, float)) - x0
        ys = np.sort(np.asarray(self.brush.selected_y, float)) - y0
        cols = (round(xs[0]) * t, (round(xs[1]) + 1) * t)
        rows = (round(ys[0]) * t, (round(ys[1]) + 1) * t)
        if rows[1] - rows[0] <= 2 * t and cols[1] - cols[0] <= 2 * t:  # a click: zoom around it
            mid_r, mid_c = sum(rows) // 2, sum(cols) // 2
            rows = (mid_r - ZOOM_DEFAULT // 2, mid_r + ZOOM_DEFAULT // 2)
            cols = (mid_c - ZOOM_DEFAULT // 2, mid_c + ZOOM_DEFAULT // 2)
        self.set_zoom(rows, cols)


class LongPrompts:
    """The widget's part for long prompts: worker threads, waiting, exact weights (a mixin).

    :class:`~attention_widget.widget.AttentionWidget` calls :meth:`_init_long` in its
    constructor, holds :attr:`_lock` in its handlers and hands a long computation to
    :meth:`_start_long`; its ``_show(traced, start)`` and ``_fail(error)`` draw the result,
    in the :class:`LongView` its ``_long`` builds when first read (:mod:`attention_widget.views`).
    """

    def _init_long(self) -> None:
        self._lock = threading.RLock()
        self._jobs = Jobs(self._lock)

    def _start_long(self) -> None:
        """Compute the trace of the current settings in a worker thread (the newest is shown)."""
        settings, start, view = self._settings(), time.perf_counter(), self._long
        on_screen = isinstance(getattr(self._traced, "trace", None), LongTrace)

        def compute(token: threading.Event) -> Traced:
            with (contextlib.nullcontext(view.report) if on_screen
                  else self._panel.progress()) as report:
                return self._source.trace(settings, view.reporter(token, report), token)

        def done(traced: Traced) -> None:
            self._show(traced, start)
            view.done(time.perf_counter() - start)
            self._sync()

        self._panel.show_busy("")
        view.report(0.0, "starting")
        self._jobs.start(compute, done, self._fail)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the trace of the newest settings is drawn (or refused).

        Above ``LONG_THRESHOLD`` tokens a trace is computed in a worker thread, and the
        widget's ``trace`` is the one on screen until the newest is drawn.  True when done,
        False if ``timeout`` seconds passed first.
        """
        return self._jobs.wait(timeout)

    def head_weights(self, head: int) -> np.ndarray:
        """The exact ``(seq_len, seq_len)`` weights of head ``head`` of the newest trace.

        Waits for the trace (:meth:`wait`).  Up to ``LONG_THRESHOLD`` tokens a float64 copy of
        ``trace.weights[head]``; above, computed now block by block in float32
        (:meth:`~attention_widget.long.LongTrace.head_weights`): ValueError, naming the limit,
        when one head would need more than ``LONG_MEMORY_LIMIT_BYTES``.
        """
        self.wait()
        trace = self.trace
        if trace is None:
            raise ValueError("nothing drawn yet: the widget has no valid input")
        if isinstance(trace, LongTrace):
            return trace.head_weights(head)
        if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not (
                0 <= head < trace.n_heads):
            raise ValueError(f"head must be an integer in 0..{trace.n_heads - 1}, got {head!r}")
        return trace.weights[head].copy()

    def zoom(self, queries: tuple[int, int], keys: tuple[int, int]) -> None:
        """Zoom a long trace on queries ``start .. stop - 1`` against keys ``start .. stop - 1``.

        As a box dragged on the focus head's overview does (at most ``ZOOM_MAX`` a side).
        """
        self.wait()
        self._long.set_zoom(tuple(queries), tuple(keys))

    @property
    def long_figs(self) -> dict[str, PanelFigure]:
        """The figures of a long trace's view, by name (``long-heads``, ``long-focus``, ...)."""
        return self._long.figs

    def _long_export(self) -> dict[str, Any]:
        """What an export adds for a long trace: the zoom, when the user chose one."""
        if not self._long_shown() or not self._long.zoom_chosen:
            return {}
        return {"zoom": (self.head, *self._long.zoom)}

    def _long_shown(self) -> bool:
        return isinstance(getattr(self._traced, "trace", None), LongTrace)


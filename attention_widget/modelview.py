"""The model view: every layer × head of a model at a glance, with two aggregates per layer.

One row per layer, one thumbnail per head: that head's attention weights (queries down, keys
across) in the diagram's colours (:mod:`attention_widget.colors`, the sequential table on the
fixed scale 0 .. 1), then two aggregates of the layer (:mod:`attention_widget.aggregate`):

* **mean**: the mean over the layer's heads, ``Ā_ℓ = (1/H) Σ_h A_ℓh``;
* **rollout**: attention rollout through layers 0 .. ℓ (Abnar & Zuidema 2020),
  ``R_ℓ = rownorm(0.5 Ā_ℓ + 0.5 I) R_(ℓ-1)``, ``R_(-1) = I``.

Under each thumbnail, the head's role as :func:`attention_widget.roles.head_roles` measures it
(shortened where the thumbnail is narrow).  The whole grid is one palette PNG, as
:class:`~attention_widget.plots.PanelFigure` draws a stage, so 32 layers × 32 heads cost one
image; a thumbnail has at most as many pixels a side as it has on screen: longer texts are
averaged over blocks of tokens (:func:`pool`), and the view says so.  A transparent grid over
the image takes the clicks and the hover.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import bqplot as bq
import ipywidgets as W
import numpy as np
import traitlets as T

from .aggregate import attention_rollout, head_mean
from .attentions import Attentions
from .colors import as_drawn, hex_colors, levels
from .controls import readout
from .marks import ImageMark
from .plots import TRANSPARENT
from .roles import HeadRole, head_roles

__all__ = [
    "AGGREGATES", "ModelGrid", "ModelView", "ModelViewHooks", "model_grid", "pool", "short_label",
]

PLOT_PX = 760  # widest plot area of the grid: fits JupyterLab's notebook at 1280 px
MAX_SLOT_PX = 110  # a thumbnail and its gap at most this wide (few heads)
LABEL_PX = 13  # room under a thumbnail for its role (10 px text)
FONT_PX = 10
MARGIN = {"top": 40, "bottom": 46, "left": 64, "right": 12}
#: The aggregate columns after the heads, and what each shows.
AGGREGATES = {
    "mean": "mean over the layer's heads: Ā_ℓ = (1/H) Σ_h A_ℓh",
    "rollout": ("attention rollout through layers 0..ℓ (Abnar & Zuidema 2020): R_ℓ = "
                "rownorm(0.5·Ā_ℓ + 0.5·I) · R_(ℓ−1), R_(−1) = I; row i: how much of token i "
                "after layer ℓ comes from each input token"),
}
#: Shorter names of the roles, for narrow thumbnails.
SHORT_ROLES = {"previous token": "prev", "next token": "next", "self": "self",
               "first token": "first", "special tokens": "special", "broad": "broad"}
HIGHLIGHT = "#ff3d8b"
HOVER_HINT = "<i>hover a thumbnail for its layer, head and role; click it to open it</i>"


def pool(a: np.ndarray, m: int) -> np.ndarray:
    """The last two axes of ``a`` averaged over an ``m × m`` grid of near-equal blocks.

    Parameters
    ----------
    a : ndarray, shape (..., n, n)
    m : int
        Blocks a side; ``a`` is returned as it is when ``n <= m``.

    Returns
    -------
    ndarray, shape (..., m, m)
        ``out[..., r, c]`` = the mean of ``a[..., rows of block r, columns of block c]``, the
        blocks cut at ``round(k n / m)``.
    """
    n = a.shape[-1]
    if n <= m:
        return a
    edges = np.round(np.linspace(0, n, m + 1)).astype(int)  # (m + 1,) block boundaries
    starts, sizes = edges[:-1], np.diff(edges)  # (m,), every size >= 1 since m < n
    cols = np.add.reduceat(a, starts, axis=-1) / sizes  # (..., n, m)
    return np.add.reduceat(cols, starts, axis=-2) / sizes[:, None]  # (..., m, m)


def short_label(role: HeadRole) -> str:
    """``"prev 0.98"``: :attr:`HeadRole.label` with a shorter role name."""
    short = SHORT_ROLES[role.role]
    return short if role.role == "broad" else f"{short} {role.share:.2f}"


@dataclass(frozen=True)
class ModelGrid:
    """What the model view shows, before it is coloured.

    Attributes
    ----------
    heads : list of ndarray, n_layers arrays of shape (n_heads, n, n)
        Every head's weights over the tokens shown.
    means : ndarray, shape (n_layers, n, n)
        :func:`~attention_widget.aggregate.head_mean` of every layer.
    rollout : ndarray, shape (n_layers, n, n)
        ``rollout[l]``: :func:`~attention_widget.aggregate.attention_rollout` through layers
        0 .. l (``per_layer=True``).
    roles : list of list of HeadRole
        ``roles[l][h]``: :func:`~attention_widget.roles.head_roles` of layer ``l``; empty when
        they cannot be measured (rows that do not sum to 1).
    tokens : list of str, length n
    roles_note : str
        Why there are no roles ('' if there are).
    keys_note : str
        What was left out of keys that are not tokens ('' if every key is a token).
    """

    heads: list[np.ndarray]
    means: np.ndarray
    rollout: np.ndarray
    roles: list[list[HeadRole]]
    tokens: list[str]
    roles_note: str = ""
    keys_note: str = ""

    @property
    def n_layers(self) -> int:
        """Rows of the grid."""
        return len(self.heads)

    @property
    def n_heads(self) -> int:
        """Head thumbnails per row."""
        return int(self.heads[0].shape[0])


def model_grid(att: Attentions, keep: np.ndarray | None = None) -> ModelGrid:
    """The model view's arrays from every layer's weights.

    Parameters
    ----------
    att : Attentions
        Every layer's weights over every token (special tokens included).
    keep : ndarray of int, optional
        The tokens to show (e.g. without special tokens).  Means, rollout and roles are
        computed over every token first, then cut: they describe the model as it ran.

    Returns
    -------
    ModelGrid
    """
    special = None if att.special is None else np.array(att.special, dtype=bool)
    n = len(att.tokens)
    layers = [a[..., :n] for a in att.layers]  # (n_heads, n, n): the keys that are tokens
    keys_note = ""
    if any(a.shape[-1] > n for a in att.layers):  # e.g. DeepSeek V4's compressed entries
        keys_note = ("keys that are not tokens (compressed entries) are left out: the "
                     "thumbnails show the token keys only, and the mean and rollout use them "
                     "(rows renormalised)")
    try:
        roles, note = [head_roles(a, att.tokens, special) for a in layers], ""
    except ValueError as err:  # e.g. rows that do not sum to 1 (sinks): no roles to measure
        roles, note = [], f"roles not measured: {err}"
    means = head_mean(layers)  # (L, n, n)
    rollout = attention_rollout(layers, per_layer=True)  # (L, n, n)
    heads, tokens = layers, list(att.tokens)
    if keep is not None:
        sq = np.ix_(keep, keep)
        heads = [a[:, keep][:, :, keep] for a in heads]
        means, rollout = means[:, sq[0], sq[1]], rollout[:, sq[0], sq[1]]
        tokens = [tokens[i] for i in keep]
    return ModelGrid(heads, means, rollout, roles, tokens, note, keys_note)


@dataclass(frozen=True)
class _Layout:
    """Where the thumbnails go, in image pixels (one per drawn cell) and screen pixels."""

    n_layers: int
    n_heads: int
    cells: int  # cells a side of a thumbnail (tokens, or blocks of tokens)
    gap: int  # image pixels between thumbnails
    label_rows: int  # image pixels under each row of thumbnails for the role labels
    px: float  # screen pixels per image pixel

    @property
    def slot(self) -> int:
        """Image pixels from one thumbnail's left edge to the next one's."""
        return self.cells + self.gap

    @property
    def row(self) -> int:
        """Image pixels from one layer's top edge to the next one's."""
        return self.cells + self.gap + self.label_rows

    def x0(self, column: int) -> int:
        """Left edge of column ``column`` (heads, then the aggregates after a wider gap)."""
        return column * self.slot + (self.slot // 2 if column >= self.n_heads else 0)

    def y0(self, layer: int) -> int:
        """Top edge of layer ``layer``'s row."""
        return layer * self.row

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return self.n_layers * self.row - self.gap, self.x0(self.n_heads + 2) - self.gap


def plan(n_layers: int, n_heads: int, n_tokens: int) -> _Layout:
    """The layout of a grid: thumbnails as large as :data:`PLOT_PX` allows.

    At least a screen pixel per cell: more tokens than a thumbnail has pixels are pooled.
    """
    columns = n_heads + 2.5  # heads, a half-slot gap, mean, rollout
    slot_px = min(MAX_SLOT_PX, PLOT_PX / columns)
    gap_px = max(2.0, slot_px / 12)
    cells = max(1, min(n_tokens, int(slot_px - gap_px)))  # at least a screen pixel a cell
    gap = max(1, round(gap_px * cells / (slot_px - gap_px)))  # in cells
    px = slot_px / (cells + gap)  # screen pixels per cell: a slot fills slot_px
    label_rows = math.ceil(LABEL_PX / px) if slot_px >= 34 else 0
    return _Layout(n_layers, n_heads, cells, gap, label_rows, px)


def _text_px(text: str) -> float:
    """Estimated width of ``text`` at :data:`FONT_PX` (sans-serif)."""
    return 0.56 * FONT_PX * len(text)


class ModelView:
    """The grid of every layer × head, the aggregates, and the head picked by a click.

    Parameters
    ----------
    on_pick : callable(layer, head)
        Called when a thumbnail is clicked: ``head`` is None for an aggregate.

    Attributes
    ----------
    box : ipywidgets.VBox
        What the widget shows (CSS class ``aw-model-view``).
    figure : bqplot.Figure
    """

    def __init__(self, on_pick: Callable[[int, int | None], None]) -> None:
        self._on_pick = on_pick
        self.x_scale = bq.LinearScale(min=-0.5, max=0.5, allow_padding=False)
        self.y_scale = bq.LinearScale(min=-0.5, max=0.5, allow_padding=False, reverse=True)
        scales = {"x": self.x_scale, "y": self.y_scale}
        fixed = {"x": True, "y": True}
        self.color_scale = bq.ColorScale(min=0.0, max=1.0)
        self._image = ImageMark(self.x_scale, self.y_scale)
        self.image = self._image.mark
        self.labels = bq.Label(x=[0.0], y=[0.0], text=[""], colors=["#606060"],
                               default_size=FONT_PX, align="middle", preserve_domain=fixed,
                               scales=scales)
        self.outline = bq.Lines(x=np.zeros(5), y=np.zeros(5), colors=[HIGHLIGHT],
                                stroke_width=3, preserve_domain=fixed, scales=scales,
                                visible=False)
        self.grid = bq.GridHeatMap(
            row=np.arange(2.0), column=np.arange(2.0), color=np.zeros((2, 2)), row_align="start",
            column_align="start", stroke=None, scales={
                "row": self.y_scale, "column": self.x_scale,
                "color": bq.ColorScale(min=0.0, max=1.0,
                                       colors=["rgba(0,0,0,0)", "rgba(0,0,0,0)"])},
            interactions={"hover": "tooltip"}, tooltip=None)
        self.grid.on_hover(self._hovered)
        self.grid.on_element_click(self._clicked)
        self.x_axis = bq.Axis(scale=self.x_scale, side="top", grid_lines="none",
                              tick_values=np.array([]), tick_style={"font-size": "11px"})
        self.y_axis = bq.Axis(scale=self.y_scale, side="left", grid_lines="none",
                              tick_values=np.array([]), tick_style={"font-size": "11px"})
        self.c_axis = bq.ColorAxis(scale=self.color_scale, side="bottom", num_ticks=3,
                                   tick_format=".2g", label="weight")
        self.figure = bq.Figure(
            marks=[self.image, self.labels, self.outline, self.grid],
            axes=[self.x_axis, self.y_axis, self.c_axis], fig_margin=dict(MARGIN),
            padding_x=0.0, padding_y=0.0, animation_duration=0, display_toolbar=False,
            layout={"width": "400px", "height": "200px"}, _dom_classes=("aw-model-figure",))
        self.header, self.readout, self.legend = (
            readout(c) for c in ("aw-model-header", "aw-model-readout", "aw-model-legend"))
        self.readout.value = HOVER_HINT  # (a line from the start: the hover shifts nothing)
        self.box = W.VBox([self.header, self.readout, self.figure, self.legend],
                          _dom_classes=("aw-model-view",))
        self._grid: ModelGrid | None = None
        self._layout: _Layout | None = None
        self._shown: dict[str, np.ndarray] = {}
        self._table = "viridis"
        self.set_colormap("viridis")

    # -- drawing -----------------------------------------------------------------------------
    def set_colormap(self, name: str) -> None:
        """Colour with sequential table ``name`` (the diagram's weights' table)."""
        self._table = name
        self.color_scale.colors = hex_colors(name)
        if self._grid is not None:
            self._send_image()

    def draw(self, grid: ModelGrid, layer: int, head: int, *, title: str = "") -> int:
        """Show ``grid``, outline ``(layer, head)``; return the bytes of the image sent.

        ``title`` starts the header line (e.g. the model).
        """
        lay = plan(grid.n_layers, grid.n_heads, len(grid.tokens))
        self._grid, self._layout = grid, lay
        m = lay.cells
        self._shown = {"heads": as_drawn(np.stack([pool(a, m) for a in grid.heads])),
                       "mean": as_drawn(pool(grid.means, m)),
                       "rollout": as_drawn(pool(grid.rollout, m))}
        height, width = lay.size
        with self.figure.hold_sync():
            self.x_scale.min, self.x_scale.max = -0.5, width - 0.5
            self.y_scale.min, self.y_scale.max = -0.5, height - 0.5
            margin = self.figure.fig_margin
            side = margin["left"] + margin["right"]
            self.figure.layout.width = f"{round(width * lay.px) + side}px"
            self.figure.layout.height = (
                f"{round(height * lay.px) + margin['top'] + margin['bottom']}px")
            self._axes(lay)
            self._role_labels(grid, lay)
            self._click_grid(lay)
            sent = self._send_image()
            self.select(layer, head)
        self.header.value = self._header(grid, lay, title)
        self.legend.value = self._legend(lay, grid.roles_note, grid.keys_note)
        return sent

    def _send_image(self) -> int:
        """Colour the thumbnails into one palette PNG and show it; return its bytes."""
        lay = self._layout
        assert lay is not None
        grid = np.full(lay.size, TRANSPARENT, dtype=np.uint8)  # (height, width)
        m = lay.cells
        columns = [*self._shown["heads"].transpose(1, 0, 2, 3), self._shown["mean"],
                   self._shown["rollout"]]  # n_heads + 2 arrays (n_layers, m, m)
        for c, arrays in enumerate(columns):
            x0 = lay.x0(c)
            for layer, a in enumerate(arrays):
                y0 = lay.y0(layer)
                levels(a, 0.0, 1.0, out=grid[y0:y0 + m, x0:x0 + m])
        height, width = lay.size  # (the first image row at the larger y: reversed scale)
        sent = self._image.fill(grid, self._table, ([-0.5, width - 0.5], [height - 0.5, -0.5]))
        self._image.show_pending()
        return sent

    def _axes(self, lay: _Layout) -> None:
        centre = (lay.cells - 1) / 2
        x_labels = [str(h) for h in range(lay.n_heads)] + list(AGGREGATES)
        step = 1 if lay.slot * lay.px >= 18 else 2  # (two-digit head numbers need ~18 px)
        shown = [c for c in range(lay.n_heads) if c % step == 0] + [lay.n_heads, lay.n_heads + 1]
        xs = np.array([lay.x0(c) + centre for c in shown], dtype=float)
        self.x_axis.tick_values = xs
        self.x_axis.tick_labels = {_key(x): x_labels[c] for x, c in zip(xs, shown, strict=True)}
        ys = np.array([lay.y0(i) + centre for i in range(lay.n_layers)], dtype=float)
        self.y_axis.tick_values = ys
        self.y_axis.tick_labels = {_key(y): f"layer {i}" for i, y in enumerate(ys)}
        self.x_axis.label = "head"

    def _role_labels(self, grid: ModelGrid, lay: _Layout) -> None:
        """Each head's role under its thumbnail, where there is room for it."""
        room = lay.cells * lay.px + lay.gap * lay.px
        xs, ys, texts = [], [], []
        if lay.label_rows:
            for layer, roles in enumerate(grid.roles):
                for r in roles:
                    text = r.label if _text_px(r.label) <= room else short_label(r)
                    if _text_px(text) > room:
                        text = SHORT_ROLES[r.role]
                    xs.append(lay.x0(r.head) + (lay.cells - 1) / 2)
                    ys.append(lay.y0(layer) + lay.cells - 0.5 + lay.label_rows / 2)
                    texts.append(text)
        with self.labels.hold_sync():
            self.labels.x, self.labels.y = np.array(xs or [0.0]), np.array(ys or [0.0])
            self.labels.text = texts or [""]  # (bqplot centres each text on its anchor)

    def _click_grid(self, lay: _Layout) -> None:
        """The transparent cells over the thumbnails that take clicks and hover."""
        columns = lay.n_heads + 2
        # one row more than the layers, below the image: bqplot squeezes a grid of one row
        # to a vector, and a click there finds no layer
        rows = np.array([lay.y0(i) - 0.5 for i in range(lay.n_layers + 1)], dtype=float)
        cols = np.array([lay.x0(c) - 0.5 for c in range(columns)], dtype=float)
        with self.grid.hold_sync(), self.grid.hold_trait_notifications():
            self.grid.color = np.zeros((lay.n_layers + 1, columns))
            self.grid.row, self.grid.column = rows, cols

    def select(self, layer: int, head: int | None) -> None:
        """Outline the thumbnail of ``(layer, head)`` (the head the diagram shows)."""
        lay = self._layout
        if lay is None or not (0 <= layer < lay.n_layers):
            self.outline.visible = False
            return
        c = head if head is not None and 0 <= head < lay.n_heads else None
        if c is None:
            self.outline.visible = False
            return
        # around the thumbnail and its role label, within the gaps to its neighbours
        left, top = lay.x0(c) - 0.5 - lay.gap / 2, lay.y0(layer) - 0.5 - lay.gap / 2
        right, bottom = left + lay.cells + lay.gap, top + lay.cells + lay.gap / 2 + lay.label_rows
        with self.outline.hold_sync():
            self.outline.x = np.array([left, right, right, left, left])
            self.outline.y = np.array([top, top, bottom, bottom, top])
            self.outline.visible = True

    # -- text ----------------------------------------------------------------------------------
    def _header(self, grid: ModelGrid, lay: _Layout, title: str) -> str:
        n = len(grid.tokens)
        pooled = (f" {n} tokens: each cell of a thumbnail is the mean of a block of about "
                  f"{n / lay.cells:.1f} × {n / lay.cells:.1f} weights." if lay.cells < n
                  else f" {n} tokens: one cell per weight.")
        lead = f"<b>{html.escape(title)}</b> · " if title else ""
        return (f"{lead}<b>Model view</b>: every layer × head, attention weights on the fixed "
                f"scale 0..1 (queries down, keys across) as the model computes them "
                f"(temperature 1).{html.escape(pooled)} Click a thumbnail to open that layer "
                "and head in the diagram.")

    def _legend(self, lay: _Layout, roles_note: str, keys_note: str = "") -> str:
        parts = [f"<b>{name}</b>: {html.escape(text)}" for name, text in AGGREGATES.items()]
        if keys_note:
            parts.append(f"<b>keys</b>: {html.escape(keys_note)}")
        roles = ("<b>under each head</b>: its role as head_roles measures it, the role with the "
                 "largest mean share of weight (previous token, next token, self, first token, "
                 "special tokens; broad below 0.40)")
        if roles_note:
            roles = f"<b>roles</b>: {html.escape(roles_note)}"
        elif not lay.label_rows:
            roles = ("<b>roles</b>: hover a thumbnail for its head's role (head_roles), too "
                     "narrow to write under it")
        return ("<div style='font-size:90%'>" + "<br>".join([*parts, roles]) + "</div>")

    def describe(self, layer: int, column: int) -> str:
        """What the thumbnail at ``(layer, column)`` shows, in words (plain text)."""
        grid = self._grid
        if grid is None:
            return ""
        if column < grid.n_heads:
            role = f"{grid.roles[layer][column].label} " if grid.roles else ""
            return f"layer {layer} · head {column} · {role}(click to open it)"
        if column == grid.n_heads:
            return f"layer {layer} · mean over its {grid.n_heads} heads"
        return f"layer {layer} · rollout through layers 0..{layer}"

    # -- events --------------------------------------------------------------------------------
    def _cell(self, data: dict) -> tuple[int, int] | None:
        lay = self._layout
        if lay is None:
            return None
        try:
            y, x = float(data["row"]), float(data["column"])
        except (KeyError, TypeError, ValueError):
            return None
        layer = round((y + 0.5) / lay.row)
        cols = [lay.x0(c) - 0.5 for c in range(lay.n_heads + 2)]
        column = int(np.argmin(np.abs(np.array(cols) - x)))
        if not 0 <= layer < lay.n_layers:
            return None
        return layer, column

    def _hovered(self, _mark: Any, event: dict) -> None:
        cell = self._cell(event.get("data", {}))
        if cell is not None:
            self.readout.value = html.escape(self.describe(*cell))

    def _clicked(self, _mark: Any, event: dict) -> None:
        cell = self._cell(event.get("data", {}))
        if cell is not None:
            self.pick(*cell)

    def pick(self, layer: int, column: int) -> None:
        """As a click on the thumbnail at ``(layer, column)``.

        Columns after the heads are the aggregates: they open the layer, head unchanged.
        """
        lay = self._layout
        if lay is None or not (0 <= layer < lay.n_layers and 0 <= column < lay.n_heads + 2):
            return
        self._on_pick(layer, column if column < lay.n_heads else None)

    # -- what is shown (tests) -----------------------------------------------------------------
    def displayed(self) -> dict[str, np.ndarray]:
        """The arrays coloured into the image (float32, see :func:`.colors.as_drawn`).

        ``heads`` (n_layers, n_heads, m, m), ``mean`` and ``rollout`` (n_layers, m, m); ``m`` is
        the number of tokens, or of blocks of tokens (:func:`pool`).
        """
        return dict(self._shown)

    def cell_origin(self, layer: int, column: int) -> tuple[int, int]:
        """(row, column) of the image pixel of the top-left cell of a thumbnail."""
        assert self._layout is not None
        return self._layout.y0(layer), self._layout.x0(column)

    def labels_shown(self) -> list[str]:
        """The role labels written under the thumbnails (layer by layer, head by head)."""
        return [t for t in self.labels.text if t]


def _key(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def layers_kept(special: Sequence[bool] | None, show_special: bool) -> np.ndarray | None:
    """The tokens the view shows: all (None), or the ones that are not special."""
    if show_special or special is None:
        return None
    keep = np.flatnonzero(~np.array(special, dtype=bool))
    if keep.size == 0:
        raise ValueError("The text has only special tokens; show them or add words.")
    return keep


class ModelViewHooks(T.HasTraits):
    """The widget's side of the model view (a part of :class:`~attention_widget.AttentionWidget`).

    The grid is drawn for sources that give every layer's weights
    (:meth:`~attention_widget.sources.Source.layer_weights`), again when the text or the
    special tokens shown change; a layer or head change only moves the outline.  A click sets
    the widget's ``layer`` and ``head``: the diagram then shows that head.
    """

    show_model_view = T.Bool(True, help="Show the model view (every layer × head) of a model "
                             "with layers; click a thumbnail to open it in the diagram.")

    _model_view: ModelView | None = None
    _model_key: tuple | None = None

    @property
    def model_view(self) -> ModelView | None:
        """The model view (None for a source of one layer)."""
        return self._model_view

    def _model_views(self) -> tuple[W.Widget, ...]:
        """What the layout shows of the model view."""
        shown = self._model_view is not None and self.show_model_view
        return (self._model_view.box,) if shown else ()

    def _draw_model_view(self) -> int:
        """Draw the grid for the current text (or only outline the layer and head)."""
        src, s = self._source, self._settings()
        key = (s.text, s.show_special)
        if key == self._model_key and self._model_view is not None:
            self._model_view.select(self.layer, self.head)
            return 0
        try:
            att = src.layer_weights(s)
            if att is None:
                return 0
            grid = model_grid(att, layers_kept(att.special, s.show_special))
        except ValueError as err:  # (a long text's layers, rollout of weights not square)
            if self._model_view is not None:
                self._model_view.header.value = f"<i>No model view: {html.escape(str(err))}</i>"
            return 0
        if self._model_view is None:
            self._model_view = ModelView(self._pick)
            self._model_view.set_colormap(self.colormap)
            self._layout()
        self._model_key = key
        return self._model_view.draw(grid, self.layer, self.head, title=src.describe())

    @T.observe("colormap")
    def _model_view_colormap(self, change: dict) -> None:
        if self._model_view is not None:
            self._model_view.set_colormap(change["new"])

    def _pick(self, layer: int, head: int | None) -> None:
        """A thumbnail was clicked: show its layer (and head) in the diagram."""
        with self.hold_trait_notifications():
            self.layer = layer
            if head is not None:
                self.head = head

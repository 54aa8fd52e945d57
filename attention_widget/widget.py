"""AttentionWidget: one multi-head self-attention layer as a live diagram.

Data flow, one direction: controls -> traits (validated) -> engine -> AttentionTrace -> plots.
The widget owns the state and the wiring; the maths is in :mod:`attention_widget.engine` and
the drawing in :mod:`attention_widget.plots`.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bqplot as bq
import ipywidgets as W
import numpy as np
import traitlets as T

from .engine import (
    AttentionParams,
    AttentionTrace,
    init_params,
    multi_head_attention,
    with_temperature,
)
from .inputs import embed, tokenize
from .plots import COLORMAPS, Panel, PanelFigure, shown_together

__all__ = ["MAX_TOKENS", "AttentionWidget"]

#: Longest text the widget draws (tokens).  Beyond it the widget shows a message.
MAX_TOKENS = 512
D_MODEL_CHOICES = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768)
STAGES = (
    "1 · tokens and input X",
    "2 · projections Q, K, V",
    "3 · scores",
    "4 · attention weights",
    "5 · head outputs",
    "6 · concat and output",
)
Q_COLOR, K_COLOR, V_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c"  # one colour code, every stage
BUSY_AFTER_S = 0.2
GRID_FOCUS_MAX = 40  # focus panel with per-cell hover up to this many tokens
HEADS_PER_ROW = 4  # scores and weights: one square panel per head, rows of this many
_CHOICE_CONTROLS = ("d_model", "n_heads", "n_kv_heads", "head", "query")
DEFAULT_TEXT = "The animal didn't cross the street because it was too tired."


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _progress_bar(description: str) -> tuple[W.HBox, Any]:
    """A progress bar with a message, and the ``report(fraction, message)`` that drives it."""
    bar = W.FloatProgress(min=0.0, max=1.0, description=description, bar_style="info")
    label = W.Label()
    box = W.HBox([bar, label])
    box.add_class("aw-progress")

    def report(fraction: float, message: str) -> None:
        bar.value, label.value = float(np.clip(fraction, 0.0, 1.0)), str(message)

    return box, report


def _html(css_class: str) -> W.HTML:
    """An empty HTML readout carrying ``css_class`` (for tests and custom styling)."""
    out = W.HTML()
    out.add_class(css_class)
    return out


def _fmt_t(t: float) -> str:
    return f"{t:.3g}"


def _grid_index(values: np.ndarray, got: object) -> int:
    """Index of the grid row/column whose value is ``got`` (-1 if none)."""
    try:
        got = float(got)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -1
    hit = np.flatnonzero(np.isclose(np.asarray(values, dtype=float), got))
    return int(hit[0]) if hit.size else -1


class AttentionWidget(W.VBox):
    """Multi-head self-attention, every stage drawn live and linked to sliders.

    Parameters
    ----------
    text : str
        The sentence; tokenized with :func:`attention_widget.tokenize`.
    d_model : int
        Model width (one of the offered widths when built from text).
    n_heads : int
        Query heads; must divide ``d_model``.
    n_kv_heads : int, optional
        Key/value heads (grouped-query attention); must divide ``n_heads``.  Default: n_heads.
    temperature : float
        Softmax temperature ``T > 0``.
    mask : {"none", "causal", "sliding"}
        Attention mask; ``"sliding"`` uses ``window``.
    window : int
        Keys per query for the sliding mask.
    seed : int
        Seed of the random weights and token vectors.
    positional : bool
        Add sinusoidal positional encodings to the token vectors.
    colormap : str
        One of ``COLORMAPS`` (all colour-blind safe).

    Attributes
    ----------
    trace : AttentionTrace
        What is on screen.
    params : AttentionParams
    tokens : list of str
    """

    text = T.Unicode(DEFAULT_TEXT, help="The sentence to attend over.")
    d_model = T.Int(64, help="Model width: columns of X, Q, K, V and the output.")
    n_heads = T.Int(4, help="Number of query heads; divides d_model.")
    n_kv_heads = T.Int(None, allow_none=True, help="Key/value heads (GQA); divides n_heads.")
    temperature = T.Float(1.0, help="Softmax temperature T > 0: weights = softmax(scores / T).")
    mask = T.Enum(["none", "causal", "sliding"], "none", help="Which keys each query may see.")
    window = T.Int(3, help="Keys per query for the sliding-window mask.")
    seed = T.Int(0, help="Seed of the weights and token vectors.")
    positional = T.Bool(True, help="Add sinusoidal positional encodings to X.")
    colormap = T.Enum(list(COLORMAPS), "viridis", help="Colour scheme (colour-blind safe).")
    head = T.Int(0, help="Head shown large in the focus panel.")
    query = T.Int(-1, help="Query token highlighted in every head (-1: none).")
    step = T.Int(len(STAGES), help="Stages revealed (step-through mode); all by default.")
    layer = T.Int(0, help="Layer of a pretrained model whose attention is shown.")
    show_special = T.Bool(True, help="Show special tokens ([CLS], [SEP], BOS) of a pretrained "
                          "model; hidden, their rows and columns are left out of the panels.")
    error = T.Unicode("", read_only=True, help="Message for the last bad input, '' if none.")
    notice = T.Unicode("", read_only=True, help="Last automatic adjustment, e.g. snapped heads.")

    _CONFIG = ("text", "d_model", "n_heads", "n_kv_heads", "temperature", "mask", "window",
               "seed", "positional", "layer", "show_special")

    def __init__(self, text: str = DEFAULT_TEXT, *, d_model: int = 64, n_heads: int = 4,
                 n_kv_heads: int | None = None, temperature: float = 1.0, mask: str = "none",
                 window: int = 3, seed: int = 0, positional: bool = True,
                 colormap: str = "viridis", **kwargs: Any) -> None:
        self._ready = False
        self._arrays: tuple[np.ndarray, AttentionParams] | None = None
        self._fixed_tokens: list[str] | None = None
        self._last_compute_s = 0.0
        self._bytes_sent = 0
        self._x_cache: tuple | None = None
        self._params_cache: tuple | None = None
        self._trace_inputs: tuple | None = None  # what self.trace was computed from, bar T
        self._drawn_front: tuple | None = None  # tokens and arrays of the stages before softmax
        self._cut_front: tuple | None = None  # those stages without special tokens (real model)
        self._progress_box, self._progress_report = _progress_bar("computing")
        self._progress_box.layout.display = "none"
        self.trace: AttentionTrace | None = None
        self.params: AttentionParams | None = None
        self.tokens: list[str] = []
        arrays = kwargs.pop("_arrays", None)
        self._model: Any = kwargs.pop("_model", None)
        layer = kwargs.pop("layer", 0)
        show_special = kwargs.pop("show_special", True)
        super().__init__(**kwargs)
        if arrays is not None:
            self._arrays = arrays[:2]
            self._fixed_tokens = arrays[2]
        self._build_view()
        with self.hold_trait_notifications():
            self.d_model = d_model
            self.n_heads = n_heads
            self.n_kv_heads = n_kv_heads
            self.temperature = temperature
            self.mask = mask
            self.window = window
            self.seed = seed
            self.positional = positional
            self.colormap = colormap
            self.layer = layer
            self.show_special = show_special
            self.text = text
        self._ready = True
        self._recompute()
        self._sync_controls()

    # ---------------------------------------------------------------------------------------
    # construction
    # ---------------------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, x: np.ndarray, params: AttentionParams,
                    tokens: Sequence[str] | None = None, *, n_heads: int,
                    n_kv_heads: int | None = None, temperature: float = 1.0,
                    mask: str = "none", window: int = 3, **kwargs: Any) -> AttentionWidget:
        """Show your own input and weights.

        Parameters
        ----------
        x : array_like, shape (seq_len, d_model)
        params : AttentionParams
        tokens : sequence of str, optional
            Row labels; default ``"0", "1", ...``.
        n_heads, n_kv_heads, temperature, mask, window
            As for :func:`attention_widget.multi_head_attention`.

        Raises
        ------
        TypeError, ValueError
            When ``x``, ``params`` or ``tokens`` do not fit together.
        """
        if not isinstance(params, AttentionParams):
            raise TypeError(f"params must be an AttentionParams, got {type(params).__name__}")
        if n_kv_heads is None and isinstance(n_heads, int) and n_heads > 0:
            d_head = params.d_model // n_heads
            if d_head and params.d_kv % d_head == 0:
                n_kv_heads = params.d_kv // d_head  # what the weights were made for
        # Validate once through the engine: it names the bad argument.
        multi_head_attention(x, params, n_heads=n_heads, n_kv_heads=n_kv_heads,
                             temperature=temperature, mask=mask, window=window)
        x = np.array(x, dtype=np.float64)
        if tokens is None:
            tokens = [str(i) for i in range(x.shape[0])]
        tokens = [str(t) for t in tokens]
        if len(tokens) != x.shape[0]:
            raise ValueError(f"tokens has {len(tokens)} entries but x has {x.shape[0]} rows")
        return cls(" ".join(tokens), d_model=params.d_model, n_heads=n_heads,
                   n_kv_heads=None if n_kv_heads == n_heads else n_kv_heads,
                   temperature=temperature, mask=mask, window=window,
                   _arrays=(x, params, tokens), **kwargs)

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | Any, text: str = DEFAULT_TEXT, *,
                        layer: int = 0, temperature: float = 1.0, show_special: bool = True,
                        progress: bool = True, **kwargs: Any) -> AttentionWidget:
        """Show the real attention of a pretrained model (NumPy forward, no torch).

        Parameters
        ----------
        model : path or PretrainedModel
            A Hugging Face checkpoint folder (``config.json``, ``model.safetensors``,
            ``tokenizer.json``) or a model from :func:`attention_widget.pretrained.load_pretrained`.
            Needs the ``models`` extra: ``pip install attention-widget[models]``.
        text : str
            Tokenized with the model's own tokenizer.
        layer : int
            Which layer's attention to show (0-based).
        temperature : float
            Re-softmax the real scores with ``T`` (1 = the model as trained).
        show_special : bool
            Show special tokens ([CLS], [SEP], BOS).
        progress : bool
            Show a progress bar while the checkpoint is read and layers run.

        Notes
        -----
        d_model, heads, key/value heads, mask, positional encodings and seed are fixed by the
        trained model: their controls are disabled.  Layer, head, query, temperature and text
        stay live.
        """
        from .pretrained import PretrainedModel, load_pretrained

        box, report = _progress_bar("loading")
        shown = False
        if progress:
            try:
                from IPython import get_ipython
                from IPython.display import display

                if get_ipython() is not None:
                    display(box)
                    shown = True
            except ImportError:  # pragma: no cover - IPython comes with ipywidgets
                pass
        try:
            if isinstance(model, PretrainedModel):
                model.progress = report
            else:
                model = load_pretrained(model, progress=report)
            mask = "causal" if model.causal else "none"
            w = cls(text, d_model=model.d_model, n_heads=model.n_heads,
                    n_kv_heads=None if model.n_kv_heads == model.n_heads else model.n_kv_heads,
                    temperature=temperature, mask=mask, positional=False, layer=layer,
                    show_special=show_special, _model=model, **kwargs)
        finally:
            if shown:
                box.close()
        # Later changes (another layer, a longer text) report into the widget's own bar.
        model.progress = w._progress_report
        return w

    def _build_view(self) -> None:
        self.add_class("attention-widget")
        c: dict[str, W.DOMWidget] = {}
        c["text"] = W.Text(description="text", continuous_update=False,
                           layout={"width": "100%"})
        c["d_model"] = W.SelectionSlider(description="d_model", options=list(D_MODEL_CHOICES),
                                         continuous_update=True)
        c["n_heads"] = W.SelectionSlider(description="n_heads", options=[1])
        c["n_kv_heads"] = W.SelectionSlider(description="n_kv_heads", options=[1])
        c["temperature"] = W.FloatLogSlider(description="temperature", base=10, min=-1.3, max=1.3,
                                            step=0.01, readout_format=".3g")
        c["mask"] = W.ToggleButtons(description="mask", options=["none", "causal", "sliding"],
                                    style={"button_width": "70px"})
        c["window"] = W.BoundedIntText(description="window", min=1, max=MAX_TOKENS,
                                       layout={"width": "150px"})
        c["seed"] = W.BoundedIntText(description="seed", min=0, max=2**31 - 1,
                                     layout={"width": "150px"})
        c["positional"] = W.Checkbox(description="positional encodings", indent=False)
        c["colormap"] = W.Dropdown(description="colours", options=list(COLORMAPS),
                                   layout={"width": "200px"})
        c["head"] = W.Dropdown(description="focus head", options=[0], layout={"width": "200px"})
        c["query"] = W.Dropdown(description="query", options=[("(none)", -1)],
                                layout={"width": "260px"})
        c["step"] = W.IntSlider(description="stages", min=1, max=len(STAGES),
                                layout={"width": "300px"})
        n_layers = self._model.n_layers if self._model is not None else 1
        c["layer"] = W.IntSlider(description="layer", min=0, max=n_layers - 1)
        c["show_special"] = W.Checkbox(description="special tokens", indent=False)
        for name, ctrl in c.items():
            ctrl.add_class(f"aw-{name}")
            if hasattr(ctrl, "style") and "description_width" in ctrl.style.keys:
                ctrl.style.description_width = "initial"
            if name in _CHOICE_CONTROLS:  # options depend on state: wired by _sync_controls
                ctrl.observe(self._on_choice_control, "value")
            else:
                T.link((self, name), (ctrl, "value"))
        self.controls = c
        self._play = W.Play(min=1, max=len(STAGES), interval=1500, description="step through")
        self._play.add_class("aw-play")

        self._summary = _html("aw-summary")
        self._error = _html("aw-error")
        self._notice = _html("aw-notice")
        self._busy = _html("aw-busy")
        self._tokens_html = _html("aw-tokens")
        self._entropy_html = _html("aw-entropy")
        self._focus_html = _html("aw-focus-readout")
        self._hover_html = _html("aw-hover")

        self.figs = {
            "x": PanelFigure("aw-fig-x", signed=True, cell_px=10, max_height=320, label="X"),
            "qkv": PanelFigure("aw-fig-qkv", signed=True, cell_px=10, max_height=320),
            "scores": PanelFigure("aw-fig-scores", signed=True, square=True, max_height=640),
            "weights": PanelFigure("aw-fig-weights", signed=False, square=True, max_height=640),
            "outputs": PanelFigure("aw-fig-outputs", signed=True, cell_px=8, max_height=520),
            "concat": PanelFigure("aw-fig-concat", signed=True, cell_px=10, max_height=320),
            "focus": PanelFigure("aw-fig-focus", signed=False, square=True, max_height=560,
                                 min_height=260),
            "contrib": PanelFigure("aw-fig-contrib", signed=True, cell_px=12, max_height=420),
        }
        self._focus_grid: Any = None

        self._stage_heads: list[tuple[W.HTML, str]] = []

        def stage(i: int, formula: str, *body: W.Widget) -> W.VBox:
            head = W.HTML()
            head.add_class("aw-stage-head")
            self._stage_heads.append((head, f"<b>{STAGES[i]}</b> &nbsp; "
                                            f"<span class='aw-formula'>{formula}</span>"))
            box = W.VBox([head, *body])
            box.add_class("aw-stage")
            box.add_class(f"aw-stage-{i + 1}")
            return box

        def q(s: str, color: str) -> str:
            return f"<b style='color:{color}'>{s}</b>"

        self._stage_boxes = [
            stage(0, "x<sub>i</sub> = embedding(token<sub>i</sub>) + PE(i)",
                  self._tokens_html, self.figs["x"].figure),
            stage(1, f"{q('Q', Q_COLOR)} = X W<sup>Q</sup>, {q('K', K_COLOR)} = X W<sup>K</sup>, "
                  f"{q('V', V_COLOR)} = X W<sup>V</sup>; grey lines mark the heads",
                  self.figs["qkv"].figure),
            stage(2, f"scores = {q('q', Q_COLOR)}·{q('k', K_COLOR)}<sup>T</sup> / √d<sub>head</sub>"
                  " (rows: queries, columns: keys)", self.figs["scores"].figure),
            stage(3, "weights = softmax(scores / T) over keys; grey = masked", self._entropy_html,
                  self.figs["weights"].figure),
            stage(4, f"head<sub>h</sub> = weights<sub>h</sub> {q('V', V_COLOR)}<sub>h</sub>",
                  self.figs["outputs"].figure),
            stage(5, "concat = [head<sub>1</sub> … head<sub>h</sub>]; "
                  "output = concat W<sup>O</sup>",
                  self.figs["concat"].figure),
        ]
        self._focus_parts = (
            W.HTML("<b>Focus</b> &nbsp; one head large; a query row as a weighted sum of V rows"),
            W.HBox([c["head"], c["query"]]),
            self._hover_html,
            self.figs["focus"].figure,
            self._focus_html,
        )
        self._focus_box = W.VBox(self._focus_parts)
        self._focus_box.add_class("aw-focus")
        model_row = []
        if self._model is not None:
            m = self._model
            model_row = [W.HBox([
                W.HTML(f"<b>{html.escape(m.describe())}</b>. The architecture is fixed by the "
                       "trained weights; layer, head, query, temperature and text stay live."),
                c["layer"], c["show_special"]], layout={"flex_flow": "row wrap"})]
        controls = W.VBox([
            *model_row,
            c["text"],
            W.HBox([c["d_model"], c["n_heads"], c["n_kv_heads"]],
                   layout={"flex_flow": "row wrap"}),
            W.HBox([c["temperature"], c["mask"], c["window"]], layout={"flex_flow": "row wrap"}),
            W.HBox([c["seed"], c["positional"], c["colormap"], self._play, c["step"]],
                   layout={"flex_flow": "row wrap"}),
        ])
        controls.add_class("aw-controls")
        self._export_what = W.Dropdown(
            description="export", options=[("whole diagram", "all"), ("weights", "weights"),
                                           ("focus head", "focus")], layout={"width": "230px"})
        self._export_format = W.ToggleButtons(options=["svg", "png"],
                                              style={"button_width": "50px"})
        self._export_button = W.Button(description="prepare download", icon="download")
        self._export_link = W.HTML()
        export_parts = {"export-what": self._export_what, "export-format": self._export_format,
                        "export-button": self._export_button, "export-link": self._export_link}
        for name, wdg in export_parts.items():
            wdg.add_class(f"aw-{name}")
        self._export_button.on_click(lambda _: self._prepare_download())
        self._export_row = W.HBox(list(export_parts.values()), layout={"flex_flow": "row wrap"})
        T.link((self, "step"), (self._play, "value"))
        self._header = (controls, self._export_row, self._summary, self._busy,
                        self._progress_box, self._error, self._notice)
        self._layout_children()

    # ---------------------------------------------------------------------------------------
    # validation: impossible values from Python raise TraitError and change nothing
    # ---------------------------------------------------------------------------------------
    @T.validate("layer")
    def _valid_layer(self, proposal: dict) -> int:
        n = self._model.n_layers if self._model is not None else 1
        if not 0 <= proposal["value"] < n:
            raise T.TraitError(f"layer must be in 0..{n - 1}, got {proposal['value']}")
        return proposal["value"]

    @T.validate("d_model")
    def _valid_d_model(self, proposal: dict) -> int:
        d = proposal["value"]
        if self._model is not None:
            if d != self._model.d_model:
                raise T.TraitError(f"d_model is fixed at {self._model.d_model} by the pretrained "
                                   f"model, got {d}")
            return d
        if self._arrays is not None and d != self._arrays[1].d_model:
            raise T.TraitError(
                f"d_model is fixed at {self._arrays[1].d_model} by the arrays given to "
                f"from_arrays, got {d}"
            )
        if d < 1 or d > 4096:
            raise T.TraitError(f"d_model must be between 1 and 4096, got {d}")
        return d

    @T.validate("n_heads")
    def _valid_n_heads(self, proposal: dict) -> int:
        h = proposal["value"]
        if self._model is not None:
            if h != self._model.n_heads:
                raise T.TraitError(f"n_heads is fixed at {self._model.n_heads} by the pretrained "
                                   f"model, got {h}")
            return h
        if h < 1 or self.d_model % h:
            raise T.TraitError(
                f"n_heads={h} does not divide d_model={self.d_model}: choose one of "
                f"{_divisors(self.d_model)}"
            )
        if self._arrays is not None and h not in self._array_head_options():
            raise T.TraitError(
                f"n_heads={h} does not fit the given weights (w_k has {self._arrays[1].d_kv} "
                f"columns): choose one of {self._array_head_options()}"
            )
        return h

    @T.validate("n_kv_heads")
    def _valid_n_kv(self, proposal: dict) -> int | None:
        kv = proposal["value"]
        if kv is None:
            return None
        if self._model is not None and kv != self._model.n_kv_heads:
            raise T.TraitError(f"n_kv_heads is fixed at {self._model.n_kv_heads} by the "
                               f"pretrained model, got {kv}")
        if kv < 1 or self.n_heads % kv:
            raise T.TraitError(
                f"n_kv_heads={kv} does not divide n_heads={self.n_heads}: choose one of "
                f"{_divisors(self.n_heads)}"
            )
        return kv

    @T.validate("temperature")
    def _valid_temperature(self, proposal: dict) -> float:
        t = proposal["value"]
        if not np.isfinite(t) or t <= 0:
            raise T.TraitError(f"temperature must be a finite number > 0, got {t!r}")
        return t

    @T.validate("window")
    def _valid_window(self, proposal: dict) -> int:
        if proposal["value"] < 1:
            raise T.TraitError(f"window must be >= 1, got {proposal['value']}")
        return proposal["value"]

    @T.validate("seed")
    def _valid_seed(self, proposal: dict) -> int:
        if proposal["value"] < 0:
            raise T.TraitError(f"seed must be >= 0, got {proposal['value']}")
        return proposal["value"]

    @T.validate("head")
    def _valid_head(self, proposal: dict) -> int:
        h = proposal["value"]
        if not 0 <= h < self.n_heads:
            raise T.TraitError(f"head must be in 0..{self.n_heads - 1}, got {h}")
        return h

    @T.validate("query")
    def _valid_query(self, proposal: dict) -> int:
        q = proposal["value"]
        if not -1 <= q < max(len(self.tokens), 1):
            raise T.TraitError(f"query must be -1 or a token index < {len(self.tokens)}, got {q}")
        return q

    @T.validate("step")
    def _valid_step(self, proposal: dict) -> int:
        return int(np.clip(proposal["value"], 1, len(STAGES)))

    def _snap(self) -> None:
        """After d_model or n_heads changed: snap n_heads, n_kv_heads and head to valid values."""
        if self.d_model % self.n_heads:
            new = min(_divisors(self.d_model), key=lambda h: (abs(h - self.n_heads), -h))
            self.set_trait("notice", f"n_heads {self.n_heads} does not divide d_model "
                           f"{self.d_model}: snapped to {new}")
            self.n_heads = new
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
            old = self.n_kv_heads
            # Keep grouped-query attention if possible: the largest divisor below the old value.
            new = max(d for d in _divisors(self.n_heads) if d <= old)
            self.set_trait("notice", f"n_kv_heads {old} does not divide n_heads "
                           f"{self.n_heads}: snapped to {new}")
            self.n_kv_heads = new
        if self.head >= self.n_heads:
            self.head = 0

    def _on_choice_control(self, change: dict) -> None:
        if self._syncing or change["new"] is None:
            return
        name = next(k for k in _CHOICE_CONTROLS if self.controls[k] is change["owner"])
        value = change["new"]
        if name == "n_kv_heads" and value == self.n_heads:
            value = None  # "as many as n_heads": stays so when n_heads changes
        setattr(self, name, value)

    _syncing = False

    def _array_head_options(self) -> list[int]:
        assert self._arrays is not None
        p = self._arrays[1]
        out = []
        for h in _divisors(p.d_model):
            d_head = p.d_model // h
            if p.d_kv % d_head == 0 and h % (p.d_kv // d_head) == 0:
                out.append(h)
        return out

    # ---------------------------------------------------------------------------------------
    # reacting
    # ---------------------------------------------------------------------------------------
    @T.observe(*_CONFIG)
    def _on_config(self, change: dict) -> None:
        if not self._ready:
            return
        self._ready = False  # one recompute for the change and the snaps it causes
        self.set_trait("notice", "")
        try:
            self._snap()
        finally:
            self._ready = True
        self._recompute(change)
        self._sync_controls()

    @T.observe("colormap")
    def _on_colormap(self, change: dict) -> None:
        for fig in self.figs.values():
            fig.set_colormap(self.colormap)
        if self._ready and self.trace is not None:
            self._draw_focus()

    @T.observe("head", "query")
    def _on_focus(self, change: dict) -> None:
        if self._ready and self.trace is not None:
            self._draw_focus()
            self._sync_controls()

    @T.observe("step")
    def _on_step(self, change: dict) -> None:
        self._layout_children()

    def _layout_children(self) -> None:
        """Show the first ``step`` stages.

        Hidden parts leave the DOM: a bqplot figure laid out inside ``display: none`` has a
        0 x 0 size and draws rectangles of negative size.
        """
        focus = (self._focus_box,) if self.step == len(STAGES) else ()
        children = (*self._header, *self._stage_boxes[: self.step], *focus)
        if self.children != children:
            self.children = children

    def _sync_controls(self) -> None:
        """Offer only valid values in the sliders (divisors, tokens)."""
        self._syncing = True
        try:
            c = self.controls
            if self._model is not None:
                choices, heads = [self.d_model], [self.n_heads]
            elif self._arrays is None:
                choices = sorted(set(D_MODEL_CHOICES) | {self.d_model})
                heads = _divisors(self.d_model)
            else:
                choices = [self.d_model]
                heads = self._array_head_options()
            with self.hold_sync():
                if list(c["d_model"].options) != choices:
                    c["d_model"].options = choices
                c["d_model"].value = self.d_model
                if list(c["n_heads"].options) != heads:
                    c["n_heads"].options = heads
                c["n_heads"].value = self.n_heads
                kv_opts = _divisors(self.n_heads)
                if self._model is not None:
                    kv_opts = [self._model.n_kv_heads]
                elif self._arrays is not None and self.trace is not None:
                    kv_opts = [self.trace.n_kv_heads]
                if list(c["n_kv_heads"].options) != kv_opts:
                    c["n_kv_heads"].options = kv_opts
                kv = self.n_kv_heads or self.n_heads
                if self._arrays is not None and self.trace is not None:
                    kv = self.trace.n_kv_heads
                c["n_kv_heads"].value = kv
                head_opts = [(f"head {h}", h) for h in range(self.n_heads)]
                if c["head"].options != tuple(head_opts):
                    c["head"].options = head_opts
                c["head"].value = self.head
                query_opts = [("(none)", -1),
                              *((f"{i}: {t}", i) for i, t in enumerate(self.tokens))]
                if c["query"].options != tuple(query_opts):
                    c["query"].options = query_opts
                c["query"].value = self.query
                c["window"].disabled = self.mask != "sliding"
                fixed = self._arrays is not None
                for name in ("text", "d_model", "seed", "positional"):
                    c[name].disabled = fixed
                if self._model is not None:  # fixed by the trained weights
                    for name in ("d_model", "n_heads", "n_kv_heads", "mask", "window", "seed",
                                 "positional"):
                        c[name].disabled = True
        finally:
            self._syncing = False

    def _inputs(self) -> tuple[list[str], np.ndarray, AttentionParams]:
        """Tokens, X and params for the current settings; ValueError with a message if bad."""
        if self._arrays is not None:
            x, params = self._arrays
            return list(self._fixed_tokens or []), x, params
        if not self.text.strip():
            raise ValueError("The text is empty: type a sentence to see its attention.")
        tokens = tokenize(self.text)
        if not tokens:
            raise ValueError("The text has no words or symbols to attend over.")
        if len(tokens) > MAX_TOKENS:
            raise ValueError(f"The text has {len(tokens)} tokens; the widget draws at most "
                             f"{MAX_TOKENS}. Shorten it.")
        x_key = (tuple(tokens), self.d_model, self.seed, self.positional)
        if self._x_cache is None or self._x_cache[0] != x_key:
            self._x_cache = (x_key, embed(tokens, self.d_model, seed=self.seed,
                                          positional=self.positional))
        # Heads are slices of one projection: without grouped K/V heads the parameters do not
        # depend on n_heads, so a head-count change reuses them (and their cached float copies).
        p_key = (self.d_model, self.seed, None if self.n_kv_heads is None
                 else (self.n_heads, self.n_kv_heads))
        if self._params_cache is None or self._params_cache[0] != p_key:
            self._params_cache = (p_key, init_params(self.d_model, self.n_heads,
                                                     self.n_kv_heads, seed=self.seed))
        return tokens, self._x_cache[1], self._params_cache[1]

    def _recompute(self, change: dict | None = None) -> None:
        what = "" if change is None else f"{change['name']}={change['new']!r}"
        predicted = self._last_compute_s
        if predicted > BUSY_AFTER_S:
            self._busy.value = f"<span>⏳ computing {html.escape(what)} …</span>"
        start = time.perf_counter()
        try:
            mask = self.mask
            window = None
            if self._model is not None:
                tokens, trace = self._pretrained_trace()
                params = None
            else:
                tokens, x, params = self._inputs()
                window = self._window_for(len(tokens))
                kv = self._kv_for(params)
                inputs = (tokens, self.n_heads, kv, mask, window)
                last = self._trace_inputs
                if (self.trace is not None and last is not None and last[0] is x
                        and last[1] is params and last[2] == inputs):
                    # only the temperature changed: reuse the projections and the scores
                    trace = with_temperature(self.trace, params, self.temperature)
                else:
                    trace = multi_head_attention(
                        x, params, n_heads=self.n_heads, n_kv_heads=kv,
                        temperature=self.temperature, mask=mask, window=window,
                        dtype=np.float64)
                self._trace_inputs = (x, params, inputs)
        except Exception as err:  # bad input, or a failure deep in a checkpoint: stay alive
            message = (str(err) if isinstance(err, (ValueError, TypeError))
                       else f"Could not compute this ({type(err).__name__}: {err}).")
            self.set_trait("error", message)
            self._error.value = (f"<div style='color:#c62828'>⚠ {html.escape(message)} "
                                 "The diagram below still shows the last valid input.</div>")
            self._busy.value = ""
            return
        self.set_trait("error", "")
        self._error.value = ""
        self.tokens, self.params, self.trace = tokens, params, trace
        self._drawn_mask = mask + (f", window={window}" if mask == "sliding" else "")
        self._drawn_layer = self.layer
        if self.query >= len(tokens):
            self.query = -1
        self._draw()
        self._notice.value = (f"<i>{html.escape(self.notice)}</i>" if self.notice else "")
        self._last_compute_s = time.perf_counter() - start
        self._busy.value = ""

    def _pretrained_trace(self) -> tuple[list[str], AttentionTrace]:
        """The model's real attention at ``layer`` (special tokens left out if hidden)."""
        if not self.text.strip():
            raise ValueError("The text is empty: type a sentence to see its attention.")
        model = self._model
        tokens = model.tokenize(self.text)
        limit = min(MAX_TOKENS, model.max_tokens)
        if len(tokens) > limit:
            raise ValueError(f"The text has {len(tokens)} tokens; this model and widget take at "
                             f"most {limit}. Shorten it.")
        self._progress_box.layout.display = None
        try:
            trace = model.trace(self.text, self.layer, temperature=self.temperature)
        finally:
            self._progress_box.layout.display = "none"
        if self.show_special:
            return tokens, trace
        keep = np.flatnonzero(~np.array(model.special_token_mask(self.text), dtype=bool))
        if keep.size == 0:
            raise ValueError("The text has only special tokens; show them or add words.")
        sq = np.ix_(np.arange(trace.n_heads), keep, keep)
        # the stages before the softmax are the model's cached arrays while only the temperature
        # changes: cut them once, so that the figures see the same arrays and skip them
        cached = self._cut_front
        if (cached is None or cached[0] is not trace.scores or cached[1] is not trace.x
                or not np.array_equal(cached[2], keep)):
            cached = (trace.scores, trace.x, keep, {
                "x": trace.x[keep], "q": trace.q[:, keep], "k": trace.k[:, keep],
                "v": trace.v[:, keep], "scores": trace.scores[sq],
                "mask": trace.mask[np.ix_(keep, keep)]})
            self._cut_front = cached
        cut = AttentionTrace(
            **cached[3], weights=trace.weights[sq], head_outputs=trace.head_outputs[:, keep],
            concat=trace.concat[keep], output=trace.output[keep],
            entropy=trace.entropy[:, keep], temperature=trace.temperature)
        return [tokens[i] for i in keep], cut

    def _window_for(self, seq_len: int) -> int | None:
        """Keys per query of the sliding mask (at most seq_len), None for the other masks."""
        return min(self.window, seq_len) if self.mask == "sliding" else None

    def _kv_for(self, params: AttentionParams) -> int | None:
        if self._arrays is None:
            return self.n_kv_heads
        d_head = params.d_model // self.n_heads
        return params.d_kv // d_head

    # ---------------------------------------------------------------------------------------
    # drawing (arrays in, no maths beyond slicing)
    # ---------------------------------------------------------------------------------------
    def _draw(self) -> None:
        tr, toks = self.trace, self.tokens
        assert tr is not None
        h, kv, dh = tr.n_heads, tr.n_kv_heads, tr.d_head
        sent = 0
        # the stages before the softmax are the same arrays after a temperature step
        # (with_temperature; a real model's cached layer): nothing to compare or redraw there
        front = (tuple(toks), tr.x, tr.q, tr.k, tr.v, tr.scores)
        drawn = self._drawn_front
        same_front = drawn is not None and front[0] == drawn[0] and all(
            a is b for a, b in zip(front[1:], drawn[1:], strict=True))
        with self.hold_sync(), shown_together(self.figs.values()):
            if not same_front:
                sent += self._draw_front()
            self._drawn_front = front
            # (each head's entropy is in the line above the figure: titles that change with
            # every temperature step would cost the browser one more message per step)
            sent += self.figs["weights"].update(
                [Panel(tr.weights[i], f"head {i}", toks, toks)
                 for i in range(h)], ncols=min(h, HEADS_PER_ROW), mask=tr.mask)
            sent += self.figs["outputs"].update(
                [Panel(tr.head_outputs[i], f"head {i}", toks, None)
                 for i in range(h)], ncols=min(h, 8))
            sent += self.figs["concat"].update([
                Panel(tr.concat, f"concat ({tr.seq_len} × {h * dh})", toks, None,
                      [i * dh for i in range(1, h)]),
                Panel(tr.output, f"output = concat W_O ({tr.seq_len} × {tr.d_model})", toks),
            ])
            n, hd, kvd = tr.seq_len, h * dh, kv * dh
            shapes = (f"X: {n} × {tr.d_model}",
                      f"Q: {n} × {hd} ({h} heads × {dh}); K, V: {n} × {kvd} ({kv} × {dh})",
                      f"{h} × {n} × {n}", f"{h} × {n} × {n}", f"{h} × {n} × {dh}",
                      f"concat: {n} × {hd}; output: {n} × {tr.d_model}")
            for (head_html, text), shape in zip(self._stage_heads, shapes, strict=True):
                value = f"{text} &nbsp; <span class='aw-shape'>[{shape}]</span>"
                if head_html.value != value:
                    head_html.value = value
            self._draw_focus()
        # text last, after the images switched: a DOM change before them would have the
        # browser paint a frame in the middle of the step
        self._entropy_html.value = self._entropy_text()
        self._summary.value = html.escape(self.summary)
        self._bytes_sent = sent

    def _draw_front(self) -> int:
        """Token strip, X, Q/K/V and scores; returns the bytes sent."""
        tr, toks = self.trace, self.tokens
        assert tr is not None
        h, kv, dh = tr.n_heads, tr.n_kv_heads, tr.d_head
        self._tokens_html.value = self._token_strip()
        sent = self.figs["x"].update(
            [Panel(tr.x, f"X  ({tr.seq_len} × {tr.d_model})", toks, None)])
        q2 = tr.q.transpose(1, 0, 2).reshape(tr.seq_len, h * dh)
        k2 = tr.k.transpose(1, 0, 2).reshape(tr.seq_len, kv * dh)
        v2 = tr.v.transpose(1, 0, 2).reshape(tr.seq_len, kv * dh)
        sent += self.figs["qkv"].update([
            Panel(q2, f"Q ({tr.seq_len} × {h * dh}), {h} heads", toks, None,
                  [i * dh for i in range(1, h)], Q_COLOR),
            Panel(k2, f"K ({tr.seq_len} × {kv * dh}), {kv} kv heads", toks, None,
                  [i * dh for i in range(1, kv)], K_COLOR),
            Panel(v2, f"V ({tr.seq_len} × {kv * dh})", toks, None,
                  [i * dh for i in range(1, kv)], V_COLOR),
        ])
        kv_note = "" if kv == h else "→kv"
        sent += self.figs["scores"].update(
            [Panel(tr.scores[i], f"head {i}{kv_note}{tr.kv_head(i) if kv_note else ''}",
                   toks, toks) for i in range(h)], ncols=min(h, HEADS_PER_ROW))
        return sent

    @property
    def summary(self) -> str:
        """One line stating what is drawn."""
        tr = self.trace
        if tr is None:
            return "nothing drawn yet"
        mask = self._drawn_mask  # the mask of what is drawn, even while a new input is bad
        layer = f", layer={self._drawn_layer}" if self._model is not None else ""
        return (f"seq_len={tr.seq_len}, d_model={tr.d_model}, n_heads={tr.n_heads}, "
                f"n_kv_heads={tr.n_kv_heads}, temperature={_fmt_t(tr.temperature)}, "
                f"mask={mask}{layer}")

    def _token_strip(self) -> str:
        spans = "".join(
            f"<span class='aw-token' title='token {i}' style='display:inline-block;margin:1px;"
            f"padding:0 4px;border:1px solid #8888;border-radius:3px'>{html.escape(t)}</span>"
            for i, t in enumerate(self.tokens[:MAX_TOKENS]))
        tr = self.trace
        assert tr is not None
        return (f"<div>{spans}</div><div style='font-size:90%'>d_head = d_model / n_heads = "
                f"{tr.d_model} / {tr.n_heads} = <b>{tr.d_head}</b></div>")

    def _entropy_text(self) -> str:
        tr = self.trace
        assert tr is not None
        ent = tr.head_entropy
        uniform = float(np.mean(np.log(tr.mask.sum(axis=1))))
        cells = " · ".join(f"h{i}: {e:.2f}" for i, e in enumerate(ent))
        return (f"<span style='font-size:90%'>mean row entropy per head (nats; 0 = one-hot, "
                f"{uniform:.2f} = uniform): {cells}</span>")

    def _draw_focus(self) -> None:
        tr, toks = self.trace, self.tokens
        assert tr is not None
        h = min(self.head, tr.n_heads - 1)
        weights = tr.weights[h]
        title = f"head {h}: weights ({tr.seq_len} × {tr.seq_len})"
        fig = self.figs["focus"]
        use_grid = 2 <= tr.seq_len <= GRID_FOCUS_MAX  # bqplot squeezes a 1x1 grid away
        with fig.figure.hold_sync():
            fig.update([Panel(weights, title, toks, toks)], mask=tr.mask)
            self._set_focus_grid(weights, fig, use_grid)
            wfig = self.figs["weights"]
            if self.query >= 0:
                wfig.show_highlight([wfig.row_box(i, self.query) for i in range(tr.n_heads)])
                fig.show_highlight([fig.row_box(0, self.query)])
            else:
                wfig.show_highlight(None)
                fig.show_highlight(None)
        self._hover_html.value = ("<i>hover a cell for its query, key and weight</i>" if use_grid
                                  else f"<i>per-cell hover is available up to {GRID_FOCUS_MAX} "
                                  "tokens; pick a query below to read its row</i>")
        self._draw_contributions(h)

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
        n = weights.shape[0]
        x0, y0 = fig.panel_offsets()[0]
        rows = np.arange(n, dtype=float) + y0 - 0.5
        cols = np.arange(n, dtype=float) + x0 - 0.5
        if self._focus_grid is None:
            self._focus_grid = bq.GridHeatMap(
                row=rows, column=cols, color=np.zeros((n, n)), row_align="start",
                column_align="start", stroke=None,
                # transparent fill: still hit by the pointer (SVG paints a transparent colour)
                scales={"row": fig.y_scale, "column": fig.x_scale,
                        "color": bq.ColorScale(min=0.0, max=1.0,
                                               colors=["rgba(0,0,0,0)", "rgba(0,0,0,0)"])},
                interactions={"hover": "tooltip"},
            )
            self._focus_grid.on_hover(self._on_hover)
        grid = self._focus_grid
        if grid.color.shape != (n, n) or not np.array_equal(grid.row, rows) or not (
                np.array_equal(grid.column, cols)):
            # One comm message: a GridHeatMap that gets new rows before the matching colours
            # falls back to an alignment mode that fails on a LinearScale in the browser.
            with grid.hold_sync(), grid.hold_trait_notifications():
                grid.row, grid.column, grid.color = rows, cols, np.zeros((n, n))
        if not grid.visible:
            grid.visible = True
        fig.add_mark(grid)

    def _on_hover(self, mark: Any, event: dict) -> None:
        data = event.get("data", {})
        tr, grid = self.trace, self._focus_grid
        if tr is None or grid is None:
            return
        # bqplot reports the hovered cell's row and column *values* (the grid's data
        # coordinates); map them back to token indices
        i = _grid_index(grid.row, data.get("row", -1))
        j = _grid_index(grid.column, data.get("column", -1))
        if not (0 <= i < tr.seq_len and 0 <= j < tr.seq_len):
            return
        h = min(self.head, tr.n_heads - 1)
        w = tr.weights[h, i, j]
        what = f"{w:.4f}" if tr.mask[i, j] else "masked"
        self._hover_html.value = (
            f"head {h}: query <b>{html.escape(self.tokens[i])}</b> ({i}) → key "
            f"<b>{html.escape(self.tokens[j])}</b> ({j}): weight <b>{what}</b>")

    def _draw_contributions(self, h: int) -> None:
        tr, toks = self.trace, self.tokens
        assert tr is not None
        fig = self.figs["contrib"]
        i = self.query
        if i < 0:
            self._focus_box.children = self._focus_parts  # figure out of the DOM, see above
            self._focus_html.value = (
                "<i>choose a query token to see how its output row is built</i>")
            return
        self._focus_box.children = (*self._focus_parts, fig.figure)
        w_row = tr.weights[h, i]  # [seq]
        v = tr.v[tr.kv_head(h)]  # [seq, d_head]
        contrib = w_row[:, None] * v  # [seq, d_head]: w_ij v_j
        out_row = tr.head_outputs[h, i][None, :]  # [1, d_head] = sum_j w_ij v_j
        fig.update([
            Panel(contrib, f"w[{i},j] · v_j  (head {h})", toks, None),
            Panel(out_row, "Σ_j = output row", [toks[i]], None),
        ], ncols=1)
        top = np.argsort(-w_row)[:5]
        parts = " + ".join(f"{w_row[j]:.2f}·v[{html.escape(toks[j])}]" for j in top)
        self._focus_html.value = (
            f"output of head {h} for <b>{html.escape(toks[i])}</b> = Σ<sub>j</sub> "
            f"w<sub>{i}j</sub> v<sub>j</sub> ≈ {parts}{' + …' if len(w_row) > 5 else ''}")

    # ---------------------------------------------------------------------------------------
    # export and state (the work is in attention_widget.export / attention_widget.state)
    # ---------------------------------------------------------------------------------------
    def _export_selection(self) -> dict[str, Any]:
        what = self._export_what.value
        if what == "weights":
            return {"stages": ["weights"], "heads": None}
        if what == "focus":
            return {"stages": ["weights"], "heads": [self.head]}
        return {"stages": None, "heads": None}

    def _prepare_download(self) -> None:
        """Build a download link for the chosen part and format (the browser saves it)."""
        from .export import download_link

        fmt = self._export_format.value
        self._export_link.value = "<i>preparing …</i>"
        try:
            link = download_link(self.trace, self.tokens, format=fmt, colormap=self.colormap,
                                 filename=f"attention-{self._export_what.value}.{fmt}",
                                 title=self.summary, **self._export_selection())
        except (ImportError, ValueError) as err:
            link = f"<span style='color:#c62828'>{html.escape(str(err))}</span>"
        self._export_link.value = link

    def save_figure(self, path: str | os.PathLike, *, stages: Sequence[str] | None = None,
                    heads: Sequence[int] | None = None, dpi: float = 150,
                    title: str | None = None) -> Path:
        """Write the diagram (or chosen stages and heads) as SVG, PNG or PDF, by suffix.

        SVG needs nothing extra and keeps text as text; PNG and PDF use matplotlib
        (``pip install attention-widget[export]``).  See
        :func:`attention_widget.export.save_figure`.
        """
        from .export import save_figure

        return save_figure(self.trace, path, self.tokens, stages=stages, heads=heads,
                           colormap=self.colormap, dpi=dpi,
                           title=self.summary if title is None else title)

    def to_html(self, path: str | os.PathLike, *,
                temperatures: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                head_counts: Sequence[int] | None = None, title: str | None = None) -> Path:
        """Write a standalone HTML page of the current state that works offline.

        The page also holds precomputed variants (other temperatures, other head counts) to
        switch between without a kernel.
        """
        from .export import to_html

        tokens, x, params = self._inputs()
        window = self._window_for(len(tokens))
        variants: dict[str, AttentionTrace] = {}
        for t in temperatures:
            if t != self.temperature:
                variants[f"temperature {t:g}"] = multi_head_attention(
                    x, params, n_heads=self.n_heads, n_kv_heads=self._kv_for(params),
                    temperature=t, mask=self.mask, window=window)
        if head_counts is None:
            options = (self._array_head_options() if self._arrays is not None
                       else _divisors(self.d_model))
            head_counts = [h for h in options if h != self.n_heads and h <= 16][-3:]
        for h in head_counts:
            d_head = params.d_model // h
            kv = params.d_kv // d_head if self._arrays is not None else None
            p = params if self._arrays is not None else init_params(self.d_model, h,
                                                                    seed=self.seed)
            variants[f"{h} heads"] = multi_head_attention(
                x, p, n_heads=h, n_kv_heads=kv, temperature=self.temperature, mask=self.mask,
                window=window)
        return to_html(self.trace, path, self.tokens, variants=variants, colormap=self.colormap,
                       title=self.summary if title is None else title, settings=self.settings)

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting needed to rebuild this widget (JSON values)."""
        return {
            "mode": ("pretrained" if self._model is not None
                     else "arrays" if self._arrays is not None else "text"),
            "model_path": None if self._model is None else os.fspath(self._model.path),
            "layer": self.layer, "show_special": self.show_special,
            "text": self.text, "d_model": self.d_model, "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads, "temperature": self.temperature, "mask": self.mask,
            "window": self.window, "seed": self.seed, "positional": self.positional,
            "colormap": self.colormap, "head": self.head, "query": self.query,
            "step": self.step, "dtype": "float64",
        }

    def save_state(self, path: str | os.PathLike) -> Path:
        """Save settings, tokens, X, parameters and every trace array to one ``.npz`` file.

        No pickle: :meth:`load_state` rebuilds the widget and checks it reproduces the trace
        exactly.
        """
        from .state import save_state

        if self.trace is None:
            raise ValueError("nothing to save: the widget has no valid input yet")
        return save_state(path, self.settings, self.trace, self.tokens, params=self.params,
                          x=self.trace.x)

    @classmethod
    def load_state(cls, path: str | os.PathLike) -> AttentionWidget:
        """Rebuild a widget from :meth:`save_state`'s file; the trace must come out identical.

        Raises
        ------
        ValueError
            If the file is corrupt, truncated or edited, naming the file and the problem.
        """
        from .state import load_state, verify_trace

        st = load_state(path)
        s = st.settings
        try:
            common = {k: s[k] for k in ("n_heads", "n_kv_heads", "temperature", "mask", "window")}
            view = {k: s[k] for k in ("colormap",)}
            if s["mode"] == "pretrained":
                w = cls.from_pretrained(s["model_path"], s["text"], layer=s["layer"],
                                        temperature=s["temperature"],
                                        show_special=s["show_special"], progress=False, **view)
            elif s["mode"] == "arrays":
                if st.params is None:
                    raise KeyError("params")
                w = cls.from_arrays(st.x, st.params, st.tokens, **common, **view)
            else:
                w = cls(s["text"], d_model=s["d_model"], seed=s["seed"],
                        positional=s["positional"], **common, **view)
            w.head, w.query, w.step = s["head"], s["query"], s["step"]
        except (KeyError, TypeError, T.TraitError) as err:
            raise ValueError(f"{os.fspath(path)}: the saved settings are incomplete or "
                             f"invalid ({type(err).__name__}: {err})") from None
        verify_trace(st, w.trace)
        return w

    # ---------------------------------------------------------------------------------------
    # inspection helpers (used by tests and notebooks)
    # ---------------------------------------------------------------------------------------
    def displayed(self, stage: str) -> list[np.ndarray]:
        """The arrays the panels of ``stage`` show (float32, as coloured into its image)."""
        return self.figs[stage].displayed()

    @property
    def bytes_sent(self) -> int:
        """Array bytes sent to the browser by the last update."""
        return self._bytes_sent

"""AttentionWidget: one multi-head attention layer as a live diagram.

Data flow, one direction: controls -> traits (validated) -> source -> trace -> diagram.  The
widget owns the state and the wiring, nothing else: where the arrays come from is a
:mod:`~attention_widget.sources` ``Source``, the controls are built and synced by
:mod:`~attention_widget.controls`, the drawing is :mod:`~attention_widget.diagram`'s and the
maths :mod:`~attention_widget.engine`'s.
"""

from __future__ import annotations

import dataclasses
import difflib
import html
import inspect
import time
from collections.abc import Sequence
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets as T

from .colors import SCALE_MODES, SEQUENTIAL, WEIGHT_SCALE_MODES
from .controls import SCALE_STAGES, ControlPanel, readout
from .engine import AttentionParams, AttentionTrace
from .longview import LongPrompts
from .model_source import PARTS, PretrainedConstructor
from .modelview import ModelViewHooks
from .player import GenerationHooks
from .sources import (
    DEFAULT_TEXT,
    MAX_TOKENS,
    ArraysSource,
    Settings,
    Source,
    TextSource,
    Traced,
    divisors,
)
from .stages import SECTIONS
from .variant_source import VARIANT_DEFAULTS
from .variant_traits import VARIANT_TRAITS, VariantTraits
from .views import Views
from .weights_only import WeightsConstructors
from .widget_files import WidgetFiles

__all__ = ["MAX_TOKENS", "AttentionWidget"]

BUSY_AFTER_S = 0.2  # an update slower than this announces the next one
#: Traits that decide the trace: a change computes it anew (the fields of Settings).
_COMPUTED = tuple(f.name for f in dataclasses.fields(Settings))
#: Traits restored from a state file, besides head, query and step.
_SAVED = (*_COMPUTED, "colormap", "view", "scales", "projector")
_SCALE_KEYS = tuple(key for _, key in SCALE_STAGES)


def _check_arguments(kwargs: dict[str, Any], scales: Any) -> None:
    """Refuse a keyword that names no trait (a misspelt one would be ignored) and bad ``scales``."""
    unknown = sorted(set(kwargs) - _TRAITS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(_OWN_TRAITS), n=1)
        raise TypeError(f"AttentionWidget got an unexpected keyword argument {unknown[0]!r}"
                        + (f"; did you mean {close[0]!r}?" if close else ""))
    if scales is not None and not isinstance(scales, dict):
        raise T.TraitError(f"scales must be a dict of stage to colour scale, e.g. {{'weights': "
                           f"'per head'}}, got {type(scales).__name__}")


def _check_fixed(values: dict[str, Any], source: Source) -> None:
    """Refuse a value chosen for a setting ``source`` fixes (defaults were not chosen)."""
    for name, fixed in source.fixed.items():  # (the variants' traits: see _variant_problem)
        if name in values and values[name] not in (fixed, _DEFAULTS[name]):
            raise T.TraitError(f"{name} is fixed at {fixed!r} by {source.fixed_by}, got "
                               f"{values[name]!r}")


def _value_problem(name: str, value: Any) -> str:
    """Why trait ``name`` can never take ``value``, whatever the others ('' if it can)."""
    if name == "d_model" and not 1 <= value <= 4096:
        return f"d_model must be between 1 and 4096, got {value}"
    if name == "temperature" and not (np.isfinite(value) and value > 0):
        return f"temperature must be a finite number > 0, got {value!r}"
    if name == "window" and value < 1:
        return f"window must be >= 1, got {value}"
    if name == "seed" and value < 0:
        return f"seed must be >= 0, got {value}"
    return ""


class AttentionWidget(LongPrompts, Views, ModelViewHooks, GenerationHooks,
                      WeightsConstructors, PretrainedConstructor, WidgetFiles, VariantTraits,
                      W.VBox):
    """Multi-head self-attention, every stage drawn live and linked to controls.

    Parameters
    ----------
    text, d_model, n_heads, n_kv_heads, temperature, mask, window, seed, positional, weights
        The first values of the traits of the same names (see each trait's ``help``).  From
        Python, a value that cannot be shown raises ``traitlets.TraitError`` and changes
        nothing; bad text is shown as a message while the last diagram stays.
    kind, kv_rank, rope_dim, source_text, rope, alibi, softcap, sinks, top_k
        The attention variants, keyword arguments (see each trait's ``help``).
    colormap, view, scales, projector
        How it is drawn (see each trait's ``help``).
    head, query, step
        The focus head, the query token highlighted (``-1``: none), the stages revealed.
    layer, show_special
        For a pretrained model: the layer shown, and whether special tokens are.
    source : Source, optional
        Where the arrays come from (default: the text, :class:`~.sources.TextSource`).  The
        settings it fixes take its values; another value chosen for one is a TraitError.
        See :meth:`from_arrays`, :meth:`from_pretrained`.

    Attributes
    ----------
    trace : AttentionTrace or LongTrace
        What is on screen (above LONG_THRESHOLD tokens computed in a thread: :meth:`wait`).
    params : AttentionParams or None
    tokens : list of str
    controls : dict of str to ipywidgets.DOMWidget
        The control of each trait, by name.
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
    weights = T.Enum(["random", "designed"], "random", help="Seeded random W_Q, W_K, W_V, W_O, "
                     "or 'designed': X and W_Q, W_K built so that head h does job h % 4 "
                     "(previous token, duplicate token, first token, local window).")
    colormap = T.Enum(list(SEQUENTIAL), "viridis", help="Colour scheme (colour-blind safe).")
    view = T.Enum(["overview", "detailed"], "overview", help="'overview': every stage side by "
                  "side in one picture; 'detailed': one section per stage and the focus panel.")
    scales = T.Dict(help="Colour scale per stage (x, qkv, scores, outputs, concat: 'shared', "
                    "'per head' or 'robust'; weights: 'fixed' or 'per head'); stages not "
                    "named take the input's default (robust for a pretrained model).")
    projector = T.Bool(False, help="Large text (token labels and titles >= 14 px).")
    head = T.Int(0, help="Head shown large in the focus panel.")
    query = T.Int(-1, help="Query token highlighted in every head (-1: none).")
    step = T.Int(len(SECTIONS), help="Stages revealed (step-through mode); all by default.")
    layer = T.Int(0, help="Layer of a pretrained model whose attention is shown.")
    show_special = T.Bool(True, help="Show special tokens ([CLS], [SEP], BOS) of a pretrained "
                          "model; hidden, their rows and columns are left out of the panels.")
    part = T.Enum(list(PARTS), "encoder", help="For an encoder-decoder model: the encoder's "
                  "self-attention over the text, the decoder's causal self-attention over the "
                  "target, or the cross-attention (target tokens as queries, text tokens as "
                  "keys).")
    target = T.Unicode("", help="For an encoder-decoder model: the decoder's input text.")
    error = T.Unicode("", read_only=True, help="Message for the last bad input, '' if none.")
    notice = T.Unicode("", read_only=True, help="Last automatic adjustment, e.g. snapped heads.")

    def __init__(self, text: str = DEFAULT_TEXT, *, d_model: int = 64, n_heads: int = 4,
                 n_kv_heads: int | None = None, temperature: float = 1.0, mask: str = "none",
                 window: int = 3, seed: int = 0, positional: bool = True,
                 weights: str = "random", colormap: str = "viridis", view: str = "overview",
                 scales: dict | None = None, projector: bool = False, layer: int = 0,
                 show_special: bool = True, part: str = "encoder", target: str = "",
                 head: int = 0, query: int = -1, step: int = len(SECTIONS),
                 source: Source | None = None, **kwargs: Any) -> None:
        self._ready = False
        self._snapping = False  # True while _snap sets n_heads
        self._asked_heads = 0  # the head count chosen last (not a snapped one)
        self._source = TextSource() if source is None else source
        self._traced: Traced | None = None
        self._last_compute_s = 0.0
        self._bytes_sent = 0
        self.trace: AttentionTrace | None = None
        self.params: AttentionParams | None = None
        self.tokens: list[str] = []
        _check_arguments(kwargs, scales)
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in _OWN_TRAITS}  # set with the rest
        super().__init__(_dom_classes=("attention-widget",), **kwargs)
        src = self._source
        self._panel = ControlPanel(self._on_control, self._download_link,
                                   description=src.describe(), note=src.note,
                                   fixed_line=src.fixed_line(), own_controls=src.own_controls,
                                   n_layers=src.n_layers)
        self._summary = readout("aw-summary")  # the one line above every view
        self._stale: set[str] = set()  # views not drawn from the current trace yet
        self._init_long()
        self.controls = self._panel.controls
        chosen = {"d_model": d_model, "n_heads": n_heads, "n_kv_heads": n_kv_heads,
                  "temperature": temperature, "mask": mask, "window": window, "seed": seed,
                  "positional": positional, "weights": weights, "colormap": colormap,
                  "view": view, "projector": projector, "layer": layer,
                  "show_special": show_special, "text": text, "part": part, "target": target}
        _check_fixed(chosen, src)
        values = {**chosen, "scales": {**src.default_scales(weights), **(scales or {})},
                  **src.fixed, **own, "head": head, "query": query, "step": step}  # (these 3 last)
        with self.hold_trait_notifications():
            for name, value in values.items():
                setattr(self, name, value)
        self._layout()
        self._ready = True
        self._recompute()
        if query >= len(self.tokens) and not (self._jobs.running or self.error):
            raise ValueError(f"query must be -1 or a token index < {len(self.tokens)}, got {query}")
        self._sync()

    # -- construction ------------------------------------------------------------------------------
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
        tokens, n_heads, n_kv_heads, temperature, mask, window
            See :class:`attention_widget.sources.ArraysSource`.

        Raises
        ------
        TypeError, ValueError
            When ``x``, ``params`` or ``tokens`` do not fit together.
        """
        source = ArraysSource(x, params, tokens, n_heads=n_heads, n_kv_heads=n_kv_heads,
                              temperature=temperature, mask=mask, window=window)
        kv = source.n_kv_heads
        return cls(n_heads=n_heads, n_kv_heads=None if kv == n_heads else kv,
                   temperature=temperature, mask=mask, window=window, source=source, **kwargs)

    # -- validation: impossible values from Python raise TraitError and change nothing -------------
    @T.validate(*_COMPUTED, "head", "query")
    def _valid(self, proposal: dict) -> Any:
        name, value = proposal["trait"].name, proposal["value"]
        problem = self._problem(name, value)
        if problem:
            raise T.TraitError(problem)
        return value

    def _problem(self, name: str, value: Any) -> str:
        """Why trait ``name`` cannot take ``value`` now ('' if it can)."""
        fixed = self._source.fixed
        if name in VARIANT_TRAITS:
            return self._variant_problem(name, value)
        if name in fixed:
            return "" if value == fixed[name] else (
                f"{name} is fixed at {fixed[name]!r} by {self._source.fixed_by}, got {value!r}")
        if problem := _value_problem(name, value):
            return problem
        if name == "n_heads":
            try:
                self._source.check_heads(value, self.d_model)
            except ValueError as err:
                return str(err)
        if name == "n_kv_heads" and value is not None and (value < 1 or self.n_heads % value):
            return (f"n_kv_heads={value} does not divide n_heads={self.n_heads}: choose one of "
                    f"{divisors(self.n_heads)}")
        if name == "part" and value != "encoder" and "part" not in self._source.own_controls:
            return f"part={value!r} is for an encoder-decoder model (BART); this has one attention"
        if name == "layer" and not 0 <= value < self._n_layers():
            return f"layer must be in 0..{self._n_layers() - 1}, got {value}"
        if name == "head" and not 0 <= value < (n := self._source.heads_shown(self._settings())):
            return f"head must be in 0..{n - 1}, got {value}"
        if name == "query" and (value < -1 or (self._ready and value >= max(len(self.tokens), 1)
                                               and not self._jobs.running)):  # (else: once drawn)
            below = f" < {len(self.tokens)}" if self._ready else ""
            return f"query must be -1 or a token index{below}, got {value}"
        return ""

    def _n_layers(self) -> int:
        """Layers the source offers now (an encoder-decoder's decoder may have fewer)."""
        return len(self._source.layer_labels(self._settings()))

    @T.validate("step")
    def _valid_step(self, proposal: dict) -> int:
        return int(np.clip(proposal["value"], 1, len(SECTIONS)))

    @T.validate("scales")
    def _valid_scales(self, proposal: dict) -> dict:
        value = dict(proposal["value"])
        for key, mode in value.items():
            modes = WEIGHT_SCALE_MODES if key == "weights" else SCALE_MODES
            if key not in _SCALE_KEYS or mode not in modes:
                raise T.TraitError(f"scales must map stages of {_SCALE_KEYS} to a scale "
                                   f"({SCALE_MODES}; weights: {WEIGHT_SCALE_MODES}), got "
                                   f"{key!r}: {mode!r}")
        return value

    def _snap(self) -> None:
        """After d_model or n_heads changed: snap n_heads, n_kv_heads and head to valid values.

        n_heads snaps from the count the user chose last (:attr:`_asked_heads`), not from one
        an earlier snap or a drag passed through, and the notice names that count.
        """
        asked = self._asked_heads or self.n_heads
        options = self._source.head_options(self.d_model)
        if self.d_model % self.n_heads or (asked != self.n_heads and asked in options):
            new = min(options, key=lambda h: (abs(h - asked), -h))
            if new != asked:
                self.set_trait("notice", f"n_heads {asked} does not divide d_model "
                               f"{self.d_model}: snapped to {new}")
            self._snapping = True
            try:
                self.n_heads = new
            finally:
                self._snapping = False
        if self.n_kv_heads is not None and self.n_heads % self.n_kv_heads:
            old = self.n_kv_heads
            # Keep grouped-query attention if possible: the largest divisor below the old value.
            new = max(d for d in divisors(self.n_heads) if d <= old)
            self.set_trait("notice", f"n_kv_heads {old} does not divide n_heads "
                           f"{self.n_heads}: snapped to {new}")
            self.n_kv_heads = new
        if self.head >= self._source.heads_shown(self._settings()):
            self.head = 0
        if self.layer >= self._n_layers():  # (another part of an encoder-decoder)
            self.set_trait("notice", f"layer {self.layer} is not in the {self.part}: "
                           f"showing its last layer, {self._n_layers() - 1}")
            self.layer = self._n_layers() - 1
        self._snap_variants()

    # -- reacting: user input -> traits -> source.trace -> diagram.draw, then the controls ---------
    def _on_control(self, name: str, value: Any) -> None:
        """The user changed the control of trait ``name``."""
        if name == "n_kv_heads" and value == self.n_heads:
            value = None  # "as many as n_heads": stays so when n_heads changes
        setattr(self, name, value)  # (the controls offer valid values only)

    @T.observe(*_COMPUTED)
    def _on_config(self, change: dict) -> None:
        if change["name"] == "n_heads" and not self._snapping:
            self._asked_heads = change["new"]  # the user's choice, kept through snaps
        if change["name"] == "weights" and self.scales == self._source.default_scales(
                change["old"]):  # scales left as they came: those of the new weights
            self.scales = self._source.default_scales(change["new"])
        if not self._ready:
            return
        with self._lock:
            self._ready = False  # one recompute for the change and the snaps it causes
            self.set_trait("notice", "")
            try:
                self._snap()
                self._recompute(change)
            finally:
                self._ready = True
            self._sync()

    @T.observe("colormap", "head", "query", "step", "view", "scales", "projector",
               "show_model_view")
    def _on_view(self, change: dict) -> None:
        """A change of the view alone: no new trace."""
        with self._lock:
            name = change["name"]
            if name == "colormap":  # (a view built later takes the colormap then)
                for view in filter(None, (self._built_diagram, self._built_overview,
                                          self._built_long)):
                    view.set_colormap(self.colormap)
                self._stale.add("overview")
            if name in ("scales", "projector"):
                self._stale = {"overview", "detailed", "long"}
            if name in ("step", "view", "show_model_view"):
                self._layout()
            if self._ready:
                self._draw()
                self._bytes_sent += self._draw_model_view() + self._draw_generation()
            if self._ready:
                self._sync()

    def _layout(self) -> None:
        p = self._panel
        if self._traced is None:
            shown = ()
        elif self._long_shown():
            shown = self._long.shown()
        elif self.view == "overview":
            shown = self._overview.shown(self.step)
        else:
            shown = self._diagram.shown(self.step)
        # the diagram first (the first screen), then the model's grid and the player
        children = (p.box, *p.status, self._summary, *shown, *self._model_views(),
                    *self._generation_views())
        if self.children != children:
            self.children = children

    def _draw(self) -> None:
        """Draw the view on screen from the current trace (the other one when it is shown)."""
        if self._traced is None:
            return
        if self._long_shown():  # a long prompt: overviews, zoom and lens (see LongPrompts)
            if "long" in self._stale:
                self._bytes_sent = self._long.draw(self._traced, self.head, self.query)
                self._stale.discard("long")
            else:
                self._bytes_sent = self._long.draw_focus(self.head, self.query)
            return
        if self.view == "overview":
            if "overview" in self._stale or self._overview.needs_draw(self.head, self.step):
                self._bytes_sent = self._overview.draw(
                    self._traced, self.head, self.query, step=self.step, scales=self.scales,
                    projector=self.projector)
                self._stale.discard("overview")
            else:
                self._overview.show_query(self.query)
                self._bytes_sent = 0
            self._summary.value = html.escape(self._traced.summary)
            return
        if "detailed" in self._stale:
            self._diagram.set_scales(self.scales)
            self._bytes_sent = self._diagram.draw(self._traced, self.head, self.query)
            self._stale.discard("detailed")
        else:
            self._bytes_sent = self._diagram.draw_focus(self.head, self.query)

    def _settings(self) -> Settings:
        return Settings.of(self)

    def _sync(self) -> None:
        """Show the state in the controls (options follow the source, the heads, the tokens)."""
        s, src = self._settings(), self._source
        values = {name: getattr(self, name) for name in self.controls}
        values["n_kv_heads"] = src.kv_heads(s)
        values["scales"] = self.scales
        self._panel.sync(values, heads=src.head_options(s.d_model), kv_heads=src.kv_options(s),
                         tokens=self.tokens, fixed=src.fixed, layers=src.layer_labels(s),
                         focus_heads=src.heads_shown(s))
        self._panel.show_kv_cache(self.kv_cache)

    def _recompute(self, change: dict | None = None) -> None:
        if self._last_compute_s > BUSY_AFTER_S:
            self._panel.show_busy("" if change is None else f"{change['name']}={change['new']!r}")
        start = time.perf_counter()
        try:
            if self._source.is_long(self._settings()):  # in a worker thread: see LongPrompts
                return self._start_long()
            with self._jobs.computing_here(), self._panel.progress() as report:
                traced = self._source.trace(self._settings(), report)
        except Exception as err:  # bad input, or a failure deep in a checkpoint: stay alive
            return self._fail(err)
        self._show(traced, start)

    def _fail(self, err: Exception) -> None:
        """Show why the input cannot be drawn; the diagram on screen stays."""
        message = (str(err) if isinstance(err, (ValueError, TypeError))
                   else f"Could not compute this ({type(err).__name__}: {err}).")
        self.set_trait("error", message)
        self._panel.show_error(message)
        self._panel.show_busy("")

    def _show(self, traced: Traced, start: float) -> None:
        """Draw ``traced``, computed since ``start`` (``time.perf_counter()``)."""
        self.set_trait("error", "")
        self._panel.show_error("")
        self._traced = traced
        self.tokens, self.params, self.trace = traced.tokens, traced.params, traced.trace
        if self.query >= len(self.tokens):
            self.query = -1
        self._stale = {"overview", "detailed", "long"}
        self._draw()
        self._bytes_sent += self._draw_model_view() + self._draw_generation()
        self._layout()
        self._panel.show_notice(self.notice)
        self._last_compute_s = time.perf_counter() - start
        self._panel.show_busy("")

    # -- what is drawn -----------------------------------------------------------------------------
    @property
    def summary(self) -> str:
        """One line stating what is drawn."""
        return "nothing drawn yet" if self._traced is None else self._traced.summary

    @property
    def bytes_sent(self) -> int:
        """Bytes of the images sent to the browser by the last update."""
        return self._bytes_sent

    @property
    def head_titles(self) -> list[str]:
        """Each head's title as drawn: its measured role and share, or its designed job."""
        return [] if self._traced is None else self._traced.head_titles()

    @property
    def settings(self) -> dict[str, Any]:
        """Every setting needed to rebuild this widget (JSON values)."""
        return {**self._source.saved(), **{name: getattr(self, name) for name in _SAVED},
                "scales": dict(self.scales),
                "head": self.head, "query": self.query, "step": self.step, "dtype": "float64"}


AttentionWidget.SAVED_TRAITS = _SAVED
AttentionWidget.SAVED_DEFAULTS = {"weights": "random", "view": "overview", "scales": {},
                                  "part": "encoder", "target": "",
                                  "projector": False, **VARIANT_DEFAULTS}


_TRAITS = frozenset(AttentionWidget.class_trait_names())
#: The traits a widget adds to its ipywidgets box (a box's own are set when it is made).
_OWN_TRAITS = _TRAITS - frozenset(W.VBox.class_trait_names())
#: The defaults of the widget's arguments (a value that differs was chosen).
_DEFAULTS = {name: p.default for name, p in
             inspect.signature(AttentionWidget.__init__).parameters.items()}

"""The control panel: its widgets in groups, and the one direction they are synced in.

The user's input goes out through the ``on_change(name, value)`` callback given to
:class:`ControlPanel` (the widget sets its trait of that name, which validates it).  The widget's
state comes back in through :meth:`ControlPanel.sync` only: it sets every control's options and
value, and while it does, the controls' own change events are ignored (one guard flag, here).

Every control carries the CSS class ``aw-<name>`` (``aw-temperature``, ``aw-export-button``...),
for tests, browser tests and custom styling.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import ipywidgets as W
import numpy as np
from ipywidgets.widgets.widget_description import DescriptionWidget

from .colors import SEQUENTIAL
from .sources import MAX_TOKENS, Progress
from .stages import SECTIONS
from .variant_source import variants_on

__all__ = ["D_MODEL_CHOICES", "ControlPanel", "progress_bar", "readout", "show_now"]

#: Widths offered by the d_model slider (and the current one, if it is another).
D_MODEL_CHOICES = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768)
#: The control groups, top to bottom: (label, rows of control names).  A group whose controls
#: the input fixes is not drawn ("play" is the stage player beside its slider, "scale-of" picks
#: the stage whose colour scale the "scale" buttons set).
GROUPS = (
    ("Input", (("text", "layer", "show_special", "weights", "seed", "positional"),
               ("part", "target"))),
    ("Architecture", (("d_model", "n_heads", "n_kv_heads", "variants"),
                      ("kind", "kv_rank", "rope_dim", "source_text", "kv-cache"))),
    ("Attention", (("mask", "window", "temperature"),
                   ("rope", "alibi", "softcap", "sinks", "top_k"))),
    ("View", (("view", "head", "query", "projector"), ("play", "step"),
              ("colormap", "scale-of", "scale"))),
)
#: Controls only some inputs have (a pretrained model's layer, an encoder-decoder's part):
#: drawn only for an input that names them in its ``own_controls``.
OWN_CONTROLS = ("layer", "show_special", "part", "target")
READOUTS = ("kv-cache", "variants")  # parts of a group that set no trait
#: The rows the "variants" button opens: (group, row index).  They open by themselves while a
#: variant is on.
VARIANT_ROWS = (("Architecture", 1), ("Attention", 1))
#: Controls shown for one attention kind only.
KIND_ONLY = {"kv_rank": "latent", "rope_dim": "latent", "source_text": "cross"}
#: The RoPE bases offered (0: off), and the current one if it is another.
ROPE_CHOICES = (("off", 0.0), ("θ = 10 000", 10000.0), ("θ = 500 000", 500000.0))
FOCUS_ROW = ("head", "query")  # also shown with the detailed view's focus panel
GROUP_LABEL_PX = 100  # the groups' names, in one column
#: The stages whose colour scale can be chosen (the figures of the diagram), as the
#: "scale of" choice names them.
SCALE_STAGES = (("X", "x"), ("Q K V", "qkv"), ("scores", "scores"), ("weights", "weights"),
                ("head outputs", "outputs"), ("concat, output", "concat"))
SCALE_PICKERS = ("scale-of", "scale")  # controls of the ``scales`` trait, not traits themselves
SIGNED_SCALES = (("shared", "shared"), ("per head", "per head"), ("robust", "robust"))
WEIGHT_SCALES = (("0 .. 1", "fixed"), ("per head", "per head"))
#: Longer texts offer no token list for the query (a long trace's lens takes a position).
MAX_QUERY_CHOICES = 512
ERROR_COLOR = "#c62828"


def readout(css_class: str, **kwargs: Any) -> W.HTML:
    """An empty HTML readout carrying ``css_class`` (for tests and custom styling)."""
    return W.HTML(_dom_classes=(css_class,), **kwargs)


def progress_bar(description: str) -> tuple[W.HBox, Progress]:
    """A progress bar with a message, and the ``report(fraction, message)`` that drives it."""
    bar = W.FloatProgress(min=0.0, max=1.0, description=description, bar_style="info")
    label = W.Label()
    box = W.HBox([bar, label], _dom_classes=("aw-progress",))

    def report(fraction: float, message: str) -> None:
        bar.value, label.value = float(np.clip(fraction, 0.0, 1.0)), str(message)

    return box, report


def show_now(box: W.Widget) -> bool:
    """Display ``box`` in the running notebook, if there is one; whether it was shown."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    if get_ipython() is None:
        return False
    display(box)
    return True


Spec = tuple[type, dict[str, Any]]  # a control's class and its arguments


def made(specs: dict[str, Spec], prefix: str = "aw-") -> dict[str, W.DOMWidget]:
    """The controls of ``specs`` (name -> (class, arguments)), by name.

    Each is made with its CSS class ``<prefix><name>`` and room for its whole description: set when
    it is made, neither costs a message of its own to the browser (a notebook of several
    widgets sends them all at once).
    """
    out = {}
    for name, (cls, kwargs) in specs.items():
        if issubclass(cls, DescriptionWidget):
            kwargs = {**kwargs, "style": {"description_width": "initial",
                                          **kwargs.get("style", {})}}
        out[name] = cls(_dom_classes=(f"{prefix}{name}",), **kwargs)
    return out


def _controls(n_layers: int) -> dict[str, W.DOMWidget]:
    """Every control, by the name of the widget trait it sets (``layer`` offers ``n_layers``)."""
    narrow = {"width": "130px"}
    arch = {"width": "200px"}  # three and the variants button on one line beside the files
    return made({
        "text": (W.Text, dict(description="text", continuous_update=False,
                              layout={"flex": "1 1 240px", "min_width": "200px"})),
        "weights": (W.ToggleButtons, dict(options=["random", "designed"], tooltips=[
            "seeded random W_Q, W_K, W_V, W_O", "heads built to do known jobs"],
            style={"button_width": "84px"})),
        "d_model": (W.SelectionSlider, dict(description="d_model",
                                            options=list(D_MODEL_CHOICES),
                                            continuous_update=True, layout=arch)),
        "n_heads": (W.SelectionSlider, dict(description="n_heads", options=[1], layout=arch)),
        "n_kv_heads": (W.SelectionSlider, dict(description="n_kv_heads", options=[1],
                                               layout=arch)),
        "temperature": (W.FloatLogSlider, dict(
            description="temperature", base=10, min=-1.3, max=1.3, step=0.01,
            readout_format=".3g", layout={"width": "300px"})),  # a long track: fine steps
        "mask": (W.ToggleButtons, dict(options=["none", "causal", "sliding"],
                                       style={"button_width": "64px"})),
        "window": (W.BoundedIntText, dict(description="window", min=1, max=MAX_TOKENS,
                                          layout=narrow)),
        "seed": (W.BoundedIntText, dict(description="seed", min=0, max=2**31 - 1,
                                        layout=narrow)),
        "positional": (W.Checkbox, dict(description="positional encodings", indent=False,
                                        layout={"width": "auto"})),
        "view": (W.ToggleButtons, dict(options=["overview", "detailed"], tooltips=[
            "every stage side by side", "one section per stage, with the focus panel"],
            style={"button_width": "84px"})),
        "colormap": (W.Dropdown, dict(description="colours", options=list(SEQUENTIAL),
                                      layout={"width": "150px"})),
        "scale-of": (W.Dropdown, dict(description="colour scale of", options=SCALE_STAGES,
                                      layout={"width": "230px"})),
        "scale": (W.ToggleButtons, dict(options=SIGNED_SCALES, style={"button_width": "82px"})),
        "projector": (W.Checkbox, dict(description="projector (large text)", indent=False,
                                       layout={"width": "auto"})),
        "head": (W.Dropdown, dict(description="focus head", options=[0],
                                  layout={"width": "150px"})),
        "query": (W.Dropdown, dict(description="query", options=[("(none)", -1)],
                                   layout={"width": "180px"})),
        "step": (W.IntSlider, dict(description="", min=1, max=len(SECTIONS), readout=True,
                                   layout={"width": "150px"})),
        "layer": (W.Dropdown, dict(description="layer", layout={"width": "340px"},
                                   options=[(f"layer {i}", i) for i in range(n_layers)])),
        "part": (W.ToggleButtons, dict(options=[("encoder", "encoder"), ("decoder", "decoder"),
                                                ("cross", "cross")], tooltips=[
            "the encoder's self-attention over the text",
            "the decoder's causal self-attention over the target",
            "cross-attention: target tokens (queries) over text tokens (keys)"],
            style={"button_width": "88px"})),
        "target": (W.Text, dict(description="target", continuous_update=False,
                                layout={"flex": "1 1 240px", "min_width": "200px"})),
        **_variant_controls(),
        "show_special": (W.Checkbox, dict(description="special tokens", indent=False,
                                          layout={"width": "auto"})),
    })


def _variant_controls() -> dict[str, Spec]:
    """The attention variants' controls (:mod:`attention_widget.variant_traits`)."""
    narrow = {"width": "110px"}
    apart = {"width": "auto", "margin": "0 16px 0 4px"}  # (its name is not the next one's)
    return {
        "kind": (W.ToggleButtons, dict(options=["standard", "latent", "cross"], tooltips=[
            "multi-head; grouped-query and multi-query through n_kv_heads",
            "DeepSeek's latent attention: K and V rebuilt from c_kv",
            "queries from the text, keys and values from a source text"],
            style={"button_width": "88px"})),
        "kv_rank": (W.IntSlider, dict(description="kv_rank", min=1, max=64,
                                      layout={"width": "228px"})),
        "rope_dim": (W.IntSlider, dict(description="rope_dim", min=0, max=32, step=2,
                                       layout={"width": "228px"})),
        "source_text": (W.Text, dict(description="source text", continuous_update=False,
                                     layout={"flex": "1 1 240px", "min_width": "200px"})),
        "rope": (W.Dropdown, dict(description="RoPE", options=list(ROPE_CHOICES),
                                  layout={"width": "150px"})),
        "alibi": (W.Checkbox, dict(description="ALiBi", indent=False, layout=apart)),
        "softcap": (W.BoundedFloatText, dict(description="soft-cap", min=0.0, max=1e6, step=1.0,
                                             layout={"width": "130px"})),
        "sinks": (W.Checkbox, dict(description="sinks", indent=False, layout=apart)),
        "top_k": (W.BoundedIntText, dict(description="top-k", min=0, max=MAX_TOKENS,
                                         layout=narrow)),
    }


def _export_row() -> dict[str, W.DOMWidget]:
    """The download controls: what, which format, a button and the link it makes."""
    return made({
        "export-what": (W.Dropdown, dict(description="export", options=[
            ("whole diagram", "all"), ("weights", "weights"), ("focus head", "focus")],
            layout={"width": "210px"})),
        "export-format": (W.ToggleButtons, dict(options=["svg", "png"],
                                                style={"button_width": "50px"})),
        "export-button": (W.Button, dict(description="prepare download", icon="download",
                                         layout={"width": "auto"})),
        "export-link": (W.HTML, {}),
    })


def _group(label: str, rows: Sequence[Sequence[W.Widget]]) -> W.HBox:
    """A labelled group: its name in the first column, its rows of controls beside it."""
    name = W.HTML(f"<b>{html.escape(label)}</b>",
                  layout={"width": f"{GROUP_LABEL_PX}px", "flex": "0 0 auto"})
    body = W.VBox([W.HBox(list(r), layout={"flex_flow": "row wrap", "align_items": "center"})
                   for r in rows], layout={"flex": "1 1 0%", "min_width": "0"})
    return W.HBox([name, body], layout={"align_items": "flex-start", "width": "100%"},
                  _dom_classes=(f"aw-group-{label.lower()}", "aw-group"))


def _label(text: str) -> W.HTML:
    """A control's name, beside it on the same line.

    (A ToggleButtons' own description is put above its buttons.)
    """
    return W.HTML(html.escape(text), layout={"margin": "0 6px 0 4px"})


def _show(line: W.HTML, value: str) -> None:
    """Set a status line; an empty one is not drawn (it takes no room)."""
    if line.value != value:
        line.value = value
    display = None if value else "none"
    if line.layout.display != display:
        line.layout.display = display


def _short(token: str, limit: int = 24) -> str:
    """A token as a menu entry: cut to ``limit`` characters."""
    return token if len(token) <= limit else token[: limit - 1] + "…"


def _rope_options(rope: float) -> list[tuple[str, float]]:
    """The RoPE choices: off and the usual bases, and ``rope`` if it is another."""
    options = list(ROPE_CHOICES)
    if rope not in dict(ROPE_CHOICES).values():
        options.append((f"θ = {rope:g}", rope))
    return options


def _query_options(tokens: Sequence[str], query: int) -> list[tuple[str, int]]:
    """The query choices: every token, or for a long text only the query chosen.

    A query chosen before its text's tokens are known (a long text still being computed) is
    offered by its number alone.
    """
    chosen = range(len(tokens)) if len(tokens) <= MAX_QUERY_CHOICES else [query] * (query >= 0)
    return [("(none)", -1), *((f"{i}: {_short(tokens[i])}", i) for i in chosen if i < len(tokens)),
            *([(f"{query}", query)] if query >= len(tokens) else [])]


class ControlPanel:
    """The widget's controls, export row and status lines.

    Parameters
    ----------
    on_change : callable(name, value)
        Called when the user changes the control of trait ``name``.
    on_download : callable(what, format) -> str
        Makes the download link (HTML) for the export row; ImportError and ValueError are
        shown in place of the link.
    description : str
        A line about the input (e.g. the pretrained model, in bold); '' for none.
    note : str
        Said after the description (what stays live).
    fixed_line : str
        What the input fixes (its controls are not drawn); '' for nothing.
    own_controls : sequence of str
        Controls only this input has (of :data:`OWN_CONTROLS`, e.g. ``layer``): the others
        are left out.
    n_layers : int
        Layers of the ``layer`` control until :meth:`sync` names them.

    Attributes
    ----------
    controls : dict of str to ipywidgets.DOMWidget
        By trait name.
    scale_controls : dict of str to ipywidgets.DOMWidget
        ``scale-of`` (a stage) and ``scale`` (its colour scale): together they set ``scales``.
    box : ipywidgets.VBox
        The control groups (Input, Architecture, Attention, View, Export).
    export_row, status : ipywidgets widgets
        The download controls; the busy, progress, error and notice lines.
    focus_row : ipywidgets.HBox
        The focus head and query, for the focus panel.
    """

    def __init__(self, on_change: Callable[[str, Any], None],
                 on_download: Callable[[str, str], str], *, description: str = "",
                 note: str = "", fixed_line: str = "", own_controls: Sequence[str] = (),
                 n_layers: int = 1) -> None:
        self._on_change = on_change
        self._on_download = on_download
        self._syncing = False  # the guard: True while sync() writes the controls
        self._offered: dict[str, Any] = {}  # what the choices offer now (see sync)
        self._scales: dict[str, str] = {}
        c = _controls(n_layers)
        self.play = W.Play(min=1, max=len(SECTIONS), interval=1500, _dom_classes=("aw-play",))
        self._all = c
        self.controls = {name: ctrl for name, ctrl in c.items() if name not in SCALE_PICKERS}
        self.scale_controls = {name: c[name] for name in SCALE_PICKERS}
        self._names = {id(ctrl): name for name, ctrl in (*c.items(), ("step", self.play))}
        for ctrl in (*c.values(), self.play):
            ctrl.observe(self._changed, "value")
        player = W.HTML("step through the stages", layout={"margin": "0 4px 0 12px"},
                        _dom_classes=("aw-play-label",))
        self._mask_box = W.HBox([_label("mask"), c["mask"]])
        self._kind_box = W.HBox([_label("attention"), c["kind"]])
        self.kv_cache = readout("aw-kv-cache")
        self.variants = W.ToggleButton(description="variants ▾", tooltip="attention kinds, "
                                       "RoPE, ALiBi, soft-cap, sinks, top-k and the KV cache",
                                       layout={"width": "96px"}, _dom_classes=("aw-variants",))
        self.variants.observe(lambda _: self._show_variant_rows(), "value")
        parts = {**c, "play": W.HBox([player, self.play]), "mask": self._mask_box,
                 "kind": self._kind_box, "kv-cache": self.kv_cache, "variants": self.variants}
        own = set(own_controls)
        only = set(OWN_CONTROLS) - own  # controls of other inputs
        self.export = _export_row()
        self.export["export-button"].on_click(self._download)
        self.export_row = _group("Export", [list(self.export.values())])
        self.groups = {label: _group(label, [[parts[n] for n in row if n not in only]
                                             for row in rows]) for label, rows in GROUPS}
        lines = []
        if description:
            lines.append(f"<b>{html.escape(description)}</b>. {html.escape(note)}".rstrip())
        if fixed_line:
            lines.append(html.escape(fixed_line))
        self.source_line = W.HTML("<br>".join(lines), _dom_classes=("aw-source-line",),
                                  layout={"display": None if lines else "none"})
        self._variants_on = False  # a variant is on: its rows stay open
        self._show_variant_rows()
        self.box = W.VBox([self.source_line, *self.groups.values(), self.export_row],
                          _dom_classes=("aw-controls",))
        self.focus_row = W.HBox([c[n] for n in FOCUS_ROW])

        self._busy, self._error, self._notice = (readout(f"aw-{n}")
                                                 for n in ("busy", "error", "notice"))
        for line in (self._busy, self._error, self._notice):
            line.layout.display = "none"  # an empty line takes no room
        self._progress_box, self._report = progress_bar("computing")
        self._progress_box.layout.display = "none"
        self.status = (self._busy, self._progress_box, self._error, self._notice)

    # -- user -> widget ------------------------------------------------------------------------
    def _changed(self, change: dict) -> None:
        if self._syncing or change["new"] is None:
            return
        name = self._names[id(change["owner"])]
        if name == "scale-of":  # another stage: show its scale, change nothing
            self._show_scale()
        elif name == "scale":
            stage = self._all["scale-of"].value
            self._on_change("scales", {**self._scales, stage: change["new"]})
        else:
            self._on_change(name, change["new"])

    def _show_scale(self) -> None:
        """The ``scale`` buttons: the choices and the scale of the stage ``scale-of`` picks."""
        c = self._all
        stage = c["scale-of"].value
        options = WEIGHT_SCALES if stage == "weights" else SIGNED_SCALES
        syncing, self._syncing = self._syncing, True
        try:
            if tuple(c["scale"].options) != tuple(options):
                c["scale"].options = options
            value = self._scales.get(stage, options[0][1])
            if c["scale"].value != value:
                c["scale"].value = value
        finally:
            self._syncing = syncing

    def _download(self, _button: W.Button) -> None:
        link = self.export["export-link"]
        link.value = "<i>preparing …</i>"
        try:
            link.value = self._on_download(self.export["export-what"].value,
                                           self.export["export-format"].value)
        except (ImportError, ValueError) as err:
            link.value = f"<span style='color:{ERROR_COLOR}'>{html.escape(str(err))}</span>"

    # -- widget -> controls ----------------------------------------------------------------------
    def sync(self, values: Mapping[str, Any], *, heads: Sequence[int], kv_heads: Sequence[int],
             tokens: Sequence[str], fixed: Collection[str],
             layers: Sequence[str] = (), focus_heads: int | None = None) -> None:
        """Show the widget's state: every control's options and value.

        Parameters
        ----------
        values : mapping of str to value
            The value of every control, by trait name (``n_kv_heads``: the heads in use;
            ``scales``: the colour scale of each stage).
        heads, kv_heads : sequence of int
            The head counts to offer.
        tokens : sequence of str
            The tokens on screen (the query choices).
        fixed : collection of str
            Controls the input decides: not drawn (and a group left empty is not drawn).
        layers : sequence of str
            One label per layer (``"layer 3 · sliding, window 4096"``); () keeps the last.
        focus_heads : int, optional
            The heads the focus head chooses from, when not ``values["n_heads"]`` (an
            encoder-decoder's decoder).
        """
        c = self._all
        d_model = values["d_model"]
        n_focus = values["n_heads"] if focus_heads is None else focus_heads
        offered = {  # what each choice offers, and how its options are made from that
            "d_model": ((d_model, "d_model" in fixed), lambda: [d_model] if "d_model" in fixed
                        else sorted({*D_MODEL_CHOICES, d_model})),
            "n_heads": (tuple(heads), lambda: list(heads)),
            "n_kv_heads": (tuple(kv_heads), lambda: list(kv_heads)),
            "rope": (values.get("rope"), lambda: _rope_options(values.get("rope", 0.0))),
            "head": (n_focus, lambda: [(f"head {h}", h) for h in range(n_focus)]),
            "query": ((tuple(tokens), values["query"] if len(tokens) > MAX_QUERY_CHOICES
                       or values["query"] >= len(tokens) else None),
                      lambda: _query_options(tokens, values["query"])),
        }
        if layers:
            offered["layer"] = (tuple(layers), lambda: [(t, i) for i, t in enumerate(layers)])
        hidden = set(fixed) | ({"window"} if "mask" in fixed else set()) | {
            name for name, kind in KIND_ONLY.items() if values.get("kind") != kind}
        self._syncing = True
        try:
            c["kv_rank"].max = max(d_model, values.get("kv_rank", 1))
            for name, (key, make) in offered.items():
                if self._offered.get(name) != key:  # (options unchanged: nothing to build)
                    self._offered[name] = key
                    c[name].options = make()
            for name, ctrl in (*c.items(), ("step", self.play)):
                if name in values and ctrl.value != values[name]:
                    ctrl.value = values[name]  # (reading a trait costs less than setting it)
            for name, ctrl in c.items():
                disabled = name == "window" and values["mask"] != "sliding"
                if ctrl.disabled != disabled:
                    ctrl.disabled = disabled
                display = "none" if name in hidden else None
                if ctrl.layout.display != display:
                    ctrl.layout.display = display
            self._mask_box.layout.display = c["mask"].layout.display
            self._kind_box.layout.display = c["kind"].layout.display
            for label, rows in GROUPS:
                names = {n for row in rows for n in row} - {*OWN_CONTROLS, *READOUTS}
                display = "none" if names <= hidden else None
                if self.groups[label].layout.display != display:
                    self.groups[label].layout.display = display
        finally:
            self._syncing = False
        self._scales = dict(values.get("scales", {}))
        self._show_scale()
        self._variants_on = variants_on(values)
        self._show_variant_rows()

    def _show_variant_rows(self) -> None:
        """Open the variants' rows while the button is down or a variant is on."""
        shown = self.variants.value or self._variants_on
        for label, row in VARIANT_ROWS:
            box = self.groups[label].children[1].children[row]
            display = None if shown else "none"
            if box.layout.display != display:
                box.layout.display = display
        self.variants.description = "variants ▴" if shown else "variants ▾"

    # -- status lines ----------------------------------------------------------------------------
    def show_error(self, message: str) -> None:
        """Show ``message`` (plain text) as the last input's error; '' clears it."""
        _show(self._error, f"<div style='color:{ERROR_COLOR}'>⚠ {html.escape(message)} "
                           "The diagram below still shows the last valid input.</div>"
              if message else "")

    def show_notice(self, message: str) -> None:
        """Show ``message`` (plain text) as the last automatic adjustment; '' clears it."""
        _show(self._notice, f"<i>{html.escape(message)}</i>" if message else "")

    def show_kv_cache(self, line: str) -> None:
        """Show the KV-cache readout (plain text); '' hides it."""
        _show(self.kv_cache, html.escape(line))

    def show_busy(self, what: str) -> None:
        """Say that ``what`` is being computed ('' clears it)."""
        _show(self._busy, f"<span>⏳ computing {html.escape(what)} …</span>" if what else "")

    @contextlib.contextmanager
    def progress(self) -> Iterator[Progress]:
        """A ``report(fraction, message)`` for one computation.

        Its first call shows the progress bar; the bar is hidden again when the block ends.
        """
        shown = False

        def report(fraction: float, message: str) -> None:
            nonlocal shown
            if not shown:
                self._progress_box.layout.display = None
                shown = True
            self._report(fraction, message)

        try:
            yield report
        finally:
            if shown:
                self._progress_box.layout.display = "none"

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

from .colors import SEQUENTIAL
from .sources import MAX_TOKENS, Progress
from .stages import SECTIONS

__all__ = ["D_MODEL_CHOICES", "ControlPanel", "progress_bar", "readout", "show_now"]

#: Widths offered by the d_model slider (and the current one, if it is another).
D_MODEL_CHOICES = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768)
#: The controls' rows, top to bottom ("play" is the stage player beside its slider).
ROWS = (("text",), ("d_model", "n_heads", "n_kv_heads"), ("temperature", "mask", "window"),
        ("seed", "positional", "colormap", "play", "step"))
FOCUS_ROW = ("head", "query")  # shown with the focus panel
#: Longer texts offer no token list for the query (a long trace's lens takes a position).
MAX_QUERY_CHOICES = 512
ERROR_COLOR = "#c62828"


def readout(css_class: str) -> W.HTML:
    """An empty HTML readout carrying ``css_class`` (for tests and custom styling)."""
    out = W.HTML()
    out.add_class(css_class)
    return out


def progress_bar(description: str) -> tuple[W.HBox, Progress]:
    """A progress bar with a message, and the ``report(fraction, message)`` that drives it."""
    bar = W.FloatProgress(min=0.0, max=1.0, description=description, bar_style="info")
    label = W.Label()
    box = W.HBox([bar, label])
    box.add_class("aw-progress")

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


def _controls() -> dict[str, W.DOMWidget]:
    """Every control, by the name of the widget trait it sets."""
    narrow = {"width": "150px"}
    return {
        "text": W.Text(description="text", continuous_update=False, layout={"width": "100%"}),
        "d_model": W.SelectionSlider(description="d_model", options=list(D_MODEL_CHOICES),
                                     continuous_update=True),
        "n_heads": W.SelectionSlider(description="n_heads", options=[1]),
        "n_kv_heads": W.SelectionSlider(description="n_kv_heads", options=[1]),
        "temperature": W.FloatLogSlider(description="temperature", base=10, min=-1.3, max=1.3,
                                        step=0.01, readout_format=".3g"),
        "mask": W.ToggleButtons(description="mask", options=["none", "causal", "sliding"],
                                style={"button_width": "70px"}),
        "window": W.BoundedIntText(description="window", min=1, max=MAX_TOKENS, layout=narrow),
        "seed": W.BoundedIntText(description="seed", min=0, max=2**31 - 1, layout=narrow),
        "positional": W.Checkbox(description="positional encodings", indent=False),
        "colormap": W.Dropdown(description="colours", options=list(SEQUENTIAL),
                               layout={"width": "200px"}),
        "head": W.Dropdown(description="focus head", options=[0], layout={"width": "200px"}),
        "query": W.Dropdown(description="query", options=[("(none)", -1)],
                            layout={"width": "260px"}),
        "step": W.IntSlider(description="stages", min=1, max=len(SECTIONS),
                            layout={"width": "300px"}),
        "layer": W.IntSlider(description="layer", min=0, max=0),
        "show_special": W.Checkbox(description="special tokens", indent=False),
    }


def _export_row() -> dict[str, W.DOMWidget]:
    """The download controls: what, which format, a button and the link it makes."""
    return {
        "export-what": W.Dropdown(description="export", options=[
            ("whole diagram", "all"), ("weights", "weights"), ("focus head", "focus")],
            layout={"width": "230px"}),
        "export-format": W.ToggleButtons(options=["svg", "png"], style={"button_width": "50px"}),
        "export-button": W.Button(description="prepare download", icon="download"),
        "export-link": W.HTML(),
    }


def _query_options(tokens: Sequence[str], query: int) -> list[tuple[str, int]]:
    """The query choices: every token, or for a long text only the query chosen."""
    chosen = range(len(tokens)) if len(tokens) <= MAX_QUERY_CHOICES else [query] * (query >= 0)
    return [("(none)", -1), *((f"{i}: {tokens[i]}", i) for i in chosen)]


def _row(parts: Sequence[W.Widget]) -> W.Widget:
    return parts[0] if len(parts) == 1 else W.HBox(list(parts), layout={"flex_flow": "row wrap"})


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
        Said after the description (what the input fixes).
    own_controls : sequence of str
        Controls shown on the description line (e.g. ``layer``).
    n_layers : int
        Range of the ``layer`` control.

    Attributes
    ----------
    controls : dict of str to ipywidgets.DOMWidget
        By trait name.  ``play`` is the stage player linked to ``step``.
    box : ipywidgets.VBox
        The controls in their rows.
    export_row, status : ipywidgets widgets
        The download controls; the busy, progress, error and notice lines.
    focus_row : ipywidgets.HBox
        The focus head and query, for the focus panel.
    """

    def __init__(self, on_change: Callable[[str, Any], None],
                 on_download: Callable[[str, str], str], *, description: str = "",
                 note: str = "", own_controls: Sequence[str] = (), n_layers: int = 1) -> None:
        self._on_change = on_change
        self._on_download = on_download
        self._syncing = False  # the guard: True while sync() writes the controls
        self._offered: dict[str, Any] = {}  # what the choices offer now (see sync)
        c = _controls()
        c["layer"].max = n_layers - 1
        for name, ctrl in c.items():
            ctrl.add_class(f"aw-{name}")
            if hasattr(ctrl, "style") and "description_width" in ctrl.style.keys:
                ctrl.style.description_width = "initial"
        self.play = W.Play(min=1, max=len(SECTIONS), interval=1500, description="step through")
        self.play.add_class("aw-play")
        self.controls = c
        self._names = {id(ctrl): name for name, ctrl in (*c.items(), ("step", self.play))}
        for ctrl in (*c.values(), self.play):
            ctrl.observe(self._changed, "value")
        parts = {**c, "play": self.play}
        line = f"<b>{html.escape(description)}</b>. {html.escape(note)}".rstrip()
        source_row = [W.HBox([W.HTML(line),
                              *(c[n] for n in own_controls)],
                             layout={"flex_flow": "row wrap"})] if description else []
        self.box = W.VBox([*source_row, *(_row([parts[n] for n in row]) for row in ROWS)])
        self.box.add_class("aw-controls")
        self.focus_row = W.HBox([c[n] for n in FOCUS_ROW])

        self.export = _export_row()
        for name, wdg in self.export.items():
            wdg.add_class(f"aw-{name}")
        self.export["export-button"].on_click(self._download)
        self.export_row = W.HBox(list(self.export.values()), layout={"flex_flow": "row wrap"})

        self._busy, self._error, self._notice = (readout(f"aw-{n}")
                                                 for n in ("busy", "error", "notice"))
        self._progress_box, self._report = progress_bar("computing")
        self._progress_box.layout.display = "none"
        self.status = (self._busy, self._progress_box, self._error, self._notice)

    # -- user -> widget ------------------------------------------------------------------------
    def _changed(self, change: dict) -> None:
        if self._syncing or change["new"] is None:
            return
        self._on_change(self._names[id(change["owner"])], change["new"])

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
             tokens: Sequence[str], fixed: Collection[str]) -> None:
        """Show the widget's state: every control's options and value.

        Parameters
        ----------
        values : mapping of str to value
            The value of every control, by trait name (``n_kv_heads``: the heads in use).
        heads, kv_heads : sequence of int
            The head counts to offer.
        tokens : sequence of str
            The tokens on screen (the query choices).
        fixed : collection of str
            Controls the input decides: disabled.
        """
        c = self.controls
        d_model = values["d_model"]
        offered = {  # what each choice offers, and how its options are made from that
            "d_model": ((d_model, "d_model" in fixed), lambda: [d_model] if "d_model" in fixed
                        else sorted({*D_MODEL_CHOICES, d_model})),
            "n_heads": (tuple(heads), lambda: list(heads)),
            "n_kv_heads": (tuple(kv_heads), lambda: list(kv_heads)),
            "head": (values["n_heads"], lambda: [(f"head {h}", h)
                                                 for h in range(values["n_heads"])]),
            "query": ((tuple(tokens), values["query"] if len(tokens) > MAX_QUERY_CHOICES
                       else None), lambda: _query_options(tokens, values["query"])),
        }
        self._syncing = True
        try:
            for name, (key, make) in offered.items():
                if self._offered.get(name) != key:  # (options unchanged: nothing to build)
                    self._offered[name] = key
                    c[name].options = make()
            for name, ctrl in (*c.items(), ("step", self.play)):
                if ctrl.value != values[name]:  # (reading a trait costs less than setting it)
                    ctrl.value = values[name]
            for name, ctrl in c.items():
                disabled = name in fixed or (name == "window" and values["mask"] != "sliding")
                if ctrl.disabled != disabled:
                    ctrl.disabled = disabled
        finally:
            self._syncing = False

    # -- status lines ----------------------------------------------------------------------------
    def show_error(self, message: str) -> None:
        """Show ``message`` (plain text) as the last input's error; '' clears it."""
        self._error.value = (f"<div style='color:{ERROR_COLOR}'>⚠ {html.escape(message)} "
                             "The diagram below still shows the last valid input.</div>"
                             if message else "")

    def show_notice(self, message: str) -> None:
        """Show ``message`` (plain text) as the last automatic adjustment; '' clears it."""
        value = f"<i>{html.escape(message)}</i>" if message else ""
        if self._notice.value != value:
            self._notice.value = value

    def show_busy(self, what: str) -> None:
        """Say that ``what`` is being computed ('' clears it)."""
        value = f"<span>⏳ computing {html.escape(what)} …</span>" if what else ""
        if self._busy.value != value:
            self._busy.value = value

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

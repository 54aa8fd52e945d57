"""The widget's views of a trace, each built the first time it is shown.

Most widgets show one view.  Built together with every widget, the views it never showed
doubled the messages a new widget sends (961 instead of 495 for a sentence): a notebook that
showed several widgets at once sent the kernel's output channel thousands of messages within
seconds, and some never reached the browser (a widget missing a part, a cell that never
ended).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as W
import numpy as np

from .diagram import Diagram
from .longview import LongView
from .overview import Overview
from .plots import PanelFigure

__all__ = ["Views"]


class Views:
    """The overview, the detailed view and the long view (part of the widget).

    Each is built by the property of its name the first time it is read, in the widget's
    colours; ``_built_*`` is None until then.
    """

    _built_diagram: Diagram | None = None
    _built_overview: Overview | None = None
    _built_long: LongView | None = None
    _panel: Any
    _summary: W.HTML
    _lock: Any
    _on_control: Callable[[str, Any], None]
    colormap: str

    @property
    def figs(self) -> dict[str, PanelFigure]:
        """The detailed view's figures, by stage (``x, qkv, scores, weights, ...``)."""
        return self._diagram.figs

    def displayed(self, stage: str) -> list[np.ndarray]:
        """The arrays figure ``stage`` (``long_figs[stage]``, ``"sinks"``) shows, as coloured.

        Float32, or float64 beyond float32's range (:func:`~attention_widget.colors.as_drawn`).
        """
        figs = self._long.figs if stage.startswith("long-") else {**self.figs,
                                                                  "sinks": self._diagram.sinks}
        if stage not in figs:
            raise ValueError(f"stage must be one of {sorted(figs)}, got {stage!r}")
        return figs[stage].displayed()

    @property
    def _diagram(self) -> Diagram:
        if self._built_diagram is None:
            self._built_diagram = Diagram(self._panel.focus_row, self._summary)
            self._built_diagram.set_colormap(self.colormap)
        return self._built_diagram

    @property
    def _overview(self) -> Overview:
        if self._built_overview is None:
            self._built_overview = Overview()
            self._built_overview.set_colormap(self.colormap)
        return self._built_overview

    @property
    def _long(self) -> LongView:
        if self._built_long is None:
            self._built_long = LongView(self._on_control, self._lock, self._summary)
            self._built_long.set_colormap(self.colormap)
        return self._built_long

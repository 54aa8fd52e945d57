"""The widget's views of a trace, each built the first time it is shown.

Most widgets show one view.  Built together with every widget, the views it never showed
doubled the messages a new widget sends (961 instead of 495 for a sentence): a notebook that
showed several widgets at once sent the kernel's output channel thousands of messages within
seconds, and some never reached the browser (a widget missing a part, a cell that never
ended).  The long view is built likewise (:class:`~attention_widget.longview.LongPrompts`).
"""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from .diagram import Diagram
from .overview import Overview
from .plots import PanelFigure

__all__ = ["Views"]


class Views:
    """The overview and the detailed view (a part of :class:`~attention_widget.AttentionWidget`)."""

    _built_diagram: Diagram | None = None
    _built_overview: Overview | None = None
    _panel: Any
    _summary: W.HTML
    colormap: str

    @property
    def figs(self) -> dict[str, PanelFigure]:
        """The detailed view's figures, by stage (``x, qkv, scores, weights, ...``)."""
        return self._diagram.figs

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

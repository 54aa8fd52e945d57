"""The widget's files: downloads, figures, standalone pages and state (a mixin).

The work is in :mod:`attention_widget.export` and :mod:`attention_widget.state`; here only what
the widget hands them: its trace, tokens, colour table and the colour scales chosen on screen,
so that a file shows what the screen shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import traitlets as T

from .sources import restore_source

__all__ = ["WidgetFiles"]


class WidgetFiles:
    """Export and state methods of :class:`~attention_widget.widget.AttentionWidget`."""

    #: Traits restored from a state file (the widget sets it), besides head, query and step.
    SAVED_TRAITS: tuple[str, ...] = ()
    #: Their values for a state file written before a trait existed.
    SAVED_DEFAULTS: ClassVar[dict[str, Any]] = {}

    def _download_link(self, what: str, fmt: str) -> str:
        """A download link (HTML) of the whole diagram, the weights or the focus head."""
        from .export import download_link

        chosen = {"all": {"stages": self._export_stages()}, "weights": {"stages": ["weights"]},
                  "focus": {"stages": ["weights"], "heads": [self.head]}}[what]
        chosen.update(self._long_export())
        return download_link(self.trace, self.tokens, format=fmt, colormap=self.colormap,
                             filename=f"attention-{what}.{fmt}", title=self.summary,
                             scales=self.scales, key_tokens=self._key_tokens(), **chosen)

    def _key_tokens(self) -> list[str] | None:
        """The key columns' labels where they are not the tokens (see ``Traced.key_tokens``)."""
        return None if self._traced is None else self._traced.key_tokens

    def _export_stages(self) -> list[str] | None:
        """Stages exports draw by default: all (None), or the weights when only they are known."""
        return ["weights"] if self._traced is not None and self._traced.unavailable else None

    def save_figure(self, path: str | os.PathLike, *, stages: Sequence[str] | None = None,
                    heads: Sequence[int] | None = None, dpi: float = 150,
                    title: str | None = None) -> Path:
        """Write the diagram (or chosen stages and heads) as SVG, PNG or PDF, by suffix.

        SVG needs nothing extra and keeps text as text; PNG and PDF use matplotlib
        (``pip install attention-widget[export]``).  The colour scales are the ones on screen
        (``scales``).  See :func:`attention_widget.export.save_figure`.
        """
        from .export import save_figure

        self.wait()
        stages = self._export_stages() if stages is None else stages
        return save_figure(self.trace, path, self.tokens, stages=stages, heads=heads,
                           colormap=self.colormap, dpi=dpi, scales=self.scales,
                           key_tokens=self._key_tokens(), **self._long_export(),
                           title=self.summary if title is None else title)

    def to_html(self, path: str | os.PathLike, *,
                temperatures: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                head_counts: Sequence[int] | None = None, title: str | None = None) -> Path:
        """Write a standalone HTML page of the current state that works offline.

        The page also holds precomputed variants (other temperatures, and other head counts
        where the input allows them: by default up to three of at most 16 heads) to switch
        between without a kernel.

        Raises
        ------
        ValueError
            If a head count is not one the input can show.
        """
        from .export import to_html

        self.wait()
        variants = self._source.variants(self._settings(), temperatures, head_counts)
        return to_html(self.trace, path, self.tokens, variants=variants, colormap=self.colormap,
                       stages=self._export_stages(),
                       title=self.summary if title is None else title, settings=self.settings,
                       scales=self.scales)

    def save_state(self, path: str | os.PathLike) -> Path:
        """Save settings, tokens, X, parameters and every trace array to one ``.npz`` file.

        No pickle: :meth:`load_state` rebuilds the widget (view, colour scales and all) and
        checks it reproduces the trace exactly.
        """
        from .state import save_state

        self.wait()
        if self._source.not_saved:
            raise ValueError(self._source.not_saved)
        if self.trace is None:
            raise ValueError("nothing to save: the widget has no valid input yet")
        return save_state(path, self.settings, self.trace, self.tokens, params=self.params,
                          x=self.trace.x)

    @classmethod
    def load_state(cls, path: str | os.PathLike) -> Any:
        """Rebuild a widget from :meth:`save_state`'s file; the trace must come out identical.

        Raises
        ------
        ValueError
            If the file is corrupt, truncated or edited, naming the file and the problem.
        """
        from .state import load_state, verify_trace

        st = load_state(path)
        s = {**cls.SAVED_DEFAULTS, **st.settings}
        try:
            w = cls(source=restore_source(st), **{name: s[name] for name in cls.SAVED_TRAITS})
            w.head, w.query, w.step = s["head"], s["query"], s["step"]
        except (KeyError, TypeError, T.TraitError) as err:
            raise ValueError(f"{os.fspath(path)}: the saved settings are incomplete or "
                             f"invalid ({type(err).__name__}: {err})") from None
        w.wait()
        if w.trace is None:
            raise ValueError(f"{os.fspath(path)}: its settings give no diagram ({w.error})")
        verify_trace(st, w.trace)
        return w

"""The one list of stages: what each array of a trace is called, its formula and its shape.

The widget's panels, the stage player and every export (SVG, PNG, PDF, HTML) take their names,
titles, formulas and the one-line summary from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SECTIONS", "STAGES", "STAGE_NAMES", "Section", "Stage", "mask_name", "stage", "summary"]


@dataclass(frozen=True)
class Stage:
    """One array of the computation.

    Attributes
    ----------
    name : str
        Its name in ``stages=`` arguments and in the widget (``"scores"``).
    attr : str
        The :class:`~attention_widget.engine.AttentionTrace` attribute that holds it.
    title : str
        What it is, in words (``"scores"``).
    formula : str
        How it is computed, in plain Unicode (shown as text, never as markup).
    shape : str
        Its shape in the names of the trace (``"(n_heads, seq_len, seq_len)"``).
    signed : bool
        Drawn on a diverging scale around 0 (everything but the weights).
    """

    name: str
    attr: str
    title: str
    formula: str
    shape: str
    signed: bool = True

    def dims(self, trace: Any) -> str:
        """The shape of the trace's array, e.g. ``"4 × 13 × 13"``."""
        return " × ".join(str(n) for n in getattr(trace, self.attr).shape)


@dataclass(frozen=True)
class Section:
    """A step of the diagram: a title and the stages drawn under it, in order."""

    title: str
    stages: tuple[str, ...]


STAGES = (
    Stage("x", "x", "input X", "x_i = embedding(token_i) + PE(i), one row per token",
          "(seq_len, d_model)"),
    Stage("q", "q", "queries Q", "Q = X W_Q, split into heads", "(n_heads, seq_len, d_head)"),
    Stage("k", "k", "keys K", "K = X W_K, split into key/value heads",
          "(n_kv_heads, seq_len, d_head)"),
    Stage("v", "v", "values V", "V = X W_V, split into key/value heads",
          "(n_kv_heads, seq_len, d_head)"),
    Stage("scores", "scores", "scores", "scores = Q Kᵀ / √d_head (rows: queries, columns: keys)",
          "(n_heads, seq_len, seq_len)"),
    Stage("weights", "weights", "attention weights", "weights = softmax(scores / T) over keys",
          "(n_heads, seq_len, seq_len)", signed=False),
    Stage("outputs", "head_outputs", "head outputs", "head_h = weights_h V_h",
          "(n_heads, seq_len, d_head)"),
    Stage("concat", "concat", "concat", "concat = [head_0 … head_(h-1)]", "(seq_len, d_model)"),
    Stage("output", "output", "output", "output = concat W_O", "(seq_len, d_model)"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)

#: The diagram's steps, as the stage player reveals them.
SECTIONS = (
    Section("1 · tokens and input X", ("x",)),
    Section("2 · projections Q, K, V", ("q", "k", "v")),
    Section("3 · scores", ("scores",)),
    Section("4 · attention weights", ("weights",)),
    Section("5 · head outputs", ("outputs",)),
    Section("6 · concat and output", ("concat", "output")),
)


def stage(name: str) -> Stage:
    """The stage called ``name``; ValueError listing the names otherwise."""
    for s in STAGES:
        if s.name == name:
            return s
    raise ValueError(f"unknown stage {name!r}; the stages are {STAGE_NAMES}")


def mask_name(mask: np.ndarray) -> str:
    """``"none"``, ``"causal"``, ``"sliding, window=w"`` or ``"custom"`` for a boolean mask."""
    if mask.all():
        return "none"
    n = mask.shape[0]
    if mask.shape == (n, n) and np.array_equal(mask, np.tri(n, dtype=bool)):
        return "causal"
    window = int(mask.sum(axis=1).max())
    diff = np.arange(n)[:, None] - np.arange(mask.shape[1])[None, :]
    if np.array_equal(mask, (diff >= 0) & (diff < window)):
        return f"sliding, window={window}"
    return "custom"


def summary(trace: Any, *, mask: str | None = None, layer: int | None = None) -> str:
    """One line stating what a trace is: sizes, temperature, mask (and layer of a model).

    ``mask`` overrides the name read from ``trace.mask`` (a sliding window wider than the
    text reads as causal there).
    """
    mask = mask_name(trace.mask) if mask is None else mask
    return (f"seq_len={trace.seq_len}, d_model={trace.d_model}, n_heads={trace.n_heads}, "
            f"n_kv_heads={trace.n_kv_heads}, temperature={trace.temperature:.3g}, mask={mask}"
            + ("" if layer is None else f", layer={layer}"))

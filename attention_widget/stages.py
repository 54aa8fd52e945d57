"""The one list of stages: what each array of a trace is called, its formula and its shape.

The widget's panels, the stage player and every export (SVG, PNG, PDF, HTML) take their names,
titles, formulas and the one-line summary from here.  What an array *is* depends on where it
comes from: :func:`source_stages` gives the stages as a source describes them (the synthetic
layer, designed heads, your own arrays, or one layer of a pretrained model, per family).
A stage added to :data:`STAGES` (a rotation of Q and K, a sink column) appears in every view
where it acts: the views draw the stages of a section in order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "SECTIONS",
    "STAGES",
    "STAGE_NAMES",
    "Section",
    "Stage",
    "mask_name",
    "source_stages",
    "stage",
    "summary",
]


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


#: What a pretrained family's layer computes, where it differs from the synthetic layer:
#: (its input X at layer 0, at a later layer, its queries, its keys, its values, its output).
#: ``{L}`` is the layer shown, ``{P}`` the one before it.  Families not listed get _GENERIC.
_FAMILY_TEXT = {
    "bert": (
        ("embeddings + LayerNorm", "x_i = LayerNorm(word_i + position_i + token type_i)"),
        ("hidden state entering layer {L}", "x = the output of layer {P} (after its LayerNorm)"),
        "Q = X W_Q + b_Q, split into heads",
        "K = X W_K + b_K, split into heads",
        "V = X W_V + b_V, split into heads",
        "output = concat W_O + b_O (before the residual and LayerNorm)",
    ),
    "gpt2": (
        ("LayerNorm of token + position embeddings", "x = ln_1(token_i + position_i)"),
        ("LayerNorm of the hidden state entering layer {L}",
         "x = ln_1(h), h = the output of layer {P}"),
        "Q = X W_Q + b_Q, split into heads",
        "K = X W_K + b_K, split into heads",
        "V = X W_V + b_V, split into heads",
        "output = concat W_O + b_O (before the residual)",
    ),
    "llama": (
        ("RMSNorm of the token embeddings", "x = RMSNorm(embedding(token_i)): no position yet"),
        ("RMSNorm of the hidden state entering layer {L}",
         "x = RMSNorm(h), h = the output of layer {P}"),
        "Q = RoPE(X W_Q): each pair of columns turned by position",
        "K = RoPE(X W_K): turned by position, split into key/value heads",
        "V = X W_V, split into key/value heads",
        "output = concat W_O (before the residual)",
    ),
    "qwen3": (
        ("RMSNorm of the token embeddings", "x = RMSNorm(embedding(token_i)): no position yet"),
        ("RMSNorm of the hidden state entering layer {L}",
         "x = RMSNorm(h), h = the output of layer {P}"),
        "Q = RoPE(q_norm(X W_Q)): RMSNorm per head (q/k norm), then turned by position",
        "K = RoPE(k_norm(X W_K)): q/k norm, RoPE, split into key/value heads",
        "V = X W_V, split into key/value heads",
        "output = concat W_O (before the residual)",
    ),
}
_GENERIC = (
    ("embeddings, as the model feeds them to layer 0", "x = the model's input of layer 0"),
    ("hidden state entering layer {L}", "x = the output of layer {P}, normed as the model does"),
    "Q = X W_Q, as the model computes it, split into heads",
    "K = X W_K, as the model computes it, split into key/value heads",
    "V = X W_V, as the model computes it, split into key/value heads",
    "output = concat W_O (before the residual)",
)
_SOURCE_X = {  # (title, formula) of X for the other sources
    "random": ("input X", "x_i = embedding(token_i) + PE(i), one row per token"),
    "random, no positions": ("input X", "x_i = embedding(token_i): no positional code"),
    "designed": ("designed input X",
                 "x_i = [code(word_i) | code(i)]: which word, then where"),
    "designed, no positions": ("designed input X",
                               "x_i = [code(word_i) | 0]: which word; the position code is off"),
    "arrays": ("your input X", "the rows you gave, one per token"),
}


def source_stages(kind: str, *, weights: str = "random", positional: bool = True,
                  family: str | None = None, layer: int = 0) -> dict[str, Stage]:
    """The stages as a source describes them: titles and formulas for what its arrays are.

    Parameters
    ----------
    kind : str
        ``"text"``, ``"arrays"`` or ``"pretrained"`` (a source's ``kind``).
    weights : str
        ``"random"`` or ``"designed"`` (text only).
    positional : bool
        Whether the text's X holds a position code.
    family : str, optional
        A pretrained model's ``model_type`` (``"bert"``, ``"gpt2"``, ``"llama"``, ...).
    layer : int
        The pretrained layer shown.

    Returns
    -------
    dict of str to Stage
        Every stage of :data:`STAGES`, by name, in order.
    """
    out = {s.name: s for s in STAGES}

    def put(name: str, formula: str, title: str | None = None) -> None:
        out[name] = dataclasses.replace(out[name], formula=formula,
                                        title=out[name].title if title is None else title)

    if kind == "pretrained":
        first, later, q, k, v, o = _FAMILY_TEXT.get(family or "", _GENERIC)
        title, formula = first if layer == 0 else later
        put("x", formula.format(L=layer, P=layer - 1), title.format(L=layer, P=layer - 1))
        put("q", q)
        put("k", k)
        put("v", v)
        put("output", o)
        return out
    key = "arrays" if kind == "arrays" else weights + ("" if positional else ", no positions")
    title, formula = _SOURCE_X[key]
    put("x", formula, title)
    return out


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

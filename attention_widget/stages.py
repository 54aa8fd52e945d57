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
    "column_formula",
    "mask_name",
    "source_stages",
    "stage",
    "summary",
    "variant_stages",
    "weights_marks",
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

    def present(self, trace: Any) -> bool:
        """Whether the trace holds this stage (the latent only in latent attention)."""
        return getattr(trace, self.attr, None) is not None


@dataclass(frozen=True)
class Section:
    """A step of the diagram: a title and the stages drawn under it, in order."""

    title: str
    stages: tuple[str, ...]


STAGES = (
    Stage("x", "x", "input X", "x_i = embedding(token_i) + PE(i), one row per token",
          "(seq_len, d_model)"),
    Stage("latent", "latent", "latent c_kv", "c_kv = X W_DKV: what a cache keeps per token "
          "(with the shared rotary key)", "(seq_len, kv_rank)"),
    Stage("q", "q", "queries Q", "Q = X W_Q, split into heads", "(n_heads, seq_len, d_head)"),
    Stage("k", "k", "keys K", "K = X W_K, split into key/value heads",
          "(n_kv_heads, n_keys, d_head)"),
    Stage("v", "v", "values V", "V = X W_V, split into key/value heads",
          "(n_kv_heads, n_keys, d_v)"),
    Stage("scores", "scores", "scores", "scores = Q Kᵀ / √d_head (rows: queries, columns: keys)",
          "(n_heads, seq_len, n_keys)"),
    Stage("weights", "weights", "attention weights", "weights = softmax(scores / T) over keys",
          "(n_heads, seq_len, n_keys)", signed=False),
    Stage("outputs", "head_outputs", "head outputs", "head_h = weights_h V_h",
          "(n_heads, seq_len, d_v)"),
    Stage("concat", "concat", "concat", "concat = [head_0 … head_(h-1)]",
          "(seq_len, n_heads · d_v)"),
    Stage("output", "output", "output", "output = concat W_O", "(seq_len, d_model)"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)

#: The diagram's steps, as the stage player reveals them.
SECTIONS = (
    Section("1 · tokens and input X", ("x",)),
    Section("2 · projections Q, K, V", ("latent", "q", "k", "v")),
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


_RMS_FIRST = ("RMSNorm of the token embeddings", "x = RMSNorm(embedding(token_i)): no position yet")
_RMS_LATER = ("RMSNorm of the hidden state entering layer {L}",
              "x = RMSNorm(h), h = the output of layer {P}")
_ROPE_Q = "Q = RoPE(X W_Q): each pair of columns turned by position"
_ROPE_K = "K = RoPE(X W_K): turned by position, split into key/value heads"
#: softmax with one sink logit per head (gpt-oss, DeepSeek V4, the ``sinks`` variant)
_SINK = ("weights = softmax([scores, sink_h] / T) over keys and the head's sink, the sink column "
         "then left out: rows sum to 1 − what the sink took")
_LATENT_Q = "Q = [q_nope | RoPE(q_rope)] from X (through a query latent if q_lora_rank is set)"
_LATENT_K = ("K = [c_kv W_UK | RoPE(k_r)], latent c_kv = RMSNorm(X W_DKV); one rotary part k_r "
             "for every head")
_LATENT_V = "V = c_kv W_UV: from the same latent, d_v wide"
_LATENT_S = "scores = Q Kᵀ · mscale² / √(d_nope + d_rope) (rows: queries, columns: keys)"
_BIASED = {"q": "Q = X W_Q + b_Q, split into heads", "k": "K = X W_K + b_K, split into heads",
           "v": "V = X W_V + b_V, split into heads"}

#: What a pretrained family's layer computes, where it differs from the synthetic layer, by
#: stage name; "x0" is the input X of layer 0 and "x" of a later one, as (title, formula).
#: ``{L}`` is the layer shown, ``{P}`` the one before it.  Families not listed get _GENERIC.
_FAMILY_TEXT: dict[str, dict[str, Any]] = {
    "bert": {
        "x0": ("embeddings + LayerNorm", "x_i = LayerNorm(word_i + position_i + token type_i)"),
        "x": ("hidden state entering layer {L}",
              "x = the output of layer {P} (after its LayerNorm)"),
        **_BIASED, "output": "output = concat W_O + b_O (before the residual and LayerNorm)",
    },
    "gpt2": {
        "x0": ("LayerNorm of token + position embeddings", "x = ln_1(token_i + position_i)"),
        "x": ("LayerNorm of the hidden state entering layer {L}",
              "x = ln_1(h), h = the output of layer {P}"),
        **_BIASED, "output": "output = concat W_O + b_O (before the residual)",
    },
    "llama": {"x0": _RMS_FIRST, "x": _RMS_LATER, "q": _ROPE_Q, "k": _ROPE_K},
    "qwen3": {
        "x0": _RMS_FIRST, "x": _RMS_LATER,
        "q": "Q = RoPE(q_norm(X W_Q)): RMSNorm per head (q/k norm), then turned by position",
        "k": "K = RoPE(k_norm(X W_K)): q/k norm, RoPE, split into key/value heads",
    },
    "gemma2": {
        "x0": ("RMSNorm of the scaled token embeddings",
               "x = RMSNorm(√d_model · embedding(token_i)): no position yet"),
        "x": _RMS_LATER, "q": _ROPE_Q, "k": _ROPE_K,
        "scores": "scores = c · tanh(Q Kᵀ / √query_pre_attn_scalar / c): soft-capped at "
                  "c = attn_logit_softcapping",
        "output": "output = concat W_O (then RMSNorm, before the residual)",
    },
    "bloom": {
        "x0": ("LayerNorm of the LayerNormed token embeddings",
               "x = ln_1(LayerNorm(embedding(token_i))): no position at all"),
        "x": ("LayerNorm of the hidden state entering layer {L}",
              "x = ln_1(h), h = the output of layer {P}"),
        **_BIASED,
        "scores": "scores = Q Kᵀ / √d_head − m_h (i − j): ALiBi, a penalty growing with the "
                  "distance, slope m_h per head",
        "output": "output = concat W_O + b_O (before the residual)",
    },
    "gpt_oss": {
        "x0": _RMS_FIRST, "x": _RMS_LATER,
        "q": "Q = RoPE(X W_Q + b_Q): turned by position (YaRN)",
        "k": "K = RoPE(X W_K + b_K): turned by position, split into key/value heads",
        "v": "V = X W_V + b_V, split into key/value heads", "weights": _SINK,
        "output": "output = concat W_O + b_O (before the residual)",
    },
    "deepseek_v3": {"x0": _RMS_FIRST, "x": _RMS_LATER, "q": _LATENT_Q, "k": _LATENT_K,
                    "v": _LATENT_V, "scores": _LATENT_S},
    "deepseek_v32": {
        "x0": _RMS_FIRST, "x": _RMS_LATER, "q": _LATENT_Q, "k": _LATENT_K, "v": _LATENT_V,
        "scores": _LATENT_S,
        "weights": "weights = softmax(scores / T) over the keys the indexer kept (its top "
                   "index_topk per query); the others 0",
    },
    "deepseek_v4": {
        "x0": ("RMSNorm of the token embeddings' streams, mixed",
               "x = RMSNorm(Σ_j pre_j h_j), h_j = the embeddings copied into each stream"),
        "x": ("input of layer {L}'s attention: the streams, mixed",
              "x = RMSNorm(Σ_j pre_j h_j), h = the residual streams after layer {P}"),
        "q": "Q = RoPE(RMSNorm per head(c_q W_Q)), c_q = RMSNorm(X W_DQ): RoPE on the last "
             "features only",
        "k": "K = RoPE(RMSNorm(X W_KV)): one head for every query, the key is the value",
        "v": "V = K: the one shared key/value head", "weights": _SINK,
        "outputs": "head_h = RoPE⁻¹(weights_h V): the rotation undone at the query",
        "output": "output = grouped low-rank projection of concat (before the hyper-connection)",
    },
    "bart": {
        "x0": ("embeddings + LayerNorm", "x_i = LayerNorm(embedding(token_i) + position_i)"),
        "x": ("hidden state entering encoder layer {L}",
              "x = the output of encoder layer {P} (after its LayerNorm)"),
        **_BIASED, "output": "output = concat W_O + b_O (before the residual and LayerNorm)",
    },
}
_GENERIC = {
    "x0": ("embeddings, as the model feeds them to layer 0", "x = the model's input of layer 0"),
    "x": ("hidden state entering layer {L}",
          "x = the output of layer {P}, normed as the model does"),
    "q": "Q = X W_Q, as the model computes it, split into heads",
    "k": "K = X W_K, as the model computes it, split into key/value heads",
    "v": "V = X W_V, as the model computes it, split into key/value heads",
    "output": "output = concat W_O (before the residual)",
}
#: An encoder-decoder's decoder (BART): its causal self-attention and its cross-attention.
_DECODER_TEXT = {
    "decoder": {
        "x0": ("decoder embeddings + LayerNorm",
               "x_i = LayerNorm(embedding(target_i) + position_i): the target's tokens"),
        "x": ("hidden state entering decoder layer {L}",
              "x = the output of decoder layer {P} (after its LayerNorm)"),
        "weights": "weights = softmax(scores / T) over the target's keys so far (causal)",
    },
    "cross": {
        "x0": ("decoder state after decoder layer {L}'s self-attention",
               "x = LayerNorm(h + self-attention(h)), one row per target token"),
        "q": "Q = X W_Q + b_Q: from the target's tokens",
        "k": "K = E W_K + b_K: from the encoder's output E, one row per source token",
        "v": "V = E W_V + b_V: from the encoder's output E",
        "scores": "scores = Q Kᵀ / √d_head (rows: target tokens, columns: source tokens)",
        "weights": "weights = softmax(scores / T) over the source's tokens (no mask)",
        "output": "output = concat W_O + b_O (before the residual and LayerNorm)",
    },
}
_SOURCE_X = {  # (title, formula) of X for the other sources
    "random": ("input X", "x_i = embedding(token_i) + PE(i), one row per token"),
    "random, no positions": ("input X", "x_i = embedding(token_i): no positional code"),
    "designed": ("designed input X",
                 "x_i = [code(word_i) | code(i)]: which word, then where"),
    "designed, no positions": ("designed input X",
                               "x_i = [code(word_i) | 0]: which word; the position code is off"),
    "arrays": ("your input X", "the rows you gave, one per token"),
}


def _family_text(family: str, part: str, layer_kind: str) -> dict[str, Any]:
    """The texts of a pretrained layer (see :data:`_FAMILY_TEXT`), its kind and part applied."""
    text = {**_FAMILY_TEXT.get(family, _GENERIC)}
    if part != "encoder":
        text.update(_DECODER_TEXT[part])
    if part == "cross":
        text["x"] = text["x0"]
    if "compressed" in layer_kind:  # DeepSeek V4: keys are the window, then the entries
        text["k"] += ("; then the compressed entries, one per window of tokens (key column "
                      "'cw a-b': entry w, made from tokens a to b)")
    if "sparse" in layer_kind:
        text["weights"] += "; entries the indexer did not keep get 0"
    if layer_kind.startswith("sliding"):
        text["weights"] = text.get("weights", stage("weights").formula) + (
            f" ({layer_kind.replace('window ', 'the last ')} keys)")
    return text


def source_stages(kind: str, *, weights: str = "random", positional: bool = True,
                  family: str | None = None, layer: int = 0, part: str = "encoder",
                  layer_kind: str = "") -> dict[str, Stage]:
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
    part : str
        An encoder-decoder's ``"encoder"``, ``"decoder"`` (causal self-attention) or
        ``"cross"`` (cross-attention).
    layer_kind : str
        The layer's kind as the model names it (``"sliding, window 4096"``,
        ``"compressed sparse, rate 4, top 512"``).

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
        text = _family_text(family or "", part, layer_kind)
        title, formula = text["x0" if layer == 0 else "x"]
        put("x", formula.format(L=layer, P=layer - 1), title.format(L=layer, P=layer - 1))
        for name in STAGE_NAMES[1:]:
            if name in text:
                put(name, text[name])
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
    latent = getattr(trace, "latent", None) is not None  # (keys and values of every head)
    return (f"seq_len={trace.seq_len}, d_model={trace.d_model}, n_heads={trace.n_heads}, "
            + ("" if latent else f"n_kv_heads={trace.n_kv_heads}, ")
            + f"temperature={trace.temperature:.3g}, mask={mask}"
            + "".join(f", {v}" for v in _variant_names(trace))
            + ("" if layer is None else f", layer={layer}"))


def _variant_names(trace: Any) -> list[str]:
    """The variants a trace was computed with, as the summary names them."""
    names = []
    if getattr(trace, "x_kv", None) is not None:
        names.append(f"cross-attention over {trace.x_kv.shape[0]} source tokens")
    if getattr(trace, "latent", None) is not None:
        names.append(f"latent kv_rank={trace.latent.shape[1]}")
    for name, shown in (("rope", "rope θ={:g}"), ("softcap", "softcap={:g}"),
                        ("top_k", "top_k={}")):
        if getattr(trace, name, None):
            names.append(shown.format(getattr(trace, name)))
    if getattr(trace, "alibi", False):
        names.append("alibi")
    if getattr(trace, "sinks", None) is not None:
        names.append("sinks")
    return names


def _scores_formula(trace: Any) -> str:
    """``Q Kᵀ / √d``, with the ALiBi bias and the soft-cap where the trace used them."""
    core = "Q Kᵀ / √d_head" + (" − m_h (i − j)" if trace.alibi else "")
    if trace.softcap:
        return f"scores = c · tanh(({core}) / c), c = {trace.softcap:g}"
    return f"scores = {core}"


def _weights_formula(trace: Any) -> str:
    """``softmax(scores / T)``, with the sink and top-k steps where the trace used them."""
    formula = _SINK if trace.sinks is not None else "weights = softmax(scores / T) over keys"
    if trace.top_k:
        formula += (f"; each query keeps its {trace.top_k} highest-scoring keys, the others "
                    "are dropped")
    return formula


def weights_marks(trace: Any, short: bool = False) -> str:
    """What the weights' cells outside the colour scale mean, of those ``trace`` has.

    Rose: keys the mask allows but top-k or an indexer (``trace.kept``) dropped; grey: masked
    keys.  ``short`` gives a caption (``"grey = masked; rose = not kept ..."``), else
    sentences; '' when the trace has neither.
    """
    dropped = trace.kept is not None and bool((trace.mask & ~trace.kept).any())
    masked = not trace.mask.all()
    if short:
        return "; ".join(["grey = masked"] * masked
                         + ["rose = not kept (top-k or an indexer)"] * dropped)
    by = f"Top-k = {trace.top_k}" if trace.top_k else "The indexer's choice"
    return " ".join([f"{by}: rose cells are keys dropped (allowed by the mask, but not among "
                     "the keys kept for that query)."] * dropped
                    + ["Grey cells are masked keys."] * masked)


def variant_stages(stages: dict[str, Stage], trace: Any) -> dict[str, Stage]:
    """``stages`` with the formulas of the variants ``trace`` was computed with.

    RoPE turns Q and K (``trace.q`` and ``trace.k`` hold them turned); latent attention
    rebuilds K and V from ``c_kv``; cross-attention takes them from the source sequence;
    ALiBi and the soft-cap change the scores; sinks and top-k the weights.  Stages the trace
    does not change come back as they are, and so do those the source describes itself (a
    pretrained family's own formulas).
    """
    out = dict(stages)

    def put(name: str, formula: str) -> None:
        if out[name].formula == stage(name).formula:  # (not described by the source)
            out[name] = dataclasses.replace(out[name], formula=formula)

    if trace.latent is not None:
        rotary = " | RoPE(X W_KR), one rotary key for all heads" if trace.rope else ""
        put("q", "Q = X W_Q" + (" | RoPE(X W_QR)" if trace.rope else "") + ", split into heads")
        put("k", f"K = [c_kv W_UK{rotary}], split into heads")
        put("v", "V = c_kv W_UV, split into heads: keys and values are rebuilt from the latent")
    elif trace.rope:
        turn = f"RoPE (θ = {trace.rope:g}): each pair of columns turned by the token's position"
        put("q", f"Q = RoPE(X W_Q), split into heads; {turn}")
        put("k", "K = RoPE(X W_K), split into key/value heads: the same turn, so scores "
                 "depend on i − j")
    if trace.x_kv is not None:
        put("k", "K = X_source W_K: the keys come from the source text")
        put("v", "V = X_source W_V: the values come from the source text")
        put("q", "Q = X W_Q: the queries come from the query text")
    if trace.alibi or trace.softcap:
        put("scores", _scores_formula(trace))
    if trace.sinks is not None or trace.top_k:
        put("weights", _weights_formula(trace))
    return out


def column_formula(key: str, trace: Any) -> str | None:
    """The overview's short formula of column ``key`` for ``trace``'s variants (None: as is)."""
    if key == "latent":
        return "X W_DKV"
    if key == "qkv" and trace.latent is not None:
        return "X W_Q; c_kv W"  # (K = c_kv W_UK, V = c_kv W_UV)
    if key == "qkv" and trace.rope:
        return "RoPE(X W_Q), RoPE(X W_K)"
    if key == "qkv" and trace.x_kv is not None:
        return "X W_Q; X_source W_K, W_V"
    if key == "scores" and (trace.alibi or trace.softcap):
        if trace.softcap:
            return "c·tanh((QKᵀ/√d + B)/c)" if trace.alibi else "c·tanh(QKᵀ/√d / c)"
        return "QKᵀ/√d − m(i−j)"
    if key == "weights" and (trace.sinks is not None or trace.top_k):
        inner = "[S, sink]" if trace.sinks is not None else "S"
        return f"softmax({'top-k ' if trace.top_k else ''}{inner} / T)"
    return None

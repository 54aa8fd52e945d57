"""The widget's attention variants: their settings, checks and computation (no widgets).

The widget's text source computes one of three kinds of layer, each with the engine's own
functions:

* ``"standard"``: :func:`~attention_widget.engine.multi_head_attention` (multi-head,
  grouped-query and multi-query attention through ``n_kv_heads``);
* ``"latent"``: :func:`~attention_widget.kinds.latent_attention` (DeepSeek's multi-head latent
  attention: keys and values rebuilt from a narrow latent of ``kv_rank`` columns, plus a
  rotary key of ``rope_dim`` columns);
* ``"cross"``: :func:`~attention_widget.kinds.cross_attention` (queries from the text, keys and
  values from a second text, ``source_text``).

RoPE, ALiBi, the soft-cap, sinks and top-k are the engine's keyword arguments; a setting of
0 (``False``) turns one off.  :func:`kv_cache_line` says what a decoder would cache per token
for the settings, with :func:`~attention_widget.variants.kv_cache_per_token`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .engine import AttentionParams, resolve_mask
from .kinds import cross_attention, init_latent_params, latent_attention
from .seeded import seeded_matrix
from .variants import kv_cache_per_token

__all__ = [
    "DEFAULT_SOURCE_TEXT",
    "KINDS",
    "VARIANT_DEFAULTS",
    "engine_variants",
    "kv_cache_line",
    "sink_logits",
    "variant_problem",
    "variant_trace",
    "variants_on",
]

KINDS = ("standard", "latent", "cross")
DEFAULT_SOURCE_TEXT = "Das Tier überquerte die Straße nicht, weil es zu müde war."
#: Each variant setting and its value when off (the widget's traits and state files).
VARIANT_DEFAULTS: dict[str, Any] = {
    "kind": "standard", "kv_rank": 16, "rope_dim": 0, "source_text": DEFAULT_SOURCE_TEXT,
    "rope": 0.0, "alibi": False, "softcap": 0.0, "sinks": False, "top_k": 0,
}
_SINK_MATRIX = 40  # which seeded matrix the sink logits are drawn from


def sink_logits(n_heads: int, seed: int) -> np.ndarray:
    """One seeded sink logit per head, shape (n_heads,): standard normal, plus one.

    The shift makes a sink take a visible share of each row (the scores of random weights are
    about standard normal too); a trained model learns its own (gpt-oss).
    """
    return seeded_matrix(seed, _SINK_MATRIX, 1, n_heads)[0] + 1.0


def variants_on(settings: Mapping[str, Any]) -> bool:
    """Whether ``settings`` ask for more than plain self-attention.

    ``settings`` maps names to values (a missing one is off): another kind, or RoPE, ALiBi, a
    soft-cap, sinks or top-k.
    """
    return settings.get("kind", "standard") != "standard" or any(
        settings.get(name) for name in ("rope", "alibi", "softcap", "sinks", "top_k"))


def engine_variants(s: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`~attention_widget.engine.multi_head_attention` for ``s``.

    A setting of 0 (False) is left out: the engine's default, off.
    """
    out: dict[str, Any] = {}
    if s.rope:
        out["rope"] = float(s.rope)
    if s.alibi:
        out["alibi"] = True
    if s.softcap:
        out["softcap"] = float(s.softcap)
    if s.sinks:
        out["sinks"] = sink_logits(s.n_heads, s.seed)
    if s.top_k:
        out["top_k"] = int(s.top_k)
    return out


def variant_problem(name: str, value: Any, d_model: int) -> str:
    """Why variant setting ``name`` cannot take ``value`` ('' if it can)."""
    if name == "kv_rank" and not 1 <= value <= d_model:
        return (f"kv_rank must be between 1 and d_model={d_model} (a latent compresses X), "
                f"got {value}")
    if name == "rope_dim" and (value < 0 or value % 2):
        return f"rope_dim must be an even number >= 0 (RoPE turns pairs), got {value}"
    if name in ("rope", "softcap") and not (math.isfinite(value) and value >= 0):
        what = "the RoPE base θ" if name == "rope" else "the cap c"
        return f"{name} must be 0 (off) or {what} > 0, got {value!r}"
    if name == "top_k" and value < 0:
        return f"top_k must be 0 (off) or the number of keys each query keeps, got {value}"
    return ""


def _refuse(s: Any, names: tuple[str, ...], why: str) -> None:
    on = [n for n in names if getattr(s, n)]
    if on:
        raise ValueError(f"{', '.join(on)} cannot be used with kind={s.kind!r}: {why}; turn "
                         f"{'it' if len(on) == 1 else 'them'} off")


def variant_trace(s: Any, x: np.ndarray, params: AttentionParams,
                  x_kv: np.ndarray | None = None) -> Any:
    """The trace of a latent or cross-attention layer for settings ``s``.

    Parameters
    ----------
    s : Settings
        ``kind`` is ``"latent"`` or ``"cross"``.
    x : ndarray, shape (seq_len, d_model)
        The text's X (the queries' input).
    params : AttentionParams
        The seeded weights (cross-attention's; latent attention draws its own from ``s.seed``).
    x_kv : ndarray, shape (n_source, d_model), optional
        The source text's X (cross-attention).

    Raises
    ------
    ValueError
        For a combination the kind does not have, naming the settings.
    """
    if s.weights == "designed":
        raise ValueError(f"weights='designed' builds heads for standard attention; with "
                         f"kind={s.kind!r} choose weights='random'")
    if s.kind == "latent":
        _refuse(s, ("alibi", "softcap", "sinks", "top_k"),
                "latent attention here is DeepSeek's, whose only position code is RoPE")
        if s.kv_rank > s.d_model:
            raise ValueError(f"kv_rank={s.kv_rank} is larger than d_model={s.d_model}: a latent "
                             "compresses, so choose kv_rank <= d_model")
        lp = init_latent_params(s.d_model, s.n_heads, s.kv_rank, rope_dim=s.rope_dim,
                                seed=s.seed)
        return latent_attention(x, lp, n_heads=s.n_heads, temperature=s.temperature,
                                mask=resolve_mask(s.mask, x.shape[0], s.window_for(x.shape[0])),
                                rope=float(s.rope) or None), lp
    if s.mask != "none":
        raise ValueError(f"mask={s.mask!r} needs one sequence, but cross-attention's queries "
                         "and keys come from two texts: choose mask 'none'")
    _refuse(s, ("rope", "alibi"), "positions i and j of two different texts cannot be "
            "compared")
    variants = engine_variants(s)
    trace = cross_attention(x, x_kv, params, n_heads=s.n_heads, n_kv_heads=s.n_kv_heads,
                            temperature=s.temperature, **variants)
    return trace, params


def kv_cache_line(s: Any) -> str:
    """What a decoder caches per token and layer for ``s``, against multi-head attention.

    E.g. ``"KV cache per token and layer: GQA with 2 kv heads, 32 numbers = 25 % of MHA's
    128"`` (MHA: 2 × n_heads × d_head numbers, a key and a value per head).
    """
    d_head = s.d_model // s.n_heads
    mha = kv_cache_per_token(s.n_heads, d_head)
    if s.kind == "latent":
        ours = kv_cache_per_token(s.n_heads, d_head, kv_rank=s.kv_rank, rope_dim=s.rope_dim)
        name = f"MLA (kv_rank {s.kv_rank} + rope_dim {s.rope_dim})"
    else:
        kv = s.n_kv_heads or s.n_heads
        ours = kv_cache_per_token(s.n_heads, d_head, kv)
        name = ("MHA" if kv == s.n_heads else "MQA (1 kv head)" if kv == 1
                else f"GQA with {kv} kv heads")
    where = "per source token (computed once)" if s.kind == "cross" else "per token"
    return (f"KV cache {where} and layer: {name}, {ours} numbers = {100 * ours / mha:.3g} % of "
            f"MHA's {mha}")

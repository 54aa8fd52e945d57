"""Attention variants of today's models: each one a small function, applied where it acts.

Where each one enters a layer (see :func:`attention_widget.engine.multi_head_attention` and
:func:`attention_widget.engine.attend`)::

    q, k    <- rope(q, theta), rope(k, theta)       RoPE: each pair of features turns by an
                                                    angle that grows with the position (Llama)
    scores   = q k^T / sqrt(d_head)
             + alibi_bias(n_heads, positions)       ALiBi: -m_h (i - j)             (BLOOM)
    scores  <- softcap(scores, c)                   c tanh(scores / c)              (Gemma 2)
    kept     = top_k_keep(scores, k, mask)          each query keeps its k best keys
    weights  = softmax([scores | sink_h] / T)       one sink logit per head joins every row,
                                                    its column is dropped: rows sum to < 1
                                                    (gpt-oss; see :func:`with_sinks`)

:func:`kv_cache_per_token` says what a decoder keeps per token for each kind of attention.
Cross-attention and DeepSeek's latent attention are in :mod:`attention_widget.kinds`.
This module imports only NumPy and the argument checks.
"""

from __future__ import annotations

import numpy as np

from . import _checks

__all__ = [
    "alibi_bias",
    "alibi_slopes",
    "kv_cache_per_token",
    "rope",
    "softcap",
    "top_k_keep",
    "with_sinks",
]


def rope(x: np.ndarray, theta: float, positions: np.ndarray | None = None) -> np.ndarray:
    """Rotary position embedding (RoPE), in Hugging Face's half-split form.

    Feature ``i`` of the first half of each vector pairs with feature ``i + d/2``, and the pair
    turns by the angle ``position * theta ** (-2i / d)``: early pairs turn fast, late pairs
    slowly.  In formulas, ``rope(x) = x * cos + rotate_half(x) * sin`` with
    ``rotate_half([a, b]) = [-b, a]``.  A rotated query at position ``m`` and a rotated key at
    position ``n`` have a dot product that depends on ``m - n`` only.

    Parameters
    ----------
    x : ndarray, shape (..., seq_len, d)
        Queries or keys, one row per position; ``d`` must be even.
    theta : float
        The base, ``> 0`` (10000.0 in Llama 2, 500000.0 in Llama 3).
    positions : array_like, shape (seq_len,), optional
        The position of each row; ``0 .. seq_len - 1`` by default.

    Returns
    -------
    ndarray, same shape and dtype as ``x``
        The rotated vectors.
    """
    theta = _checks.check_positive("rope", theta)
    seq_len, d = x.shape[-2:]
    if d % 2:
        raise ValueError(f"rope turns pairs of features: the head width must be even, got {d}")
    positions = (np.arange(seq_len) if positions is None
                 else _checks.as_float_array("positions", positions, (seq_len,)))
    freqs = theta ** (-np.arange(0, d, 2) / d)  # [d/2]: theta^(-2i/d)
    angles = np.outer(positions, freqs)  # [seq, d/2]: one angle per position and pair
    angles = np.concatenate([angles, angles], axis=-1)  # [seq, d]: both halves of each pair
    cos, sin = np.cos(angles).astype(x.dtype), np.sin(angles).astype(x.dtype)
    rotated = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)  # [a, b] -> [-b, a]
    return x * cos + rotated * sin  # [..., seq, d]


def alibi_slopes(n_heads: int) -> np.ndarray:
    """BLOOM's ALiBi slope of each head, shape (n_heads,).

    For ``n`` heads, a power of two, head ``h = 1 .. n`` gets ``m_h = 2 ** (-8 h / n)``: the
    first head looks far, the last one mostly at the nearest keys.  For other head counts: the
    slopes of the nearest lower power of two ``p``, then every other slope of ``2p`` heads
    (the first, third, ...) until there is one per head.
    """
    n = _checks.check_int("n_heads", n_heads)
    p = 1 << (n.bit_length() - 1)  # the largest power of two <= n
    slopes = 2.0 ** (-8.0 * np.arange(1, p + 1) / p)  # [p]
    between = 2.0 ** (-8.0 * np.arange(1, 2 * p, 2) / (2 * p))  # [p]: slopes 1, 3, ... of 2p
    return np.concatenate([slopes, between[: n - p]])


def alibi_bias(
    slopes: int | np.ndarray, query_positions: np.ndarray, key_positions: np.ndarray | None = None
) -> np.ndarray:
    """ALiBi's bias ``-m_h * (i - j)``: each head penalises keys by how far back they are.

    Parameters
    ----------
    slopes : int or array_like, shape (n_heads,)
        ``m_h`` of each head, or a head count for BLOOM's slopes (:func:`alibi_slopes`).
    query_positions : array_like, shape (n_q,)
        The position ``i`` of each query.
    key_positions : array_like, shape (n_k,), optional
        The position ``j`` of each key; the query positions by default (self-attention).

    Returns
    -------
    ndarray, shape (n_heads, n_q, n_k)
        Added to the scores.  (BLOOM adds ``m_h * j`` instead: it differs by ``m_h * i``, the
        same in every column of a row, which the softmax ignores.)
    """
    m = alibi_slopes(slopes) if isinstance(slopes, int) else _checks.as_float_array("slopes",
                                                                                     slopes)
    i = _checks.as_float_array("query_positions", query_positions)
    j = i if key_positions is None else _checks.as_float_array("key_positions", key_positions)
    distance = i[:, None] - j[None, :]  # [n_q, n_k]: how far each key lies behind the query
    return -m[:, None, None] * distance  # [h, 1, 1] * [n_q, n_k] -> [h, n_q, n_k]


def softcap(scores: np.ndarray, cap: float) -> np.ndarray:
    """Gemma 2's soft-capping: ``cap * tanh(scores / cap)``, same shape and dtype.

    Small scores pass nearly unchanged; large ones are squashed into ``(-cap, cap)``, so no
    single key can take a row over with a huge score.
    """
    cap = _checks.check_positive("softcap", cap)
    return cap * np.tanh(scores / cap)


def top_k_keep(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Which keys each query keeps: its ``k`` highest-scoring allowed keys.

    Parameters
    ----------
    scores : ndarray, shape (..., n_q, n_k)
    k : int
        Keys kept per query, ``>= 1``; a row with ``k`` or fewer allowed keys keeps them all.
    mask : ndarray of bool, shape (n_q, n_k), optional
        True where a key may be attended at all; a masked key is never kept.

    Returns
    -------
    ndarray of bool, shape of ``scores``
        True where a key is kept.  Among keys tied with the k-th highest score, the earlier
        ones are kept.
    """
    k = _checks.check_int("top_k", k)
    allowed = scores if mask is None else np.where(mask, scores, -np.inf)  # [..., n_q, n_k]
    n_k = scores.shape[-1]
    if k >= n_k:
        return np.broadcast_to(True if mask is None else mask, scores.shape).copy()
    kth = np.partition(allowed, n_k - k, axis=-1)[..., n_k - k, None]  # [..., n_q, 1]
    above = allowed > kth  # fewer than k keys per row
    tied = allowed == kth if mask is None else (allowed == kth) & mask  # (never a masked key)
    room = k - above.sum(axis=-1, keepdims=True)  # [..., n_q, 1]: places left for tied keys
    if (tied.sum(axis=-1, keepdims=True) <= room).all():  # (as usual: no row has too many)
        return above | tied
    return above | (tied & (np.cumsum(tied, axis=-1) <= room))  # the earliest tied keys


def with_sinks(
    scores: np.ndarray, sinks: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``scores`` with each head's sink logit as one more column, the last; ``mask`` to match.

    A sink is a logit with no key and no value (gpt-oss learns one per head): it takes part in
    the softmax of every row, and its weight is then dropped, so a head can attend to nothing.

    Parameters
    ----------
    scores : ndarray, shape (n_heads, n_q, n_k)
    sinks : array_like, shape (n_heads,)
    mask : ndarray of bool, shape (n_q, n_k) or (n_heads, n_q, n_k), optional

    Returns
    -------
    scores : ndarray, shape (n_heads, n_q, n_k + 1), dtype of ``scores``
    mask : ndarray of bool, shape of ``mask`` with one more column (the sink is always
        allowed), or None
    """
    sinks = _checks.check_sinks(sinks, scores.shape[0]).astype(scores.dtype)  # [h]
    column = np.broadcast_to(sinks[:, None, None], (*scores.shape[:-1], 1))  # [h, n_q, 1]
    if mask is not None:
        mask = np.concatenate([mask, np.ones((*mask.shape[:-1], 1), dtype=bool)], axis=-1)
    return np.concatenate([scores, column], axis=-1), mask  # [h, n_q, n_k] -> [h, n_q, n_k + 1]


def kv_cache_per_token(
    n_heads: int,
    d_head: int,
    n_kv_heads: int | None = None,
    *,
    kv_rank: int | None = None,
    rope_dim: int = 0,
) -> int:
    """How many numbers a decoder keeps per token and layer to avoid recomputing the past.

    When a decoder writes token ``t``, its query needs the keys and values of every earlier
    token.  They do not change, so they are kept in a *KV cache* and only the new token's are
    computed.  The cache grows by this many numbers per token in every layer:

    * multi-head attention (``n_kv_heads == n_heads``): a key and a value per head,
      ``2 * n_heads * d_head``;
    * grouped-query attention: ``2 * n_kv_heads * d_head``, as query heads share keys and
      values (``n_kv_heads == 1``: multi-query attention);
    * latent attention (``kv_rank`` given, DeepSeek-V2/V3): only the latent ``c_kv`` and the
      shared rotary key, ``kv_rank + rope_dim``; keys and values are rebuilt from them.

    Parameters
    ----------
    n_heads, d_head : int
        Query heads and the width of a head's value.
    n_kv_heads : int, optional
        Key/value heads; ``n_heads`` by default.
    kv_rank : int, optional
        Width of the latent of multi-head latent attention.
    rope_dim : int, default 0
        Width of its rotary key.

    Returns
    -------
    int
        Numbers per token and layer (multiply by the bytes of one number for memory).
    """
    n_heads = _checks.check_int("n_heads", n_heads)
    d_head = _checks.check_int("d_head", d_head)
    if kv_rank is not None:
        return _checks.check_int("kv_rank", kv_rank) + _checks.check_int("rope_dim", rope_dim,
                                                                         minimum=0)
    n_kv_heads = n_heads if n_kv_heads is None else _checks.check_int("n_kv_heads", n_kv_heads)
    return 2 * n_kv_heads * d_head

"""Two more kinds of attention layer, built like ``engine.multi_head_attention``.

* :func:`cross_attention` (encoder-decoder models: BART, T5, Whisper): queries come from one
  sequence, keys and values from another, ``x_kv``.
* :func:`latent_attention`, multi-head latent attention (DeepSeek-V2/V3): keys and values are
  rebuilt from a narrow latent ``c_kv``, so that a decoder's cache keeps only the latent and
  one shared rotary key per token (see :func:`attention_widget.variants.kv_cache_per_token`).

Both compute their attention step with :func:`attention_widget.engine.attend` and return an
:class:`~attention_widget.engine.AttentionTrace`.  A large layer runs the same steps on every core:
its products and its attention step through :func:`attention_widget.fast.steps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _checks, fast, variants
from .engine import (
    MEMORY_LIMIT_BYTES,
    AttentionParams,
    AttentionTrace,
    MaskLike,
    merge_heads,
    resolve_mask,
    split_heads,
)
from .seeded import seeded_matrix

__all__ = ["LatentParams", "cross_attention", "init_latent_params", "latent_attention"]


def _large(n_heads: int, n_q: int, n_k: int, dtype: np.dtype) -> bool:
    """Whether a layer takes the fast path (:mod:`attention_widget.fast`); its memory checked."""
    _checks.check_memory((2 * n_heads + 2) * n_q * n_k * dtype.itemsize, MEMORY_LIMIT_BYTES,
                         f"{n_q} queries and {n_k} keys with n_heads={n_heads}")
    return n_heads * n_q * n_k >= fast.MIN_SCORES


def _attend_and_combine(q, k, v, mask, temperature, w_o, b_o, linear, attend,
                        **variants_asked):
    """Step 2 and 3 of a layer: the attention step, then ``concat @ w_o (+ b_o)``."""
    att = attend(q, k, v, mask=mask, temperature=temperature, **variants_asked)
    concat = merge_heads(att.head_outputs)  # [n_q, n_heads * d_v]
    output = linear(concat, w_o, b_o)  # [n_q, n_heads * d_v] -> [n_q, d_model]
    if not np.isfinite(output).all():
        raise _checks.overflow_error(q.dtype, "the inputs")
    return att, concat, output


# --------------------------------------------------------------------------------------------
# cross-attention
# --------------------------------------------------------------------------------------------
def cross_attention(
    x_q: np.ndarray, x_kv: np.ndarray, params: AttentionParams, *, n_heads: int,
    n_kv_heads: int | None = None, temperature: float = 1.0, mask: MaskLike = None,
    softcap: float | None = None, sinks: np.ndarray | None = None, top_k: int | None = None,
    dtype: type | np.dtype = np.float64,
) -> AttentionTrace:
    """One cross-attention layer: the queries of one sequence read another.

    ``Q = x_q W_Q``, ``K = x_kv W_K``, ``V = x_kv W_V``, then the steps of
    :func:`~attention_widget.engine.multi_head_attention`.  A decoder reads its encoder's
    output this way (BART, T5, Whisper); the weights of query ``i`` are spread over the tokens
    of the *other* sequence.

    Parameters
    ----------
    x_q : array_like, shape (n_q, d_model)
        The sequence the queries come from (e.g. the decoder's).
    x_kv : array_like, shape (n_kv, d_model)
        The sequence the keys and values come from (e.g. the encoder's output).
    params : AttentionParams
        As for self-attention (:func:`~attention_widget.engine.init_params`).
    n_heads, n_kv_heads, temperature, dtype
        As in :func:`~attention_widget.engine.multi_head_attention`.
    mask : None, "none", or ndarray of bool, shape (n_q, n_kv)
        True where query ``i`` may attend key ``j`` (e.g. padding of ``x_kv``).  A causal mask
        needs one sequence, so ``"causal"`` and ``"sliding"`` are refused.
    softcap, sinks, top_k : optional
        As in :func:`~attention_widget.engine.attend`.

    Returns
    -------
    AttentionTrace
        ``x`` is ``x_q`` and ``x_kv`` holds ``x_kv``; ``scores`` and ``weights`` have shape
        (n_heads, n_q, n_kv).
    """
    if not isinstance(params, AttentionParams):
        raise TypeError(f"params must be an AttentionParams (see init_params), got {type(params)}")
    d_model, d_kv = params.w_k.shape
    n_heads, n_kv_heads, d_head = _checks.check_heads(d_model, n_heads, n_kv_heads, d_kv)
    temperature = _checks.check_positive("temperature", temperature)
    _, _, softcap, sinks, top_k = _checks.check_variants(n_heads, d_head, softcap=softcap,
                                                         sinks=sinks, top_k=top_k)
    x_q = _checks.as_sequence(x_q, d_model, dtype, "x_q")  # [n_q, d_model]
    x_kv = _checks.as_sequence(x_kv, d_model, x_q.dtype, "x_kv")  # [n_kv, d_model]
    n_q, n_kv = x_q.shape[0], x_kv.shape[0]
    if isinstance(mask, str) and mask != "none":
        raise ValueError(f"mask={mask!r} is for one sequence (queries and keys of the same "
                         "tokens), but cross-attention's come from two, x_q and x_kv: pass "
                         f"mask=None or a boolean ({n_q}, {n_kv}) array (True = may attend)")
    mask = None if mask is None or isinstance(mask, str) else _checks.check_mask(mask, n_q, n_kv)

    with fast.steps(_large(n_heads, n_q, n_kv, x_q.dtype)) as (linear, attend):  # x @ w + b
        # 1. project: queries from x_q, keys and values from x_kv
        q = split_heads(linear(x_q, params.w_q, params.b_q), n_heads)  # [n_heads, n_q, d_head]
        k = linear(x_kv, params.w_k, params.b_k)  # [n_kv, d_model] -> [n_kv, n_kv_heads * d_head]
        v = linear(x_kv, params.w_v, params.b_v)  # [n_kv, d_model] -> [n_kv, n_kv_heads * d_head]
        k, v = split_heads(k, n_kv_heads), split_heads(v, n_kv_heads)  # [n_kv_heads, n_kv, d_head]
        # 2. attend and 3. combine, as in self-attention
        att, concat, output = _attend_and_combine(q, k, v, mask, temperature, params.w_o,
                                                  params.b_o, linear, attend, softcap=softcap,
                                                  sinks=sinks, top_k=top_k)
    mask = np.ones((n_q, n_kv), dtype=bool) if mask is None else mask
    return AttentionTrace(x_q, q, k, v, att.scores, att.weights, att.head_outputs, concat, output,
                          mask, att.entropy, temperature, x_kv=x_kv, softcap=softcap,
                          sinks=sinks, top_k=top_k, sink_weights=att.sink_weights, kept=att.kept)


# --------------------------------------------------------------------------------------------
# multi-head latent attention
# --------------------------------------------------------------------------------------------
_LATENT_NAMES = ("w_dkv", "w_uk", "w_uv", "w_o", "w_q", "w_dq", "w_uq", "w_qr", "w_kr")


@dataclass(frozen=True, eq=False)
class LatentParams:
    """The projections of one multi-head latent attention layer (row vectors, ``x @ w``).

    ``width`` below is ``n_heads * d_head``; a head owns ``d_head`` columns (``rope_dim`` in
    ``w_qr``), head ``h`` the ``h``-th block.

    Parameters
    ----------
    w_dkv : ndarray, shape (d_model, kv_rank)
        Down-projection to the latent: ``c_kv = x @ w_dkv``.
    w_uk, w_uv : ndarray, shape (kv_rank, width)
        Up-projections of the latent to the keys (without position) and the values.
    w_o : ndarray, shape (width, d_model)
        Output projection.
    w_q : ndarray, shape (d_model, width), optional
        Query projection; or, with a query latent of width ``q_rank``:
    w_dq, w_uq : ndarray, shapes (d_model, q_rank) and (q_rank, width), optional
        ``q = (x @ w_dq) @ w_uq``.
    w_qr : ndarray, shape (d_model, n_heads * rope_dim), optional
    w_kr : ndarray, shape (d_model, rope_dim), optional
        The rotary parts (together or not at all): a query part per head, one key part shared
        by every head.

    Notes
    -----
    The arrays are stored as read-only float64 copies.
    """

    w_dkv: np.ndarray
    w_uk: np.ndarray
    w_uv: np.ndarray
    w_o: np.ndarray
    w_q: np.ndarray | None = None
    w_dq: np.ndarray | None = None
    w_uq: np.ndarray | None = None
    w_qr: np.ndarray | None = None
    w_kr: np.ndarray | None = None

    def __post_init__(self) -> None:
        arrays = {name: getattr(self, name) for name in _LATENT_NAMES}
        for name, value in arrays.items():
            if value is not None:
                arr = _checks.as_float_array(f"params.{name}", value)
                if arr.ndim != 2 or 0 in arr.shape:
                    raise ValueError(f"params.{name} must be a non-empty 2-D array, got shape "
                                     f"{arr.shape}")
                arr = arr.copy() if arr is value else arr
                arr.setflags(write=False)
                object.__setattr__(self, name, arr)
        if (self.w_q is None) == (self.w_dq is None) or (self.w_dq is None) != (self.w_uq is None):
            raise ValueError("params need w_q, or w_dq and w_uq (a query latent), not both")
        if (self.w_qr is None) != (self.w_kr is None):
            raise ValueError("params.w_qr and w_kr come together (rotary parts) or not at all")
        d, r, width = self.d_model, self.kv_rank, self.w_uk.shape[1]
        q_in = (d, width) if self.w_q is not None else (self.w_dq.shape[1], width)
        shapes = {"w_uk": (r, width), "w_uv": (r, width), "w_o": (width, d),
                  "w_q": (d, width), "w_dq": (d, q_in[0]), "w_uq": q_in,
                  "w_qr": (d, self.w_qr.shape[1] if self.w_qr is not None else 0),
                  "w_kr": (d, self.rope_dim)}
        for name, shape in shapes.items():
            arr = getattr(self, name)
            if arr is not None and arr.shape != shape:
                raise ValueError(f"params.{name} must have shape {shape}, got {arr.shape}")
        if self.rope_dim % 2:
            raise ValueError(f"params.w_kr: rope_dim={self.rope_dim} must be even (RoPE turns "
                             "pairs of features)")

    @property
    def d_model(self) -> int:
        """Width of the model."""
        return self.w_dkv.shape[0]

    @property
    def kv_rank(self) -> int:
        """Width of the latent ``c_kv``."""
        return self.w_dkv.shape[1]

    @property
    def rope_dim(self) -> int:
        """Width of the rotary key (0: no rotary part)."""
        return 0 if self.w_kr is None else self.w_kr.shape[1]

    @property
    def b_o(self) -> None:
        """No output bias (as :class:`~attention_widget.engine.AttentionParams` may have)."""
        return None


def init_latent_params(
    d_model: int, n_heads: int, kv_rank: int, *, d_head: int | None = None,
    q_rank: int | None = None, rope_dim: int = 0, seed: int = 0,
) -> LatentParams:
    """Deterministic random parameters for one multi-head latent attention layer.

    Parameters
    ----------
    d_model, n_heads : int
        Model width and heads.
    kv_rank : int
        Width of the latent ``c_kv``, ``1 .. d_model``: what a cache keeps per token.
    d_head : int, optional
        Width of each head's query, key and value (without the rotary part);
        ``d_model // n_heads`` by default.
    q_rank : int, optional
        Width of a query latent (``q = (x @ w_dq) @ w_uq``), ``1 .. d_model``; without it,
        ``q = x @ w_q``.
    rope_dim : int, default 0
        Width of the rotary parts (even): a query part per head, one key part for all heads.
    seed : int, default 0

    Returns
    -------
    LatentParams
        Like :func:`~attention_widget.engine.init_params`, a larger width (``kv_rank``,
        ``d_model``, ...) adds rows and columns to every matrix and keeps the others' draws
        (each matrix is scaled by ``1 / sqrt(its rows)``).
    """
    d_model = _checks.check_int("d_model", d_model)
    n_heads = _checks.check_int("n_heads", n_heads)
    if d_head is None:
        n_heads, _, d_head = _checks.check_heads(d_model, n_heads, None)
    d_head = _checks.check_int("d_head", d_head)
    kv_rank = _checks.check_int("kv_rank", kv_rank)
    for name, rank in (("kv_rank", kv_rank), ("q_rank", q_rank)):
        if rank is not None and _checks.check_int(name, rank) > d_model:
            raise ValueError(f"{name}={rank} is larger than d_model={d_model}: a latent "
                             f"compresses, so {name} must be between 1 and d_model")
    rope_dim = _checks.check_int("rope_dim", rope_dim, minimum=0)
    if rope_dim % 2:
        raise ValueError(f"rope_dim must be even (RoPE turns pairs of features), got {rope_dim}")
    seed = _checks.check_int("seed", seed, minimum=0)
    width = n_heads * d_head

    def draw(which: int, rows: int, cols: int) -> np.ndarray | None:
        """Seeded matrix number ``which``, scaled by ``1 / sqrt(rows)``; None if it is empty."""
        return seeded_matrix(seed, 16 + which, rows, cols) / math.sqrt(rows) if cols else None

    w_q = draw(4, d_model, width) if q_rank is None else None
    w_dq, w_uq = (None, None) if q_rank is None else (draw(5, d_model, q_rank),
                                                      draw(6, q_rank, width))
    return LatentParams(w_dkv=draw(0, d_model, kv_rank), w_uk=draw(1, kv_rank, width),
                        w_uv=draw(2, kv_rank, width), w_o=draw(3, width, d_model), w_q=w_q,
                        w_dq=w_dq, w_uq=w_uq, w_qr=draw(7, d_model, n_heads * rope_dim),
                        w_kr=draw(8, d_model, rope_dim))


def latent_attention(
    x: np.ndarray, params: LatentParams, *, n_heads: int, temperature: float = 1.0,
    mask: MaskLike = None, rope: float | None = 10000.0,
) -> AttentionTrace:
    """One multi-head latent attention layer (DeepSeek-V2/V3), every intermediate kept.

    1. compress  ``c_kv = x @ w_dkv``; keys ``k_nope = c_kv @ w_uk``, values ``v = c_kv @ w_uv``
                 (split into heads); queries ``q = x @ w_q`` or ``(x @ w_dq) @ w_uq``;
                 with ``rope_dim > 0``: ``q_rope = x @ w_qr`` per head and ``k_rope = x @ w_kr``
                 shared by every head, both rotated (RoPE)
    2. attend    ``scores = (q_nope . k_nope + q_rope . k_rope) / sqrt(d_head + rope_dim)``
    3. combine   ``output = concat(heads) @ w_o``

    Parameters
    ----------
    x : array_like, shape (seq_len, d_model)
    params : LatentParams
        From :func:`init_latent_params`.
    n_heads : int
        Must divide the width of ``w_uk``.
    temperature : float, default 1.0
    mask : None, "none", "causal", or ndarray of bool, shape (seq_len, seq_len)
    rope : float or None, default 10000.0
        RoPE base of the rotary parts (None: not rotated).

    Returns
    -------
    AttentionTrace
        ``latent`` holds ``c_kv`` (seq_len, kv_rank).  ``q`` and ``k`` are
        ``[q_nope | q_rope]`` and ``[k_nope | k_rope]`` per head, shape
        (n_heads, seq_len, d_head + rope_dim), so that ``scores`` is their scaled product;
        ``v`` is (n_heads, seq_len, d_head).
    """
    if not isinstance(params, LatentParams):
        raise TypeError(f"params must be a LatentParams (see init_latent_params), got "
                        f"{type(params)}")
    n_heads = _checks.check_int("n_heads", n_heads)
    width = params.w_uk.shape[1]
    if width % n_heads or (params.rope_dim and params.w_qr.shape[1] != n_heads * params.rope_dim):
        raise ValueError(f"params do not fit n_heads={n_heads}: w_uk needs n_heads * d_head "
                         f"columns (has {width}), w_qr n_heads * rope_dim; make them with "
                         "init_latent_params(d_model, n_heads, kv_rank, ...)")
    temperature = _checks.check_positive("temperature", temperature)
    rope = None if rope is None else _checks.check_positive("rope", rope)
    x = _checks.as_sequence(x, params.d_model, np.float64)  # [seq, d_model]
    seq_len, d_head, rope_dim = x.shape[0], width // n_heads, params.rope_dim
    mask = None if mask is None else resolve_mask(mask, seq_len, None)  # [seq, seq], or None

    with fast.steps(_large(n_heads, seq_len, seq_len, x.dtype)) as (linear, attend):
        # 1. compress into the latent, and rebuild keys and values from it
        c_kv = linear(x, params.w_dkv)  # [seq, d_model] -> [seq, kv_rank]: what a cache keeps
        k = split_heads(linear(c_kv, params.w_uk), n_heads)  # -> [n_heads, seq, d_head]
        v = split_heads(linear(c_kv, params.w_uv), n_heads)  # -> [n_heads, seq, d_head]
        if params.w_q is not None:
            q = split_heads(linear(x, params.w_q), n_heads)  # [n_heads, seq, d_head]
        else:  # through a query latent: [seq, d_model] -> [seq, q_rank] -> [n_heads, seq, d_head]
            q = split_heads(linear(linear(x, params.w_dq), params.w_uq), n_heads)
        if rope_dim:  # rotary parts, a key part shared by all heads: [h, seq, d_head + rope_dim]
            q_rope = split_heads(linear(x, params.w_qr), n_heads)  # [n_heads, seq, rope_dim]
            k_rope = linear(x, params.w_kr)[None]  # [1, seq, rope_dim]: one key for every head
            if rope is not None:
                q_rope, k_rope = variants.rope(q_rope, rope), variants.rope(k_rope, rope)
            q = np.concatenate([q, q_rope], axis=-1)
            k = np.concatenate([k, np.broadcast_to(k_rope, (n_heads, seq_len, rope_dim))],
                               axis=-1)

        # 2. attend: (q_nope . k_nope + q_rope . k_rope) / sqrt(d_head + rope_dim); 3. combine
        att, concat, output = _attend_and_combine(q, k, v, mask, temperature, params.w_o, None,
                                                  linear, attend,
                                                  scale=1.0 / math.sqrt(d_head + rope_dim))
    mask = np.ones((seq_len, seq_len), dtype=bool) if mask is None else mask
    return AttentionTrace(x, q, k, v, att.scores, att.weights, att.head_outputs, concat, output,
                          mask, att.entropy, temperature, latent=c_kv,
                          rope=rope if rope_dim else None)

"""Multi-head self-attention in NumPy, with every intermediate kept.

One attention layer, as in "Attention Is All You Need" (section 3.2)::

    1. project   Q = X W_Q + b_Q,  K = X W_K + b_K,  V = X W_V + b_V,  split into heads
    2. attend    scores  = q k^T / sqrt(d_head)                       for every head
                 weights = softmax(scores / T)      (masked keys exactly 0)
                 head    = weights v
    3. combine   output  = concat(head_1 ... head_n) W_O + b_O

The paper's row-vector convention is used throughout: a sequence is a ``(seq_len, d_model)``
array and ``Q = X @ w_q``.  Grouped-query attention (``n_kv_heads < n_heads``, as in Llama and
Qwen3): query head ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``.

Read :func:`multi_head_attention`, then :func:`attend` and :func:`_softmax`: that is the whole
computation; the variants of today's models (:mod:`attention_widget.variants`) act there on
one line each, when asked.  Large inputs take the same steps in :mod:`attention_widget.fast`,
which gives the same trace.  This module imports only NumPy, the standard library, the
argument checks and the variants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import NamedTuple, Union

import numpy as np

from . import _checks, fast, variants
from .seeded import seeded_matrix
from .variants import alibi_bias

__all__ = [
    "MEMORY_LIMIT_BYTES",
    "Attended",
    "AttentionParams",
    "AttentionTrace",
    "attend",
    "causal_mask",
    "estimate_memory",
    "init_params",
    "merge_heads",
    "multi_head_attention",
    "resolve_mask",
    "sliding_window_mask",
    "softmax",
    "split_heads",
    "with_temperature",
]

#: Largest working memory (bytes) one call of :func:`multi_head_attention` may need.  Above it
#: the call raises ``ValueError`` before the large arrays are allocated, instead of swapping the
#: machine.  The two ``(n_heads, seq_len, seq_len)`` arrays dominate: 4 GiB is, in float64,
#: about 4,400 tokens with 12 heads.
MEMORY_LIMIT_BYTES = 4 * 2**30

MaskLike = Union[None, str, np.ndarray]  # noqa: UP007 (a runtime alias on Python 3.10)


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class AttentionParams:
    """The four projections of one attention layer (row-vector convention, ``Q = X @ w_q``).

    Parameters
    ----------
    w_q : ndarray, shape (d_model, d_model)
        Query projection; columns ``h*d_head:(h+1)*d_head`` belong to query head ``h``.
    w_k, w_v : ndarray, shape (d_model, n_kv_heads * d_head)
        Key and value projections; one block of ``d_head`` columns per key/value head.
    w_o : ndarray, shape (d_model, d_model)
        Output projection applied to the concatenated head outputs.
    b_q : ndarray, shape (d_model,), optional
    b_k, b_v : ndarray, shape (n_kv_heads * d_head,), optional
        The biases of the projections: all three, or none.
    b_o : ndarray, shape (d_model,), optional
        The bias of the output projection, or None.

    Notes
    -----
    The arrays are stored as read-only float64 copies.
    """

    w_q: np.ndarray
    w_k: np.ndarray
    w_v: np.ndarray
    w_o: np.ndarray
    b_q: np.ndarray | None = None
    b_k: np.ndarray | None = None
    b_v: np.ndarray | None = None
    b_o: np.ndarray | None = None

    def __post_init__(self) -> None:
        w_q = _checks.as_float_array("params.w_q", self.w_q)
        if w_q.ndim != 2 or w_q.shape[0] != w_q.shape[1] or w_q.shape[0] == 0:
            raise ValueError(
                f"params.w_q must be a square (d_model, d_model) array, got {w_q.shape}"
            )
        d = w_q.shape[0]
        w_k = _checks.as_float_array("params.w_k", self.w_k)
        if w_k.ndim != 2 or w_k.shape[0] != d or w_k.shape[1] == 0 or w_k.shape[1] > d:
            raise ValueError(
                f"params.w_k must have shape (d_model={d}, n_kv_heads * d_head), got {w_k.shape}"
            )
        d_kv = w_k.shape[1]
        given = [name for name in ("b_q", "b_k", "b_v") if getattr(self, name) is not None]
        if 0 < len(given) < 3:
            raise ValueError(f"params.b_q, b_k and b_v come together (all or none), got only "
                             f"{', '.join(given)}")
        shapes = {"w_v": (d, d_kv), "w_o": (d, d), "b_q": (d,), "b_k": (d_kv,), "b_v": (d_kv,),
                  "b_o": (d,)}
        arrays = {"w_q": w_q, "w_k": w_k}
        for name, shape in shapes.items():
            value = getattr(self, name)
            if value is not None or name.startswith("w"):
                arrays[name] = _checks.as_float_array(f"params.{name}", value, shape)
        for name, arr in arrays.items():
            arr = arr.copy() if arr is getattr(self, name) else arr
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def d_model(self) -> int:
        """Width of the model: rows of every weight matrix."""
        return self.w_q.shape[0]

    @property
    def d_kv(self) -> int:
        """Columns of ``w_k`` and ``w_v``: ``n_kv_heads * d_head``."""
        return self.w_k.shape[1]

    @property
    def has_bias(self) -> bool:
        """Whether the layer adds biases after its projections."""
        return self.b_q is not None


@lru_cache(maxsize=64)
def _init_full(d_model: int, seed: int, bias: bool) -> tuple[np.ndarray | None, ...]:
    """``w_q, w_k, w_v, w_o, b_q, b_k, b_v, b_o`` of a layer with one K/V head per query head."""
    scale = 1.0 / math.sqrt(d_model)  # keeps the variance of X @ W near that of X
    mats = [seeded_matrix(seed, which, d_model, d_model) * scale for which in range(4)]
    biases = [
        0.1 * seeded_matrix(seed, 4 + which, 1, d_model)[0] if bias else None
        for which in range(4)
    ]
    for arr in (*mats, *biases):
        if arr is not None:
            arr.setflags(write=False)
    return (*mats, *biases)


def init_params(
    d_model: int,
    n_heads: int,
    n_kv_heads: int | None = None,
    seed: int = 0,
    bias: bool = False,
) -> AttentionParams:
    """Deterministic random parameters for one attention layer.

    Parameters
    ----------
    d_model : int
        Model width; must be divisible by ``n_heads``.
    n_heads : int
        Number of query heads.
    n_kv_heads : int, optional
        Number of key/value heads (grouped-query attention); must divide ``n_heads``.
        Defaults to ``n_heads`` (ordinary multi-head attention); 1 is multi-query attention.
    seed : int, default 0
        Same seed, same weights, in every process.
    bias : bool, default False
        Whether to draw biases too.

    Returns
    -------
    AttentionParams
        ``w_q, w_o`` of shape (d_model, d_model); ``w_k, w_v`` of shape
        (d_model, n_kv_heads * d_head).

    Notes
    -----
    Two teaching invariants hold:

    * ``n_heads`` does not change the weights: heads are column slices of one projection, so a
      different head count partitions the same ``w_q`` differently.  With grouped-query
      attention, key/value head ``g`` keeps the columns of query head ``g * n_heads //
      n_kv_heads``, so ``n_kv_heads == n_heads`` gives back ordinary attention exactly.
    * ``d_model`` changes the weights smoothly: each matrix is the top-left corner of one larger
      seeded matrix, scaled by ``1 / sqrt(d_model)``.
    """
    d_model = _checks.check_int("d_model", d_model)
    n_heads, n_kv_heads, d_head = _checks.check_heads(d_model, n_heads, n_kv_heads)
    seed = _checks.check_int("seed", seed, minimum=0)
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False, got {bias!r}")
    w_q, w_k, w_v, w_o, b_q, b_k, b_v, b_o = _init_full(d_model, seed, bool(bias))
    if n_kv_heads != n_heads:
        group = n_heads // n_kv_heads
        cols = np.concatenate(
            [np.arange(g * group * d_head, (g * group + 1) * d_head) for g in range(n_kv_heads)]
        )
        w_k, w_v = w_k[:, cols], w_v[:, cols]
        if bias:
            b_k, b_v = b_k[cols], b_v[cols]
    return AttentionParams(w_q, w_k, w_v, w_o, b_q, b_k, b_v, b_o)


# --------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------
def causal_mask(seq_len: int) -> np.ndarray:
    """Boolean ``(seq_len, seq_len)`` mask, True where query ``i`` may attend key ``j <= i``."""
    seq_len = _checks.check_int("seq_len", seq_len)
    return np.tri(seq_len, dtype=bool)


def sliding_window_mask(seq_len: int, window: int) -> np.ndarray:
    """Causal local attention: query ``i`` sees keys ``i - window + 1 .. i``.

    Parameters
    ----------
    seq_len : int
        Sequence length.
    window : int
        How many keys each query sees, itself included (``window >= seq_len`` is causal).

    Returns
    -------
    ndarray of bool, shape (seq_len, seq_len)
    """
    seq_len = _checks.check_int("seq_len", seq_len)
    window = _checks.check_int("window", window)
    i = np.arange(seq_len)
    diff = i[:, None] - i[None, :]
    return (diff >= 0) & (diff < window)


def resolve_mask(mask: MaskLike, seq_len: int, window: int | None) -> np.ndarray | None:
    """``mask`` of :func:`multi_head_attention` as a (seq_len, seq_len) bool array; None: all."""
    if isinstance(mask, str):
        if mask == "none":
            return None
        if mask == "causal":
            return causal_mask(seq_len)
        if mask == "sliding":
            if window is None:
                raise ValueError('mask="sliding" needs window=<keys per query>, got window=None')
            return sliding_window_mask(seq_len, window)
        raise ValueError(
            f'mask must be None, "none", "causal", "sliding" or a boolean array, got {mask!r}'
        )
    return _checks.check_mask(mask, seq_len, seq_len)


# --------------------------------------------------------------------------------------------
# the trace
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class AttentionTrace:
    """Every intermediate of one multi-head attention layer.

    Attributes
    ----------
    x : ndarray, shape (seq_len, d_model)
        The input (the queries' input, for cross-attention).
    q : ndarray, shape (n_heads, seq_len, d_head)
        Queries, ``X @ w_q`` split into heads (rotated, with RoPE).
    k, v : ndarray, shape (n_kv_heads, n_keys, d_head)
        Keys (rotated, with RoPE) and values, split into key/value heads.  ``n_keys`` is
        ``seq_len`` but for cross-attention.
    scores : ndarray, shape (n_heads, seq_len, n_keys)
        What enters ``softmax(scores / temperature)``: ``q @ k^T / sqrt(d_head)``, plus the
        ALiBi bias, soft-capped, where asked; before temperature and mask.
    weights : ndarray, shape (n_heads, seq_len, n_keys)
        ``softmax(scores / temperature)`` over keys; masked entries and keys dropped by top-k
        are exactly 0; rows sum to 1, less the sink's weight where there are sinks.
    head_outputs : ndarray, shape (n_heads, seq_len, d_head)
        ``weights @ v`` for each head.
    concat : ndarray, shape (seq_len, d_model)
        Head outputs side by side.
    output : ndarray, shape (seq_len, d_model)
        ``concat @ w_o (+ b_o)``.
    mask : ndarray of bool, shape (seq_len, seq_len)
        True where query ``i`` may attend key ``j`` (all True without a mask).
    entropy : ndarray, shape (n_heads, seq_len)
        Entropy (nats) of each row of ``weights`` (and the sink): 0 for a one-hot row,
        ``log(#keys)`` for a uniform one.  Low entropy = a sharp head.
    temperature : float
        The softmax temperature used.
    x_kv, latent : ndarray or None
        Cross-attention's second input (n_keys, d_model); latent attention's ``c_kv``
        (seq_len, kv_rank) (see :mod:`attention_widget.kinds`).
    rope, alibi, softcap, sinks, top_k
        The variants used, as passed to :func:`multi_head_attention`; None (False) if unused.
    sink_weights, kept : ndarray or None
        With sinks, what each query gave its head's sink (n_heads, seq_len); with top-k, the
        keys kept (bool, shape of ``weights``).
    """

    x: np.ndarray
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    scores: np.ndarray
    weights: np.ndarray
    head_outputs: np.ndarray
    concat: np.ndarray
    output: np.ndarray
    mask: np.ndarray
    entropy: np.ndarray
    temperature: float
    x_kv: np.ndarray | None = None
    latent: np.ndarray | None = None
    rope: float | None = None
    alibi: bool = False
    softcap: float | None = None
    sinks: np.ndarray | None = None
    top_k: int | None = None
    sink_weights: np.ndarray | None = None
    kept: np.ndarray | None = None

    @property
    def seq_len(self) -> int:
        """Number of tokens."""
        return self.x.shape[0]

    @property
    def d_model(self) -> int:
        """Model width."""
        return self.x.shape[1]

    @property
    def n_heads(self) -> int:
        """Number of query heads."""
        return self.q.shape[0]

    @property
    def n_kv_heads(self) -> int:
        """Number of key/value heads."""
        return self.k.shape[0]

    @property
    def d_head(self) -> int:
        """Width of one head: ``d_model // n_heads``."""
        return self.q.shape[2]

    @property
    def head_entropy(self) -> np.ndarray:
        """Mean row entropy of each head, shape (n_heads,)."""
        return self.entropy.mean(axis=1)

    def kv_head(self, head: int) -> int:
        """Index of the key/value head that query head ``head`` reads."""
        return head // (self.n_heads // self.n_kv_heads)


def estimate_memory(
    seq_len: int, d_model: int, n_heads: int, n_kv_heads: int | None = None, dtype=np.float64
) -> int:
    """Bytes of working memory :func:`multi_head_attention` allocates for these sizes.

    Returns
    -------
    int
        Two ``(n_heads, seq_len, seq_len)`` arrays (scores and weights), room for two more
        ``(seq_len, seq_len)`` working arrays and the boolean mask, plus the ``(seq_len, ...)``
        projections, head outputs, concat and output.
    """
    seq_len, d_model = _checks.check_int("seq_len", seq_len), _checks.check_int("d_model", d_model)
    n_heads, n_kv_heads, d_head = _checks.check_heads(d_model, n_heads, n_kv_heads)
    d_kv = n_kv_heads * d_head
    square = (2 * n_heads + 2) * seq_len * seq_len  # scores, weights, working arrays
    rows = seq_len * (4 * d_model + 4 * d_kv + n_heads + 3)  # projections, outputs, entropy
    return int(np.dtype(dtype).itemsize * (square + rows) + seq_len * seq_len)  # + the mask


# --------------------------------------------------------------------------------------------
# the computation
# --------------------------------------------------------------------------------------------
@np.errstate(over="ignore", invalid="ignore")  # a tiny T or overflowed scores: see the notes
def _softmax(
    scores: np.ndarray, temperature: float, mask: np.ndarray | None,
    sinks: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``weights = softmax(scores / T)`` over the last axis, and the entropy of each row.

    Parameters
    ----------
    scores : ndarray, shape (..., n_q, n_k)
        Finite scores.
    temperature : float
        ``T > 0``.
    mask : ndarray of bool, shape (n_q, n_k) or (..., n_q, n_k), or None
        True where a key may be attended; every row has one.
    sinks : ndarray, shape (n_heads,), or None
        For ``scores`` (n_heads, n_q, n_k): one more logit per head in each of its rows.

    Returns
    -------
    weights : ndarray, same shape as ``scores`` (with sinks: one more column, the sink's)
        Rows sum to 1; masked entries are exactly 0.
    entropy : ndarray, shape (..., n_q)
        ``-sum_k w_k log w_k`` in nats (the sink's weight included).

    Notes
    -----
    Subtracting the top score first changes nothing (a row shifted by a constant has the same
    softmax) and keeps ``exp`` from overflowing.  A tiny ``T`` may send ``(s - top) / T`` to
    ``-inf``: weight 0, as it should be.  Scores that overflowed to infinity give NaN, which
    :func:`multi_head_attention` reports.
    """
    if sinks is not None:  # each head's sink logit joins its rows: [h, n_q, n_k + 1]
        scores, mask = variants.with_sinks(scores, sinks, mask)
    top = scores.max(axis=-1, keepdims=True, where=True if mask is None else mask,
                     initial=-np.inf)  # [..., n_q, 1], the largest allowed score
    z = scores - top  # <= 0 where allowed, and 0 at the top: exp cannot overflow
    if mask is not None:  # masked keys: exp(-inf) = 0 exactly
        np.copyto(z, -np.inf, where=~mask)
    if temperature != 1.0:  # (dividing by 1 would change nothing)
        z /= temperature
    weights = np.exp(z, out=z)  # [..., n_q, n_k]
    total = weights.sum(axis=-1, keepdims=True)  # [..., n_q, 1], >= 1
    weights *= 1.0 / total  # rows sum to 1
    # entropy = -sum w log w, with log w = (scores - top) / T - log(total) where w > 0
    mean_score = np.einsum("...k,...k->...", weights, scores)  # [..., n_q]
    entropy = np.log(total[..., 0]) - (mean_score - top[..., 0]) / temperature
    return weights, np.maximum(entropy, 0.0)  # (rounding can give -1e-16 for a one-hot row)


def softmax(
    scores: np.ndarray, *, temperature: float = 1.0, mask: np.ndarray | None = None
) -> np.ndarray:
    """The attention softmax on its own: ``softmax(scores / temperature)`` over the last axis.

    Parameters
    ----------
    scores : array_like, shape (..., seq_q, seq_k)
        Finite real scores (for example ``AttentionTrace.scores``).
    temperature : float, default 1.0
        ``T > 0``.
    mask : ndarray of bool, shape (seq_q, seq_k), optional
        True where a key may be attended; every row needs at least one True.  Masked weights
        are exactly 0.

    Returns
    -------
    ndarray, same shape as ``scores`` (float64, or float32 for float32 input)
        Non-negative weights whose rows sum to 1.
    """
    temperature = _checks.check_temperature(temperature)
    z = _checks.as_float_array("scores", scores)
    if isinstance(scores, np.ndarray) and scores.dtype == np.float32:
        z = scores
    if z.ndim < 1 or z.size == 0:
        raise ValueError(f"scores must be a non-empty array, got shape {z.shape}")
    z2 = z.reshape((1,) * (2 - z.ndim) + z.shape) if z.ndim < 2 else z
    if mask is not None:
        mask = _checks.check_mask(mask, z2.shape[-2], z2.shape[-1])
    return _softmax(z2, temperature, mask)[0].reshape(z.shape)


class Attended(NamedTuple):
    """What :func:`attend` returns: the attention step of every head."""

    scores: np.ndarray  # (n_heads, n_q, n_k): scale * q k^T (+ bias, capped), before T and mask
    weights: np.ndarray  # (n_heads, n_q, n_k): softmax(scores / T), masked keys exactly 0
    head_outputs: np.ndarray | None  # (n_heads, n_q, d_v): weights @ v (None without v)
    entropy: np.ndarray  # (n_heads, n_q): entropy of each row of weights, in nats
    sink_weights: np.ndarray | None = None  # (n_heads, n_q): each row's weight on the sink
    kept: np.ndarray | None = None  # (n_heads, n_q, n_k) of bool: the keys top-k kept


def split_heads(x: np.ndarray, n_heads: int) -> np.ndarray:
    """``(seq, n_heads * d_head) -> (n_heads, seq, d_head)``: head ``h`` owns block ``h``."""
    seq, width = x.shape
    return np.ascontiguousarray(x.reshape(seq, n_heads, width // n_heads).transpose(1, 0, 2))


def merge_heads(heads: np.ndarray) -> np.ndarray:
    """``(n_heads, seq, d_head) -> (seq, n_heads * d_head)``, heads side by side."""
    n_heads, seq, d_head = heads.shape
    return heads.transpose(1, 0, 2).reshape(seq, n_heads * d_head)


def attend(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    temperature: float = 1.0,
    scale: float | None = None,
    bias: np.ndarray | None = None,
    softcap: float | None = None,
    sinks: np.ndarray | None = None,
    top_k: int | None = None,
) -> Attended:
    """The attention step of every head: scores, softmax, and the weighted sum of values.

    Parameters
    ----------
    q : ndarray, shape (n_heads, n_q, d_head)
    k : ndarray, shape (n_kv_heads, n_k, d_head)
    v : ndarray, shape (n_kv_heads, n_k, d_v), or None
        Query head ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``.  None: the
        weights alone, no weighted sum (``head_outputs`` is None), for a view of weights only.
    mask : ndarray of bool, shape (n_q, n_k), optional
        True where a query may attend a key; every row needs one True.
    temperature : float, default 1.0
    scale : float, optional
        Multiplies ``q k^T``; default ``1 / sqrt(d_head)``.
    bias, softcap, sinks, top_k : optional
        The variants (:mod:`attention_widget.variants`), in the order they act: ``bias``
        (broadcast to (n_heads, n_q, n_k), e.g. ALiBi's) is added to the scores, then
        ``softcap`` (c) caps them to ``c tanh(scores / c)``; after the mask, each query keeps
        its ``top_k`` best keys (ties to the earlier key); one logit per head, ``sinks``
        (n_heads,), joins every row's softmax (divided by T) and is dropped: rows sum to < 1.

    Returns
    -------
    Attended
        ``scores = scale * q k^T (+ bias, capped)`` (before temperature and mask), ``weights =
        softmax(scores / T)``, ``head_outputs = weights @ v``, the row entropy, and with sinks
        ``sink_weights`` (n_heads, n_q), with top-k ``kept`` (bool, as weights).
    """
    group = q.shape[0] // k.shape[0]  # query heads per key/value head
    if group > 1:  # each key/value head serves its group of query heads
        k = np.repeat(k, group, axis=0)  # [n_kv, n_k, d_head] -> [n_heads, n_k, d_head]
        v = None if v is None else np.repeat(v, group, axis=0)  # -> [n_heads, n_k, d_v]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = scale * q @ k.transpose(0, 2, 1)  # [h, n_q, d] @ [h, d, n_k] -> [h, n_q, n_k]
    if bias is not None:  # e.g. ALiBi's -m_h (i - j)
        scores += _checks.check_bias(bias, scores.shape, scores.dtype)
    if softcap is not None:  # Gemma 2: c tanh(scores / c)
        scores = variants.softcap(scores, softcap)
    if top_k is not None:  # each query keeps its top_k best keys: [h, n_q, n_k] of bool
        mask = variants.top_k_keep(scores, top_k, mask)
    weights, entropy = _softmax(scores, temperature, mask, sinks)  # [h, n_q, n_k (+ the sink)]
    n_k = k.shape[1]
    head_outputs = None if v is None else weights[..., :n_k] @ v  # [h, n_q, n_k] @ [h, n_k, d_v]
    return Attended(scores, weights[..., :n_k], head_outputs, entropy,  # (the sink last)
                    None if sinks is None else weights[..., -1], None if top_k is None else mask)


@np.errstate(over="ignore", invalid="ignore")  # an overflow is reported below, as an error
def multi_head_attention(
    x: np.ndarray, params: AttentionParams, *, n_heads: int, n_kv_heads: int | None = None,
    temperature: float = 1.0, mask: MaskLike = None, window: int | None = None,
    dtype: type | np.dtype = np.float64, rope: float | None = None, alibi: bool = False,
    softcap: float | None = None, sinks: np.ndarray | None = None, top_k: int | None = None,
) -> AttentionTrace:
    """Run one multi-head self-attention layer and keep every intermediate.

    Parameters
    ----------
    x : array_like, shape (seq_len, d_model)
        The input sequence, one row per token.
    params : AttentionParams
        The layer's projections, e.g. from :func:`init_params`.
    n_heads, n_kv_heads : int
        Query heads (they divide ``d_model``); key/value heads (grouped-query attention),
        ``n_heads`` by default.
    temperature : float, default 1.0
        ``T > 0`` in ``softmax(scores / T)``: small T sharpens rows, large T flattens them.
    mask : None, "none", "causal", "sliding", or ndarray of bool, shape (seq_len, seq_len)
        True where query ``i`` may attend key ``j``; ``"sliding"`` needs ``window`` (int), the
        keys per query (see :func:`sliding_window_mask`).
    dtype : float32 or float64, default float64
        Precision of the computation.
    rope, alibi, softcap, sinks, top_k : optional
        The variants (:mod:`attention_widget.variants`): RoPE of base ``theta = rope``; ALiBi's
        bias with BLOOM's slopes if ``alibi``; the others as in :func:`attend`.

    Returns
    -------
    AttentionTrace
        Every stage, from ``x`` to ``output``.  A bad argument raises TypeError or ValueError
        naming it; so do a layer beyond :data:`MEMORY_LIMIT_BYTES` and an overflow.
    """
    if not isinstance(params, AttentionParams):
        raise TypeError(f"params must be an AttentionParams (see init_params), got {type(params)}")
    d_model, d_kv = params.w_k.shape
    n_heads, n_kv_heads, d_head = _checks.check_heads(d_model, n_heads, n_kv_heads, d_kv)
    temperature = _checks.check_positive("temperature", temperature)
    if alibi is not False or sinks is not None or (rope, softcap, top_k) != (None, None, None):
        rope, alibi, softcap, sinks, top_k = _checks.check_variants(
            n_heads, d_head, rope=rope, alibi=alibi, softcap=softcap, sinks=sinks, top_k=top_k)
    x = _checks.as_sequence(x, d_model, dtype)  # [seq, d_model], finite, float32 or float64
    seq_len, dt = x.shape[0], x.dtype
    if mask is not None:
        mask = resolve_mask(mask, seq_len, window)  # [seq, seq] of bool, or None: every key
    if n_heads * seq_len**2 >= fast.MIN_SCORES:  # large: these steps, shared between the cores
        return fast.multi_head_attention(x, params, n_heads, n_kv_heads, temperature, mask,
                                         rope, alibi, softcap, sinks, top_k)

    # 1. project: Q = X W_Q + b_Q, K = X W_K + b_K, V = X W_V + b_V (in the dtype of x)
    q = np.matmul(x, params.w_q, dtype=dt)  # [seq, d_model] -> [seq, n_heads * d_head]
    k = np.matmul(x, params.w_k, dtype=dt)  # [seq, d_model] -> [seq, n_kv_heads * d_head]
    v = np.matmul(x, params.w_v, dtype=dt)  # [seq, d_model] -> [seq, n_kv_heads * d_head]
    if params.b_q is not None:
        q += params.b_q
        k += params.b_k
        v += params.b_v
    q = split_heads(q, n_heads)  # [seq, n_heads * d_head] -> [n_heads, seq, d_head]
    k = split_heads(k, n_kv_heads)  # [seq, n_kv_heads * d_head] -> [n_kv_heads, seq, d_head]
    v = split_heads(v, n_kv_heads)  # [seq, n_kv_heads * d_head] -> [n_kv_heads, seq, d_head]
    if rope is not None:  # RoPE: each query and key turned by its position (Llama)
        q, k = variants.rope(q, rope), variants.rope(k, rope)

    # 2. attend: scores = q k^T / sqrt(d_head), weights = softmax(scores / T), weights @ v
    att = attend(q, k, v, mask=mask, temperature=temperature, softcap=softcap, sinks=sinks,
                 top_k=top_k, bias=alibi_bias(n_heads, np.arange(seq_len)) if alibi else None)

    # 3. combine: the heads side by side, then W_O
    concat = merge_heads(att.head_outputs)  # [n_heads, seq, d_head] -> [seq, n_heads * d_head]
    output = np.matmul(concat, params.w_o, dtype=dt)  # [seq, d_model] -> [seq, d_model]
    if params.b_o is not None:
        output += params.b_o
    if not np.isfinite(output).all():  # (x and the weights are finite, their products may not be)
        raise _checks.overflow_error(dt)
    mask = np.ones((seq_len, seq_len), dtype=bool) if mask is None else mask
    return AttentionTrace(x, q, k, v, att.scores, att.weights, att.head_outputs, concat, output,
                          mask, att.entropy, temperature, rope=rope, alibi=alibi, softcap=softcap,
                          sinks=sinks, top_k=top_k, sink_weights=att.sink_weights, kept=att.kept)


def with_temperature(
    trace: AttentionTrace, params: AttentionParams, temperature: float
) -> AttentionTrace:
    """The same layer at another softmax temperature, reusing the trace's earlier stages.

    Temperature enters after the scores, so ``x``, ``q``, ``k``, ``v``, ``scores`` and ``mask``
    are shared with ``trace`` (the same arrays, not copies); the weights, head outputs, concat
    and output are computed anew by :func:`attend`, as :func:`multi_head_attention` would at
    ``temperature``.  This is what a temperature slider needs: no projection per step.

    Parameters
    ----------
    trace : AttentionTrace
        From :func:`multi_head_attention` (or an earlier call of this function), or from
        :mod:`attention_widget.kinds` (cross or latent attention): every variant is kept.
    params : AttentionParams or LatentParams
        The parameters ``trace`` was computed with (``w_o`` and ``b_o`` are used).
    temperature : float
        ``T > 0``.

    Returns
    -------
    AttentionTrace
        Equal to ``multi_head_attention(trace.x, params, ..., temperature=temperature)`` up to
        float rounding.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, naming it.
    """
    if not isinstance(trace, AttentionTrace):
        raise TypeError(f"trace must be an AttentionTrace, got {type(trace).__name__}")
    if getattr(params, "w_o", None) is None:
        raise TypeError(f"params must be an AttentionParams (see init_params), or the "
                        f"LatentParams of a latent trace, got {type(params)}")
    if params.d_model != trace.d_model:
        raise ValueError(
            f"params have d_model={params.d_model} but the trace has d_model={trace.d_model}: "
            "pass the params the trace was computed with"
        )
    temperature = _checks.check_temperature(temperature)
    mask = None if trace.mask.all() else trace.mask
    step = fast.attend if trace.scores.size >= fast.MIN_SCORES else attend  # same result
    bias = alibi_bias(trace.n_heads, np.arange(trace.seq_len)) if trace.alibi else None
    att = step(trace.q, trace.k, trace.v, mask=mask, temperature=temperature, bias=bias,
               softcap=trace.softcap, sinks=trace.sinks, top_k=trace.top_k)  # trace.scores again
    concat = merge_heads(att.head_outputs)  # [seq, d_model]
    output = np.matmul(concat, params.w_o, dtype=concat.dtype)  # [seq, d_model]
    if params.b_o is not None:
        output += params.b_o
    return replace(trace, weights=att.weights, head_outputs=att.head_outputs, concat=concat,
                   output=output, entropy=att.entropy, temperature=temperature,
                   sink_weights=att.sink_weights)

"""Large layers: the steps of :mod:`attention_widget.engine`, shared between the cores.

This module's :func:`multi_head_attention` takes the engine's steps in the engine's order, with the
engine's own functions, and returns the same trace; only the work is cut into parts that run
on a pool of threads (NumPy and BLAS release the GIL):

1. each projection ``x @ w + b`` by blocks of rows;
2. the attention step by blocks -- whole groups of heads, or runs of query rows of one head,
   a few MiB of scores each -- every block computed by :func:`attention_widget.engine.attend`
   while its scores are still in cache when the softmax and ``weights @ v`` read them;
3. the output projection by blocks of rows.

The pool and the hold on BLAS (one thread per call while the pool works) are
:mod:`attention_widget.blockrun`'s.  Without ``threadpoolctl``, or with one core, the same steps
run one after another on the calling thread.

:func:`attention_widget.engine.multi_head_attention` takes this path for layers of at least
:data:`MIN_SCORES` scores; so do cross-attention and latent attention
(:mod:`attention_widget.kinds`), through :func:`steps`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import _checks, engine, variants
from .blockrun import held, run_parts, workers

__all__ = ["MIN_SCORES", "attend", "linear", "multi_head_attention", "steps"]

#: Layers with at least this many scores (``n_heads * seq_len**2``) take this path.
MIN_SCORES = 1 << 20
# Bytes of scores in one block (at least): a block's arrays stay in cache from step to step,
# and NumPy asks the system for huge pages for them (it does from 4 MiB on): smaller arrays,
# allocated and freed once per block, would cost a page fault per 4 KiB each time.
_BLOCK_BYTES = 1 << 22


def linear(a: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``a @ w + b`` in the dtype of ``a`` (no bias when ``b`` is None), by blocks of rows."""
    out = np.empty((a.shape[0], w.shape[1]), dtype=a.dtype)
    step = -(-a.shape[0] // workers())  # as many rows for each thread

    def work(rows: slice) -> None:
        np.matmul(a[rows], w, out=out[rows], dtype=a.dtype)
        if b is not None:
            out[rows] += b

    run_parts(work, [slice(r, r + step) for r in range(0, a.shape[0], step)])
    return out


def _product(a: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``a @ w + b`` in the dtype of ``a``, one product (BLAS shares it between the cores)."""
    out = np.matmul(a, w, dtype=a.dtype)
    return out if b is None else out + b


@contextlib.contextmanager
def steps(large: bool) -> Iterator[tuple[Callable[..., np.ndarray], Callable[..., Any]]]:
    """``(linear, attend)`` for one layer: its products ``a @ w + b`` and its attention step.

    For a ``large`` layer, each product is cut by rows between the pool's threads (:func:`linear`),
    the attention step by blocks (:func:`attend`), and BLAS stays at one thread until the layer
    ends: the attention step would otherwise share the cores with BLAS's threads, which keep
    spinning for a while after each product.  Otherwise one plain product each and
    :func:`attention_widget.engine.attend`.
    """
    if not large:
        yield _product, engine.attend
        return
    with held():
        yield linear, attend


def _blocks(n_heads: int, group: int, n_q: int, row_bytes: int) -> list[tuple[slice, slice]]:
    """The (query heads, query rows) of every block.

    Whole groups of query heads (those of one key/value head) while a group is under a block;
    else runs of rows of one head.  Sizes are rounded up, see ``_BLOCK_BYTES``.
    """
    group_bytes = group * n_q * row_bytes
    if group_bytes <= _BLOCK_BYTES:
        per = group * -(-_BLOCK_BYTES // group_bytes)
        return [(slice(h, h + per), slice(None)) for h in range(0, n_heads, per)]
    rows = -(-_BLOCK_BYTES // row_bytes)
    return [(slice(h, h + 1), slice(r, r + rows))
            for h in range(n_heads) for r in range(0, n_q, rows)]


def _attend(q, k, v, mask, temperature, scale, bias=None, softcap=None, sinks=None,
            top_k=None) -> engine.Attended:
    """:func:`attention_widget.engine.attend`, block by block.

    ``bias``, if given, is a function of a block's ``(heads, rows)`` slices that returns the
    block's bias; the other variants are those of ``engine.attend``, already checked.
    """
    n_heads, n_q, _ = q.shape
    n_kv, n_k, d_v = v.shape
    group = n_heads // n_kv
    scores = np.empty((n_heads, n_q, n_k), dtype=q.dtype)
    weights = np.empty_like(scores)
    head_outputs = np.empty((n_heads, n_q, d_v), dtype=q.dtype)
    entropy = np.empty((n_heads, n_q), dtype=q.dtype)
    sink_weights = None if sinks is None else np.empty((n_heads, n_q), dtype=q.dtype)
    kept = None if top_k is None else np.empty((n_heads, n_q, n_k), dtype=bool)

    def work(block: tuple[slice, slice]) -> None:
        heads, rows = block
        kv = slice(heads.start // group, -(-heads.stop // group))  # their key/value heads
        part = engine.attend(q[heads, rows], k[kv], v[kv], scale=scale,
                             mask=None if mask is None else mask[rows], temperature=temperature,
                             bias=None if bias is None else bias(heads, rows), softcap=softcap,
                             sinks=None if sinks is None else sinks[heads], top_k=top_k)
        scores[heads, rows], weights[heads, rows] = part.scores, part.weights
        head_outputs[heads, rows], entropy[heads, rows] = part.head_outputs, part.entropy
        if sinks is not None:
            sink_weights[heads, rows] = part.sink_weights
        if top_k is not None:
            kept[heads, rows] = part.kept

    run_parts(work, _blocks(n_heads, group, n_q, n_k * q.itemsize))
    return engine.Attended(scores, weights, head_outputs, entropy, sink_weights, kept)


def _alibi_by_blocks(n_heads: int, seq_len: int) -> Callable[[slice, slice], np.ndarray]:
    """ALiBi's bias of a block's ``(heads, rows)``, made when the block runs (not all at once)."""
    slopes, positions = variants.alibi_slopes(n_heads), np.arange(seq_len)
    return lambda heads, rows: variants.alibi_bias(slopes[heads], positions[rows], positions)


def attend(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, *, mask: np.ndarray | None = None,
    temperature: float = 1.0, scale: float | None = None, bias: np.ndarray | None = None,
    softcap: float | None = None, sinks: np.ndarray | None = None, top_k: int | None = None,
) -> engine.Attended:
    """:func:`attention_widget.engine.attend` on every core: same arguments, same result."""
    if bias is not None:  # cut into the blocks' parts
        bias = np.broadcast_to(_checks.check_bias(bias, q.shape[:2] + k.shape[1:2], q.dtype),
                               q.shape[:2] + k.shape[1:2])
    if sinks is not None:  # checked here: the blocks get their heads' sinks
        sinks = _checks.check_sinks(sinks, q.shape[0])
    return _attend(q, k, v, mask, temperature, scale,
                   None if bias is None else lambda heads, rows: bias[heads, rows],
                   softcap, sinks, top_k)


def multi_head_attention(
    x: np.ndarray,
    params: engine.AttentionParams,
    n_heads: int,
    n_kv_heads: int,
    temperature: float,
    mask: np.ndarray | None,
    rope: float | None = None,
    alibi: bool = False,
    softcap: float | None = None,
    sinks: np.ndarray | None = None,
    top_k: int | None = None,
) -> engine.AttentionTrace:
    """:func:`attention_widget.engine.multi_head_attention` on every core.

    Parameters
    ----------
    x : ndarray, shape (seq_len, d_model)
        Finite, float32 or float64: the computation runs in its dtype.
    params : AttentionParams
    n_heads, n_kv_heads : int
        Head counts that fit ``params``.
    temperature : float
        ``T > 0``.
    mask : ndarray of bool, shape (seq_len, seq_len), or None
        Every row with a True; None for full attention.
    rope, alibi, softcap, sinks, top_k
        The variants, checked.

    Returns
    -------
    AttentionTrace
        The engine's trace for these arguments (they are not checked again).

    Raises
    ------
    ValueError
        Beyond :data:`attention_widget.engine.MEMORY_LIMIT_BYTES`, before allocating.
    """
    seq_len, d_model = x.shape
    _checks.check_memory(engine.estimate_memory(seq_len, d_model, n_heads, n_kv_heads, x.dtype),
                         engine.MEMORY_LIMIT_BYTES, f"seq_len={seq_len} with n_heads={n_heads}")
    with held():  # (the whole layer: BLAS's idle threads would spin on the pool's cores)
        # 1. project: Q = X W_Q + b_Q (K and V alike), then split into heads
        q = engine.split_heads(linear(x, params.w_q, params.b_q), n_heads)
        k = engine.split_heads(linear(x, params.w_k, params.b_k), n_kv_heads)
        v = engine.split_heads(linear(x, params.w_v, params.b_v), n_kv_heads)
        if rope is not None:  # RoPE
            q, k = variants.rope(q, rope), variants.rope(k, rope)
        # 2. attend
        bias = _alibi_by_blocks(n_heads, seq_len) if alibi else None
        att = _attend(q, k, v, mask, temperature, None, bias, softcap, sinks, top_k)
        # 3. combine
        concat = engine.merge_heads(att.head_outputs)
        output = linear(concat, params.w_o, params.b_o)
    if not np.isfinite(output).all():  # as in the engine
        raise _checks.overflow_error(x.dtype)
    mask = np.ones((x.shape[0], x.shape[0]), dtype=bool) if mask is None else mask
    return engine.AttentionTrace(x, q, k, v, att.scores, att.weights, att.head_outputs, concat,
                                 output, mask, att.entropy, temperature, rope=rope, alibi=alibi,
                                 softcap=softcap, sinks=sinks, top_k=top_k,
                                 sink_weights=att.sink_weights, kept=att.kept)

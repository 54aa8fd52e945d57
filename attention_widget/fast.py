"""Large layers: the steps of :mod:`attention_widget.engine`, shared between the cores.

This module's :func:`multi_head_attention` takes the engine's steps in the engine's order, with the
engine's own functions, and returns the same trace; only the work is cut into parts that run
on a pool of threads (NumPy and BLAS release the GIL):

1. each projection ``x @ w + b`` by blocks of rows;
2. the attention step by blocks -- whole groups of heads, or runs of query rows of one head,
   a few MiB of scores each -- every block computed by :func:`attention_widget.engine.attend`
   while its scores are still in cache when the softmax and ``weights @ v`` read them;
3. the output projection by blocks of rows.

Meanwhile BLAS runs one thread per call (through ``threadpoolctl``): its own worker threads
would otherwise compete with the pool's for the same cores, also for a while after each call,
when they keep spinning.  Without ``threadpoolctl``, or with one core, the same steps run one
after another on the calling thread.

:func:`attention_widget.engine.multi_head_attention` takes this path for layers of at least
:data:`MIN_SCORES` scores.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import engine

__all__ = ["MIN_SCORES", "attend", "multi_head_attention"]

#: Layers with at least this many scores (``n_heads * seq_len**2``) take this path.
MIN_SCORES = 1 << 20
# Bytes of scores in one block (at least): a block's arrays stay in cache from step to step,
# and NumPy asks the system for huge pages for them (it does from 4 MiB on): smaller arrays,
# allocated and freed once per block, would cost a page fault per 4 KiB each time.
_BLOCK_BYTES = 1 << 22


class _BlasAtOneThread:
    """BLAS at one thread while any call of this module runs; as it was after the last one.

    ``threadpoolctl`` sets and restores the limit; counting the running calls makes calls
    that overlap (from several threads) restore it once, at the end of the last one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._limits = None

    def __enter__(self) -> None:
        from threadpoolctl import threadpool_limits

        with self._lock:
            if self._running == 0:
                self._limits = threadpool_limits(1, user_api="blas")
            self._running += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._running -= 1
            if self._running == 0:
                self._limits.restore_original_limits()


_BLAS_AT_ONE_THREAD = _BlasAtOneThread()
_POOL: list[ThreadPoolExecutor | None] = []  # made at the first call: one thread per core
_POOL_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads
    os.register_at_fork(after_in_child=_POOL.clear)


def _pool() -> ThreadPoolExecutor | None:
    """The worker threads; None with one core or without ``threadpoolctl``."""
    with _POOL_LOCK:
        if not _POOL:
            try:
                import threadpoolctl  # noqa: F401

                cores = len(os.sched_getaffinity(0))
            except (ImportError, AttributeError):  # no threadpoolctl; not on Linux
                cores = 1
            if cores > 1:
                _POOL.append(ThreadPoolExecutor(cores, "attention"))
            else:
                _POOL.append(None)
    return _POOL[0]


def _run(pool: ThreadPoolExecutor | None, work: Callable, parts: list) -> None:
    """``work(part)`` for every part: on the pool, BLAS at one thread; or on this thread.

    The pool's threads handle floating-point errors as this one does (``np.errstate``).
    """
    if pool is None:
        for part in parts:
            work(part)
        return
    errors = np.geterr()

    def run(part: object) -> None:
        with np.errstate(**errors):
            work(part)

    with _BLAS_AT_ONE_THREAD:
        list(pool.map(run, parts))


def _linear(pool, a: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``a @ w + b`` in the dtype of ``a`` (no bias when ``b`` is None), by blocks of rows."""
    out = np.empty((a.shape[0], w.shape[1]), dtype=a.dtype)
    step = -(-a.shape[0] // (2 if pool else 1))  # two halves: as many rows for each thread

    def work(rows: slice) -> None:
        np.matmul(a[rows], w, out=out[rows], dtype=a.dtype)
        if b is not None:
            out[rows] += b

    _run(pool, work, [slice(r, r + step) for r in range(0, a.shape[0], step)])
    return out


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


def _attend(pool, q, k, v, mask, temperature, scale) -> engine.Attended:
    """:func:`attention_widget.engine.attend`, block by block."""
    n_heads, n_q, _ = q.shape
    n_kv, n_k, d_v = v.shape
    group = n_heads // n_kv
    scores = np.empty((n_heads, n_q, n_k), dtype=q.dtype)
    weights = np.empty_like(scores)
    head_outputs = np.empty((n_heads, n_q, d_v), dtype=q.dtype)
    entropy = np.empty((n_heads, n_q), dtype=q.dtype)

    def work(block: tuple[slice, slice]) -> None:
        heads, rows = block
        kv = slice(heads.start // group, -(-heads.stop // group))  # their key/value heads
        part = engine.attend(q[heads, rows], k[kv], v[kv], scale=scale,
                             mask=None if mask is None else mask[rows], temperature=temperature)
        scores[heads, rows], weights[heads, rows] = part.scores, part.weights
        head_outputs[heads, rows], entropy[heads, rows] = part.head_outputs, part.entropy

    _run(pool, work, _blocks(n_heads, group, n_q, n_k * q.itemsize))
    return engine.Attended(scores, weights, head_outputs, entropy)


def attend(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, *, mask: np.ndarray | None = None,
    temperature: float = 1.0, scale: float | None = None,
) -> engine.Attended:
    """:func:`attention_widget.engine.attend` on every core: same arguments, same result."""
    return _attend(_pool(), q, k, v, mask, temperature, scale)


def multi_head_attention(
    x: np.ndarray,
    params: engine.AttentionParams,
    n_heads: int,
    n_kv_heads: int,
    temperature: float,
    mask: np.ndarray | None,
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

    Returns
    -------
    AttentionTrace
        The engine's trace for these arguments (they are not checked again).
    """
    pool = _pool()
    with _BLAS_AT_ONE_THREAD if pool else contextlib.nullcontext():
        # 1. project: Q = X W_Q + b_Q (K and V alike), then split into heads
        q = engine.split_heads(_linear(pool, x, params.w_q, params.b_q), n_heads)
        k = engine.split_heads(_linear(pool, x, params.w_k, params.b_k), n_kv_heads)
        v = engine.split_heads(_linear(pool, x, params.w_v, params.b_v), n_kv_heads)
        # 2. attend
        scores, weights, head_outputs, entropy = _attend(pool, q, k, v, mask, temperature, None)
        # 3. combine
        concat = engine.merge_heads(head_outputs)
        output = _linear(pool, concat, params.w_o, params.b_o)
    if not np.isfinite(output).all():  # as in the engine
        raise ValueError(f"the scores overflowed (values too large for {x.dtype}): scale x or "
                         "the weights down, or use dtype=float64")
    mask = np.ones((x.shape[0], x.shape[0]), dtype=bool) if mask is None else mask
    return engine.AttentionTrace(x, q, k, v, scores, weights, head_outputs, concat, output, mask,
                                 entropy, temperature)

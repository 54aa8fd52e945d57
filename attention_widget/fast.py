"""The attention step for large inputs: the same arithmetic, shared between the cores.

:func:`attend` returns what :func:`attention_widget.engine.attend` returns, and computes it
with that very function, one block of query rows of one head at a time: a block is small
enough to stay in a core's cache from its scores to its weighted values, and the blocks run on
a pool of threads (NumPy and BLAS release the GIL).  While they run, BLAS is held at one thread
per call through ``threadpoolctl``, so the threads do not compete with BLAS's own; without
``threadpoolctl`` the blocks run one after another on the calling thread.

:func:`attention_widget.engine.multi_head_attention` takes this path for layers of at least
:data:`MIN_SCORES` scores.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import engine

__all__ = ["MIN_SCORES", "attend"]

#: Layers with at least this many scores (``n_heads * seq_len**2``) take this path.
MIN_SCORES = 1 << 17
_BLOCK_BYTES = 1 << 22  # scores of one block of rows: it stays in the core's cache


class _BlasAtOneThread:
    """BLAS at one thread while any :func:`attend` runs; as it was once the last one ends.

    ``threadpoolctl`` sets and restores the limit; the count of running calls makes
    overlapping calls (from several threads) restore it once, at the end of the last.
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
_POOL: list[ThreadPoolExecutor] = []  # made at the first call
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor | None:
    """The worker threads, one per core; None with one core or without ``threadpoolctl``."""
    with _POOL_LOCK:
        if not _POOL:
            try:
                import threadpoolctl  # noqa: F401

                cores = len(os.sched_getaffinity(0))
            except (ImportError, AttributeError):  # no threadpoolctl; not on Linux
                cores = 1
            _POOL.append(ThreadPoolExecutor(cores, "attention") if cores > 1 else None)
    return _POOL[0]


def attend(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    temperature: float = 1.0,
    scale: float | None = None,
) -> engine.Attended:
    """:func:`attention_widget.engine.attend` in blocks, on every core.

    Same arguments, same result: every block is computed by ``engine.attend`` itself.
    """
    n_heads, n_q, _ = q.shape
    n_kv, n_k, d_v = v.shape
    group = n_heads // n_kv
    scores = np.empty((n_heads, n_q, n_k), dtype=q.dtype)
    weights = np.empty_like(scores)
    head_outputs = np.empty((n_heads, n_q, d_v), dtype=q.dtype)
    entropy = np.empty((n_heads, n_q), dtype=q.dtype)
    rows = max(1, _BLOCK_BYTES // (n_k * q.itemsize))
    blocks = [(h, slice(r, r + rows)) for h in range(n_heads) for r in range(0, n_q, rows)]

    def run(block: tuple[int, slice]) -> None:
        h, r = block
        g = h // group  # the key/value head of query head h
        part = engine.attend(q[h : h + 1, r], k[g : g + 1], v[g : g + 1], scale=scale,
                             mask=None if mask is None else mask[r], temperature=temperature)
        scores[h, r], weights[h, r] = part.scores[0], part.weights[0]
        head_outputs[h, r], entropy[h, r] = part.head_outputs[0], part.entropy[0]

    pool = _pool()
    if pool is None:
        for block in blocks:
            run(block)
    else:
        with _BLAS_AT_ONE_THREAD:
            list(pool.map(run, blocks))
    return engine.Attended(scores, weights, head_outputs, entropy)

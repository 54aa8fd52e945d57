"""Work done block by block on up to two threads, with progress and cancellation.

The long paths (:mod:`attention_widget.long`) cut their work into blocks of query rows that
never write the same element.  :func:`run_blocks` runs them on a small shared pool (two threads
when there are two cores and BLAS can be held at one thread each), reports
``progress(fraction, message)`` on the calling thread and stops between blocks once the
cancellation token is set, raising :class:`AttentionCancelled`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from functools import lru_cache

import numpy as np

__all__ = ["AttentionCancelled", "Progress", "hooks", "run_blocks", "workers"]

Progress = Callable[[float, str], None]


class AttentionCancelled(Exception):
    """Raised by a computation whose token was set: nothing it computed is returned or kept."""


def hooks(progress: object, cancel: object) -> tuple[Progress, Callable[[], bool]]:
    """``progress`` and a ``cancelled()`` test from the public arguments, checked."""
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a function (fraction, message), got {type(progress)}")
    if cancel is not None and not hasattr(cancel, "is_set") and not hasattr(cancel, "cancelled"):
        raise TypeError("cancel must be None, a threading.Event or an object with a 'cancelled' "
                        f"attribute, got {type(cancel).__name__}")
    report = progress if progress is not None else (lambda fraction, message: None)
    if cancel is None or hasattr(cancel, "is_set"):
        return report, (lambda: False) if cancel is None else cancel.is_set
    return report, (lambda: bool(cancel.cancelled))


def workers() -> int:
    """Two threads when BLAS can be held at one thread each (threadpoolctl) and two cores."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return 2 if cpus > 1 and _threadpool_limits() is not None else 1


@lru_cache(maxsize=1)
def _threadpool_limits() -> Callable | None:
    """The optional ``threadpoolctl.threadpool_limits``, imported when a long layer first runs."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # not a dependency
        return None
    return threadpool_limits


_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(workers(), thread_name_prefix="long-attention"))
    return _POOL[0]


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """BLAS at one thread while our threads share the blocks (when threadpoolctl is there)."""
    limits = _threadpool_limits()
    return contextlib.nullcontext() if limits is None else limits(limits=1, user_api="blas")


def run_blocks(
    work: Callable[[slice], None], blocks: list[slice], costs: list[int], progress: Progress,
    cancelled: Callable[[], bool], message: str,
) -> None:
    """Run ``work(block)`` for every block on the pool's threads; report progress on this thread.

    ``cancelled()`` is checked before each block starts and after each one ends: once it is
    true, the blocks not yet started are dropped, the running ones finish, and
    :class:`AttentionCancelled` is raised.
    """
    stop = threading.Event()

    def guarded(block: slice) -> None:
        if not stop.is_set() and not cancelled():
            with np.errstate(over="ignore", under="ignore"):
                work(block)

    total, done = float(sum(costs)), 0
    with _one_blas_thread():
        futures = [_pool().submit(guarded, block) for block in blocks]
        try:
            for future, block, cost in zip(futures, blocks, costs, strict=True):
                future.result()
                if cancelled():
                    raise AttentionCancelled(f"{message}: cancelled")
                done += cost
                progress(done / total, f"{message}: rows {block.stop:,} of {blocks[-1].stop:,}")
        finally:
            stop.set()
            for future in futures:
                future.cancel()
            wait(futures)  # the running ones finish before anything is returned or raised


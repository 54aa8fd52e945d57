"""Work done block by block on the cores' threads, with progress and cancellation.

One pool of threads, one per core (made at the first use), serves every path that cuts its
work into blocks: the fast path of large layers (:mod:`attention_widget.fast`) and the long
paths (:mod:`attention_widget.long`).  NumPy and BLAS release the GIL.  While the pool works,
BLAS runs one thread per call (through ``threadpoolctl``): its own worker threads would
otherwise compete with the pool's for the same cores, also for a while after each call, when
they keep spinning.  Without ``threadpoolctl``, or with one core, there is no pool and the
blocks run one after another on the calling thread.

:func:`run_parts` runs parts that never write the same element; :func:`run_blocks` also
reports ``progress(fraction, message)`` on the calling thread and stops between blocks once
the cancellation token is set, raising :class:`AttentionCancelled`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from functools import lru_cache

import numpy as np

__all__ = ["BLAS_AT_ONE_THREAD", "AttentionCancelled", "Progress", "held", "hooks", "pool",
           "run_blocks", "run_parts", "workers"]

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


class _BlasAtOneThread:
    """BLAS at one thread while any work of the pool runs; as it was after the last one.

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


BLAS_AT_ONE_THREAD = _BlasAtOneThread()
_POOL: list[ThreadPoolExecutor | None] = []  # made at the first call: one thread per core
_POOL_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads
    os.register_at_fork(after_in_child=_POOL.clear)


@lru_cache(maxsize=1)
def workers() -> int:
    """Threads of the pool: one per core this process may run on; 1 without ``threadpoolctl``."""
    try:
        import threadpoolctl  # noqa: F401

        return len(os.sched_getaffinity(0))
    except (ImportError, AttributeError):  # no threadpoolctl; not on Linux
        return 1


def pool() -> ThreadPoolExecutor | None:
    """The worker threads; None with one core or without ``threadpoolctl``."""
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(workers(), "attention") if workers() > 1 else None)
    return _POOL[0]


def held() -> contextlib.AbstractContextManager:
    """BLAS at one thread while the pool works (nothing to hold without a pool)."""
    return BLAS_AT_ONE_THREAD if pool() is not None else contextlib.nullcontext()


def run_parts(work: Callable, parts: list) -> None:
    """``work(part)`` for every part: on the pool, BLAS at one thread; or on this thread.

    The pool's threads handle floating-point errors as this one does (``np.errstate``).
    """
    threads = pool()
    if threads is None:
        for part in parts:
            work(part)
        return
    errors = np.geterr()

    def run(part: object) -> None:
        with np.errstate(**errors):
            work(part)

    with BLAS_AT_ONE_THREAD:
        list(threads.map(run, parts))


def run_blocks(
    work: Callable[[slice], None], blocks: list[slice], costs: list[int], progress: Progress,
    cancelled: Callable[[], bool], message: str,
) -> None:
    """Run ``work(block)`` for every block on the pool's threads; report progress on this thread.

    ``cancelled()`` is checked before each block starts and after each one ends: once it is
    true, the blocks not yet started are dropped, the running ones finish, and
    :class:`AttentionCancelled` is raised.  Without a pool the blocks run on this thread.
    """
    stop = threading.Event()

    def guarded(block: slice) -> None:
        if not stop.is_set() and not cancelled():
            with np.errstate(over="ignore", under="ignore"):
                work(block)

    threads = pool()
    total, done = float(sum(costs)), 0
    with held():
        futures = [threads.submit(guarded, block) for block in blocks] if threads else []
        try:
            for i, (block, cost) in enumerate(zip(blocks, costs, strict=True)):
                if threads:
                    futures[i].result()
                else:  # no pool: each block runs now, on this thread
                    guarded(block)
                if cancelled():
                    raise AttentionCancelled(f"{message}: cancelled")
                done += cost
                progress(done / total, f"{message}: rows {block.stop:,} of {blocks[-1].stop:,}")
        finally:
            stop.set()
            for future in futures:
                future.cancel()
            wait(futures)  # the running ones finish before anything is returned or raised

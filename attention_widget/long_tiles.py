"""Described masks and overview tiles of the block-wise path (:mod:`attention_widget.long`).

A described mask (``"none"``, ``"causal"`` or ``"sliding"`` with a window) lets query ``i`` see
one run of keys ``lo_i <= j < hi_i``, so a block of rows never needs a ``(seq_len, seq_len)``
array to know what it sees.  An overview reduces square tiles of cells to one value each.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["MASK_KINDS", "Selector", "kept_keys", "key_range", "tile_reduce", "tiles_visible",
           "visible_keys"]

MASK_KINDS = ("none", "causal", "sliding")

#: ``select(rows, keys, visible) -> kept``: a selector's keys, see
#: :attr:`attention_widget.long.LongTrace.select`
Selector = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def key_range(kind: str, window: int | None, rows: np.ndarray, n: int) -> tuple:
    """First and one-past-last visible key of each query row: ``lo_i <= j < hi_i``."""
    if kind == "none":
        return np.zeros_like(rows), np.full_like(rows, n)
    hi = rows + 1
    if kind == "causal":
        return np.zeros_like(rows), hi
    return np.maximum(rows - window + 1, 0), hi


def visible_keys(lo: np.ndarray, hi: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``(rows, cols)`` boolean: True where ``lo_i <= j < hi_i``."""
    return (cols >= lo[:, None]) & (cols < hi[:, None])


def tile_reduce(ufunc: np.ufunc, a: np.ndarray, tile: int, col0: int) -> np.ndarray:
    """Reduce ``a`` (rows, cols) over square tiles; ``a``'s first column is column ``col0``.

    Tiles are aligned on multiples of ``tile`` in both directions (``a``'s first row starts a
    tile); partial tiles at the edges are reduced over the cells present.
    """
    full = a.shape[0] // tile * tile  # (ufunc.reduceat along rows is many times slower)
    by_rows = [ufunc.reduce(a[:full].reshape(-1, tile, a.shape[1]), axis=1)]
    if full < a.shape[0]:
        by_rows.append(ufunc.reduce(a[full:], axis=0, keepdims=True))
    by_rows = np.concatenate(by_rows)
    first = col0 // tile * tile
    starts = np.maximum(np.arange(first, col0 + a.shape[1], tile), col0) - col0
    return ufunc.reduceat(by_rows, starts, axis=1)


def tiles_visible(kind: str, window: int | None, n: int, tile: int) -> np.ndarray:
    """``(P, P)`` boolean: True where a tile holds a visible cell.

    Each mask's runs of keys move right with the row (``lo_i``, ``hi_i`` never decrease) and
    overlap, so a tile's rows see exactly the keys ``lo(first row) <= j < hi(last row)``.
    """
    starts = np.arange(0, n, tile)
    lo, _ = key_range(kind, window, starts, n)
    _, hi = key_range(kind, window, np.minimum(starts + tile, n) - 1, n)
    return (starts[None, :] < hi[:, None]) & (starts[None, :] + tile > lo[:, None])


def kept_keys(select: Selector | None, kind: str, window: int | None, rows: np.ndarray,
              n: int) -> tuple[slice, np.ndarray, np.ndarray]:
    """The run of keys ``rows`` may see, which each row sees, and which it keeps.

    Returns ``keys`` (every key a row of ``rows`` may see: ``lo.min() <= j < hi.max()``),
    ``seen`` and ``kept`` (bool, (len(rows), len(keys))): the selector, if any, chooses among
    the keys each row sees; without one every seen key is kept.
    """
    lo, hi = key_range(kind, window, rows, n)
    keys = slice(int(lo.min()), int(hi.max()))
    span = np.arange(keys.start, keys.stop)
    seen = visible_keys(lo, hi, span)  # [rows, keys]
    return keys, seen, seen if select is None else seen & select(rows, span, seen)

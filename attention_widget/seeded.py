"""Seeded weight matrices that grow without changing: the random parameters of every layer.

:func:`seeded_matrix` is shared by :func:`attention_widget.engine.init_params` and
:func:`attention_widget.kinds.init_latent_params`, so that a larger width (``d_model``, a
latent's ``kv_rank``) adds rows and columns to the weights and never redraws the old ones.
"""

from __future__ import annotations

import numpy as np

__all__ = ["seeded_matrix"]

_BLOCK = 64  # side of the seeded blocks the matrices are cut from


def seeded_matrix(seed: int, which: int, rows: int, cols: int) -> np.ndarray:
    """Leading ``(rows, cols)`` block of an unbounded seeded standard-normal matrix.

    The matrix is cut into 64 x 64 blocks, each drawn from its own generator keyed by
    ``(seed, which, block_row, block_col)``.  A larger request therefore contains every smaller
    one as its top-left corner.  ``which`` tells the matrices of one layer apart.

    Returns
    -------
    ndarray, shape (rows, cols), float64
    """
    out = np.empty((rows, cols))
    for bi in range(0, rows, _BLOCK):
        for bj in range(0, cols, _BLOCK):
            block = np.random.default_rng([seed, which, bi // _BLOCK, bj // _BLOCK])
            tile = block.standard_normal((_BLOCK, _BLOCK))
            out[bi : bi + _BLOCK, bj : bj + _BLOCK] = tile[: rows - bi, : cols - bj]
    return out

"""One pass over the query blocks of a long layer (:mod:`attention_widget.long`).

:class:`Blocks` runs the engine's :func:`~attention_widget.engine.attend` on each block of
query rows against the keys they may see, one head at a time, and keeps what
:mod:`attention_widget.long` keeps: each row's entropy and log normaliser, the tile overviews
of weights and scores, the sink weights and (unless a pass draws weights only) the head
outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from . import variants
from .blockrun import Progress, run_blocks
from .engine import Attended, attend
from .long_tiles import Selector, kept_keys, key_range, tile_reduce, tiles_visible

__all__ = ["BlockVariants", "Blocks", "LongAttended", "log_normaliser"]


def log_normaliser(att: Attended, temperature: float, sink: float | None) -> np.ndarray:
    """``lse_i = s_ij / T - log w_ij`` at the largest weight of each row of one head's ``att``.

    That weight is ``>= 1 / (keys + 1)``, so its logarithm is exact enough; with a sink it may
    be the sink's (logit ``sink``, weight ``att.sink_weights``).
    """
    scores, weights = att.scores[0], att.weights[0]  # [rows, keys]
    top = weights.argmax(axis=1)  # [rows]
    rows = np.arange(top.size)
    top_score = scores[rows, top].astype(np.float64)
    top_weight = weights[rows, top].astype(np.float64)
    if sink is not None:  # the sink, where it weighs more than every key
        sink_weight = att.sink_weights[0].astype(np.float64)  # [rows]
        on_sink = sink_weight > top_weight
        top_score[on_sink], top_weight[on_sink] = sink, sink_weight[on_sink]
    return top_score / temperature - np.log(top_weight)


class BlockVariants(NamedTuple):
    """The engine's variants a long layer applies (see :mod:`attention_widget.variants`)."""

    alibi: bool = False  # ALiBi's bias with BLOOM's slopes
    softcap: float | None = None  # c: scores <- c tanh(scores / c)
    sinks: np.ndarray | None = None  # (n_heads,): one logit per head in every row's softmax
    select: Selector | None = None  # the keys each query keeps (see LongTrace.select)


class LongAttended(NamedTuple):
    """What :func:`long_attend` keeps of one attention step over a long sequence."""

    head_outputs: np.ndarray | None  # (n_heads, seq_len, d_v): weights @ v; None: not asked
    entropy: np.ndarray  # (n_heads, seq_len)
    lse: np.ndarray  # (n_heads, seq_len) float64: each row's log normaliser
    weights_overview: np.ndarray  # (n_heads, P, P): tile maxima, NaN on masked tiles
    scores_overview: np.ndarray | None  # (n_heads, P, P), or None when not asked for
    tile: int
    sink_weights: np.ndarray | None = None  # (n_heads, seq_len): each row's weight on the sink


class Blocks:
    """What one pass over the query blocks fills in; ``self(rows)`` does one block.

    Blocks cover whole tiles of rows: two never write the same element, threads need no lock.
    """

    def __init__(self, qkv: tuple, temperature: float, kind: str, window: int | None,
                 with_scores: bool, scale: float | None, chosen: BlockVariants, tile: int,
                 step: int, with_outputs: bool = True) -> None:
        self.q, self.k, self.v = qkv
        self.temperature, self.kind, self.window, self.scale = temperature, kind, window, scale
        n_heads, n, _ = self.q.shape
        self.variants = chosen
        self.slopes = variants.alibi_slopes(n_heads) if chosen.alibi else None  # [h]
        dt = self.q.dtype
        self.tile, self.step = tile, step  # tile side, query rows per block (whole tiles)
        side = -(-n // self.tile)
        self.head_outputs = np.empty((n_heads, n, self.v.shape[2]), dt) if with_outputs else None
        self.entropy = np.empty((n_heads, n), dt)
        self.lse = np.empty((n_heads, n))
        self.weights_overview = np.zeros((n_heads, side, side), dt)
        self.scores_overview = np.zeros((n_heads, side, side), dt) if with_scores else None
        self.sink_weights = None if chosen.sinks is None else np.empty((n_heads, n), dt)

    def variants_of(self, h: int, rows: slice, keys: slice) -> dict:
        """The variants as ``attend`` takes them, for head ``h`` on one block of rows and keys."""
        bias, sinks = None, self.variants.sinks
        if self.slopes is not None:  # -m_h (i - j) on this block only: [1, rows, keys]
            bias = variants.alibi_bias(self.slopes[h : h + 1], np.arange(rows.start, rows.stop),
                                       np.arange(keys.start, keys.stop))
        return {"bias": bias, "softcap": self.variants.softcap,
                "sinks": None if sinks is None else sinks[h : h + 1]}

    def __call__(self, rows: slice) -> None:
        """Fill in the block of query ``rows``, every head."""
        n_heads, n, _ = self.q.shape
        group, t = n_heads // self.k.shape[0], self.tile
        # every key a row of the block may see; those not kept are dropped like masked keys
        keys, seen, mask = kept_keys(self.variants.select, self.kind, self.window,
                                      np.arange(rows.start, rows.stop), n)
        seen, mask = (None if m.all() else m for m in (seen, mask))
        tiles = (slice(rows.start // t, -(-rows.stop // t)), slice(keys.start // t,
                                                                   -(-keys.stop // t)))
        for h in range(n_heads):
            g = h // group
            values = None if self.head_outputs is None else self.v[g : g + 1, keys]
            att = attend(self.q[h : h + 1, rows], self.k[g : g + 1, keys], values, mask=mask,
                         temperature=self.temperature, scale=self.scale,
                         **self.variants_of(h, rows, keys))
            scores, weights = att.scores[0], att.weights[0]  # [rows, keys]
            if values is not None:
                self.head_outputs[h, rows] = att.head_outputs[0]
            self.entropy[h, rows] = att.entropy[0]
            sink = None if self.sink_weights is None else float(self.variants.sinks[h])
            self.lse[h, rows] = log_normaliser(att, self.temperature, sink)
            if sink is not None:
                self.sink_weights[h, rows] = att.sink_weights[0]
            # masked weights are 0, below every visible one: the tile maximum ignores them
            self.weights_overview[(h, *tiles)] = tile_reduce(np.maximum, weights, t, keys.start)
            if self.scores_overview is not None:
                if seen is not None:  # masked scores 0: never of larger magnitude than a seen one
                    scores = scores if scores.flags.writeable else scores.copy()
                    scores *= seen
                high = tile_reduce(np.maximum, scores, t, keys.start)
                low = tile_reduce(np.minimum, scores, t, keys.start)
                self.scores_overview[(h, *tiles)] = np.where(-low > high, low, high)

    def run(self, progress: Progress, cancelled: Callable[[], bool], message: str
            ) -> LongAttended:
        """Every block (:func:`~attention_widget.blockrun.run_blocks`); the result."""
        n = self.q.shape[1]
        step = self.step
        starts = np.arange(0, n, step)
        stops = np.minimum(starts + step, n)
        lo = key_range(self.kind, self.window, starts, n)[0]
        hi = key_range(self.kind, self.window, stops - 1, n)[1]
        blocks = [slice(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]
        costs = [int(c) for c in (stops - starts) * (hi - lo)]  # cells each block computes
        run_blocks(self, blocks, costs, progress, cancelled, message)
        # masked tiles: NaN in the overviews
        masked = ~tiles_visible(self.kind, self.window, self.q.shape[1], self.tile)
        self.weights_overview[:, masked] = np.nan
        if self.scores_overview is not None:
            self.scores_overview[:, masked] = np.nan
        return LongAttended(self.head_outputs, self.entropy, self.lse, self.weights_overview,
                            self.scores_overview, self.tile, self.sink_weights)

"""Attention for long prompts: block by block, keeping what a diagram draws.

:func:`~attention_widget.engine.multi_head_attention` keeps every ``(n_heads, seq_len,
seq_len)`` array: the teaching object, right for a few hundred tokens (at 8,192 tokens one such
array of 8 heads is 2 GiB in float32).  :func:`long_attention` computes the same layer one
block of query rows at a time with the engine's :func:`~attention_widget.engine.attend`, each
block against only the keys its rows may see, and keeps the ``O(seq_len * d_model)`` arrays,
each row's log normaliser ``lse`` (any weight is then ``exp(score / T - lse)``, computed when
asked) and per head an overview of the weights and of the scores, one value per square tile of
cells.  :class:`LongTrace` gives exact cells on demand: a block for a zoom, a row and its
heaviest keys for a query lens, a whole head.

Masks are described, not stored: ``"none"``, ``"causal"`` or ``"sliding"`` with ``window``, as
in the engine; each lets query ``i`` see one run of keys ``lo_i <= j < hi_i``.  The block loop
runs on the cores' threads (:mod:`attention_widget.blockrun`), reports ``progress(fraction,
message)`` and raises :class:`AttentionCancelled` between blocks once its cancellation token
is set, so a widget can run it in a worker thread and drop work nobody wants any more.
:func:`long_attend` is the step alone, for queries and keys made elsewhere (a pretrained
model's, after its rotary embedding).

The engine's variants act on each block as in :func:`~attention_widget.engine.attend`: ALiBi's
bias for the block's cells only (from the slopes), the soft-cap, one sink logit per head (each
row's weight on it is kept: rows sum to less than 1), and a selector's keys (DeepSeek's
lightning indexer, asked for one block of queries at a time).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import NamedTuple

import numpy as np

from . import variants
from ._checks import check_int as _check_int
from ._checks import check_temperature as _check_temperature
from ._checks import check_variants, overflow_error
from .blockrun import AttentionCancelled, Progress, hooks, run_blocks, workers
from .engine import AttentionParams, AttentionTrace, merge_heads, multi_head_attention, split_heads
from .long_blocks import Blocks, BlockVariants, LongAttended
from .long_tiles import MASK_KINDS, Selector, kept_keys, key_range, visible_keys

__all__ = [
    "LONG_MEMORY_LIMIT_BYTES",
    "LONG_THRESHOLD",
    "OVERVIEW_MAX_PX",
    "AttentionCancelled",
    "LongAttended",
    "LongTrace",
    "Selector",
    "TopKeys",
    "attention_trace",
    "estimate_long_memory",
    "long_attend",
    "long_attention",
    "long_with_temperature",
    "overview_tile",
]

#: Above this many tokens :func:`attention_trace` takes the block-wise path.  Up to it the full
#: trace is small (56 MiB in float64 at d_model 512, 8 heads) and a diagram draws every cell.
LONG_THRESHOLD = 512

#: Largest memory (bytes) one call of this module may allocate, as the engine's
#: ``MEMORY_LIMIT_BYTES``; above it the call raises ``ValueError`` before allocating anything.
#: A head's weights at 32,768 tokens (4 GiB in float32) are over it: pass ``out=`` to
#: :meth:`LongTrace.head_weights` (e.g. a ``numpy.memmap``) or ask for blocks and rows.
LONG_MEMORY_LIMIT_BYTES = 4 * 2**30
OVERVIEW_MAX_PX = 512  # largest side of an overview, in values (pixels)

#: Query rows per block, rounded up to whole tiles: enough for BLAS to run at full speed, few
#: enough that a block's arrays stay in the cache and a cancellation is noticed at once.
BLOCK_ROWS = 128



def overview_tile(seq_len: int, max_px: int | None = None) -> int:
    """Side of the square of cells one overview value stands for: ``ceil(seq_len / max_px)``.

    The smallest integer ``t`` with ``ceil(seq_len / t) <= max_px``, so the overview is as
    large as allowed (8,192 tokens: 16, 512 values a side; 5,000 tokens: 10, 500 a side).  Any
    integer, not only powers of two; the last tile of a row or column may hold fewer cells.
    ``max_px`` defaults to :data:`OVERVIEW_MAX_PX`.
    """
    seq_len = _check_int("seq_len", seq_len)
    max_px = OVERVIEW_MAX_PX if max_px is None else _check_int("max_px", max_px)
    return -(-seq_len // max_px)


class TopKeys(NamedTuple):
    """The heaviest keys of one query row, heaviest first (ties: earlier position first)."""

    positions: np.ndarray  # (k,) int: key positions
    weights: np.ndarray  # (k,): their weights


def _indices(name: str, value: object, n: int) -> np.ndarray:
    """Positions ``value`` selects from ``range(n)`` (a slice, range, int or integer array)."""
    try:
        idx = np.atleast_1d(np.arange(n)[value])
    except (IndexError, TypeError, ValueError):
        idx = np.array([], dtype=bool)
    if idx.size == 0 or idx.dtype.kind != "i" or isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must select positions of 0..{n - 1} (a slice, range, integer "
                         f"or integer array), got {value!r}")
    return idx


@dataclass(frozen=True, eq=False)
class LongTrace:
    """One attention layer over a long sequence: the small arrays, overviews, exact cells.

    The attributes of :class:`~attention_widget.engine.AttentionTrace` without ``scores``,
    ``weights`` and ``mask``, plus ``lse``, the overviews and the mask's description.

    Attributes
    ----------
    x, concat, output : ndarray, shape (seq_len, d_model)
    q, head_outputs : ndarray, shape (n_heads, seq_len, d_head)
        ``head_outputs``, ``concat`` and ``output`` come from ``outputs``, a function that
        returns the three: after a temperature step (:func:`long_with_temperature`) it computes
        them when they are first read, as no view of a long trace draws them.
    k, v : ndarray, shape (n_kv_heads, seq_len, d_head)
    entropy : ndarray, shape (n_heads, seq_len)
    lse : ndarray of float64, shape (n_heads, seq_len)
        ``log sum_j exp(score_ij / T)`` over the visible keys of row ``i``: the weight of a
        cell is ``exp(score_ij / T - lse_i)``.
    weights_overview : ndarray, shape (n_heads, P, P)
        ``P = ceil(seq_len / tile)``.  Each value is the largest weight of a ``tile x tile``
        square of cells; NaN where no cell of the square is visible (masked).
    scores_overview : ndarray, shape (n_heads, P, P)
        Each value is the score of largest magnitude among the visible cells of its square,
        with its sign (a diverging colour scale shows the extreme of either sign; the largest
        alone would hide strongly negative scores, a mean would blur one sharp peak).  Ties
        between ``+s`` and ``-s`` read ``+s``.  NaN where no cell is visible.
    tile : int
        Side of the square of cells one overview value stands for ("1 px = max of 16x16
        cells"); 1 means the overview is the cells themselves.
    mask_kind, window : str, int or None
        ``"none"``, ``"causal"`` or ``"sliding"`` and its keys per query (else None).
    temperature : float
    scale : float or None
        Multiplies ``q k^T`` in the scores; None for ``1 / sqrt(d_head)``.
    alibi, softcap, sinks : optional
        The engine's variants (:mod:`attention_widget.variants`), as in
        :class:`~attention_widget.engine.AttentionTrace`: ALiBi's bias ``-m_h (i - j)`` with
        BLOOM's slopes added to the scores, the soft-cap ``c`` (scores ``<- c tanh(scores /
        c)``), one sink logit per head (n_heads,) joining each row's softmax.
    sink_weights : ndarray, shape (n_heads, seq_len), or None
        With sinks, each row's weight on its head's sink: rows of weights sum to 1 less it.
    rope : float or None
        RoPE's base when ``q`` and ``k`` were rotated (they hold the rotated vectors).
    select : callable or None
        A selector (DeepSeek's lightning indexer): ``select(rows, keys, visible)`` gives, for
        query positions ``rows`` (r,) and a run of key positions ``keys`` (k,) holding every
        key they may see (``visible``, (r, k) bool), which keys each query keeps (bool (r,
        k)).  The others are dropped from the softmax like masked keys (weight exactly 0).
    """

    x: np.ndarray
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    outputs: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]
    entropy: np.ndarray
    lse: np.ndarray
    weights_overview: np.ndarray
    scores_overview: np.ndarray
    tile: int
    mask_kind: str
    window: int | None
    temperature: float
    scale: float | None = None
    alibi: bool = False
    softcap: float | None = None
    sinks: np.ndarray | None = None
    sink_weights: np.ndarray | None = None
    select: Selector | None = None
    rope: float | None = None

    # the shape properties of the full trace read only x, q, k and entropy: the same ones
    seq_len = AttentionTrace.seq_len
    d_model = AttentionTrace.d_model
    n_heads = AttentionTrace.n_heads
    n_kv_heads = AttentionTrace.n_kv_heads
    d_head = AttentionTrace.d_head
    head_entropy = AttentionTrace.head_entropy
    kv_head = AttentionTrace.kv_head

    @cached_property
    def _outputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.outputs()

    @property
    def head_outputs(self) -> np.ndarray:
        """``weights @ v`` of every head: (n_heads, seq_len, d_v)."""
        return self._outputs[0]

    @property
    def concat(self) -> np.ndarray:
        """The heads side by side: (seq_len, n_heads * d_v)."""
        return self._outputs[1]

    @property
    def output(self) -> np.ndarray:
        """``concat @ W_O (+ b_O)``: (seq_len, d_model)."""
        return self._outputs[2]

    @property
    def dtype(self) -> np.dtype:
        """Precision of the arrays (float32 or float64)."""
        return self.q.dtype

    @property
    def overview_visible(self) -> np.ndarray:
        """``(P, P)`` boolean: True where a tile holds at least one visible cell."""
        return ~np.isnan(self.weights_overview[0])

    def visible(self, rows: object, cols: object) -> np.ndarray:
        """``(len(rows), len(cols))`` boolean: True where a query may attend a key."""
        rows = _indices("rows", rows, self.seq_len)
        lo, hi = key_range(self.mask_kind, self.window, rows, self.seq_len)
        return visible_keys(lo, hi, _indices("cols", cols, self.seq_len))

    def _head(self, head: object) -> int:
        head = _check_int("head", head, minimum=0)
        if head >= self.n_heads:
            raise ValueError(f"head must be < n_heads={self.n_heads}, got {head}")
        return head

    def _cells(self, head: int, rows: np.ndarray, cols: np.ndarray, stage: str) -> np.ndarray:
        """Exact scores or weights of ``rows x cols`` of one head (masked weights exactly 0)."""
        scale = 1.0 / math.sqrt(self.d_head) if self.scale is None else self.scale
        k = self.k[self.kv_head(head), cols] * self.dtype.type(scale)
        scores = self.q[head, rows] @ k.T  # [rows, d_head] @ [d_head, cols] -> [rows, cols]
        if self.alibi:  # -m_h (i - j) for these cells only
            slope = variants.alibi_slopes(self.n_heads)[head : head + 1]  # [1]
            scores += variants.alibi_bias(slope, rows, cols)[0].astype(self.dtype)
        if self.softcap is not None:  # c tanh(scores / c)
            scores = variants.softcap(scores, self.softcap)
        if stage == "scores":
            return scores
        z = scores / self.temperature - self.lse[head, rows, None]  # float64: <= 0 on visible
        kept = self._kept(rows, cols)
        z[~(self.visible(rows, cols) if kept is None else kept)] = -np.inf
        return np.exp(z, out=z).astype(self.dtype, copy=False)

    def _kept(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
        """The visible keys of ``rows x cols`` the selector kept; None without a selector."""
        if self.select is None:
            return None
        keys, _, kept = kept_keys(self.select, self.mask_kind, self.window, rows, self.seq_len)
        out = np.zeros((rows.size, cols.size), dtype=bool)  # keys outside the run: not seen
        inside = (cols >= keys.start) & (cols < keys.stop)
        out[:, inside] = kept[:, cols[inside] - keys.start]
        return out

    def kept(self, rows: object, cols: object) -> np.ndarray | None:
        """``(len(rows), len(cols))`` boolean: the visible keys the selector kept.

        None when the trace has no selector (every visible key is kept).  Visible keys it did
        not keep have weight 0, as masked ones.
        """
        return self._kept(_indices("rows", rows, self.seq_len),
                          _indices("cols", cols, self.seq_len))

    def block(self, head: int, rows: object, cols: object, stage: str = "weights") -> np.ndarray:
        """Exact cells of a zoom: query ``rows`` against key ``cols`` of ``head``.

        ``rows`` and ``cols`` are slices, ranges, integers or integer arrays of positions.
        ``stage="weights"`` gives the weights (masked cells exactly 0), ``"scores"`` the scores
        (``scale`` or ``1 / sqrt(d_head)`` times ``q k^T``, with ALiBi's bias and capped where
        the trace has them) before temperature and mask, as :func:`multi_head_attention` has
        them: shape (len(rows), len(cols)), the trace's dtype.
        """
        head = self._head(head)
        if stage not in ("weights", "scores"):
            raise ValueError(f'stage must be "weights" or "scores", got {stage!r}')
        rows = _indices("rows", rows, self.seq_len)
        cols = _indices("cols", cols, self.seq_len)
        _check_memory(3 * rows.size * cols.size * 8, f"a block of {rows.size} x {cols.size}")
        return self._cells(head, rows, cols, stage)

    def row(self, head: int, query: int) -> np.ndarray:
        """The full row of weights of query ``query`` in ``head``: shape (seq_len,).

        It sums to 1, less the row's sink weight where the trace has sinks.
        """
        query = _check_int("query", query, minimum=0)
        if query >= self.seq_len:
            raise ValueError(f"query must be < seq_len={self.seq_len}, got {query}")
        return self.block(head, query, slice(None))[0]

    def top_keys(self, head: int, query: int, k: int = 10) -> TopKeys:
        """The ``k`` heaviest visible keys of query ``query`` in ``head``, heaviest first.

        Fewer than ``k`` when fewer keys are visible; ties keep the earlier position first.
        """
        k = _check_int("k", k)
        weights = self.row(head, query)
        lo, hi = key_range(self.mask_kind, self.window, np.array([query]), self.seq_len)
        seen = weights[lo[0] : hi[0]]
        order = np.argsort(-seen, kind="stable")[:k]
        return TopKeys(order + lo[0], seen[order])

    def head_weights(
        self, head: int, *, out: np.ndarray | None = None, progress: Progress | None = None,
        cancel: object = None,
    ) -> np.ndarray:
        """The exact ``(seq_len, seq_len)`` weights of ``head`` (or ``out``), computed now.

        Rows sum to 1 (less the sink's weight), masked cells are exactly 0, in the trace's
        dtype.  ``out`` (e.g. a ``numpy.memmap`` for a head larger than memory) receives them
        instead of a new array; the memory check then counts only the working arrays.
        ``progress`` and ``cancel`` as in :func:`long_attention`.
        """
        head, report, n = self._head(head), hooks(progress, cancel), self.seq_len
        if out is not None and (not isinstance(out, np.ndarray) or out.shape != (n, n)):
            raise ValueError(f"out must be an array of shape ({n}, {n}), got {type(out)}")
        rows_per = max(1, (1 << 22) // n)  # ~4 M cells per block
        work = 3 * rows_per * n * 8 + (0 if out is not None else n * n * self.dtype.itemsize)
        _check_memory(work, f"the weights of one head at seq_len={n}")
        result = np.empty((n, n), self.dtype) if out is None else out

        def one_block(rows: slice) -> None:
            idx = np.arange(rows.start, rows.stop)
            lo, hi = key_range(self.mask_kind, self.window, idx, n)
            span = slice(int(lo.min()), int(hi.max()))
            result[rows, : span.start] = 0
            result[rows, span] = self._cells(head, idx, np.arange(n)[span], "weights")
            result[rows, span.stop :] = 0

        blocks = [slice(r, min(n, r + rows_per)) for r in range(0, n, rows_per)]
        run_blocks(one_block, blocks, [b.stop - b.start for b in blocks],
                    *report, f"weights of head {head}")
        return result


def _check_memory(need: int, what: str) -> None:
    if need > LONG_MEMORY_LIMIT_BYTES:
        raise ValueError(f"{what} would need about {need / 2**30:.2f} GiB, over the limit "
                         f"LONG_MEMORY_LIMIT_BYTES = {LONG_MEMORY_LIMIT_BYTES / 2**30:.2f} GiB; "
                         "nothing was computed")


def _block_rows(tile: int) -> int:
    return -(-BLOCK_ROWS // tile) * tile  # BLOCK_ROWS rounded up to whole tiles


def estimate_long_memory(
    seq_len: int, d_model: int, n_heads: int, n_kv_heads: int | None = None,
    dtype: type | np.dtype = np.float32,
) -> int:
    """Bytes :func:`long_attention` allocates for these sizes (an upper bound).

    The kept arrays (``x, q, k, v, head_outputs, concat, output``, entropy, ``lse``, the two
    overviews), the projection before the split into heads, and for each thread at most twelve
    ``(block_rows, seq_len)`` working arrays (one head's scores, weights and softmax
    temporaries, the block's mask, its tile reductions, ALiBi's bias and the soft-cap's).
    """
    d_kv = (n_heads if n_kv_heads is None else n_kv_heads) * (d_model // n_heads)
    item = np.dtype(dtype).itemsize
    tile = overview_tile(seq_len)
    side = -(-seq_len // tile)  # of an overview
    kept = item * seq_len * (5 * d_model + 2 * d_kv) + 8 * 2 * n_heads * seq_len
    kept += item * 2 * n_heads * side * side
    projection = item * seq_len * (d_model + 2 * d_kv)  # x @ w before the split into heads
    block = 12 * _block_rows(tile) * seq_len * max(item, 4) + 2 * d_model**2 * item
    return int(kept + projection + workers() * block)


def _blocks(qkv: tuple, temperature: float, kind: str, window: int | None,
            with_scores: bool, scale: float | None, chosen: BlockVariants,
            with_outputs: bool = True) -> Blocks:
    """A pass over the query blocks (:class:`~attention_widget.long_blocks.Blocks`)."""
    tile = overview_tile(qkv[0].shape[1])
    return Blocks(qkv, temperature, kind, window, with_scores, scale, chosen, tile,
                  _block_rows(tile), with_outputs)


def _linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``x @ w (+ b)`` in ``x``'s dtype."""
    y = x @ w.astype(x.dtype, copy=False)
    if b is not None:
        y += b.astype(x.dtype, copy=False)
    return y


def long_attention(
    x: np.ndarray, params: AttentionParams, *, n_heads: int, n_kv_heads: int | None = None,
    temperature: float = 1.0, mask: str | None = None, window: int | None = None,
    dtype: type | np.dtype = np.float32, progress: Progress | None = None, cancel: object = None,
    alibi: bool = False, softcap: float | None = None, sinks: np.ndarray | None = None,
    rope: float | None = None,
) -> LongTrace:
    """One multi-head self-attention layer, block by block, for sequences of any length.

    The same layer as :func:`~attention_widget.engine.multi_head_attention` (same weights,
    head outputs and output up to rounding), without its ``(n_heads, seq_len, seq_len)``
    arrays: see the module's docstring for what is kept.

    Parameters
    ----------
    x, params, n_heads, n_kv_heads, temperature, window
        As in :func:`~attention_widget.engine.multi_head_attention`.
    mask : None, "none", "causal" or "sliding"
        Which keys each query sees (a described mask, not an array).
    dtype : float32 or float64, default float32
    alibi, softcap, sinks : optional
        The engine's variants, as in :func:`~attention_widget.engine.multi_head_attention`:
        ALiBi's bias with BLOOM's slopes (computed block by block, never for all cells at
        once), the soft-cap ``c`` of the scores, one sink logit per head (n_heads,).
    rope : float or None
        RoPE's base: ``q`` and ``k`` rotated by position after the projection, as in the engine.
    progress : callable(fraction, message), optional
        Called on this thread after the projections and after each block, up to 1.0.
    cancel : threading.Event or object with a ``cancelled`` attribute, optional
        Checked between blocks; once set, :class:`AttentionCancelled` is raised.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, naming it, and before anything is allocated for more memory than
        :data:`LONG_MEMORY_LIMIT_BYTES`.
    """
    if mask is not None and (not isinstance(mask, str) or mask not in MASK_KINDS):
        raise TypeError('mask must be None, "none", "causal" or "sliding" for long inputs (a '
                        "(seq_len, seq_len) array is what the block-wise path avoids), got "
                        f"{type(mask).__name__}")
    x_arr = np.asarray(x)
    if x_arr.ndim != 2 or x_arr.shape[0] == 0:
        raise ValueError(f"x must be a (seq_len, d_model) array, got shape {x_arr.shape}")
    # the engine checks everything else on the first token (a one-token layer costs nothing)
    one = multi_head_attention(x_arr[:1], params, n_heads=n_heads, n_kv_heads=n_kv_heads,
                               temperature=temperature, mask=mask, window=window, dtype=dtype,
                               alibi=alibi, softcap=softcap, sinks=sinks, rope=rope)
    n_heads, n_kv_heads, temperature, dt = one.n_heads, one.n_kv_heads, one.temperature, one.q.dtype
    chosen = BlockVariants(one.alibi, one.softcap, one.sinks)
    kind = mask or "none"
    window = int(window) if kind == "sliding" else None
    progress, cancelled = hooks(progress, cancel)
    seq_len = x_arr.shape[0]
    need = estimate_long_memory(seq_len, params.d_model, n_heads, n_kv_heads, dt)
    _check_memory(need, f"seq_len={seq_len} with n_heads={n_heads} in {dt}")
    x_arr = np.ascontiguousarray(x_arr, dtype=dt)
    if not np.isfinite(x_arr).all():
        raise ValueError("x contains NaN or infinity; every value must be finite")
    progress(0.0, "projecting x to queries, keys and values")
    # 1. project: [seq, d_model] @ [d_model, h * d_head] -> [h, seq, d_head]
    q = split_heads(_linear(x_arr, params.w_q, params.b_q), n_heads)
    k = split_heads(_linear(x_arr, params.w_k, params.b_k), n_kv_heads)
    v = split_heads(_linear(x_arr, params.w_v, params.b_v), n_kv_heads)
    if one.rope is not None:  # RoPE: q and k turned by position
        q, k = variants.rope(q, one.rope), variants.rope(k, one.rope)
    if cancelled():
        raise AttentionCancelled("attention: cancelled")
    # 2. attend, block by block
    att = _blocks((q, k, v), temperature, kind, window, True, None, chosen).run(
        progress, cancelled, "attention")
    outputs = _outputs(att.head_outputs, params)
    return LongTrace(x=x_arr, q=q, k=k, v=v, outputs=lambda: outputs, **_drawn(att),
                     mask_kind=kind, window=window, temperature=temperature, rope=one.rope,
                     **chosen._asdict())


def long_with_temperature(
    trace: LongTrace, params: AttentionParams, temperature: float, *,
    progress: Progress | None = None, cancel: object = None,
) -> LongTrace:
    """The same layer at another softmax temperature ``T > 0``, block by block.

    The scores are not kept (at 8,192 tokens and 8 heads they would be 2 GiB in float32), so
    each block's ``q k^T`` is computed again.  ``x, q, k, v`` and the scores overview (scores
    come before the temperature) are shared with ``trace``; ``lse``, the entropy and the
    weights overview are new.  The head outputs, concat and output, which no view draws, are
    computed in another pass over the blocks when first read.  ``params`` are those ``trace``
    was computed with (``w_o``, ``b_o`` are used); ``progress`` and ``cancel`` as in
    :func:`long_attention`.  ``trace`` is never changed, also when the step is cancelled.
    """
    if not isinstance(trace, LongTrace):
        raise TypeError(f"trace must be a LongTrace, got {type(trace).__name__}")
    if not isinstance(params, AttentionParams) or params.d_model != trace.d_model:
        raise TypeError(f"params must be the AttentionParams (d_model={trace.d_model}) the "
                        f"trace was computed with, got {type(params).__name__}")
    temperature = _check_temperature(temperature)
    progress, cancelled = hooks(progress, cancel)
    need = estimate_long_memory(trace.seq_len, trace.d_model, trace.n_heads,
                                trace.n_kv_heads, trace.dtype)
    _check_memory(need, f"a temperature step at seq_len={trace.seq_len}")
    chosen = BlockVariants(trace.alibi, trace.softcap, trace.sinks, trace.select)
    qkv, kind, window = (trace.q, trace.k, trace.v), trace.mask_kind, trace.window
    att = _blocks(qkv, temperature, kind, window, False, trace.scale, chosen,
                  with_outputs=False).run(progress, cancelled, f"temperature {temperature:g}")

    def outputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # when first read
        again = _blocks(qkv, temperature, kind, window, False, trace.scale, chosen).run(
            *hooks(None, None), f"outputs at temperature {temperature:g}")
        return _outputs(again.head_outputs, params)

    att = att._replace(scores_overview=trace.scores_overview)
    return replace(trace, outputs=outputs, **_drawn(att), temperature=temperature)


def _outputs(head_outputs: np.ndarray, params: AttentionParams) -> tuple:
    """The heads combined and ``W_O`` applied: ``(head_outputs, concat, output)``."""
    # 3. combine: [h, seq, d_head] -> [seq, h * d_head] -> @ w_o -> [seq, d_model]
    concat = merge_heads(head_outputs)
    output = _linear(concat, params.w_o, params.b_o)
    if not np.isfinite(output.sum()) and not np.isfinite(output).all():
        raise overflow_error(output.dtype)
    return head_outputs, concat, output


def _drawn(att: LongAttended) -> dict:
    """The fields of a :class:`LongTrace` the views draw, checked for an overflow."""
    if not np.isfinite(att.lse).all():  # scores that overflowed: NaN weights
        raise overflow_error(att.entropy.dtype)
    return {"entropy": att.entropy, "lse": att.lse, "weights_overview": att.weights_overview,
            "scores_overview": att.scores_overview, "tile": att.tile,
            "sink_weights": att.sink_weights}


def long_attend(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, *, scale: float | None = None,
    temperature: float = 1.0, mask: str | None = None, window: int | None = None,
    scores_overview: bool = True, progress: Progress | None = None, cancel: object = None,
    alibi: bool = False, softcap: float | None = None, sinks: np.ndarray | None = None,
    select: Selector | None = None, head_outputs: bool = True,
) -> LongAttended:
    """:func:`~attention_widget.engine.attend` block by block, on ready-made q, k and v.

    For queries and keys made elsewhere (a pretrained model's, after its norms and rotary
    embedding): ``q`` (n_heads, seq_len, d_head), ``k`` (n_kv_heads, seq_len, d_head) and ``v``
    (n_kv_heads, seq_len, d_v) of one float dtype, over the same tokens; ``scale`` multiplies
    ``q k^T`` (default ``1 / sqrt(d_head)``); ``scores_overview=False`` skips that overview,
    ``head_outputs=False`` the weighted sums of values (the result's ``head_outputs`` is None).
    Other arguments (the variants ``alibi``, ``softcap`` and ``sinks`` too: with sinks the
    result's ``sink_weights`` are each row's weight on its head's sink) and the errors as in
    :func:`long_attention`; ``select`` a selector's keys (:attr:`LongTrace.select`).
    """
    q, k, v = (np.asarray(a) for a in (q, k, v))
    shapes = [a.shape for a in (q, k, v)]
    if ([len(sh) for sh in shapes] != [3, 3, 3] or not 0 < shapes[1][0] <= shapes[0][0]
            or shapes[0][0] % shapes[1][0] or shapes[0][1:] != shapes[1][1:]
            or shapes[1][:2] != shapes[2][:2] or shapes[0][1] == 0):
        raise ValueError("q, k, v must have shapes (n_heads, seq_len, d_head), (n_kv_heads, "
                         "seq_len, d_head), (n_kv_heads, seq_len, d_v), n_kv_heads dividing "
                         f"n_heads, got {shapes}")
    if len({q.dtype, k.dtype, v.dtype}) != 1 or q.dtype not in (np.float32, np.float64):
        raise TypeError(f"q, k, v must share one dtype, float32 or float64, got {q.dtype}, "
                        f"{k.dtype}, {v.dtype}")
    if mask not in (None, *MASK_KINDS):
        raise ValueError(f'mask must be None, "none", "causal" or "sliding", got {mask!r}')
    kind = mask or "none"
    window = _check_int("window", window) if kind == "sliding" else None
    temperature = _check_temperature(temperature)
    progress, cancelled = hooks(progress, cancel)
    (n_heads, n, d_head), n_kv = shapes[0], shapes[1][0]
    if select is not None and not callable(select):
        raise TypeError(f"select must be None or a function, got {type(select).__name__}")
    chosen = BlockVariants(*check_variants(n_heads, d_head, alibi=alibi, softcap=softcap,
                                       sinks=sinks)[1:4], select)
    need = estimate_long_memory(n, n_heads * max(d_head, shapes[2][2]), n_heads, n_kv, q.dtype)
    _check_memory(need, f"attention over seq_len={n} with n_heads={n_heads}")  # (upper bound)
    return _blocks((q, k, v), temperature, kind, window, scores_overview, scale, chosen,
                   head_outputs).run(progress, cancelled, "attention")


def attention_trace(
    x: np.ndarray, params: AttentionParams, *, n_heads: int, n_kv_heads: int | None = None,
    temperature: float = 1.0, mask: str | None = None, window: int | None = None,
    progress: Progress | None = None, cancel: object = None, alibi: bool = False,
    softcap: float | None = None, sinks: np.ndarray | None = None, rope: float | None = None,
) -> AttentionTrace | LongTrace:
    """The trace for a sequence of any length, chosen by size.

    Up to :data:`LONG_THRESHOLD` tokens the full float64 trace of
    :func:`~attention_widget.engine.multi_head_attention`; above, a float32 :class:`LongTrace`
    from :func:`long_attention`.  Arguments as in :func:`long_attention`.
    """
    seq_len = np.shape(x)[0] if np.ndim(x) else 0
    if seq_len > LONG_THRESHOLD:
        return long_attention(x, params, n_heads=n_heads, n_kv_heads=n_kv_heads,
                              temperature=temperature, mask=mask, window=window,
                              progress=progress, cancel=cancel, alibi=alibi, softcap=softcap,
                              sinks=sinks, rope=rope)
    progress, cancelled = hooks(progress, cancel)
    if cancelled():
        raise AttentionCancelled("attention: cancelled")
    trace = multi_head_attention(x, params, n_heads=n_heads, n_kv_heads=n_kv_heads,
                                 temperature=temperature, mask=mask, window=window,
                                 alibi=alibi, softcap=softcap, sinks=sinks, rope=rope)
    progress(1.0, "attention: done")
    return trace

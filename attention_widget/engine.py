"""Multi-head self-attention in NumPy, with every intermediate kept.

One attention layer, numbered as in "Attention Is All You Need" (section 3.2):

1. project:  ``Q = X W_Q``, ``K = X W_K``, ``V = X W_V``, split into heads
2. attend:   ``scores = Q K^T / sqrt(d_head)``; ``weights = softmax(scores / T)`` with
   masked keys at exactly 0; ``head_out = weights V``
3. combine:  ``concat = [head_1 ... head_h]``; ``output = concat W_O``

The paper's row-vector convention is used throughout: a sequence is a ``(seq_len, d_model)``
array and ``Q = X @ w_q``.  Grouped-query attention (``n_kv_heads < n_heads``, as in Llama and
Qwen3) lets consecutive groups of query heads share one key/value head.

This module imports only NumPy and the standard library, so it can be used and tested without
Jupyter.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import NamedTuple, Union

import numpy as np

__all__ = [
    "BUFFER_POOL_BYTES",
    "MEMORY_LIMIT_BYTES",
    "Attended",
    "AttentionParams",
    "AttentionTrace",
    "attend",
    "causal_mask",
    "estimate_memory",
    "free_buffers",
    "init_params",
    "merge_heads",
    "multi_head_attention",
    "sliding_window_mask",
    "softmax",
    "split_heads",
    "with_temperature",
]

#: Largest working memory (bytes) one call of :func:`multi_head_attention` may need.  Above it
#: the call raises ``ValueError`` before allocating anything, instead of swapping the machine.
#: The two ``(n_heads, seq_len, seq_len)`` arrays dominate: 4 GiB is, in float64, about
#: 4,400 tokens with 12 heads.
MEMORY_LIMIT_BYTES = 4 * 2**30

#: Memory (bytes) the engine may keep, after a trace is gone, to reuse for the next call's large
#: arrays (see :func:`free_buffers`).  Set it to 0 to always allocate fresh memory.
BUFFER_POOL_BYTES = 256 * 2**20

_BLOCK = 64  # side of the seeded blocks the weight matrices are cut from

MaskLike = Union[None, str, np.ndarray]  # noqa: UP007 (a runtime alias on Python 3.10)
DTypes = (np.float32, np.float64)


# --------------------------------------------------------------------------------------------
# argument checks (raised at the public boundary, with sentences a student understands)
# --------------------------------------------------------------------------------------------
def _check_int(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_heads(d_model: int, n_heads: object, n_kv_heads: object) -> tuple[int, int, int]:
    """Return ``(n_heads, n_kv_heads, d_head)`` after checking that they divide evenly."""
    n_heads = _check_int("n_heads", n_heads)
    n_kv_heads = n_heads if n_kv_heads is None else _check_int("n_kv_heads", n_kv_heads)
    if d_model % n_heads:
        divisors = [h for h in range(1, d_model + 1) if d_model % h == 0]
        raise ValueError(
            f"d_model={d_model} is not divisible by n_heads={n_heads}: each head gets "
            f"d_model / n_heads columns, so n_heads must be one of {divisors}"
        )
    if n_kv_heads > n_heads or n_heads % n_kv_heads:
        divisors = [h for h in range(1, n_heads + 1) if n_heads % h == 0]
        raise ValueError(
            f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}: query heads share "
            f"key/value heads in equal groups, so n_kv_heads must be one of {divisors}"
        )
    return n_heads, n_kv_heads, d_model // n_heads


def _check_temperature(temperature: object) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise TypeError(
            f"temperature must be a real number, got {temperature!r} "
            f"({type(temperature).__name__})"
        )
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {t!r}")
    return t


def _check_dtype(dtype: object) -> np.dtype:
    try:
        dt = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError as err:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from err
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _as_float_matrix(name: str, value: object, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Convert ``value`` to a finite float64 array, naming ``name`` in every error."""
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    arr = np.asarray(value)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == bool
    ):
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity; every value must be finite")
    return arr


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
    b_o : ndarray, shape (d_model,), optional
        Biases, or None for a layer without bias.

    Notes
    -----
    The arrays are stored as read-only float64 copies; :meth:`as_dtype` gives cached float32
    views for fast computation.
    """

    w_q: np.ndarray
    w_k: np.ndarray
    w_v: np.ndarray
    w_o: np.ndarray
    b_q: np.ndarray | None = None
    b_k: np.ndarray | None = None
    b_v: np.ndarray | None = None
    b_o: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        w_q = _as_float_matrix("params.w_q", self.w_q)
        if w_q.ndim != 2 or w_q.shape[0] != w_q.shape[1] or w_q.shape[0] == 0:
            raise ValueError(
                f"params.w_q must be a square (d_model, d_model) array, got {w_q.shape}"
            )
        d = w_q.shape[0]
        w_k = _as_float_matrix("params.w_k", self.w_k)
        if w_k.ndim != 2 or w_k.shape[0] != d or w_k.shape[1] == 0 or w_k.shape[1] > d:
            raise ValueError(
                f"params.w_k must have shape (d_model={d}, n_kv_heads * d_head), got {w_k.shape}"
            )
        d_kv = w_k.shape[1]
        arrays = {
            "w_q": w_q,
            "w_k": w_k,
            "w_v": _as_float_matrix("params.w_v", self.w_v, (d, d_kv)),
            "w_o": _as_float_matrix("params.w_o", self.w_o, (d, d)),
        }
        for name, size in (("b_q", d), ("b_k", d_kv), ("b_v", d_kv), ("b_o", d)):
            value = getattr(self, name)
            arrays[name] = (
                None if value is None else _as_float_matrix(f"params.{name}", value, (size,))
            )
        for name, arr in arrays.items():
            if arr is not None:
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

    def as_dtype(self, dtype: np.dtype) -> dict[str, np.ndarray | None]:
        """The fused ``[w_q | w_k | w_v]`` projection, ``w_o`` and biases in ``dtype`` (cached)."""
        key = np.dtype(dtype).str
        if key not in self._cache:
            biases = (self.b_q, self.b_k, self.b_v)
            self._cache[key] = {
                "w_qkv": np.ascontiguousarray(
                    np.concatenate([self.w_q, self.w_k, self.w_v], axis=1), dtype=dtype
                ),
                "b_qkv": None
                if any(b is None for b in biases)
                else np.concatenate(biases).astype(dtype),
                "w_o": np.ascontiguousarray(self.w_o, dtype=dtype),
                "b_o": None if self.b_o is None else self.b_o.astype(dtype),
            }
        return self._cache[key]


def _seeded_matrix(seed: int, which: int, rows: int, cols: int) -> np.ndarray:
    """Leading ``(rows, cols)`` block of an unbounded seeded standard-normal matrix.

    The matrix is cut into 64 x 64 blocks, each drawn from its own generator keyed by
    ``(seed, which, block_row, block_col)``.  A larger request therefore contains every smaller
    one as its top-left corner: growing ``d_model`` adds rows and columns, it never redraws the
    old ones.
    """
    out = np.empty((rows, cols))
    for bi in range(0, rows, _BLOCK):
        for bj in range(0, cols, _BLOCK):
            block = np.random.default_rng([seed, which, bi // _BLOCK, bj // _BLOCK])
            tile = block.standard_normal((_BLOCK, _BLOCK))
            out[bi : bi + _BLOCK, bj : bj + _BLOCK] = tile[: rows - bi, : cols - bj]
    return out


@lru_cache(maxsize=64)
def _init_full(d_model: int, seed: int, bias: bool) -> tuple[np.ndarray | None, ...]:
    scale = 1.0 / math.sqrt(d_model)  # keeps the variance of X @ W near that of X
    mats = [_seeded_matrix(seed, which, d_model, d_model) * scale for which in range(4)]
    biases = [
        0.1 * _seeded_matrix(seed, 4 + which, 1, d_model)[0] if bias else None
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
    d_model = _check_int("d_model", d_model)
    n_heads, n_kv_heads, d_head = _check_heads(d_model, n_heads, n_kv_heads)
    seed = _check_int("seed", seed, minimum=0)
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
    seq_len = _check_int("seq_len", seq_len)
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
    seq_len = _check_int("seq_len", seq_len)
    window = _check_int("window", window)
    i = np.arange(seq_len)
    diff = i[:, None] - i[None, :]
    return (diff >= 0) & (diff < window)


def _resolve_mask(
    mask: MaskLike, seq_len: int, window: int | None, n_keys: int | None = None
) -> np.ndarray | None:
    """Return a boolean (seq_len, n_keys) array, or None for full attention."""
    n_keys = seq_len if n_keys is None else n_keys
    if mask is None:
        return None
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
    arr = np.asarray(mask)
    if arr.dtype != bool:
        raise TypeError(f"mask array must be boolean (True = may attend), got dtype {arr.dtype}")
    if arr.shape != (seq_len, n_keys):
        raise ValueError(
            f"mask must have shape (seq_len, seq_len) = ({seq_len}, {n_keys}), got {arr.shape}"
        )
    empty = np.flatnonzero(~arr.any(axis=1))
    if empty.size:
        raise ValueError(
            f"mask row {int(empty[0])} allows no key: every query must attend to at least one "
            "key (softmax over nothing is undefined)"
        )
    if arr.all():
        return None
    return arr


# --------------------------------------------------------------------------------------------
# the trace
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class AttentionTrace:
    """Every intermediate of one multi-head self-attention layer.

    Attributes
    ----------
    x : ndarray, shape (seq_len, d_model)
        The input.
    q : ndarray, shape (n_heads, seq_len, d_head)
        Queries, ``X @ w_q`` split into heads.
    k, v : ndarray, shape (n_kv_heads, seq_len, d_head)
        Keys and values, split into key/value heads.
    scores : ndarray, shape (n_heads, seq_len, seq_len)
        ``q @ k^T / sqrt(d_head)``, before temperature and mask.
    weights : ndarray, shape (n_heads, seq_len, seq_len)
        ``softmax(scores / temperature)`` over keys; masked entries are exactly 0, rows sum to 1.
    head_outputs : ndarray, shape (n_heads, seq_len, d_head)
        ``weights @ v`` for each head.
    concat : ndarray, shape (seq_len, d_model)
        Head outputs side by side.
    output : ndarray, shape (seq_len, d_model)
        ``concat @ w_o (+ b_o)``.
    mask : ndarray of bool, shape (seq_len, seq_len)
        True where query ``i`` may attend key ``j`` (all True without a mask).
    entropy : ndarray, shape (n_heads, seq_len)
        Entropy (nats) of each row of ``weights``: 0 for a one-hot row, ``log(#keys)`` for a
        uniform one.  Low entropy = a sharp head.
    temperature : float
        The softmax temperature used.
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


# --------------------------------------------------------------------------------------------
# the computation
# --------------------------------------------------------------------------------------------
def estimate_memory(
    seq_len: int, d_model: int, n_heads: int, n_kv_heads: int | None = None, dtype=np.float64
) -> int:
    """Bytes of working memory :func:`multi_head_attention` allocates for these sizes.

    Returns
    -------
    int
        Two ``(n_heads, seq_len, seq_len)`` arrays (scores and weights), the
        ``(seq_len, seq_len)`` mask (boolean, and two float forms for the softmax), plus the
        ``(seq_len, ...)`` projections, head outputs, concat and output.
    """
    n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
    d_head = d_model // n_heads
    itemsize = np.dtype(dtype).itemsize
    square = (2 * n_heads + 2) * seq_len * seq_len
    rows = seq_len * (4 * d_model + 4 * n_kv_heads * d_head) + seq_len * (n_heads + 3)
    return int(itemsize * (square + rows) + seq_len * seq_len)  # + the boolean mask


# Target size (bytes) of one block of scores: the softmax of a block runs while the block is
# still in the core's cache, instead of streaming the whole (n_heads, seq, seq) array through
# memory once per step.  2 MiB rather than 512 KiB: a block costs about a dozen NumPy calls,
# and the Python between them holds the GIL; one thread runs as fast either way, but two threads
# working at once lost 20-70 % to each other with 512 KiB blocks and 14 % with 2 MiB (measured
# here: the public softmax of (12, 1024, 1024) 56 -> 45 ms, a layer at (1024, 768, 12) 105 ->
# 99 ms).
_BLOCK_BYTES = 1 << 21
# Below this many scores one thread does the softmax: starting a second costs more than it saves.
_THREAD_MIN_ELEMENTS = 1 << 18
_EXECUTOR: list = []  # the lazily created worker pool, shared by every call
_EXECUTOR_LOCK = threading.Lock()


def _n_threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


def _executor() -> ThreadPoolExecutor:
    with _EXECUTOR_LOCK:
        if not _EXECUTOR:
            _EXECUTOR.append(
                ThreadPoolExecutor(
                    max_workers=max(1, _n_threads() - 1), thread_name_prefix="attention"
                )
            )
    return _EXECUTOR[0]


def _softmax_block(
    z: np.ndarray,
    w: np.ndarray,
    mask: tuple[np.ndarray, np.ndarray] | None,
    inv_temperature: float,
    entropy: np.ndarray,
    bound: float | None = None,
) -> None:
    """Masked softmax of ``z / T`` over the last axis, written to ``w``; entropy to ``entropy``.

    Parameters
    ----------
    z : ndarray, shape (..., rows, seq_len)
        Scores; read only, finite.
    w : ndarray, same shape as ``z``
        Output: the weights.  Masked entries come out exactly 0.
    mask : (bias, keep), each an ndarray of shape (rows, seq_len), optional
        ``bias`` is 0 where a key may be attended and ``-inf`` where not (every row has a 0);
        ``keep`` is 1.0 and 0.0 at the same places.
    inv_temperature : float
        ``1 / T``.
    entropy : ndarray, shape (..., rows)
        Output: ``H = -sum_j w_j log w_j`` per row, in nats.
    bound : float, optional
        A known bound on ``|z|`` (for scores ``q . k``: ``max |q| * max |k|``, Cauchy-Schwarz);
        when it puts ``z / T`` inside the fast window, ``z`` is not searched for its extremes.

    Notes
    -----
    Softmax does not change when a row is shifted by a constant ``m``:
    ``e_j = exp(z_j / T - m)``, ``w_j = e_j / S`` with ``S = sum_j e_j`` (masked ``e_j = 0``),
    and ``H = log S - sum_j w_j (z_j / T - m)``, which needs no logarithm of the weights.

    * Fast path, ``m = 0``: when every ``z / T`` of the block lies in a window where ``exp``
      neither overflows (nor does a row sum) nor gives subnormal numbers -- the usual case --
      the weights are ``exp(z / T)`` normalised, with no per-row maximum to find and subtract.
    * Safe path otherwise, ``m`` = the row maximum of the allowed ``z / T``: every exponent is
      <= 0 and the maximum gives ``exp(0) = 1``.  Exponents are clamped at -700 (float64;
      -85 in float32), just above ``log(tiny)``: below it ``exp`` returns subnormal numbers,
      which CPUs compute up to 100 times more slowly.  A weight below ``exp(-700) = 1e-304``
      thus reads 1e-304 instead (a difference nothing can display), and a masked one is then
      set to exactly 0.
    """
    low, high = _EXP_WINDOW[w.dtype.char]
    if (bound is not None and bound * inv_temperature < min(-low, high)) or (
        low < float(z.min()) * inv_temperature and float(z.max()) * inv_temperature < high
    ):
        m = None
        if inv_temperature != 1.0:
            np.multiply(z, inv_temperature, out=w)
            np.exp(w, out=w)
        else:
            np.exp(z, out=w)
    else:
        if mask is not None:
            np.add(z, mask[0], out=w)  # masked keys become -inf, the others stay exact
            m = w.max(axis=-1, keepdims=True)
            w -= m
        else:
            m = z.max(axis=-1, keepdims=True)
            np.subtract(z, m, out=w)  # <= 0 everywhere, exactly 0 at the maximum
        if inv_temperature != 1.0:
            w *= inv_temperature
            m *= inv_temperature
        np.maximum(w, _EXP_FLOOR[w.dtype.char], out=w)
        np.exp(w, out=w)
    if mask is not None:
        w *= mask[1]  # masked entries exactly 0
    total = w.sum(axis=-1)  # > 0: every row has an allowed key
    ez = np.einsum("...j,...j->...", w, z)  # sum_j e_j z_j
    np.reciprocal(total, out=total)  # now 1 / S
    w *= total[..., None]
    ez *= total
    ez *= inv_temperature  # sum_j w_j z_j / T
    if m is not None:
        ez -= m[..., 0]
    np.log(total, out=total)  # -log S
    np.negative(total, out=entropy)
    entropy -= ez
    np.maximum(entropy, 0.0, out=entropy)  # rounding can give -1e-16 for a one-hot row


# exp(x) is a normal number, computed on the fast vector path, for x >= these
# (float64 "d", float32 "f"; exp(-708) is normal but already takes a slow path)
_EXP_FLOOR = {"d": -700.0, "f": -85.0}
# exp(x) is normal, and a sum of up to 10**9 such numbers finite, for low < x < high
_EXP_WINDOW = {"d": (-700.0, 600.0), "f": (-80.0, 60.0)}


def _mask_arrays(mask: np.ndarray | None, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray] | None:
    """``(bias, keep)`` for :func:`_softmax_block`: 0/-inf and 1/0 where ``mask`` is True/False."""
    if mask is None:
        return None
    keep = _POOL.empty(mask.shape, dtype)
    np.copyto(keep, mask)
    bias = _POOL.empty(mask.shape, dtype)
    bias.fill(0.0)
    bias[~mask] = -np.inf
    return bias, keep


def _blocks(
    n_heads: int, n_rows: int, row_bytes: int, size: int
) -> list[tuple[slice, slice]]:
    """Cut (n_heads, n_rows) rows of ``row_bytes`` each into blocks of about ``size`` bytes.

    Whole heads are grouped when one head is smaller than a block (short sequences: few calls);
    otherwise each head is cut into runs of rows.
    """
    head_bytes = n_rows * row_bytes
    if head_bytes <= size:
        per = max(1, size // max(head_bytes, 1))
        every = slice(None)
        return [(slice(h, min(n_heads, h + per)), every) for h in range(0, n_heads, per)]
    rows = max(1, size // max(row_bytes, 1))
    return [
        (slice(h, h + 1), slice(r, min(n_rows, r + rows)))
        for h in range(n_heads)
        for r in range(0, n_rows, rows)
    ]


def _softmax_rows(
    z: np.ndarray, mask: np.ndarray | None, inv_temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """Turn (n_heads, seq_len, seq_len) scores into weights in place; return (weights, entropy).

    Kept for callers of the first version; :func:`softmax` is the public form.
    """
    weights, entropy = _softmax(z.copy(), mask, inv_temperature, out=z)
    return weights, entropy


def _softmax(
    scores: np.ndarray,
    mask: np.ndarray | None,
    inv_temperature: float,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Masked softmax over the last axis of a C-contiguous (..., rows, seq) array."""
    weights = np.empty_like(scores) if out is None else out
    entropy = np.empty(scores.shape[:-1], dtype=scores.dtype)
    n_rows, seq_len = scores.shape[-2:]
    _softmax_into(
        scores.reshape(-1, n_rows, seq_len),
        weights.reshape(-1, n_rows, seq_len),
        entropy.reshape(-1, n_rows),
        _mask_arrays(mask, scores.dtype),
        slice(None),
        inv_temperature,
    )
    return weights, entropy


def _softmax_into(
    z: np.ndarray,
    w: np.ndarray,
    entropy: np.ndarray,
    masks: tuple[np.ndarray, np.ndarray] | None,
    mask_rows: slice,
    inv_temperature: float,
    threads: bool = True,
    bound: float | None = None,
) -> None:
    """Softmax of (heads, rows, seq) scores ``z`` into ``w`` and ``entropy``, block by block.

    ``mask_rows`` selects the rows of ``masks`` that belong to ``z``'s rows.  Large inputs are
    split between threads (NumPy's ufuncs release the GIL), each working through its share of
    cache-sized blocks.
    """
    n_rows, seq_len = z.shape[-2:]
    blocks = _blocks(z.shape[0], n_rows, seq_len * z.itemsize, _BLOCK_BYTES)
    if masks is not None:
        masks = (masks[0][mask_rows], masks[1][mask_rows])

    def work(part: list[tuple[slice, slice]]) -> None:
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            for heads, rows in part:
                block_mask = None if masks is None else (masks[0][rows], masks[1][rows])
                _softmax_block(
                    z[heads, rows], w[heads, rows], block_mask, inv_temperature,
                    entropy[heads, rows], bound,
                )

    n_threads = min(_n_threads(), len(blocks)) if threads else 1
    if n_threads < 2 or z.size < _THREAD_MIN_ELEMENTS:
        work(blocks)
    else:
        # interleaved shares: with a causal mask, early and late rows cost the same
        futures = [_executor().submit(work, blocks[i::n_threads]) for i in range(1, n_threads)]
        work(blocks[0::n_threads])
        for future in futures:
            future.result()


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
    inv_t = 1.0 / _check_temperature(temperature)
    z = _as_float_matrix("scores", scores)
    if isinstance(scores, np.ndarray) and scores.dtype == np.float32:
        z = scores
    if z.ndim < 1 or z.size == 0:
        raise ValueError(f"scores must be a non-empty array, got shape {z.shape}")
    z2 = z.reshape((1,) * (2 - z.ndim) + z.shape) if z.ndim < 2 else z
    resolved = None if mask is None else _resolve_mask(mask, z2.shape[-2], None, z2.shape[-1])
    weights, _ = _softmax(np.ascontiguousarray(z2), resolved, inv_t)
    return weights.reshape(z.shape)


class Attended(NamedTuple):
    """What :func:`attend` returns: the attention step of every head."""

    scores: np.ndarray  # (n_heads, n_q, n_k): scale * q k^T, before temperature and mask
    weights: np.ndarray  # (n_heads, n_q, n_k): softmax(scores / T), masked keys exactly 0
    head_outputs: np.ndarray  # (n_heads, n_q, d_v): weights @ v
    entropy: np.ndarray  # (n_heads, n_q): entropy of each row of weights, in nats


def split_heads(x: np.ndarray, n_heads: int) -> np.ndarray:
    """``(seq, n_heads * d_head) -> (n_heads, seq, d_head)`` (contiguous)."""
    seq, width = x.shape
    return np.ascontiguousarray(x.reshape(seq, n_heads, width // n_heads).transpose(1, 0, 2))


def merge_heads(heads: np.ndarray) -> np.ndarray:
    """``(n_heads, seq, d_head) -> (seq, n_heads * d_head)``, heads side by side."""
    n_heads, seq, d_head = heads.shape
    return np.ascontiguousarray(heads.transpose(1, 0, 2)).reshape(seq, n_heads * d_head)


def attend(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    temperature: float = 1.0,
    scale: float | None = None,
) -> Attended:
    """The attention step of every head: scores, softmax, and the weighted sum of values.

    Parameters
    ----------
    q : ndarray, shape (n_heads, n_q, d_head)
    k : ndarray, shape (n_kv_heads, n_k, d_head)
    v : ndarray, shape (n_kv_heads, n_k, d_v)
        Query head ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``.
    mask : ndarray of bool, shape (n_q, n_k), optional
        True where a query may attend a key; every row needs one True.
    temperature : float, default 1.0
    scale : float, optional
        Multiplies ``q k^T``; default ``1 / sqrt(d_head)``.

    Returns
    -------
    Attended
        ``scores = scale * q k^T`` (before temperature and mask), ``weights =
        softmax(scores / T)``, ``head_outputs = weights @ v`` and the row entropy.
    """
    n_heads, n_q, d_head = q.shape
    n_kv, n_k, d_v = v.shape
    group = n_heads // n_kv
    s = 1.0 / math.sqrt(d_head) if scale is None else float(scale)
    k_t = (k * q.dtype.type(s)).transpose(0, 2, 1)
    scores = np.matmul(q.reshape(n_kv, group * n_q, d_head), k_t).reshape(n_heads, n_q, n_k)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        weights, entropy = _softmax(scores, mask, 1.0 / temperature)
    out = np.matmul(weights.reshape(n_kv, group * n_q, n_k), v).reshape(n_heads, n_q, d_v)
    return Attended(scores, weights, out, entropy)


def _attend(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, inv_temperature: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step 2 of the layer; returns ``scores, weights, head_outputs, entropy``.

    ``q`` is (n_heads, seq, d_head), ``k`` and ``v`` are (n_kv_heads, seq, d_head).  Each of the
    two products is one batched BLAS call (the query heads of a group share their K/V head, so
    their rows are stacked); the softmax between them runs in cache-sized blocks, split
    between threads.  (Cutting the products into cache-sized chunks as well measured no
    faster: OpenBLAS pays a thread hand-over per call.)
    """
    n_heads, seq_len, d_head = q.shape
    n_kv = k.shape[0]
    group = n_heads // n_kv
    dt = q.dtype
    # [kv, seq, d_head] -> [kv, d_head, seq], with 1 / sqrt(d_head) folded in
    k_t = (k * dt.type(1.0 / math.sqrt(d_head))).transpose(0, 2, 1)
    # [kv, group * seq, d_head] @ [kv, d_head, seq] -> [kv, group * seq, seq] = [h, seq, seq]
    scores = np.matmul(q.reshape(n_kv, group * seq_len, d_head), k_t).reshape(
        n_heads, seq_len, seq_len
    )
    weights, entropy = _softmax(scores, mask, inv_temperature)
    return scores, weights, _mix_values(weights, v), entropy


def _mix_values(weights: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``weights @ v`` per head: (n_heads, seq, seq) and (n_kv_heads, seq, d_head) -> head outputs.

    Computed transposed: OpenBLAS is faster at (d_head, seq) @ (seq, rows) than at the
    (rows, seq) @ (seq, d_head) product it equals, transposed.
    """
    n_heads, seq_len, _ = weights.shape
    n_kv, _, d_head = v.shape
    group = n_heads // n_kv
    # [kv, d_head, seq] @ [kv, seq, group * seq] -> [kv, d_head, group * seq]
    out_t = np.matmul(
        v.transpose(0, 2, 1), weights.reshape(n_kv, group * seq_len, seq_len).transpose(0, 2, 1)
    )
    # [kv, d_head, group, seq] -> [kv, group, seq, d_head] = [h, seq, d_head]
    return np.ascontiguousarray(
        out_t.reshape(n_kv, d_head, group, seq_len).transpose(0, 2, 3, 1)
    ).reshape(n_heads, seq_len, d_head)


class _OpenBLASThreads:
    """Hold OpenBLAS at one thread while the engine's own threads share out the work.

    Large layers run fastest here when each of our threads calls single-threaded BLAS on its
    own heads (or rows): OpenBLAS's worker threads spin for a while after every call, and
    that spinning takes the cores away from the NumPy work (softmax) between the calls, all
    the more on a busy machine.  OpenBLAS has no per-call thread setting, so, like
    ``threadpoolctl``, this finds the library NumPy loaded and sets its thread count for the
    duration of the call (restored afterwards; nested and concurrent calls are counted).
    Without an OpenBLAS (other BLAS, other platforms) the engine keeps its simple path.
    """

    _NAMES = (
        ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
        ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
        ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
        ("openblas_set_num_threads", "openblas_get_num_threads"),
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 1
        self._funcs: tuple | None = None
        self._searched = False

    def _find(self) -> tuple | None:
        import ctypes  # only when a large layer first runs

        try:
            with open("/proc/self/maps") as maps:
                paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
        except OSError:  # not Linux
            return None
        # NumPy's own copy first (others, e.g. SciPy's, may be loaded too)
        for path in sorted(paths, key=lambda path: ("numpy" not in path, path)):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for set_name, get_name in self._NAMES:
                if hasattr(lib, set_name) and hasattr(lib, get_name):
                    setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    getter.argtypes, getter.restype = [], ctypes.c_int
                    return setter, getter
        return None

    def available(self) -> bool:
        """Whether OpenBLAS was found (searched once)."""
        if not self._searched:
            with self._lock:
                if not self._searched:
                    try:
                        self._funcs = self._find()
                    except Exception:  # any surprise: keep the plain path
                        self._funcs = None
                    self._searched = True
        return self._funcs is not None

    def allowed(self) -> int:
        """OpenBLAS's thread count outside our calls (e.g. 1 under OPENBLAS_NUM_THREADS=1)."""
        with self._lock:
            return self._saved if self._users else self._funcs[1]()

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                self._saved = self._funcs[1]()
                self._funcs[0](1)
            self._users += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._funcs[0](self._saved)


_BLAS_THREADS = _OpenBLASThreads()


class _BufferPool:
    """The memory of large arrays that nobody uses any more, kept for the next call.

    Fresh memory costs a page fault per 4 KiB page the first time it is written -- about 2 us
    each on a virtual machine, so 10 ms of a 35 ms layer at (512, 512, 8) -- and the C
    allocator hands large freed blocks back to the system, so every call paid them again.
    :meth:`empty` hands out arrays the pool keeps.  One is free again once nothing else
    refers to it: every view (and view of a view) holds a reference to it, so its reference
    count is then back to the pool's own.  A free array of the asked shape and type is handed
    out as it is (it owns its memory); else a free one of the same size, viewed in that
    shape; else a new one, kept while the pool stays within its budget (free arrays are
    dropped, oldest first, to make room).  Without ``sys.getrefcount`` (not CPython) it
    allocates.  Used by the engine (the arrays of a trace) and by the BERT forward of
    :mod:`attention_widget.pretrained` (its results).

    Parameters
    ----------
    min_bytes : int
        Smaller arrays are plain ``np.empty``: the C allocator serves them from its own free
        lists, without page faults.
    max_bytes : int, optional
        The pool's budget; None: :data:`BUFFER_POOL_BYTES`, read at every call.
    """

    def __init__(self, min_bytes: int = 1 << 20, max_bytes: int | None = None) -> None:
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._buffers: list[np.ndarray] = []  # most recently handed out last
        probe = [np.empty(1, dtype=np.uint8)]
        # the count of a buffer only the list holds, as _free() sees it on this Python
        self._free_count = sys.getrefcount(probe[0]) if hasattr(sys, "getrefcount") else None

    def _free(self, i: int) -> bool:
        return sys.getrefcount(self._buffers[i]) == self._free_count

    def _take(self, i: int) -> np.ndarray:
        self._buffers.append(self._buffers.pop(i))
        return self._buffers[-1]

    def empty(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An uninitialised C-contiguous array, like ``np.empty(shape, dtype)``.

        On reused memory when the pool has a free array of this size.
        """
        dtype = np.dtype(dtype)
        shape = tuple(shape)
        nbytes = math.prod(shape) * dtype.itemsize
        limit = BUFFER_POOL_BYTES if self.max_bytes is None else self.max_bytes
        if nbytes < self.min_bytes or nbytes > limit or self._free_count is None:
            return np.empty(shape, dtype=dtype)
        with self._lock:
            buffers = self._buffers
            for i in range(len(buffers)):
                if buffers[i].shape == shape and buffers[i].dtype == dtype and self._free(i):
                    return self._take(i)
            for i in range(len(buffers)):
                if buffers[i].nbytes == nbytes and self._free(i):
                    return self._take(i).reshape(-1).view(dtype).reshape(shape)
            total = sum(buffer.nbytes for buffer in buffers)
            i = 0
            while total + nbytes > limit and i < len(buffers):
                if self._free(i):
                    total -= buffers.pop(i).nbytes
                else:
                    i += 1
            buffer = np.empty(shape, dtype=dtype)
            if total + nbytes <= limit:
                buffers.append(buffer)
            return buffer

    def clear(self) -> int:
        """Drop every free array; return the bytes the pool still keeps (in use)."""
        with self._lock:
            for i in reversed(range(len(self._buffers))):
                if self._free(i):
                    del self._buffers[i]
            return sum(buffer.nbytes for buffer in self._buffers)


_POOL = _BufferPool()


def free_buffers() -> int:
    """Give back the memory the engine keeps for reuse (see :data:`BUFFER_POOL_BYTES`).

    Returns
    -------
    int
        Bytes still kept: buffers that traces alive at this moment use; they become free
        (and are dropped by the next call of this function) once those traces are gone.
    """
    return _POOL.clear()


# Rows of one head's scores a thread handles at a time in a threaded layer (bytes).
_CHUNK_BYTES = 1 << 22
# Layers with at least this many scores (n_heads * seq_len**2) are shared out between threads;
# below it, handing work to a thread costs more than it saves (measured at (64, 256, 8)).
_SPLIT_MIN_SCORES = 1 << 17


def _in_parallel(work, parts: list) -> None:
    """Run ``work(part)`` for every part, the first on this thread, the others on the pool."""
    futures = [_executor().submit(work, part) for part in parts[1:]]
    try:
        work(parts[0])
    finally:
        for future in futures:
            future.result()


def _layer_split(
    x: np.ndarray,
    w: dict[str, np.ndarray | None],
    n_heads: int,
    n_kv_heads: int,
    mask: np.ndarray | None,
    inv_temperature: float,
    n_threads: int,
) -> tuple[np.ndarray, ...]:
    """Steps 1-3 of the layer with the work shared out between ``n_threads`` threads.

    Same arithmetic as the plain path, arranged for threads: the projections are split by
    rows, attention by heads (each thread computes the scores, weights and head outputs of
    its heads while they are in cache).  Returns ``q, k, v, scores, weights, head_outputs,
    entropy, concat, output``.
    """
    seq_len, d_model = x.shape
    d_head = d_model // n_heads
    d_kv = n_kv_heads * d_head
    group = n_heads // n_kv_heads
    dt = x.dtype
    row_parts = [slice(r * seq_len // n_threads, (r + 1) * seq_len // n_threads)
                 for r in range(n_threads)]

    # 1. project, by rows: [rows, d_model] @ [d_model, d_model + 2 d_kv]
    qkv = _POOL.empty((seq_len, d_model + 2 * d_kv), dt)

    def project(rows: slice) -> None:
        np.matmul(x[rows], w["w_qkv"], out=qkv[rows])
        if w["b_qkv"] is not None:
            qkv[rows] += w["b_qkv"]

    _in_parallel(project, row_parts)
    q = _POOL.empty((n_heads, seq_len, d_head), dt)
    k = _POOL.empty((n_kv_heads, seq_len, d_head), dt)
    v = _POOL.empty(k.shape, dt)
    k_t = _POOL.empty((n_kv_heads, d_head, seq_len), dt)
    k_norm = np.empty(n_kv_heads)  # the largest |key| / sqrt(d_head) of each kv head
    scale = dt.type(1.0 / math.sqrt(d_head))

    def split_kv(kv_heads: range) -> None:
        for g in kv_heads:
            start = d_model + g * d_head  # key columns; the value columns follow after d_kv
            k[g] = qkv[:, start : start + d_head]
            v[g] = qkv[:, start + d_kv : start + d_kv + d_head]
            np.multiply(k[g].T, scale, out=k_t[g])
            k_norm[g] = math.sqrt(float(np.einsum("ij,ij->j", k_t[g], k_t[g]).max()))

    _in_parallel(split_kv, [range(i, n_kv_heads, n_threads) for i in range(n_threads)])

    # 2. attend, by heads: [seq, d_head] @ [d_head, seq] -> softmax -> @ [seq, d_head]
    scores = _POOL.empty((n_heads, seq_len, seq_len), dt)
    weights = _POOL.empty(scores.shape, dt)
    entropy = np.empty((n_heads, seq_len), dtype=dt)
    head_outputs = _POOL.empty((n_heads, seq_len, d_head), dt)
    concat = _POOL.empty((seq_len, d_model), dt)
    masks = _mask_arrays(mask, dt)

    # runs of query rows small enough that a run's scores are still in cache when its softmax
    # and its product with V read them
    chunk = max(1, _CHUNK_BYTES // (seq_len * dt.itemsize))
    chunks = [slice(r, min(seq_len, r + chunk)) for r in range(0, seq_len, chunk)]

    def attend(heads: range) -> None:
        out_t = np.empty((d_head, seq_len), dtype=dt)
        for h in heads:
            g = h // group
            cols = slice(h * d_head, (h + 1) * d_head)
            q[h] = qkv[:, cols]
            # |score| <= |q| |k| / sqrt(d_head): usually proves exp safe without a search
            bound = math.sqrt(float(np.einsum("ij,ij->i", q[h], q[h]).max())) * k_norm[g]
            for rows in chunks:
                # [rows, d_head] @ [d_head, seq] -> [rows, seq]
                np.matmul(q[h, rows], k_t[g], out=scores[h, rows])
                _softmax_into(scores[h : h + 1, rows], weights[h : h + 1, rows],
                              entropy[h : h + 1, rows], masks, rows, inv_temperature,
                              threads=False, bound=bound * 1.001)
                # (weights @ v)^T = v^T @ weights^T: OpenBLAS is faster at this shape
                # [d_head, seq] @ [seq, rows] -> [d_head, rows]
                np.matmul(v[g].T, weights[h, rows].T, out=out_t[:, rows])
            head_outputs[h] = out_t.T
            concat[:, cols] = out_t.T

    _in_parallel(attend, [range(i, n_heads, n_threads) for i in range(n_threads)])

    # 3. combine, by rows: [rows, d_model] @ [d_model, d_model]
    output = _POOL.empty((seq_len, d_model), dt)
    _in_parallel(partial(_combine, concat, w, output), row_parts)
    return q, k, v, scores, weights, head_outputs, entropy, concat, output


def _concat_project(head_outputs: np.ndarray, w: dict) -> tuple[np.ndarray, np.ndarray]:
    """``concat`` (seq, h * d_head) of the (h, seq, d_head) head outputs, and ``output``."""
    n_heads, seq_len, d_head = head_outputs.shape
    concat = head_outputs.transpose(1, 0, 2).reshape(seq_len, n_heads * d_head)
    output = np.empty((seq_len, w["w_o"].shape[1]), dtype=concat.dtype)
    _combine(concat, w, output, slice(None))
    return concat, output


def _combine(concat: np.ndarray, w: dict, output: np.ndarray, rows: slice) -> None:
    """``output[rows] = concat[rows] @ w_o (+ b_o)``."""
    np.matmul(concat[rows], w["w_o"], out=output[rows])
    if w["b_o"] is not None:
        output[rows] += w["b_o"]


def multi_head_attention(
    x: np.ndarray,
    params: AttentionParams,
    *,
    n_heads: int,
    n_kv_heads: int | None = None,
    temperature: float = 1.0,
    mask: MaskLike = None,
    window: int | None = None,
    dtype: type | np.dtype = np.float64,
) -> AttentionTrace:
    """Run one multi-head self-attention layer and keep every intermediate.

    Parameters
    ----------
    x : array_like, shape (seq_len, d_model)
        The input sequence, one row per token.
    params : AttentionParams
        The layer's projections, e.g. from :func:`init_params`.
    n_heads : int
        Number of query heads; must divide ``d_model``.
    n_kv_heads : int, optional
        Number of key/value heads (grouped-query attention); defaults to ``n_heads``.
    temperature : float, default 1.0
        Softmax temperature ``T > 0``: weights are ``softmax(scores / T)``.  Small T sharpens
        every row towards one-hot, large T flattens it towards uniform.
    mask : None, "none", "causal", "sliding", or ndarray of bool, shape (seq_len, seq_len)
        True where query ``i`` may attend key ``j``.  ``"sliding"`` needs ``window``.
    window : int, optional
        Keys per query for ``mask="sliding"`` (see :func:`sliding_window_mask`).
    dtype : float32 or float64, default float64
        Precision of the computation.

    Returns
    -------
    AttentionTrace
        Every stage, from ``x`` to ``output``.

    Raises
    ------
    TypeError, ValueError
        For any invalid argument, naming it; ``ValueError`` also when the arrays would need more
        than :data:`MEMORY_LIMIT_BYTES` (raised before anything large is allocated).

    Notes
    -----
    Large layers run on the engine's own threads, and their arrays (1 MiB and more) reuse the
    memory of traces nobody holds any more, up to :data:`BUFFER_POOL_BYTES`
    (:func:`free_buffers` gives it back).  A trace you keep, or any view of its arrays, is
    never written to again.
    """
    if not isinstance(params, AttentionParams):
        raise TypeError(f"params must be an AttentionParams (see init_params), got {type(params)}")
    dt = _check_dtype(dtype)
    temperature = _check_temperature(temperature)
    d_model = params.d_model
    n_heads, n_kv_heads, d_head = _check_heads(d_model, n_heads, n_kv_heads)
    if params.d_kv != n_kv_heads * d_head:
        raise ValueError(
            f"params do not match n_heads={n_heads}, n_kv_heads={n_kv_heads}: w_k has "
            f"{params.d_kv} columns but n_kv_heads * d_head = {n_kv_heads} * {d_head} = "
            f"{n_kv_heads * d_head}; make params with init_params(d_model, n_heads, n_kv_heads)"
        )
    x_arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if x_arr.dtype.kind not in "fiub":
        raise TypeError(
            f"x must hold real numbers, got an array of dtype {x_arr.dtype}"
            + (f" (for example {x_arr.flat[0]!r})" if x_arr.size else "")
        )
    if x_arr.size == 0:
        raise ValueError(
            f"x is empty (shape {x_arr.shape}): it needs at least one token, a (1, {d_model}) row"
        )
    if x_arr.ndim != 2:
        raise ValueError(
            f"x must be 2-D (seq_len, d_model), got {x_arr.ndim}-D shape {x_arr.shape}"
        )
    seq_len = x_arr.shape[0]
    if x_arr.shape[1] != d_model:
        raise ValueError(
            f"x has width {x_arr.shape[1]} but params expect d_model={d_model}: "
            f"x must have shape (seq_len, {d_model})"
        )
    need = estimate_memory(seq_len, d_model, n_heads, n_kv_heads, dt)
    if need > MEMORY_LIMIT_BYTES:
        raise ValueError(
            f"seq_len={seq_len} with n_heads={n_heads} would need about {need / 2**30:.1f} GiB "
            f"(limit MEMORY_LIMIT_BYTES = {MEMORY_LIMIT_BYTES / 2**30:.1f} GiB): use a shorter "
            "sequence, fewer heads or dtype=float32"
        )
    x_arr = np.ascontiguousarray(x_arr, dtype=dt)
    if not np.isfinite(x_arr.sum()) and not np.isfinite(x_arr).all():
        # (a finite sum proves every entry finite; the full check runs only when it is not)
        bad = np.argwhere(~np.isfinite(x_arr))[0]
        raise ValueError(
            f"x contains NaN or infinity (x[{bad[0]}, {bad[1]}] = {x_arr[tuple(bad)]}); "
            "every value must be finite"
        )
    bool_mask = _resolve_mask(mask, seq_len, window)
    w = params.as_dtype(dt)
    d_kv = n_kv_heads * d_head

    n_threads = min(_n_threads(), seq_len)
    if (
        n_threads > 1
        and n_heads * seq_len * seq_len >= _SPLIT_MIN_SCORES
        and _BLAS_THREADS.available()
        and (n_threads := min(n_threads, _BLAS_THREADS.allowed())) > 1
    ):
        with _BLAS_THREADS, np.errstate(invalid="ignore", over="ignore", under="ignore"):
            q, k, v, scores, weights, head_outputs, entropy, concat, output = _layer_split(
                x_arr, w, n_heads, n_kv_heads, bool_mask, 1.0 / temperature, n_threads
            )
        return _finish(x_arr, q, k, v, scores, weights, head_outputs, entropy, concat, output,
                       bool_mask, temperature)

    # 1. project: [seq, d_model] @ [d_model, d_model + 2 d_kv] -> [seq, d_model + 2 d_kv]
    qkv = x_arr @ w["w_qkv"]
    if w["b_qkv"] is not None:
        qkv += w["b_qkv"]
    # split into heads: [seq, h * d_head] -> [h, seq, d_head] (contiguous: small copies)
    q = np.ascontiguousarray(qkv[:, :d_model].reshape(seq_len, n_heads, d_head).transpose(1, 0, 2))
    k = np.ascontiguousarray(
        qkv[:, d_model : d_model + d_kv].reshape(seq_len, n_kv_heads, d_head).transpose(1, 0, 2)
    )
    v = np.ascontiguousarray(
        qkv[:, d_model + d_kv :].reshape(seq_len, n_kv_heads, d_head).transpose(1, 0, 2)
    )

    # 2. attend: scores = q k^T / sqrt(d_head) -> weights = softmax(scores / T) -> weights @ v
    scores, weights, head_outputs, entropy = _attend(q, k, v, bool_mask, 1.0 / temperature)

    # 3. combine: [h, seq, d_head] -> [seq, h * d_head] -> @ w_o -> [seq, d_model]
    concat, output = _concat_project(head_outputs, w)
    return _finish(x_arr, q, k, v, scores, weights, head_outputs, entropy, concat, output,
                   bool_mask, temperature)


def with_temperature(
    trace: AttentionTrace, params: AttentionParams, temperature: float
) -> AttentionTrace:
    """The same layer at another softmax temperature, reusing the trace's earlier stages.

    Temperature enters after the scores, so ``x``, ``q``, ``k``, ``v``, ``scores`` and ``mask``
    are shared with ``trace`` (the same arrays, not copies); the weights, head outputs, concat
    and output are computed anew, as :func:`multi_head_attention` would at ``temperature``.
    This is what a temperature slider needs: no projection and no ``q k^T`` per step.

    Parameters
    ----------
    trace : AttentionTrace
        From :func:`multi_head_attention` (or an earlier call of this function).
    params : AttentionParams
        The parameters ``trace`` was computed with (``w_o`` and ``b_o`` are used).
    temperature : float
        ``T > 0``.

    Returns
    -------
    AttentionTrace
        Equal to ``multi_head_attention(trace.x, params, ..., temperature=temperature)`` up to
        float rounding (the products may be blocked differently).

    Raises
    ------
    TypeError, ValueError
        For a bad argument, naming it.
    """
    if not isinstance(trace, AttentionTrace):
        raise TypeError(f"trace must be an AttentionTrace, got {type(trace).__name__}")
    if not isinstance(params, AttentionParams):
        raise TypeError(f"params must be an AttentionParams (see init_params), got {type(params)}")
    if params.d_model != trace.d_model:
        raise ValueError(
            f"params have d_model={params.d_model} but the trace has d_model={trace.d_model}: "
            "pass the params the trace was computed with"
        )
    temperature = _check_temperature(temperature)
    dt = trace.scores.dtype
    w = params.as_dtype(dt)
    mask = None if trace.mask.all() else trace.mask
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        weights, entropy = _softmax(trace.scores, mask, 1.0 / temperature)
        head_outputs = _mix_values(weights, trace.v)
        concat, output = _concat_project(head_outputs, w)
    return _finish(trace.x, trace.q, trace.k, trace.v, trace.scores, weights, head_outputs,
                   entropy, concat, output, trace.mask, temperature)


def _finish(
    x: np.ndarray,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    scores: np.ndarray,
    weights: np.ndarray,
    head_outputs: np.ndarray,
    entropy: np.ndarray,
    concat: np.ndarray,
    output: np.ndarray,
    mask: np.ndarray | None,
    temperature: float,
) -> AttentionTrace:
    """Check the output is finite and wrap everything in an :class:`AttentionTrace`."""
    # a non-finite score or weight reaches the output (a finite sum proves all finite)
    if not np.isfinite(output.sum()) and not np.isfinite(output).all():
        raise ValueError(
            "the scores overflowed (values too large for "
            f"{output.dtype}); scale x or the weights down, or use dtype=float64"
        )
    seq_len = x.shape[0]
    return AttentionTrace(
        x=x,
        q=q,
        k=k,
        v=v,
        scores=scores,
        weights=weights,
        head_outputs=head_outputs,
        concat=concat,
        output=output,
        mask=np.ones((seq_len, seq_len), dtype=bool) if mask is None else mask,
        entropy=entropy,
        temperature=temperature,
    )

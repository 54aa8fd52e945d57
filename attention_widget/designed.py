"""Designed heads: query and key weights built, not trained, so that each head does one job.

Head ``h`` does job ``h % 4`` of :data:`DESIGNED_JOBS`:

* **previous token**: every query ``i >= 1`` puts its largest weight on key ``i - 1``;
* **duplicate token**: a query whose token also occurs elsewhere puts at least half its weight
  on those other occurrences;
* **first token**: every query puts its largest weight on key 0;
* **local window**: every query puts at least 80 % of its weight within two positions of itself.

Designed heads need designed inputs (:func:`designed_embed`).  Each row of ``X`` holds two
numbers written as cos/sin pairs by one code, :func:`sinusoid_code`: in the first half of the
columns *which word* it is (the k-th different word of the text is word number k, see
:func:`token_numbers`), in the second half *where* it stands (its position).  Because the two
codes live in separate columns, a head can read one without the other.

How the weights do the jobs (``code(n)`` is the code of the number ``n``)
---------------------------------------------------------------------------
* ``W_K`` is the same for every key/value head: it copies position pairs 1..n_p and token
  pairs 1..n_t of ``X`` (pair 0 is the constant), with ``n_p = n_t = d_head // 4`` from
  ``d_head = 8`` on, and ``n_p = d_head // 2``, ``n_t = 0`` below (``d_head = 1``: the cos of
  position pair 1 only).  So ``k_j = [code(j) | code(word_j)]``, and grouped-query sharing of
  ``K`` costs nothing: each query head of a group picks the part of the shared keys it needs.
* ``code(a) . code(b) = sum_k cos(w_k (a - b))`` is largest exactly when ``a = b`` for numbers
  0..63: the frequencies ``w_k`` (:func:`code_frequencies`) start with ``pi / 64`` (half a turn
  over 64 steps, so no two numbers below 64 look alike) and go on with frequencies picked one
  at a time to make the smallest gap ``code(a).code(a) - code(a).code(b)`` as large as they
  can.
* previous token: ``W_Q`` turns each position pair back by one step (:func:`shift_matrix`), so
  ``q_i = beta * code(i - 1)`` and ``q_i . k_j`` peaks at ``j = i - 1``; ``beta`` makes that
  key score at least 4 above any other.
* first token: ``W_Q`` reads only the constant column (the cos of frequency 0, which is 1 at
  every position) and writes ``beta * code(0)``: every query asks for position 0 (again with
  a margin of 4).
* local window: ``W_Q`` copies the slowest position pair, so ``q_i . k_j =
  beta * cos(pi (i - j) / 64)``: a smooth bump around ``j = i`` whose score falls by 3 from
  distance 0 to distance 3.
* duplicate token: ``W_Q`` copies the token pairs (``x alpha``) and subtracts the position pairs
  (``x gamma``).  ``gamma`` puts the query's own key at least 1 below each of its twins;
  ``alpha`` then puts every other word at least ``log(64) + 2`` below the query's own key.

Guarantees and exceptions
-------------------------
For texts of up to 64 tokens (:data:`MAX_DESIGNED_TOKENS`), at temperature 1 and without a
mask, every row concerned does its job (not only 95 %); the scales are derived from the smallest
and largest code gaps, so the margins hold for every such text: a word's twins get at least
``e / (e + 1 + e**-2)``, about 0.70, of its weight, and the local window keeps at least 96 % of
every row within two positions.  Previous- and first-token heads
hold at every temperature (the largest weight does not depend on it); local-window and
duplicate-token heads hold at every temperature up to 1 (a lower temperature only sharpens them).
Where ``d_head`` is too small the job cannot be built, and the head's ``W_Q`` is zero, so it
spreads its weight evenly (:func:`designed_jobs` says which):

* ``d_head = 1``: only first token.  A rank-1 score ``a_i b_j`` makes every row's largest
  weight fall on the key with the largest or the smallest ``b_j``: two keys at most, so it
  cannot pick ``i - 1`` for every ``i``, nor stay within two positions of every query.
* ``d_head < 8``: no duplicate token.  It needs two position pairs (to tell a word from its own
  twin) and two token pairs (to tell words apart): 8 dimensions.
* ``d_model < 7``: the position block has no pair besides the constant: no job.

Masks: previous token, first token and local window hold under the causal mask; a sliding window
keeps previous token (``window >= 2``) and local window, but hides key 0 from queries
``i >= window``.  Duplicate token holds for the queries that can still see another occurrence of
their word (under the causal mask: the later occurrences).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ._checks import check_int as _check_int
from .engine import AttentionParams, init_params

__all__ = [
    "DESIGNED_INPUT_NOTE",
    "DESIGNED_JOBS",
    "MAX_DESIGNED_TOKENS",
    "DesignedHead",
    "code_frequencies",
    "designed_embed",
    "designed_jobs",
    "designed_notes",
    "designed_params",
    "position_code",
    "shift_matrix",
    "sinusoid_code",
    "token_numbers",
]

#: The jobs, in order: head ``h`` does ``DESIGNED_JOBS[h % 4]``.
DESIGNED_JOBS = ("previous token", "duplicate token", "first token", "local window")

#: One line for the screen: what the designed inputs hold.
DESIGNED_INPUT_NOTE = (
    "Designed inputs: the first half of X's columns code which word it is (the k-th different "
    "word is number k), the second half its position, both as cos/sin pairs"
)

#: Longest text (and most different words) for which the jobs are guaranteed.
MAX_DESIGNED_TOKENS = 64

_N = MAX_DESIGNED_TOKENS
_MARGIN = 4.0  # previous/first token: the target key scores at least this much above any other
_LOCAL_DROP = 3.0  # local window: the score falls by this much from distance 0 to distance 3
_DUP_SELF = 1.0  # duplicate token: the query's own key scores at least this much below a twin
_DUP_OTHERS = math.log(_N) + 2.0  # ... and every other word at least this much below itself
_DUP_MIN_DIMS = 8  # two position pairs and two token pairs


# --------------------------------------------------------------------------------------------
# the code: a number written as cos/sin pairs
# --------------------------------------------------------------------------------------------
def _gap(steps: Sequence[int]) -> np.ndarray:
    """``code(0).code(0) - code(0).code(d)`` for d = 1..63, using the pairs ``pi m / 64``."""
    d = np.arange(1, _N)
    return sum((1.0 - np.cos(np.pi * m * d / _N) for m in steps), np.zeros(_N - 1))


@lru_cache(maxsize=1)
def _frequency_steps() -> tuple[int, ...]:
    """The multipliers ``m`` of ``pi / 64``, in the order the code uses them.

    ``m = 1`` first (half a turn over 64 steps: ``cos`` falls steadily with the distance), then
    each next ``m`` is the one that makes the smallest gap over distances 1..63 largest (ties go
    to the smaller ``m``; gaps are compared rounded, so every platform picks the same order).
    """
    steps = [1]
    while len(steps) < _N - 1:
        free = [m for m in range(2, _N) if m not in steps]
        best = [round(float(_gap([*steps, m]).min()), 9) for m in free]
        steps.append(free[best.index(max(best))])
    return tuple(steps)


def code_frequencies(n_pairs: int) -> np.ndarray:
    """Angular frequencies of the code's cos/sin pairs.

    Parameters
    ----------
    n_pairs : int
        How many pairs, 1 to 64.

    Returns
    -------
    ndarray, shape (n_pairs,)
        ``0`` (a constant pair), then ``pi / 64``, then the frequencies ``pi m / 64`` that widen
        the smallest gap between two numbers' codes fastest (see the module docstring).
    """
    n_pairs = _check_int("n_pairs", n_pairs)
    if n_pairs > _N:
        raise ValueError(f"n_pairs must be <= {_N} (the code has {_N} frequencies), got {n_pairs}")
    return np.pi * np.array((0, *_frequency_steps()))[:n_pairs] / _N


def sinusoid_code(numbers: Sequence[int] | np.ndarray, n_pairs: int) -> np.ndarray:
    """Write each number as cos/sin pairs: the code both designed blocks of ``X`` use.

    Parameters
    ----------
    numbers : sequence of int, shape (n,)
        Positions, or word numbers (:func:`token_numbers`).
    n_pairs : int
        How many pairs (1 to 64).

    Returns
    -------
    ndarray, shape (n, 2 * n_pairs)
        ``code[a, 2k] = cos(w_k a)`` and ``code[a, 2k + 1] = sin(w_k a)`` with ``w_k =
        code_frequencies(n_pairs)[k]``.  Pair 0 has frequency 0: a column of ones and a
        column of zeros.  ``code(a) . code(b) = sum_k cos(w_k (a - b))`` is largest when
        ``a = b``.
    """
    nums = np.asarray(numbers)
    if nums.ndim != 1 or (nums.size and nums.dtype.kind not in "iu"):
        raise TypeError(
            f"numbers must be a 1-D sequence of integers, got {nums.dtype} {nums.shape}"
        )
    angles = np.outer(nums, code_frequencies(n_pairs))  # [n, n_pairs]
    code = np.empty((nums.size, 2 * angles.shape[1]))
    code[:, 0::2] = np.cos(angles)
    code[:, 1::2] = np.sin(angles)
    return code


def position_code(seq_len: int, n_pairs: int) -> np.ndarray:
    """The code of positions ``0 .. seq_len - 1``: ``sinusoid_code(range(seq_len), n_pairs)``.

    Returns
    -------
    ndarray, shape (seq_len, 2 * n_pairs)
    """
    return sinusoid_code(np.arange(_check_int("seq_len", seq_len, minimum=0)), n_pairs)


def shift_matrix(n_pairs: int, by: int = 1) -> np.ndarray:
    """The matrix that moves a code back by ``by`` steps: ``code(a) @ S == code(a - by)``.

    Each cos/sin pair is a point on a circle, and moving the number by ``by`` turns the point by
    ``w_k * by``: a 2 x 2 rotation per pair.

    Examples
    --------
    A previous-token head by hand: queries are the position code moved back by one step, keys
    the position code itself.

    >>> p = position_code(8, 4)  # [8 positions, 4 pairs = 8 columns]
    >>> q, k = p @ shift_matrix(4), p  # q_i = code(i - 1), k_j = code(j)
    >>> (q @ k.T).argmax(axis=1)[1:]  # every query i >= 1 picks key i - 1
    array([0, 1, 2, 3, 4, 5, 6])

    Parameters
    ----------
    n_pairs : int
        Pairs of the code (1 to 64).
    by : int, default 1
        Steps to move back (negative moves forward).

    Returns
    -------
    ndarray, shape (2 * n_pairs, 2 * n_pairs)
        Block diagonal, one rotation ``[[cos, -sin], [sin, cos]]`` of ``w_k * by`` per pair.
    """
    if isinstance(by, bool) or not isinstance(by, numbers.Integral):
        raise TypeError(f"by must be an integer, got {by!r} ({type(by).__name__})")
    angle = code_frequencies(n_pairs) * int(by)  # [n_pairs]
    s = np.zeros((2 * angle.size, 2 * angle.size))
    s[0::2, 0::2] = np.diag(np.cos(angle))  # new cos = cos * cos(w by) + sin * sin(w by)
    s[1::2, 0::2] = np.diag(np.sin(angle))
    s[0::2, 1::2] = np.diag(-np.sin(angle))  # new sin = sin * cos(w by) - cos * sin(w by)
    s[1::2, 1::2] = np.diag(np.cos(angle))
    return s


def token_numbers(tokens: Sequence[str], *, seed: int = 0) -> np.ndarray:
    """Number the different words of a text: the same word gets the same number.

    Parameters
    ----------
    tokens : sequence of str
        For example ``tokenize(text)``.  Words are compared exactly ("The" is not "the").
    seed : int, default 0
        0 numbers the words 0, 1, 2, ... in order of first appearance; another seed shuffles
        the numbers ``0 .. max(64, #words) - 1`` (the jobs hold for every seed).

    Returns
    -------
    ndarray of int, shape (len(tokens),)
    """
    _check_tokens(tokens)
    seed = _check_int("seed", seed, minimum=0)
    first: dict[str, int] = {}
    order = np.array([first.setdefault(t, len(first)) for t in tokens], dtype=np.int64)
    if seed == 0:
        return order
    return np.random.default_rng(seed).permutation(max(_N, len(first)))[order]


def _blocks(d_model: int) -> tuple[int, int]:
    """Pairs of the token block (first ``d_model // 2`` columns) and of the position block."""
    return min((d_model // 2) // 2, _N), min((d_model - d_model // 2) // 2, _N)


def designed_embed(tokens: Sequence[str], d_model: int, *, seed: int = 0) -> np.ndarray:
    """Inputs for designed heads: which word, and where, in separate columns.

    Parameters
    ----------
    tokens : sequence of str
        For example ``tokenize(text)``.
    d_model : int
        Width of each row.
    seed : int, default 0
        Shuffles the word numbers (:func:`token_numbers`); the heads' jobs do not depend on it.

    Returns
    -------
    ndarray, shape (seq_len, d_model)
        Columns ``0 .. d_model // 2 - 1``: ``sinusoid_code`` of the word number (the token
        code); columns ``d_model // 2 .. d_model - 1``: ``sinusoid_code`` of the position (the
        position code).  Each block holds ``min(columns // 2, 64)`` pairs; a column left over
        (odd block, or ``d_model > 256``) is 0.
    """
    d_model = _check_int("d_model", d_model)
    numbers_ = token_numbers(tokens, seed=seed)
    tok_pairs, pos_pairs = _blocks(d_model)
    half = d_model // 2
    x = np.zeros((len(numbers_), d_model))
    if tok_pairs:
        x[:, : 2 * tok_pairs] = sinusoid_code(numbers_, tok_pairs)
    if pos_pairs:
        x[:, half : half + 2 * pos_pairs] = position_code(len(numbers_), pos_pairs)
    return x


# --------------------------------------------------------------------------------------------
# the heads
# --------------------------------------------------------------------------------------------
class DesignedHead(NamedTuple):
    """One designed head: its job, whether it can do it at this size, and how."""

    head: int
    job: str  # one of DESIGNED_JOBS
    works: bool  # False: the head cannot do its job at this size (its W_Q is zero)
    how: str  # one sentence: how W_Q and W_K produce the job, or "cannot at ...: why"

    @property
    def label(self) -> str:
        """``"previous token"``, or ``"previous token (cannot at d_head 1)"``."""
        return self.job if self.works else f"{self.job} ({self.how.split(':')[0]})"


class _Layout(NamedTuple):
    """What the keys of every key/value head hold (the same for all of them)."""

    d_model: int
    d_head: int
    pos: int  # position pairs 1..pos (both columns; with d_head 1 only the cos of pair 1)
    tok: int  # token pairs 1..tok


def _layout(d_model: int, n_heads: object, n_kv_heads: object) -> tuple[_Layout, int, int]:
    d_model = _check_int("d_model", d_model)
    n_heads = _check_int("n_heads", n_heads)
    n_kv = n_heads if n_kv_heads is None else _check_int("n_kv_heads", n_kv_heads)
    if d_model % n_heads:
        raise ValueError(
            f"n_heads={n_heads} does not divide d_model={d_model}: each head gets "
            "d_model / n_heads columns"
        )
    if n_heads % n_kv:
        raise ValueError(f"n_kv_heads={n_kv} does not divide n_heads={n_heads}")
    d_head = d_model // n_heads
    tok_avail, pos_avail = (max(p - 1, 0) for p in _blocks(d_model))  # pair 0 is the constant
    if d_head < _DUP_MIN_DIMS:
        pos, tok = min(max(d_head // 2, 1), pos_avail), 0
    else:
        pos, tok = min(d_head // 4, pos_avail), min(d_head // 4, tok_avail)
    return _Layout(d_model, d_head, pos, tok), n_heads, n_kv


def _describe(job: str, lay: _Layout) -> tuple[bool, str]:
    """Whether a head of this layout can do ``job``, and the sentence that says how."""
    if lay.pos == 0:
        return False, f"cannot at d_model {lay.d_model}: no position pair besides the constant"
    if job == "first token":
        return True, (
            "W_Q writes the code of position 0 from the constant column, so every query "
            "scores key 0 highest"
        )
    if lay.d_head == 1:
        return False, (
            "cannot at d_head 1: a rank-1 score puts each row's largest weight on one of two "
            "keys; W_Q is zero, so the weights are even"
        )
    if job == "previous token":
        return True, (
            "W_K copies the position code; W_Q turns it back by one step (shift_matrix), "
            "so q_i . k_j peaks at j = i - 1"
        )
    if job == "local window":
        return True, (
            "W_Q copies the slowest position pair, so q_i . k_j = beta cos(pi (i - j) / 64): "
            "a bump around j = i"
        )
    if lay.pos < 2 or lay.tok < 2:
        # (d_head >= 8 with a head 1 means d_model >= 16: then both blocks have pairs enough)
        return False, (
            f"cannot at d_head {lay.d_head}: it needs 2 position pairs (to tell a word from "
            f"itself) and 2 token pairs (to tell words apart), {_DUP_MIN_DIMS} dims; W_Q is zero, "
            "so the weights are even"
        )
    return True, (
        "W_K copies the token and position codes; W_Q keeps the token code and subtracts "
        "the position code, so the same word elsewhere scores highest"
    )


def designed_jobs(d_model: int, n_heads: int, n_kv_heads: int | None = None) -> list[DesignedHead]:
    """Each designed head's job, whether it can do it at this size, and how.

    Parameters
    ----------
    d_model, n_heads, n_kv_heads
        As for :func:`designed_params` (``n_kv_heads`` changes nothing: every key/value head
        holds the same keys).

    Returns
    -------
    list of DesignedHead, length n_heads
        ``works`` is False where the job cannot be built at this ``d_head`` (see the module
        docstring); ``how`` is one sentence for the screen.
    """
    lay, n_heads, _ = _layout(d_model, n_heads, n_kv_heads)
    out = []
    for h in range(n_heads):
        job = DESIGNED_JOBS[h % len(DESIGNED_JOBS)]
        out.append(DesignedHead(h, job, *_describe(job, lay)))
    return out


def designed_notes(d_model: int, n_heads: int, n_kv_heads: int | None = None) -> list[str]:
    """One line per head: ``"head 0 · previous token: W_K copies ..."``.

    Parameters
    ----------
    d_model, n_heads, n_kv_heads
        As for :func:`designed_params`.

    Returns
    -------
    list of str, length n_heads
        The job, then how ``W_Q`` and ``W_K`` produce it, or ``"cannot ..."`` and why.
    """
    return [
        f"head {d.head} · {d.job}: {d.how}" for d in designed_jobs(d_model, n_heads, n_kv_heads)
    ]


def _gap_range(n_pairs: int) -> tuple[float, float]:
    """Smallest and largest ``code(a).code(a) - code(a).code(b)`` over ``|a - b|`` in 1..63."""
    gap = _gap(_frequency_steps()[:n_pairs])
    return float(gap.min()), float(gap.max())


def _query_block(job: str, lay: _Layout, d_model: int) -> np.ndarray:
    """``W_Q`` columns of one head, shape (d_model, d_head), for keys laid out as ``lay``.

    The keys are ``k_j = [pos pairs 1..lay.pos | token pairs 1..lay.tok]`` (see
    :func:`_key_block`); ``q_i`` is built so that ``q_i . k_j / sqrt(d_head)`` is the job's score.
    """
    w = np.zeros((d_model, lay.d_head))
    if not _describe(job, lay)[0]:
        return w
    root = math.sqrt(lay.d_head)  # the engine divides the scores by sqrt(d_head)
    half = d_model // 2
    pos_rows = slice(half + 2, half + 2 + 2 * lay.pos)  # position pairs 1..pos of X
    pos_cols = slice(0, 2 * lay.pos)  # ... and where the keys hold them
    if job == "first token":  # q_i = beta code(0) = beta [1, 0, 1, 0, ...], from the constant
        beta = _MARGIN / _gap_range(lay.pos)[0]
        w[half, 0 : 2 * lay.pos : 2] = beta * root  # (d_head 1: lay.pos is 1, the cos only)
    elif job == "previous token":  # q_i = beta code(i - 1) = beta code(i) @ S
        beta = _MARGIN / _gap_range(lay.pos)[0]
        w[pos_rows, pos_cols] = beta * root * shift_matrix(lay.pos + 1)[2:, 2:]
    elif job == "local window":  # q_i = beta code_1(i): score beta cos(pi (i - j) / 64)
        beta = _LOCAL_DROP / (1.0 - math.cos(3 * math.pi / _N))
        w[half + 2 : half + 4, 0:2] = beta * root * np.eye(2)
    else:  # duplicate token: q_i = alpha code(word_i) - gamma code(i)
        p_min, p_max = _gap_range(lay.pos)
        gamma = _DUP_SELF / p_min
        alpha = (gamma * p_max + _DUP_OTHERS) / _gap_range(lay.tok)[0]
        w[pos_rows, pos_cols] = -gamma * root * np.eye(2 * lay.pos)
        tok_cols = slice(2 * lay.pos, 2 * (lay.pos + lay.tok))
        w[2 : 2 + 2 * lay.tok, tok_cols] = alpha * root * np.eye(2 * lay.tok)
    return w


def _key_block(lay: _Layout, d_model: int) -> np.ndarray:
    """``W_K`` columns of one key/value head, shape (d_model, d_head): a copy of some of X."""
    w = np.zeros((d_model, lay.d_head))
    half = d_model // 2
    if lay.d_head == 1:  # room for one column: the cos of the slowest position pair
        w[half + 2, 0] = 1.0
        return w
    w[half + 2 : half + 2 + 2 * lay.pos, : 2 * lay.pos] = np.eye(2 * lay.pos)
    w[2 : 2 + 2 * lay.tok, 2 * lay.pos : 2 * (lay.pos + lay.tok)] = np.eye(2 * lay.tok)
    return w


def designed_params(
    d_model: int, n_heads: int, n_kv_heads: int | None = None, *, seed: int = 0
) -> AttentionParams:
    """Parameters whose heads each do one known job on :func:`designed_embed` inputs.

    Parameters
    ----------
    d_model : int
        Model width.
    n_heads : int
        Number of query heads; must divide ``d_model``.  Head ``h`` does
        ``DESIGNED_JOBS[h % 4]``.
    n_kv_heads : int, optional
        Number of key/value heads (grouped-query attention); must divide ``n_heads``.  Every
        key/value head holds the same keys, so sharing them changes no head's job.
    seed : int, default 0
        Seed of ``W_V`` and ``W_O``.

    Returns
    -------
    AttentionParams
        ``w_q`` (d_model, d_model): one block of ``d_head`` columns per head, built for its job
        (zero where it cannot be built, see :func:`designed_jobs`); ``w_k`` (d_model,
        n_kv_heads * d_head): copies of the position and token pairs; ``w_v`` and ``w_o`` are
        exactly those of ``init_params(d_model, n_heads, n_kv_heads, seed)``, so switching
        between random and designed weights changes only where the heads look, not what they
        carry.  No biases.

    Examples
    --------
    >>> from attention_widget import multi_head_attention, tokenize
    >>> tokens = tokenize("the cat saw the dog")
    >>> trace = multi_head_attention(designed_embed(tokens, 64), designed_params(64, 4),
    ...                              n_heads=4)
    >>> trace.weights[0].argmax(axis=1)[1:]  # head 0: previous token
    array([0, 1, 2, 3])
    """
    lay, n_heads, n_kv = _layout(d_model, n_heads, n_kv_heads)
    base = init_params(d_model, n_heads, n_kv, seed=seed)  # also checks seed
    w_q = np.concatenate(
        [_query_block(DESIGNED_JOBS[h % len(DESIGNED_JOBS)], lay, d_model) for h in range(n_heads)],
        axis=1,
    )
    w_k = np.concatenate([_key_block(lay, d_model)] * n_kv, axis=1)
    return AttentionParams(w_q, w_k, base.w_v, base.w_o)


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def _check_tokens(tokens: object) -> None:
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError("tokens must be a list of str (use tokenize(text) for a sentence)")
    bad = [t for t in tokens if not isinstance(t, str)]
    if bad:
        raise TypeError(f"tokens must be a list of str, got {bad[0]!r} ({type(bad[0]).__name__})")

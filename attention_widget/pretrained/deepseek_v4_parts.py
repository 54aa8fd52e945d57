"""DeepSeek V4's own parts: RoPE on pairs, compressor, hyper-connections, experts.

One formula each, in plain NumPy on float32 arrays in the row-vector convention (a sequence
is ``(seq, features)``); weights as the checkpoints store them (``(out, in)``).  Every softmax
here (the compressor's pooling, the hyper-connections' mixing) is the engine's
:func:`~attention_widget.engine.softmax`.  The indexer and its top-k selection are V3.2's
(:mod:`.blocks`).  :mod:`.deepseek_v4` puts them together.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..engine import softmax
from .blocks import linear, rms_norm, sigmoid

__all__ = [
    "ROUTER_SCORES",
    "compress",
    "hyper_connection",
    "mixture_of_experts",
    "rope_tail",
    "sinkhorn",
    "unweighted_rms_norm",
]


def unweighted_rms_norm(x: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis without a weight: ``x / sqrt(mean(x^2) + eps)``."""
    return rms_norm(x, np.ones(1, dtype=x.dtype), eps)


def rope_tail(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate the trailing ``2 r`` features of ``x`` in adjacent pairs (DeepSeek V4's RoPE).

    Pair ``(a, b) = (x[2j], x[2j + 1])`` of the tail turns by angle ``j``:
    ``(a cos - b sin, b cos + a sin)``; the leading ``d - 2 r`` features are left alone.

    Parameters
    ----------
    x : ndarray, shape (..., seq, d)
    cos, sin : ndarray, shape (seq, r)
        Of the angles ``position * inv_freq`` (``r = len(inv_freq)``).

    Returns
    -------
    ndarray, shape (..., seq, d), a new array
    """
    start = x.shape[-1] - 2 * cos.shape[-1]
    a, b = x[..., start::2], x[..., start + 1 :: 2]  # (..., seq, r) each
    out = x.copy()
    out[..., start::2] = a * cos - b * sin
    out[..., start + 1 :: 2] = b * cos + a * sin
    return out


# --------------------------------------------------------------------------------------------
# the compressor and the lightning indexer
# --------------------------------------------------------------------------------------------
def _pool(kv: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """Softmax-gated sum over the slots of each window, feature by feature.

    ``kv, gate`` (n, slots, d) -> (n, d): ``sum_s softmax_s(gate[:, s, f]) kv[:, s, f]``.
    """
    weights = softmax(np.ascontiguousarray(gate.transpose(0, 2, 1)))  # (n, d, slots)
    return np.einsum("nfs,nsf->nf", weights, kv)


def compress(
    kv: np.ndarray, gate: np.ndarray, position_bias: np.ndarray, rate: int, overlap: bool
) -> np.ndarray:
    """Turn each complete window of ``rate`` tokens into one entry (before its norm and RoPE).

    Without overlap (heavily compressed attention) entry ``w`` pools the tokens of window
    ``w``: ``sum_t softmax_t(gate_t + bias_t) * kv_t`` over its ``rate`` tokens, per feature.
    With overlap (compressed sparse attention) every token projects to ``2 d`` features,
    ``[a | b]``: entry ``w`` pools the ``b`` halves of window ``w`` together with the ``a``
    halves of window ``w - 1`` (``2 rate`` slots; window 0 has only its own ``rate``), so
    consecutive entries overlap by one window.

    Parameters
    ----------
    kv, gate : ndarray, shape (seq, d) or, with overlap, (seq, 2 d)
        The token projections ``x @ wkv.T`` and ``x @ wgate.T``.
    position_bias : ndarray, shape (rate, d) or (rate, 2 d)
        Added to the gate of the token at each place of a window.
    rate : int
        Tokens per window; the last ``seq % rate`` tokens make no entry yet.
    overlap : bool

    Returns
    -------
    ndarray, shape (seq // rate, d)
    """
    n = kv.shape[0] // rate
    d = kv.shape[1] // 2 if overlap else kv.shape[1]
    if n == 0:  # no window complete yet
        return np.zeros((0, d), dtype=kv.dtype)
    kv = kv[: n * rate].reshape(n, rate, -1)  # (n, rate, width)
    gate = gate[: n * rate].reshape(n, rate, -1) + position_bias
    if not overlap:
        return _pool(kv, gate)
    first = _pool(kv[:1, :, d:], gate[:1, :, d:])  # window 0: (1, d)
    if n == 1:
        return first
    # windows 1..n-1: the previous window's a halves, then their own b halves: (n-1, 2 rate, d)
    kv2 = np.concatenate([kv[:-1, :, :d], kv[1:, :, d:]], axis=1)
    gate2 = np.concatenate([gate[:-1, :, :d], gate[1:, :, d:]], axis=1)
    return np.concatenate([first, _pool(kv2, gate2)], axis=0)


# --------------------------------------------------------------------------------------------
# hyper-connections
# --------------------------------------------------------------------------------------------
def sinkhorn(comb: np.ndarray, iters: int, eps: float) -> np.ndarray:
    """Make positive ``(..., n, n)`` matrices nearly doubly stochastic (Sinkhorn-Knopp).

    Columns are normalised first, then ``iters - 1`` times rows and columns; ``eps`` keeps the
    sums away from zero.  ``comb`` is overwritten and returned.
    """
    comb /= comb.sum(axis=-2, keepdims=True) + eps
    for _ in range(iters - 1):
        comb /= comb.sum(axis=-1, keepdims=True) + eps
        comb /= comb.sum(axis=-2, keepdims=True) + eps
    return comb


def hyper_connection(
    streams: np.ndarray, w: dict[str, np.ndarray], iters: int, hc_eps: float, norm_eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weights of a manifold-constrained hyper-connection, from the ``n`` residual streams.

    ``m = RMSNorm(flatten(streams)) @ fn.T`` splits into three mixes, each scaled and shifted:
    ``pre = sigmoid(.) + eps`` (how the streams collapse into the sub-block's input),
    ``post = 2 sigmoid(.)`` (how its output spreads back over the streams) and ``comb``
    (how the streams pass on: a softmax made doubly stochastic by :func:`sinkhorn`).

    Parameters
    ----------
    streams : ndarray, shape (seq, n, d)
    w : dict
        ``"fn"`` ((2 + n) n, n d), ``"base"`` ((2 + n) n,), ``"scale"`` (3,).
    iters : int
        Sinkhorn iterations (``hc_sinkhorn_iters``).
    hc_eps, norm_eps : float
        ``hc_eps`` and ``rms_norm_eps``.

    Returns
    -------
    pre, post : ndarray, shape (seq, n)
    comb : ndarray, shape (seq, n, n)
        Stream ``j`` passes ``comb[:, j, k]`` of itself on to stream ``k``.
    """
    seq, n, d = streams.shape
    flat = unweighted_rms_norm(streams.reshape(seq, n * d), norm_eps)  # (seq, n d)
    mixes = linear(flat, w["fn"])  # (seq, (2 + n) n)
    base, scale = w["base"], w["scale"]
    pre = sigmoid(mixes[:, :n] * scale[0] + base[:n]) + hc_eps  # (seq, n)
    post = 2.0 * sigmoid(mixes[:, n : 2 * n] * scale[1] + base[n : 2 * n])  # (seq, n)
    logits = mixes[:, 2 * n :].reshape(seq, n, n) * scale[2] + base[2 * n :].reshape(n, n)
    comb = sinkhorn(softmax(np.ascontiguousarray(logits)) + hc_eps, iters, hc_eps)
    return pre, post, comb


# --------------------------------------------------------------------------------------------
# the mixture of experts
# --------------------------------------------------------------------------------------------
def _sqrt_softplus(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.logaddexp(0, x))


#: ``scoring_func`` of ``config.json`` -> the router's scores from its logits.
ROUTER_SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sqrtsoftplus": _sqrt_softplus,
    "sigmoid": sigmoid,
}


def _clamped_swiglu(
    x: np.ndarray, w: dict[str, np.ndarray | None], act: Callable, limit: float
) -> np.ndarray:
    """``(act(min(x w1, limit)) * clip(x w3, -limit, limit)) w2`` (one expert)."""
    gate = np.minimum(linear(x, w["w1"], w.get("b1")), limit)  # (rows, d_ff)
    up = np.clip(linear(x, w["w3"], w.get("b3")), -limit, limit)
    return linear(act(gate) * up, w["w2"], w.get("b2"))  # (rows, d_model)


def mixture_of_experts(
    x: np.ndarray,
    w: dict,
    experts: np.ndarray | None,
    *,
    act: Callable[[np.ndarray], np.ndarray],
    limit: float,
    scores: Callable[[np.ndarray], np.ndarray],
    scaling: float,
) -> np.ndarray:
    """Routed experts plus the shared expert, each a clamped SwiGLU.

    The router scores every expert, ``scores(x @ gate.T)``; each token goes to ``k`` experts
    (given, or the top ``k`` of the scores plus ``bias``), weighted by their scores normalised
    to sum to one, times ``scaling``.

    Parameters
    ----------
    x : ndarray, shape (seq, d_model)
    w : dict
        ``"gate"`` (n_experts, d_model) the router and ``"bias"`` (n_experts,) or None;
        ``"experts"``: one dict per expert with ``"w1"``, ``"w3"`` (d_ff, d_model) and ``"w2"``
        (d_model, d_ff); ``"shared"``: the same for the shared expert (with optional biases
        ``"b1"``, ``"b3"``, ``"b2"``); ``"k"``: experts per token.
    experts : ndarray of int, shape (seq, k), or None
        Experts chosen beforehand (DeepSeek V4's first layers look them up by token id); None
        to take the router's top ``k``.
    act : callable
        The activation (``hidden_act``).
    limit : float
        ``swiglu_limit``.
    scores : callable
        The router's scoring function (see :data:`ROUTER_SCORES`).
    scaling : float
        ``routed_scaling_factor``.

    Returns
    -------
    ndarray, shape (seq, d_model)
    """
    s = scores(linear(x, w["gate"]))  # (seq, n_experts)
    if experts is None:
        ranked = s if w["bias"] is None else s + w["bias"]
        experts = np.argsort(-ranked, axis=1, kind="stable")[:, : w["k"]]  # (seq, k)
    chosen = np.take_along_axis(s, experts, axis=1)  # (seq, k)
    chosen = chosen / (chosen.sum(axis=1, keepdims=True) + 1e-20) * x.dtype.type(scaling)
    out = _clamped_swiglu(x, w["shared"], act, limit)  # (seq, d_model)
    for e in np.unique(experts):  # (a token may hold one expert twice: np.add.at adds both)
        rows, slot = np.nonzero(experts == e)  # the tokens sent to expert e
        y = _clamped_swiglu(x[rows], w["experts"][e], act, limit) * chosen[rows, slot, None]
        np.add.at(out, rows, y)
    return out

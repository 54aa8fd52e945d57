"""The building blocks model families are made of: norms, activations, linear layers, RoPE, MoE.

Plain NumPy functions on float32 (or float64) arrays, one formula each, in the row-vector
convention: a sequence is ``(seq, features)``.  Weights are stored as the checkpoints store
them (``torch.nn.Linear``: ``(out, in)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = [
    "ACTIVATIONS",
    "ERF_TANH_COEFFICIENTS",
    "apply_rope",
    "apply_rope_interleaved",
    "erf",
    "gelu_erf",
    "gelu_tanh",
    "indexer_scores",
    "layer_norm",
    "linear",
    "mixture_of_experts",
    "relu",
    "rms_norm",
    "rope_angles",
    "rope_inverse_frequencies",
    "sigmoid",
    "silu",
    "top_k",
    "top_k_kept",
    "yarn_mscale",
    "yarn_rope",
]


# --------------------------------------------------------------------------------------------
# linear layers and norms
# --------------------------------------------------------------------------------------------
def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """``x @ w.T + b`` for a weight stored ``(out, in)``, like ``torch.nn.Linear``.

    Parameters
    ----------
    x : ndarray, shape (seq, in)
    w : ndarray, shape (out, in)
    b : ndarray, shape (out,), optional

    Returns
    -------
    ndarray, shape (seq, out)
        Computed as ``(w @ x.T).T``: the same numbers, but OpenBLAS multiplies faster with the
        weight untransposed (see benchmarks/README.md); the result is a Fortran-ordered array.
    """
    y = w @ x.T  # (out, in) @ (in, seq) -> (out, seq)
    if b is not None:
        y += b[:, None]
    return y.T  # (seq, out)


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, eps: float) -> np.ndarray:
    """LayerNorm over the last axis: ``(x - mean) / sqrt(var + eps) * w + b``.

    Parameters
    ----------
    x : ndarray, shape (..., d)
    w, b : ndarray, shape (d,); ``b`` may be None
    eps : float

    Returns
    -------
    ndarray, shape (..., d), a new array
    """
    xc = x - x.mean(axis=-1, keepdims=True)  # (..., d)
    var = np.einsum("...i,...i->...", xc, xc)[..., None] / x.shape[-1]  # (..., 1): mean(xc^2)
    xc *= 1.0 / np.sqrt(var + x.dtype.type(eps))
    xc *= w
    if b is not None:
        xc += b
    return xc


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis: ``x / sqrt(mean(x^2) + eps) * w`` (Llama, Qwen3).

    Parameters
    ----------
    x : ndarray, shape (..., d)
    w : ndarray, shape (d,)
    eps : float

    Returns
    -------
    ndarray, shape (..., d), a new array
    """
    ms = np.einsum("...i,...i->...", x, x)[..., None] / x.shape[-1]  # (..., 1): mean(x^2)
    y = x * (1.0 / np.sqrt(ms + x.dtype.type(eps)))
    y *= w
    return y


# --------------------------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------------------------
#: ``erf(u) ~= tanh(u * P(u^2))`` with ``P(s) = sum_k c_k s^k`` and these ``c_k``: an odd
#: polynomial inside a tanh, the form of the classic tanh approximations of erf and of the
#: normal CDF (``c_0`` is close to ``2 / sqrt(pi)``, the slope of erf at 0), taken to degree 13
#: in ``u``.  The coefficients are a weighted minimax fit: the absolute error is below 1.6e-7
#: for every real ``u``.  ``P > 0`` everywhere and ``u P(u^2) >= 10`` for ``u^2 >= 16``, where
#: ``tanh`` is 1 to within 4.2e-9, so no clamp is needed; where ``P(u^2)`` overflows to inf,
#: ``tanh(+-inf) = +-1`` still holds.
ERF_TANH_COEFFICIENTS = (
    1.1283804001150175,
    0.1027603385025148,
    -0.00017433911837933162,
    -0.0006334091259468626,
    9.233534050505895e-05,
    -6.3807419492550986e-06,
    1.8010914698878641e-07,
)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, vectorised: ``erf(u) ~= tanh(u P(u^2))``.

    See :data:`ERF_TANH_COEFFICIENTS` for ``P``; the absolute error is below 1.6e-7 (plus float
    rounding), checked against :func:`math.erf` in the tests.  :func:`math.erf` itself has no
    vectorised NumPy form, and calling it element by element is far slower.

    Parameters
    ----------
    x : ndarray of float32 or float64, any shape

    Returns
    -------
    ndarray, same shape and dtype, a new array
    """
    x = np.asarray(x)
    f = x.dtype.type
    c = ERF_TANH_COEFFICIENTS
    with np.errstate(over="ignore"):  # huge |u|: u^2 and P overflow to inf, tanh(inf) = 1
        s = x * x  # u^2
        p = s * f(c[-1])  # Horner: P(s) = c_0 + s (c_1 + s (c_2 + ...))
        for c_k in c[-2:0:-1]:
            p += f(c_k)
            p *= s
        p += f(c[0])
        p *= x  # u P(u^2)
    return np.tanh(p, out=p if p.ndim else None)


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """GELU in its exact form: ``x Phi(x) = x/2 (1 + erf(x / sqrt 2))`` (BERT's ``"gelu"``).

    Its error is below ``0.8e-7 |x|`` plus float rounding (the error of :func:`erf`, halved).

    Parameters
    ----------
    x : ndarray of float32 or float64, any shape

    Returns
    -------
    ndarray, same shape and dtype, a new array (``x`` is not modified)
    """
    x = np.asarray(x)
    y = erf(x * x.dtype.type(1.0 / math.sqrt(2.0)))
    y += 1.0
    y *= 0.5  # Phi(x)
    y *= x
    return y


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU in GPT-2's tanh form (``"gelu_new"``).

    ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    Parameters
    ----------
    x : ndarray of float32 or float64, any shape

    Returns
    -------
    ndarray, same shape and dtype, a new array
    """
    f = x.dtype.type
    inner = x * x  # x^3 as products: np.power is much slower
    inner *= x
    inner *= f(0.044715)
    inner += x
    inner *= f(math.sqrt(2.0 / math.pi))
    np.tanh(inner, out=inner)
    inner += 1.0
    inner *= x
    inner *= 0.5
    return inner


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU (swish): ``x * sigmoid(x) = x / (1 + exp(-x))``.

    Parameters
    ----------
    x : ndarray, any shape

    Returns
    -------
    ndarray, same shape and dtype, a new array
    """
    y = np.negative(x)
    with np.errstate(over="ignore"):  # exp(-x) = inf for very negative x: x / inf = -0
        np.exp(y, out=y)
    y += 1.0
    return np.divide(x, y, out=y)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))``, a new array."""
    with np.errstate(over="ignore"):  # exp(-x) = inf for very negative x: 1 / inf = 0
        return 1.0 / (1.0 + np.exp(-x))


def relu(x: np.ndarray) -> np.ndarray:
    """ReLU: ``max(x, 0)``."""
    return np.maximum(x, 0)


#: ``hidden_act`` / ``activation_function`` names of ``config.json`` -> the function.
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gelu": gelu_erf,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "relu": relu,
    "silu": silu,
    "swish": silu,
}


# --------------------------------------------------------------------------------------------
# rotary position embeddings (RoPE)
# --------------------------------------------------------------------------------------------
def rope_inverse_frequencies(dim: int, theta: float, scaling: dict | None = None) -> np.ndarray:
    """The rotation speeds of RoPE: ``1 / theta ** (2j / dim)``, ``j = 0 .. dim/2 - 1``.

    Computed in float32, as transformers does.

    Parameters
    ----------
    dim : int
        Dimensions rotated (the head width), even.
    theta : float
        The base (``rope_theta``).
    scaling : dict, optional
        ``rope_parameters`` / ``rope_scaling`` of ``config.json``: ``rope_type`` (or ``type``)
        ``"default"``, ``"linear"`` (every frequency divided by ``factor``) or ``"llama3"``
        (long wavelengths divided by ``factor``, short ones kept, a smooth blend between:
        ``factor``, ``low_freq_factor``, ``high_freq_factor``,
        ``original_max_position_embeddings``).

    Returns
    -------
    ndarray of float32, shape (dim // 2,)

    Raises
    ------
    ValueError
        For another ``rope_type``, naming it.
    """
    scaling = scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    exponent = (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)).astype(np.float32)
    inv = (1.0 / np.power(np.float32(theta), exponent, dtype=np.float32)).astype(np.float32)

    def need(key: str) -> float:
        if not isinstance(scaling.get(key), (int, float)):
            raise ValueError(f"rope type {rope_type!r} needs a number {key!r}")
        return float(scaling[key])

    if rope_type == "default":
        return inv
    if rope_type == "linear":
        return (inv / np.float32(need("factor"))).astype(np.float32)
    if rope_type == "llama3":
        factor, old = need("factor"), need("original_max_position_embeddings")
        low, high = need("low_freq_factor"), need("high_freq_factor")
        wavelength = 2 * math.pi / inv
        scaled = np.where(wavelength > old / low, inv / factor, inv)
        smooth = (old / wavelength - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelength < old / high) & ~(wavelength > old / low)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    raise ValueError(
        f"rope type {rope_type!r} is not supported (only 'default', 'linear' and 'llama3')"
    )


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention factor for a context ``factor`` times longer: ``0.1 mscale ln(factor) + 1``.

    1 when ``factor <= 1`` (YaRN paper, eq. 21; ``yarn_get_mscale`` in transformers).
    """
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def yarn_rope(
    dim: int, theta: float, scaling: dict, max_positions: int
) -> tuple[np.ndarray, float]:
    """YaRN (``rope_type`` ``"yarn"``): RoPE stretched ``factor`` times, by frequency band.

    Fast-turning pairs (more than ``beta_fast`` turns over the original context) keep their
    frequency, slow ones (fewer than ``beta_slow`` turns) are divided by ``factor``, and a
    linear ramp blends those between.  The rotated queries and keys are also multiplied by an
    attention factor (so the scores by its square).  As transformers'
    ``_compute_yarn_parameters``, in float32.

    Parameters
    ----------
    dim : int
        Dimensions rotated, even.
    theta : float
        The base (``rope_theta``).
    scaling : dict
        ``rope_parameters``: ``factor`` (default ``max_positions /
        original_max_position_embeddings``), ``original_max_position_embeddings`` (default
        ``max_positions``), ``beta_fast`` (32), ``beta_slow`` (1), ``truncate`` (True: the
        ramp's ends rounded outwards to whole dimensions), and optionally
        ``attention_factor``, or ``mscale`` and ``mscale_all_dim`` (DeepSeek) from which it
        is derived; else it is :func:`yarn_mscale` of ``factor``.
    max_positions : int
        ``max_position_embeddings``.

    Returns
    -------
    inv_freq : ndarray of float32, shape (dim // 2,)
    attention_factor : float
        Multiplies ``cos`` and ``sin`` (see :func:`rope_angles`).
    """

    def number(key: str, default: float | None) -> float:
        value = scaling.get(key)
        if value is None and default is not None:
            return float(default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"rope type 'yarn' needs a number {key!r}, got {value!r}")
        return float(value)

    original = number("original_max_position_embeddings", max_positions)
    factor = number("factor", max_positions / original)
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_mscale(factor)
    beta_fast, beta_slow = number("beta_fast", 32.0) or 32.0, number("beta_slow", 1.0) or 1.0

    def dimension(turns: float) -> float:  # the pair index that turns ``turns`` times
        return dim * math.log(original / (turns * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dimension(beta_fast), dimension(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # as transformers: no division by zero
    ramp = (np.arange(dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    keep = (1 - np.clip(ramp, 0, 1)).astype(np.float32)  # 1: fast pairs, kept as they are
    exponent = (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)).astype(np.float32)
    wavelength = np.power(np.float32(theta), exponent, dtype=np.float32)  # (dim/2,) over 2 pi
    extrapolated = (1.0 / wavelength).astype(np.float32)
    interpolated = (1.0 / (np.float32(factor) * wavelength)).astype(np.float32)
    inv_freq = interpolated * (1 - keep) + extrapolated * keep
    return inv_freq.astype(np.float32), float(attention_factor)


def rope_angles(
    positions: np.ndarray, inv_freq: np.ndarray, attention_factor: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``cos`` and ``sin`` of the rotation angles ``position * inv_freq``, for :func:`apply_rope`.

    Parameters
    ----------
    positions : ndarray of int, shape (seq,)
    inv_freq : ndarray of float32, shape (dim // 2,)
    attention_factor : float, default 1.0
        Multiplies both (YaRN's, see :func:`yarn_rope`).

    Returns
    -------
    cos, sin : ndarray of float32, shape (seq, dim)
        Each angle twice (``[angles, angles]``), as the rotate-half convention pairs dimension
        ``j`` with ``j + dim/2``.
    """
    angles = positions.astype(np.float32)[:, None] * inv_freq[None, :]  # (seq, dim/2)
    angles = np.concatenate([angles, angles], axis=1)  # (seq, dim)
    cos, sin = np.cos(angles), np.sin(angles)
    if attention_factor != 1.0:
        cos *= np.float32(attention_factor)
        sin *= np.float32(attention_factor)
    return cos, sin


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate queries or keys by their position: ``x cos + rotate_half(x) sin``.

    ``rotate_half([x1, x2]) = [-x2, x1]`` (halves of the last axis): each pair
    ``(x_j, x_{j + dim/2})`` turns by its angle.

    Parameters
    ----------
    x : ndarray, shape (heads, seq, dim)
    cos, sin : ndarray, shape (seq, dim), from :func:`rope_angles`

    Returns
    -------
    ndarray, shape (heads, seq, dim), a new array
    """
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)  # rotate_half(x)
    return x * cos + rotated * sin


def apply_rope_interleaved(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate queries or keys by their position, in interleaved pairs (DeepSeek).

    Each pair ``(x_2j, x_2j+1)`` of neighbouring dimensions turns by angle ``j`` and stays in
    place: ``x_2j cos - x_2j+1 sin`` and ``x_2j+1 cos + x_2j sin``.  The same rotation as
    :func:`apply_rope` on the dimensions taken in the order evens, then odds: dot products
    between rotated vectors are the same in both layouts.

    Parameters
    ----------
    x : ndarray, shape (heads, seq, dim)
    cos, sin : ndarray, shape (seq, dim), from :func:`rope_angles` (angle ``j`` is read at
        column ``j``)

    Returns
    -------
    ndarray, shape (heads, seq, dim), a new array
    """
    half = x.shape[-1] // 2
    c, s = cos[:, :half], sin[:, :half]  # (seq, dim/2): one angle per pair
    even, odd = x[..., 0::2], x[..., 1::2]  # (heads, seq, dim/2) each
    out = np.empty_like(x)
    out[..., 0::2] = even * c - odd * s
    out[..., 1::2] = odd * c + even * s
    return out


# --------------------------------------------------------------------------------------------
# mixtures of experts
# --------------------------------------------------------------------------------------------
def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` highest scores of each row, highest first, and where they are.

    Parameters
    ----------
    scores : ndarray, shape (seq, n)
    k : int, ``1 <= k <= n``

    Returns
    -------
    indices : ndarray of int, shape (seq, k)
    values : ndarray, shape (seq, k): ``scores`` at ``indices``, descending
    """
    order = np.argsort(-scores, axis=-1, kind="stable")[:, :k]  # (seq, k)
    return order, np.take_along_axis(scores, order, axis=-1)


def indexer_scores(q: np.ndarray, k: np.ndarray, head_weights: np.ndarray) -> np.ndarray:
    """The lightning indexer: ``I[t, s] = sum_h w[t, h] ReLU(q[h, t] . k[s]) / sqrt(d)``.

    DeepSeek Sparse Attention scores every key for every query with a few cheap heads and a
    ReLU (no softmax); :func:`top_k_kept` then keeps each query's best keys.

    Parameters
    ----------
    q : ndarray, shape (n_index_heads, seq, d)
        The indexer's queries (rotated).
    k : ndarray, shape (n_keys, d)
        Its keys (rotated): one shared by all its heads.
    head_weights : ndarray, shape (seq, n_index_heads)
        ``x @ weights_proj.T / sqrt(n_index_heads)``: how much each head counts per query.

    Returns
    -------
    ndarray, shape (seq, n_keys)
        Head by head, so that no (heads, seq, n_keys) array is made.
    """
    scale = q.dtype.type(1.0 / math.sqrt(q.shape[-1]))
    scores = np.zeros((q.shape[1], k.shape[0]), dtype=q.dtype)  # (seq, n_keys)
    for h in range(q.shape[0]):
        scores += head_weights[:, h : h + 1] * relu((q[h] @ k.T) * scale)
    return scores


def top_k_kept(scores: np.ndarray, visible: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` highest-scoring visible entries (ties toward the earlier entry).

    A sparse-attention selector (DeepSeek's lightning indexer): a query keeps its ``k`` best
    keys among those it may see, all of them if it sees fewer.

    Parameters
    ----------
    scores : ndarray, shape (seq, n)
    visible : ndarray of bool, shape (seq, n)
    k : int, >= 1

    Returns
    -------
    ndarray of bool, shape (seq, n): True for the kept entries (at most ``k`` per row)
    """
    order, _ = top_k(np.where(visible, scores, -np.inf), min(k, scores.shape[-1]))
    kept = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(kept, order, True, axis=-1)
    return kept & visible


def mixture_of_experts(
    x: np.ndarray,
    experts: np.ndarray,
    weights: np.ndarray,
    expert: Callable[[int, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Each token through its chosen experts, their outputs summed with the router's weights.

    ``out[t] = sum_j weights[t, j] * expert(experts[t, j], x[t])``: each expert runs once, on
    the rows of the tokens that chose it.

    Parameters
    ----------
    x : ndarray, shape (seq, d)
    experts : ndarray of int, shape (seq, k)
        The experts each token chose (distinct within a row).
    weights : ndarray, shape (seq, k)
        Their weights.
    expert : callable(e, rows) -> ndarray
        Expert ``e`` on ``rows`` (n, d) -> (n, d_out).

    Returns
    -------
    ndarray, shape (seq, d_out)
    """
    out = None
    for e in np.unique(experts):
        tokens, slot = np.nonzero(experts == e)  # the tokens that chose e (each once)
        y = expert(int(e), x[tokens])  # (n, d_out)
        y *= weights[tokens, slot][:, None]
        if out is None:
            out = np.zeros((x.shape[0], y.shape[1]), dtype=y.dtype)
        out[tokens] += y
    return out

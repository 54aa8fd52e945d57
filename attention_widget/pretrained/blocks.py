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
    "gated_mlp",
    "gelu_erf",
    "gelu_tanh",
    "layer_norm",
    "linear",
    "mixture_of_experts",
    "relu",
    "rms_norm",
    "rope_angles",
    "rope_frequencies",
    "rope_inverse_frequencies",
    "silu",
    "yarn_attention_factor",
    "yarn_inverse_frequencies",
    "yarn_mscale",
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
    rope_type = _rope_type(scaling)
    exponent = (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)).astype(np.float32)
    inv = (1.0 / np.power(np.float32(theta), exponent, dtype=np.float32)).astype(np.float32)

    def need(key: str) -> float:
        return _rope_number(scaling, key)

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


def _rope_type(scaling: dict) -> str:
    return scaling.get("rope_type", scaling.get("type", "default"))


def _rope_number(scaling: dict, key: str) -> float:
    value = scaling.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"rope type {_rope_type(scaling)!r} needs a number {key!r}")
    return float(value)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's magnitude correction ``0.1 * mscale * ln(factor) + 1`` (1 when ``factor <= 1``)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _yarn_lengths(scaling: dict, max_positions: int | None) -> tuple[float, float]:
    """YaRN's ``factor`` and the context length trained on (``original_max_position_embeddings``).

    Without ``original_max_position_embeddings`` the model's ``max_positions``; without a
    ``factor``, ``max_positions`` over the original length.
    """
    if scaling.get("original_max_position_embeddings") is None and max_positions is None:
        raise ValueError("rope type 'yarn' needs a number 'original_max_position_embeddings'")
    if scaling.get("original_max_position_embeddings") is None:
        original = float(max_positions)
    else:
        original = _rope_number(scaling, "original_max_position_embeddings")
    if scaling.get("factor") is None and max_positions is not None:
        return max_positions / original, original
    return _rope_number(scaling, "factor"), original


def yarn_inverse_frequencies(
    dim: int, theta: float, scaling: dict, max_positions: int | None = None
) -> np.ndarray:
    """RoPE's rotation speeds under YaRN: fast ones kept, slow ones divided by ``factor``.

    A dimension pair that turns more than ``beta_fast`` times over the original context length
    keeps its speed (extrapolation); one that turns fewer than ``beta_slow`` times is slowed
    down by ``factor`` (interpolation), and a linear ramp blends the two in between (Peng et
    al. 2023, "YaRN").  Computed in float32, as transformers does.

    Parameters
    ----------
    dim : int
        Dimensions rotated, even.
    theta : float
        The base (``rope_theta``).
    scaling : dict
        ``rope_parameters`` / ``rope_scaling``: ``factor``, ``original_max_position_embeddings``,
        optional ``beta_fast`` (32), ``beta_slow`` (1) and ``truncate`` (True: the ramp's
        ends rounded out to whole dimensions).
    max_positions : int, optional
        ``max_position_embeddings``: stands in for a missing original length, and with it
        gives a missing ``factor``.

    Returns
    -------
    ndarray of float32, shape (dim // 2,)
    """
    factor, original = _yarn_lengths(scaling, max_positions)
    beta_fast = scaling.get("beta_fast") or 32
    beta_slow = scaling.get("beta_slow") or 1

    def dimension(rotations: float) -> float:  # the pair that turns `rotations` times
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dimension(beta_fast), dimension(beta_slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    exponent = (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)).astype(np.float32)
    speeds = np.power(np.float32(theta), exponent, dtype=np.float32)  # theta^(2j/dim)
    ramp = (np.arange(dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low)
    keep = 1 - np.clip(ramp, 0, 1)  # 1: keep the speed, 0: slow it down by factor
    kept, slowed = 1.0 / speeds, 1.0 / (np.float32(factor) * speeds)
    return (slowed * (1 - keep) + kept * keep).astype(np.float32)


def yarn_attention_factor(scaling: dict, max_positions: int | None = None) -> float:
    """The factor YaRN multiplies ``cos`` and ``sin`` by (so rotated scores by its square).

    ``attention_factor`` if the config sets it; else ``yarn_mscale(factor, mscale) /
    yarn_mscale(factor, mscale_all_dim)`` when both are set (DeepSeek), else
    ``yarn_mscale(factor)``.
    """
    if scaling.get("attention_factor") is not None:
        return _rope_number(scaling, "attention_factor")
    factor, _ = _yarn_lengths(scaling, max_positions)
    mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
    if mscale and mscale_all_dim:
        return yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
    return yarn_mscale(factor)


def rope_frequencies(
    dim: int, theta: float, scaling: dict | None = None, max_positions: int | None = None
) -> tuple[np.ndarray, float]:
    """RoPE's rotation speeds and the factor on ``cos`` and ``sin``, for every supported type.

    ``"yarn"`` (:func:`yarn_inverse_frequencies`, :func:`yarn_attention_factor`) and the types
    of :func:`rope_inverse_frequencies` (factor 1).

    Returns
    -------
    inv_freq : ndarray of float32, shape (dim // 2,)
    attention_factor : float

    Raises
    ------
    ValueError
        For another ``rope_type`` or a missing number, naming it.
    """
    scaling = scaling or {}
    rope_type = _rope_type(scaling)
    if rope_type == "yarn":
        return (
            yarn_inverse_frequencies(dim, theta, scaling, max_positions),
            yarn_attention_factor(scaling, max_positions),
        )
    if rope_type not in ("default", "linear", "llama3"):
        raise ValueError(
            f"rope type {rope_type!r} is not supported (only 'default', 'linear', 'llama3' and "
            "'yarn')"
        )
    return rope_inverse_frequencies(dim, theta, scaling), 1.0


def rope_angles(positions: np.ndarray, inv_freq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``cos`` and ``sin`` of the rotation angles ``position * inv_freq``, for :func:`apply_rope`.

    Parameters
    ----------
    positions : ndarray of int, shape (seq,)
    inv_freq : ndarray of float32, shape (dim // 2,)

    Returns
    -------
    cos, sin : ndarray of float32, shape (seq, dim)
        Each angle twice (``[angles, angles]``), as the rotate-half convention pairs dimension
        ``j`` with ``j + dim/2``.
    """
    angles = positions.astype(np.float32)[:, None] * inv_freq[None, :]  # (seq, dim/2)
    angles = np.concatenate([angles, angles], axis=1)  # (seq, dim)
    return np.cos(angles), np.sin(angles)


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
# feed-forward blocks: gated MLP and mixture of experts
# --------------------------------------------------------------------------------------------
def gated_mlp(
    x: np.ndarray,
    w_gate: np.ndarray,
    w_up: np.ndarray,
    w_down: np.ndarray,
    act: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """The gated feed-forward block (SwiGLU with SiLU): ``(act(x w_gate^T) * x w_up^T) w_down^T``.

    Parameters
    ----------
    x : ndarray, shape (seq, d_model)
    w_gate, w_up : ndarray, shape (d_ff, d_model)
    w_down : ndarray, shape (d_model, d_ff)
    act : callable, e.g. :func:`silu`

    Returns
    -------
    ndarray, shape (seq, d_model)
    """
    hidden = act(linear(x, w_gate))  # (seq, d_ff)
    hidden *= linear(x, w_up)
    return linear(hidden, w_down)


def mixture_of_experts(
    x: np.ndarray,
    experts: np.ndarray,
    weights: np.ndarray,
    expert: Callable[[int, np.ndarray], np.ndarray],
) -> np.ndarray:
    """The routed experts' part of a mixture-of-experts block: ``sum_j weights_j expert_j(x)``.

    Each token runs through the experts its router chose, and their outputs are summed with
    the router's weights; an expert runs once, on all the tokens that chose it.

    Parameters
    ----------
    x : ndarray, shape (seq, d_model)
    experts : ndarray of int, shape (seq, k)
        The experts each token chose.
    weights : ndarray, shape (seq, k)
        Their weights.
    expert : callable(e, rows) -> ndarray, shape (rows, d_model)
        Expert ``e`` on some rows of ``x``.

    Returns
    -------
    ndarray, shape (seq, d_model), a new array
    """
    out = np.zeros(x.shape, dtype=x.dtype)
    for e in np.unique(experts):
        tokens, slot = np.nonzero(experts == e)  # who chose expert e, and in which place
        y = expert(int(e), x[tokens])  # (n_e, d_model)
        y *= weights[tokens, slot][:, None].astype(x.dtype)
        out[tokens] += y  # a token chooses an expert once: no row repeats
    return out

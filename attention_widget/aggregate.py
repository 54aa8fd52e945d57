"""Attention summed up over heads and over layers: the head mean and attention rollout.

Both take the attention weights of every layer of a model, ``attentions[l][h, i, j]`` = how
much query ``i`` attends key ``j`` in head ``h`` of layer ``l`` (for example
``PretrainedModel.attentions(text)``, or what :func:`attention_widget.attentions.
normalize_attentions` returns), and need NumPy only.

Head mean, per layer ``l``::

    A_l = mean_h attentions[l][h]                        # (n_q, n_k)

Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"): a
layer's output at token ``i`` is its input at ``i`` (the residual connection) plus what the
attention brings from the other tokens, so each layer mixes tokens by
``Â_l = rownorm(0.5 A_l + 0.5 I)``, and the mixing of several layers is their product::

    R_0 = I
    R_l = Â_l @ R_(l-1)                                   # (n, n), l = 1 .. n_layers
    rollout = R_L = Â_L @ ... @ Â_2 @ Â_1

The product runs from the last layer on the left to the first on the right: ``R_L[i, j]`` is the
share of token ``i``'s representation after the last layer that flows from input token ``j``
(rows sum to 1).  Under a causal mask it stays lower triangular.  It is an estimate that
ignores what the values, the output projections and the feed-forward layers do to the
vectors: it follows where attention points, not what it carries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["attention_rollout", "head_mean"]


def _layers(attentions: object, *, square: bool) -> list[np.ndarray]:
    """``attentions`` as a list of float arrays (n_heads, n_q, n_k), checked."""
    if isinstance(attentions, np.ndarray):
        if attentions.ndim != 4:
            raise ValueError(
                "attentions as one array must have shape (n_layers, n_heads, n_q, n_k), got "
                f"{attentions.shape}"
            )
        attentions = list(attentions)
    if not isinstance(attentions, Sequence) or isinstance(attentions, str):
        raise TypeError(
            "attentions must be a list of (n_heads, n_q, n_k) arrays, one per layer, or one "
            f"(n_layers, n_heads, n_q, n_k) array; got {type(attentions).__name__}"
        )
    if len(attentions) == 0:
        raise ValueError("attentions is empty: give one (n_heads, n_q, n_k) array per layer")
    out = []
    for i, a in enumerate(attentions):
        a = np.asarray(a)
        if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or a.dtype.kind in "iu"):
            raise TypeError(f"attentions[{i}] must hold real numbers, got dtype {a.dtype}")
        if a.ndim != 3 or 0 in a.shape:
            raise ValueError(
                f"attentions[{i}] has shape {a.shape}; expected (n_heads, n_q, n_k), non-empty"
            )
        if square and a.shape[1] != a.shape[2]:
            raise ValueError(
                f"attentions[{i}] has shape {a.shape}: rollout needs square layers "
                "(n_heads, n, n), the same tokens as queries and keys"
            )
        if out and a.shape[1:] != out[0].shape[1:]:
            raise ValueError(
                f"attentions[{i}] has shape {a.shape} but attentions[0] has {out[0].shape}: "
                "every layer must cover the same queries and keys"
            )
        if not np.isfinite(a).all():
            raise ValueError(f"attentions[{i}] contains NaN or infinity")
        out.append(a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64))
    return out


def head_mean(attentions: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """The mean over heads of each layer's attention weights.

    Parameters
    ----------
    attentions : list of ndarray, n_layers arrays of shape (n_heads, n_q, n_k)
        Or one array (n_layers, n_heads, n_q, n_k).  Layers may have different head counts.

    Returns
    -------
    ndarray, shape (n_layers, n_q, n_k)
        ``out[l] = mean_h attentions[l][h]``; float32 for float32 input, else float64.

    Raises
    ------
    ValueError, TypeError
        For an empty list, a layer that is not (n_heads, n_q, n_k), layers that disagree on
        n_q or n_k, or values that are not finite; the message names the layer.
    """
    layers = _layers(attentions, square=False)
    dtype = np.result_type(*layers)
    return np.stack([a.mean(axis=0, dtype=dtype) for a in layers])  # (n_layers, n_q, n_k)


def attention_rollout(
    attentions: Sequence[np.ndarray] | np.ndarray, *, per_layer: bool = False
) -> np.ndarray:
    """Attention rollout across layers (Abnar & Zuidema 2020; see the module docstring).

    Parameters
    ----------
    attentions : list of ndarray, n_layers arrays of shape (n_heads, n, n)
        Or one array (n_layers, n_heads, n, n); first layer first.  Non-negative weights;
        rows that sum to less than 1 (sinks, dropped keys) are renormalised with the rest.
    per_layer : bool, default False
        Also return the rollout up to each layer.

    Returns
    -------
    ndarray of float64, shape (n, n), or (n_layers, n, n) with ``per_layer``
        ``R_L = Â_L @ ... @ Â_1`` with ``Â_l = rownorm(0.5 mean_h(A_l) + 0.5 I)``: row ``i``
        says how much of token ``i`` after the last layer comes from each input token.  With
        ``per_layer``, ``out[l] = R_(l+1)``, the rollout through layers ``0 .. l``.

    Raises
    ------
    ValueError, TypeError
        As :func:`head_mean`, and for layers that are not square or have negative weights.
    """
    if not isinstance(per_layer, bool):
        raise TypeError(f"per_layer must be True or False, got {per_layer!r}")
    layers = _layers(attentions, square=True)
    for i, a in enumerate(layers):
        if (a < 0).any():
            raise ValueError(f"attentions[{i}] has negative weights; rollout needs weights >= 0")
    n = layers[0].shape[1]
    eye = np.eye(n)
    rollout = eye  # R_0 = I: every token is itself
    out = []
    for a in layers:
        mixed = 0.5 * a.mean(axis=0, dtype=np.float64) + 0.5 * eye  # (n, n): attention + residual
        mixed /= mixed.sum(axis=1, keepdims=True)  # rows renormalised
        rollout = mixed @ rollout  # (n, n): this layer on the left of the earlier ones
        out.append(rollout)
    return np.stack(out) if per_layer else rollout

"""What each head does, measured: the role that takes the largest mean share of its weight.

For one head's weights ``w`` (``w[i, j]`` = how much query ``i`` attends key ``j``, rows summing
to 1, or less where a sink or keys that are not tokens take the rest) the mean share of a role
is the mean, over the rows where the role is defined, of the weight the row puts on the role's
key(s):

==================  ==============================  ===================================
role                weight of row ``i`` on           rows (where defined)
==================  ==============================  ===================================
previous token      key ``i - 1``                    ``i >= 1``
next token          key ``i + 1``                    ``i <= n - 2``
self                key ``i``                        every row
first token         key ``0``                        ``i >= 1`` (row 0's key 0 is itself)
special tokens      every key with ``special[j]``    rows whose own token is not special
==================  ==============================  ===================================

A role with no rows (previous, next and first token when ``n == 1``; special tokens without a
``special`` mask, or with none or all tokens special) is not a candidate.  The head's role is
the candidate with the largest mean share (the first in the order above on a tie), or
``"broad"`` when that share is below 0.4 (:data:`BROAD_BELOW`).

Where it misleads: a share is an average, so a head that looks at the previous token in half
the rows and the first token in the other half reads as neither; row 1's key 0 is both its
previous and the first token; and under a causal mask the first rows have few keys, so "self"
and "first token" come cheap there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["BROAD_BELOW", "ROLES", "HeadRole", "head_roles", "role_shares"]

#: The roles, in the order used to break ties.
ROLES = ("previous token", "next token", "self", "first token", "special tokens")

#: A head whose best mean share is below this is called "broad".
BROAD_BELOW = 0.4


class HeadRole(NamedTuple):
    """One head's role and its mean share of weight."""

    head: int
    role: str  # one of ROLES, or "broad"
    share: float  # the role's mean share; for "broad", the largest share of any role

    @property
    def label(self) -> str:
        """``"previous token 0.98"``, or ``"broad"``."""
        return "broad" if self.role == "broad" else f"{self.role} {self.share:.2f}"


def _check_weights(weights: object) -> np.ndarray:
    w = np.asarray(weights)
    if w.dtype == object or not (np.issubdtype(w.dtype, np.floating) or w.dtype.kind in "iu"):
        raise TypeError(f"weights must hold real numbers, got an array of dtype {w.dtype}")
    if w.ndim != 3 or w.shape[1] != w.shape[2] or w.shape[1] == 0:
        hint = " (for one head use weights[None])" if w.ndim == 2 else ""
        raise ValueError(
            f"weights must have shape (n_heads, n, n) with n >= 1, got {w.shape}{hint}"
        )
    w = w.astype(np.float64, copy=False)
    if not np.isfinite(w).all():
        raise ValueError("weights contains NaN or infinity; every value must be finite")
    # a row may sum to less than 1: a sink, or key columns that are not tokens, took the rest
    if (w < 0).any() or (w.sum(axis=2) > 1.0 + 1e-3).any():
        raise ValueError(
            "weights must be attention weights: non-negative, each row summing to 1 or less "
            "(for example AttentionTrace.weights)"
        )
    return w


def _check_special(special: object, n: int) -> np.ndarray | None:
    if special is None:
        return None
    s = np.asarray(special)
    if s.dtype != bool:
        raise TypeError(f"special must be a boolean mask over the tokens, got dtype {s.dtype}")
    if s.shape != (n,):
        raise ValueError(
            f"special must have shape (n,) = ({n},), one flag per token, got {s.shape}"
        )
    return s


def role_shares(weights: np.ndarray, special: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The mean share of every role that is defined, for every head.

    Parameters
    ----------
    weights : ndarray, shape (n_heads, n, n)
        Attention weights, rows summing to 1 or less.
    special : ndarray of bool, shape (n,), optional
        True for special tokens (``[CLS]``, ``<s>``, ...).

    Returns
    -------
    dict of str to ndarray, shape (n_heads,)
        One entry per role of :data:`ROLES` that has rows at this ``n`` (see the module
        docstring for the definitions), in that order.
    """
    w = _check_weights(weights)
    return _shares(w, _check_special(special, w.shape[1]))


def _shares(w: np.ndarray, spec: np.ndarray | None) -> dict[str, np.ndarray]:
    n = w.shape[1]
    rows = np.arange(n)
    shares = {}
    if n >= 2:
        shares["previous token"] = w[:, rows[1:], rows[1:] - 1].mean(axis=1)
        shares["next token"] = w[:, rows[:-1], rows[:-1] + 1].mean(axis=1)
    shares["self"] = w[:, rows, rows].mean(axis=1)
    if n >= 2:
        shares["first token"] = w[:, 1:, 0].mean(axis=1)
    if spec is not None and spec.any() and not spec.all():
        shares["special tokens"] = w[:, ~spec][:, :, spec].sum(axis=2).mean(axis=1)
    return {role: shares[role] for role in ROLES if role in shares}


def head_roles(
    weights: np.ndarray,
    tokens: Sequence[str],
    special: np.ndarray | None = None,
) -> list[HeadRole]:
    """What each head does: the role with the largest mean share of its weight.

    Parameters
    ----------
    weights : ndarray, shape (n_heads, n, n)
        Attention weights, rows summing to 1 or less (a sink took the rest), for example
        ``AttentionTrace.weights``.
    tokens : sequence of str, length n
        The tokens the weights are over.
    special : ndarray of bool, shape (n,), optional
        True for special tokens; without it the "special tokens" role is not considered.

    Returns
    -------
    list of HeadRole, length n_heads
        ``HeadRole(head, role, share)``: the role of :data:`ROLES` with the largest mean share
        (defined in the module docstring), or ``"broad"`` when it is below
        :data:`BROAD_BELOW`; ``label`` gives ``"previous token 0.98"``.

    Examples
    --------
    >>> w = np.eye(3)[None]  # one head, every query on itself
    >>> head_roles(w, ["a", "b", "c"])[0].label
    'self 1.00'
    """
    w = _check_weights(weights)
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError("tokens must be a list of str (use tokenize(text) for a sentence)")
    if not all(isinstance(t, str) for t in tokens):
        raise TypeError("tokens must be a list of str")
    if len(tokens) != w.shape[1]:
        raise ValueError(
            f"tokens has {len(tokens)} entries but weights is over n={w.shape[1]} tokens"
        )
    shares = _shares(w, _check_special(special, w.shape[1]))
    names = list(shares)
    table = np.stack([shares[r] for r in names])  # [roles, n_heads]
    best = table.argmax(axis=0)  # the first of equal shares wins
    out = []
    for h, r in enumerate(best):
        share = float(table[r, h])
        out.append(HeadRole(h, names[r] if share >= BROAD_BELOW else "broad", share))
    return out

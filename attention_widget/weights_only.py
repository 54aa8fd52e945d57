"""Attention weights you already have, as a widget source: the weights and nothing else.

:class:`AttentionsSource` shows what :func:`attention_widget.attentions.normalize_attentions`
read (a transformers run, TransformerLens patterns, your own arrays): every layer's weights,
each head's role and the model view.  The input, the projections, the scores and the outputs
were not given, so those stages are not drawn: the diagram says so in their place
(:attr:`~attention_widget.sources.Traced.unavailable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .attentions import Attentions, normalize_attentions
from .engine import AttentionTrace
from .roles import head_roles
from .sources import Progress, Settings, Source, Traced

__all__ = ["AttentionsSource", "WeightsConstructors", "weights_trace"]

#: Why the other stages are missing, as the diagram says it.
UNAVAILABLE = ("only attention weights were given (no input X, projections Q, K, V, scores or "
               "outputs), so this stage cannot be drawn")


def weights_trace(weights: np.ndarray, mask: np.ndarray) -> AttentionTrace:
    """An :class:`AttentionTrace` that holds only ``weights`` (and its mask and entropy).

    Parameters
    ----------
    weights : ndarray, shape (n_heads, n, n)
    mask : ndarray of bool, shape (n, n)

    Returns
    -------
    AttentionTrace
        ``weights``, ``mask``, ``entropy`` (nats, per row) and temperature 1; every other
        array has width 0 (``d_model = d_head = 0``) or is zero (``scores``): it is not known,
        and the diagram does not draw it.
    """
    h, n, _ = weights.shape
    w = weights.astype(np.float64)
    logs = np.log(np.where(w > 0, w, 1.0))  # (h, n, n); log 1 = 0 where w = 0
    entropy = -(w * logs).sum(axis=2)  # (h, n): -sum_j w_ij log w_ij
    empty_heads = np.zeros((h, n, 0))
    return AttentionTrace(
        x=np.zeros((n, 0)), q=empty_heads, k=empty_heads, v=empty_heads,
        scores=np.zeros((h, n, n)), weights=weights, head_outputs=empty_heads,
        concat=np.zeros((n, 0)), output=np.zeros((n, 0)), mask=mask, entropy=entropy,
        temperature=1.0)


def _causal(layers: Sequence[np.ndarray]) -> bool:
    """True if no head of any layer puts weight on a later key (exactly 0 above the diagonal)."""
    n = layers[0].shape[1]
    upper = ~np.tri(n, dtype=bool)  # (n, n): key j > query i
    return n > 1 and all(not a[:, upper].any() for a in layers)


class AttentionsSource(Source):
    """Attention weights of every layer, given as they are (no model to run).

    Parameters
    ----------
    attentions : Attentions, or anything :func:`~attention_widget.attentions.normalize_attentions`
        reads: a transformers ``output_attentions`` tuple, a TransformerLens
        ``(layers, [batch,] heads, n, n)`` array, a single ``(heads, n, n)`` array.
    tokens : sequence of str, length n
        Required unless ``attentions`` is an :class:`Attentions`.
    batch : int, default 0
        Which sequence of a batch.
    special : sequence of bool, optional
        True for special tokens; they can then be hidden.
    origin : str
        What the weights came from, for the description line.

    Raises
    ------
    ValueError, TypeError
        As :func:`~attention_widget.attentions.normalize_attentions`, and for layers with
        different numbers of heads.

    Notes
    -----
    The tokens, the heads, the mask (causal when every head of every layer puts exactly 0 on
    later keys) and the temperature (1: without scores there is nothing to re-softmax) are
    fixed; the layer, the head and the query stay live.
    """

    kind = "attentions"
    fixed_by = "the attention weights given"
    not_saved = ("a widget made from attention weights (from_attentions, from_transformers) "
                 "cannot be saved as a state file: keep the weights (numpy.save) and call "
                 "from_attentions again")
    note = ("Only the weights were given: the input, Q, K, V, scores and outputs are not "
            "available.")

    def __init__(self, attentions: Any, tokens: Sequence[str] | None = None, *,
                 batch: int = 0, special: Sequence[bool] | None = None,
                 origin: str = "your attention weights") -> None:
        if isinstance(attentions, Attentions):
            att = attentions
        else:
            if tokens is None:
                raise TypeError("tokens is required: one string per query and key position")
            att = normalize_attentions(attentions, tokens, batch=batch, special=special)
        heads = sorted({int(a.shape[0]) for a in att.layers})
        if len(heads) > 1:
            raise ValueError(f"the layers have different numbers of heads ({heads}); the "
                             "widget shows layers of one head count: pass those layers only")
        self.attentions = att
        self.n_layers = att.n_layers
        self.origin = origin
        self.causal = _causal(att.layers)
        self.own_controls = ("layer", "show_special") if att.special is not None else ("layer",)

    @property
    def fixed(self) -> dict[str, Any]:
        """The tokens, the heads, the mask and temperature 1 (``d_model`` = heads: unknown).

        The view is the detailed one: the overview's stages before and after the weights are
        not known.
        """
        h = self.attentions.n_heads
        return {"text": " ".join(self.attentions.tokens), "d_model": h, "n_heads": h,
                "n_kv_heads": None, "mask": "causal" if self.causal else "none",
                "temperature": 1.0, "seed": 0, "positional": False, "view": "detailed"}

    def describe(self) -> str:
        """Where the weights came from, their layers, heads and tokens."""
        att = self.attentions
        return (f"{self.origin}: {att.n_layers} layers × {att.n_heads} heads over "
                f"{len(att.tokens)} tokens")

    def fixed_line(self) -> str:
        """What the weights fix, in one line."""
        mask = "causal" if self.causal else "none"
        return (f"Fixed by {self.fixed_by}: the tokens, {self.attentions.n_heads} heads, "
                f"mask {mask}, temperature 1.")

    def trace(self, s: Settings, progress: Progress | None = None,
              cancel: object = None) -> Traced:
        """Layer ``s.layer``'s weights (special tokens left out if hidden)."""
        att = self.attentions
        weights, tokens = att.layers[s.layer], list(att.tokens)
        special = None if att.special is None else np.array(att.special, dtype=bool)
        try:  # each head's role over all its tokens (hidden special ones still take weight)
            measured = head_roles(weights, tokens, special)
        except ValueError:  # rows that do not sum to 1 (the notes say so): no roles
            measured = []
        if not s.show_special and att.special is not None:
            keep = np.flatnonzero(~np.array(att.special, dtype=bool))
            if keep.size == 0:
                raise ValueError("The tokens are all special tokens; show them.")
            weights = weights[np.ix_(np.arange(weights.shape[0]), keep, keep)]
            tokens = [tokens[i] for i in keep]
        n = len(tokens)
        mask = np.tri(n, dtype=bool) if self.causal else np.ones((n, n), dtype=bool)
        return Traced(tokens, weights_trace(weights, mask), None, s.mask, s.layer,
                      unavailable=UNAVAILABLE, notes=att.notes, measured=measured)

    def layer_weights(self, s: Settings) -> Attentions:
        """Every layer's weights as given (the model view)."""
        return self.attentions

    def variants(self, s: Settings, temperatures: Sequence[float],
                 head_counts: Sequence[int] | None = None) -> dict[str, AttentionTrace]:
        """None: the weights come at one temperature and one head count."""
        return {}

    @classmethod
    def restore(cls, state: Any) -> AttentionsSource:
        """Never: a state file does not hold every layer's weights (see :attr:`not_saved`)."""
        raise ValueError(cls.not_saved)


class WeightsConstructors:
    """:class:`~attention_widget.widget.AttentionWidget`'s constructors from given weights."""

    @classmethod
    def from_attentions(cls, attentions: Any, tokens: Sequence[str], *, layer: int = 0,
                        batch: int = 0, special: Sequence[bool] | None = None,
                        **kwargs: Any) -> Any:
        """Show attention weights you already have: every layer, each head's role, no model.

        Parameters
        ----------
        attentions : tuple of arrays or tensors, or one array or tensor
            What ``transformers`` returns with ``output_attentions=True`` (a tuple of
            ``(batch, heads, n, n)`` torch tensors or NumPy arrays), TransformerLens-style
            ``(layers, [batch,] heads, n, n)`` arrays, or a single ``(heads, n, n)`` array
            (see :func:`attention_widget.attentions.normalize_attentions`).
        tokens : sequence of str, length n
            The tokens, queries and keys alike (shown as text, never as markup).
        layer : int
            The layer shown first.
        batch : int
            Which sequence of a batch.
        special : sequence of bool, optional
            True for special tokens; they can then be hidden.

        Raises
        ------
        ValueError, TypeError
            For shapes that disagree with the tokens or with each other, NaN weights, a batch
            out of range, layers with different head counts.

        Notes
        -----
        Only the weights are known: the diagram draws the weights and the focus head and says
        that the other stages are not available.  What the checks noticed (rows that do not
        sum to 1, for example) is shown under the weights.  It cannot be saved as a state file.
        """
        source = AttentionsSource(attentions, tokens, batch=batch, special=special,
                                  origin="attention weights given to from_attentions")
        return cls(layer=layer, source=source, **kwargs)

    @classmethod
    def from_transformers(cls, model: Any, tokenizer: Any, text: str, *, layer: int = 0,
                          **kwargs: Any) -> Any:
        """Run a loaded ``transformers`` model on ``text`` and show every layer's attention.

        For any architecture transformers runs, beyond the NumPy families of
        :meth:`from_pretrained`: the model runs once with eager attention (see
        :func:`attention_widget.attentions.run_transformers`) and the widget shows its weights
        as :meth:`from_attentions` does.

        Parameters
        ----------
        model : transformers.PreTrainedModel
        tokenizer : transformers tokenizer
        text : str
        layer : int
            The layer shown first.

        Raises
        ------
        ImportError
            Without torch (not a dependency of this package), with what to do instead.
        TypeError, ValueError
            As :func:`~attention_widget.attentions.run_transformers`.
        """
        from .attentions import run_transformers
        attentions = run_transformers(model, tokenizer, text)
        origin = f"{type(model).__name__} run by transformers"
        return cls(layer=layer, source=AttentionsSource(attentions, origin=origin), **kwargs)

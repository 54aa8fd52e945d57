"""Attention weights you already have: from transformers, TransformerLens or your own arrays.

:func:`normalize_attentions` takes attention weights in the layouts the common tools give and
returns them as one list of per-layer ``(n_heads, n, n)`` NumPy arrays with their tokens,
checked, as an :class:`Attentions`:

==========================================  ================================================
what you pass                               where it comes from
==========================================  ================================================
tuple of ``(batch, heads, q, k)``           ``transformers``: ``model(...,
                                            output_attentions=True).attentions`` (torch
                                            tensors or NumPy arrays)
tuple of ``(heads, q, k)``                  one array per layer, no batch axis
array ``(layers, batch, heads, q, k)``      TransformerLens:
                                            ``cache.stack_activation("pattern")``
array ``(layers, heads, q, k)``             TransformerLens-style, one sequence
array ``(heads, q, k)``                     a single layer
==========================================  ================================================

:func:`run_transformers` runs a loaded ``transformers`` model on a text with eager attention
(torch is needed for that, and only for that) and returns the same :class:`Attentions`.
This module imports neither torch nor transformers at its top.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._checks import check_int

__all__ = ["ROW_SUM_TOLERANCE", "Attentions", "normalize_attentions", "run_transformers"]

#: How far a row's sum may be from 1 before it is reported in :attr:`Attentions.notes`.
ROW_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Attentions:
    """Attention weights of every layer over one sequence of tokens, checked.

    Attributes
    ----------
    layers : list of ndarray, n_layers arrays of shape (n_heads, n, n)
        ``layers[l][h, i, j]``: how much query ``i`` attends key ``j`` in head ``h`` of layer
        ``l``.  Float32 (float64 if given float64), read-only; views of your arrays where no
        conversion was needed.  Layers may differ in their number of heads.
    tokens : list of str, length n
    special : list of bool or None
        True for special tokens ([CLS], BOS, ...), when known.
    notes : list of str
        What the checks noticed without refusing it: rows that do not sum to 1 (sinks,
        dropped keys), negative weights, how the model was run.
    """

    layers: list[np.ndarray]
    tokens: list[str]
    special: list[bool] | None = None
    notes: tuple[str, ...] = ()

    @property
    def n_layers(self) -> int:
        """Number of layers."""
        return len(self.layers)

    @property
    def n_heads(self) -> int:
        """Heads of the first layer (see :attr:`layers` for the others)."""
        return int(self.layers[0].shape[0])


def _as_numpy(x: Any, where: str) -> np.ndarray:
    """A NumPy array of ``x``: a NumPy array, a torch tensor (any device or dtype), a list."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu()
        if not x.is_floating_point() or str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    if x is None:
        raise TypeError(f"{where} is None: the model returned no attention weights there")
    a = np.asarray(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or a.dtype.kind in "iub"):
        raise TypeError(f"{where} must hold real numbers, got an array of dtype {a.dtype}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    return a


def _split_layers(attentions: Any) -> tuple[list[np.ndarray], bool, str]:
    """Per-layer arrays, whether they still have a batch axis, and the layout's name."""
    if isinstance(attentions, (tuple, list)):
        if len(attentions) == 0:
            raise ValueError(
                "attentions is empty: transformers returns an empty tuple when the model runs "
                "with sdpa attention; load it with attn_implementation='eager'"
            )
        layers = [_as_numpy(a, f"attentions[{i}]") for i, a in enumerate(attentions)]
        ndims = {a.ndim for a in layers}
        if ndims == {4}:
            return layers, True, "one (batch, heads, q, k) array per layer"
        if ndims == {3}:
            return layers, False, "one (heads, q, k) array per layer"
        shapes = ", ".join(str(a.shape) for a in layers[:4])
        raise ValueError(
            "attentions as a tuple must hold one (batch, n_heads, n, n) or (n_heads, n, n) "
            f"array per layer, all alike; got shapes {shapes}{'...' if len(layers) > 4 else ''}"
        )
    a = _as_numpy(attentions, "attentions")
    if a.ndim == 5:
        return list(a), True, "a (layers, batch, heads, q, k) array"
    if a.ndim == 4:
        return list(a), False, "a (layers, heads, q, k) array"
    if a.ndim == 3:
        return [a], False, "one (heads, q, k) layer"
    hint = " (for one head use attentions[None])" if a.ndim == 2 else ""
    raise ValueError(
        "attentions must be a tuple of per-layer (batch, n_heads, n, n) arrays, a (n_layers, "
        f"n_heads, n, n) array or one (n_heads, n, n) layer; got shape {a.shape}{hint}"
    )


def _select_batch(layers: list[np.ndarray], batched: bool, batch: object) -> list[np.ndarray]:
    batch = check_int("batch", batch, minimum=None)  # the range is checked below
    if not batched:
        if batch != 0:
            raise ValueError(
                f"batch={batch}, but the attentions have no batch axis (layers of shape "
                f"{layers[0].shape}); leave batch at 0"
            )
        return layers
    size = layers[0].shape[0]
    if not 0 <= batch < size:
        raise ValueError(
            f"batch={batch} is out of range: the attentions hold {size} sequence"
            f"{'s' if size != 1 else ''} (batch axis of length {size}); use 0..{size - 1}"
        )
    return [a[batch] for a in layers]


def _check_tokens(tokens: object, special: object) -> tuple[list[str], list[bool] | None]:
    if isinstance(tokens, str) or not isinstance(tokens, Sequence):
        raise TypeError(f"tokens must be a list of str, got {type(tokens).__name__}")
    for i, t in enumerate(tokens):
        if not isinstance(t, str):
            raise TypeError(f"tokens[{i}] must be a str, got {t!r} ({type(t).__name__})")
    if special is None:
        return list(tokens), None
    flags = list(special) if isinstance(special, Sequence | np.ndarray) else None
    if flags is None or len(flags) != len(tokens):
        raise ValueError(f"special must hold one flag per token ({len(tokens)}), got {special!r}")
    return list(tokens), [bool(f) for f in flags]


def _check_layer(i: int, a: np.ndarray, n: int) -> list[str]:
    """Refuse a layer whose shape disagrees with the tokens; note what looks unusual."""
    if a.shape[1] != a.shape[2]:
        raise ValueError(
            f"attentions[{i}] has {a.shape[1]} query rows against {a.shape[2]} keys (shape "
            f"{a.shape}); every token must be a query and a key: (n_heads, n, n)"
        )
    if a.shape[1] != n or a.shape[0] == 0:
        hint = " (a padded batch? give the tokens of the padded sequence)" if a.shape[1] > n else ""
        raise ValueError(
            f"attentions[{i}] has shape {a.shape}: {a.shape[1]} tokens, but tokens has {n} "
            f"entries{hint}"
        )
    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    if bad:
        raise ValueError(f"attentions[{i}] has {bad} NaN or infinite values")
    notes = []
    if (a < 0).any():
        notes.append(f"layer {i} has negative weights (min {float(a.min()):.3g})")
    sums = a.sum(axis=2)  # (n_heads, n)
    if np.abs(sums - 1).max() > ROW_SUM_TOLERANCE:
        notes.append(
            f"layer {i}: rows sum to {float(sums.min()):.3g}..{float(sums.max()):.3g}, not 1 "
            "(sinks or extra keys take the rest, or these are not softmax weights)"
        )
    return notes


def normalize_attentions(
    attentions: Any,
    tokens: Sequence[str],
    *,
    batch: int = 0,
    special: Sequence[bool] | None = None,
) -> Attentions:
    """Check attention weights in any common layout and give them as per-layer arrays.

    Parameters
    ----------
    attentions : tuple of arrays or tensors, or one array or tensor
        See the module docstring for the layouts: a tuple of per-layer (batch, heads, n, n) or
        (heads, n, n) arrays, a (layers, batch, heads, n, n), (layers, heads, n, n) or
        (heads, n, n) array.  Torch tensors (any device, bfloat16 and float16 too) and NumPy
        arrays alike.
    tokens : sequence of str, length n
        The tokens of the sequence, queries and keys alike.
    batch : int, default 0
        Which sequence of a batch to take (only where there is a batch axis).
    special : sequence of bool, length n, optional
        True for special tokens.

    Returns
    -------
    Attentions
        ``layers`` (n_layers arrays (n_heads, n, n)), ``tokens``, ``special`` and ``notes``:
        rows that do not sum to 1 and negative weights are noted, not refused.

    Raises
    ------
    ValueError
        For no layers, shapes that disagree with the tokens or with each other, a ``batch``
        out of range or given without a batch axis, and NaN or infinite weights; the message
        names the layer and the shapes.
    TypeError
        For arguments of the wrong type.
    """
    tokens, flags = _check_tokens(tokens, special)
    layers, batched, layout = _split_layers(attentions)
    layers = _select_batch(layers, batched, batch)
    notes = []
    out = []
    for i, a in enumerate(layers):
        notes += _check_layer(i, a, len(tokens))
        view = a.view()  # read-only for us, your array stays as it was
        view.setflags(write=False)
        out.append(view)
    return Attentions(out, tokens, flags, (f"read as {layout}", *notes))


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "running a transformers model needs torch, which attention_widget does not "
            "install; install it (`pip install torch`), or use the NumPy models of "
            "attention_widget.load_pretrained, or pass the attentions you have to "
            "normalize_attentions"
        ) from err
    return torch


def _display(tokenizer: Any, ids: list[int]) -> tuple[list[str], list[bool]]:
    """Readable token strings, as the NumPy models show them, and special flags."""
    from .pretrained.tokenizer import Tokenizer, marker_style

    raw = tokenizer.convert_ids_to_tokens(ids)
    special_ids = set(getattr(tokenizer, "all_special_ids", ()))
    special = [i in special_ids for i in ids]
    backend = getattr(tokenizer, "backend_tokenizer", None)  # fast tokenizers
    if backend is None:
        return [str(t) for t in raw], special
    style = marker_style(json.loads(backend.to_str()))
    return Tokenizer(backend, style).display(raw, special), special


def _forward(model: Any, torch: Any, inputs: dict) -> tuple[Any, list[str]]:
    """Run ``model`` for its attentions, in eval mode and with eager attention; restore both."""
    notes = []
    runner = model
    if getattr(model.config, "is_encoder_decoder", False):
        runner = model.get_encoder()
        inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        notes.append("an encoder-decoder model: the encoder's self-attention")
    implementation = getattr(model.config, "_attn_implementation", None)
    switch = implementation not in (None, "eager") and hasattr(model, "set_attn_implementation")
    training = bool(getattr(model, "training", False))
    try:
        if switch:
            model.set_attn_implementation("eager")
            notes.append(f"ran with eager attention (the model uses {implementation!r}, which "
                         "returns no weights; restored after)")  # fmt: skip
        if training:
            model.eval()  # no dropout on the weights
        with torch.no_grad():
            out = runner(**inputs, output_attentions=True)
    finally:
        if switch:
            model.set_attn_implementation(implementation)
        if training:
            model.train()
    return getattr(out, "attentions", None), notes


def run_transformers(model: Any, tokenizer: Any, text: str) -> Attentions:
    """Run a loaded ``transformers`` model on ``text`` and return every layer's attention.

    The model runs once, without gradients, in eval mode and with eager attention (a model
    loaded with another implementation, such as the default ``"sdpa"``, returns no weights;
    it is switched to ``"eager"`` for the run and back after).  For an encoder-decoder model
    the encoder runs.  Works for any architecture transformers has, beyond the NumPy families
    of :func:`attention_widget.load_pretrained`.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        E.g. ``AutoModel.from_pretrained(name)``, on any device.
    tokenizer : transformers tokenizer
        Its tokenizer; special tokens are added as it does by default.
    text : str

    Returns
    -------
    Attentions
        float32 ``(n_heads, n, n)`` per layer, readable tokens (byte-level and SentencePiece
        markers shown as spaces) and special-token flags.

    Raises
    ------
    ImportError
        Without torch.
    TypeError, ValueError
        For a model or tokenizer that is not one, an empty text or no tokens, a text longer
        than the model's positions, or a model that returns no attention weights.
    """
    torch = _import_torch()
    if not hasattr(model, "config") or not callable(model):
        raise TypeError(f"model must be a loaded transformers model, got {type(model).__name__}")
    if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise TypeError(
            f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}"
        )
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a non-empty string, got {text!r}")
    inputs = dict(tokenizer(text, return_tensors="pt"))
    ids = inputs["input_ids"][0].tolist()
    limit = getattr(model.config, "max_position_embeddings", None)
    if not ids or (isinstance(limit, int) and len(ids) > limit):
        raise ValueError(f"text gives {len(ids)} tokens; the model takes 1..{limit}")
    device = getattr(model, "device", None)
    inputs = {k: v.to(device) if device is not None else v for k, v in inputs.items()}
    attentions, notes = _forward(model, torch, inputs)
    if not attentions:
        raise ValueError(
            f"{type(model).__name__} returned no attention weights with output_attentions=True; "
            "load it with attn_implementation='eager'"
        )
    tokens, special = _display(tokenizer, ids)
    result = normalize_attentions(tuple(attentions), tokens, batch=0, special=special)
    return Attentions(result.layers, result.tokens, result.special, (*result.notes, *notes))

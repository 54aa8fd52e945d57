"""What a model family fills in, and the tools it works with.

:class:`Family` is the arithmetic half of :class:`~attention_widget.pretrained.PretrainedModel`:
reading ``config.json`` and the tensors, preparing layers (kept within a byte budget), and one
layer's forward step, whose attention always runs through the engine's
:func:`~attention_widget.engine.attend`.  A family subclasses
:class:`~attention_widget.pretrained.PretrainedModel` and fills in the methods of the section
"the family's part" (see the package docstring for the order in which they run).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Attended, attend, merge_heads
from .blocks import linear
from .checkpoint import FLOAT_DTYPES, Config, Tensors, held_bytes

__all__ = ["AttentionInputs", "Family", "LayerAttention", "LayerCache"]


@dataclass
class AttentionInputs:
    """What the attention of one layer works on, as a family computes it.

    Attributes
    ----------
    x : ndarray, shape (seq, d_model)
        The input of the attention block (after the block's first norm where it has one).
    q : ndarray, shape (n_heads, seq, d_head)
        Queries as really used: after biases, per-head norms and the rotary embedding.
    k : ndarray, shape (n_kv_heads, n_keys, d_head)
    v : ndarray, shape (n_kv_heads, n_keys, d_v)
        Keys and values; query head ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``.
    scale : float
        Multiplies ``q k^T`` (usually ``1 / sqrt(d_head)``).
    window : int, optional
        Sliding window of this layer: keys ``window`` or more positions behind a query are
        masked (in a causal model a query sees itself and the ``window - 1`` keys before it).
    key_positions : ndarray of int, shape (n_keys,), optional
        Positions of the keys, for the causal and window masks; the queries' own positions by
        default.  Needed where keys are not the tokens themselves: cached keys of earlier
        tokens, or entries that stand for blocks of tokens (the position of their last token).
    mask : ndarray of bool, shape (seq, n_keys), optional
        Keys the family itself allows (True), combined with the causal and window masks.
    kept : ndarray of bool, shape (seq, n_keys), optional
        Keys a selector kept for each query (True), e.g. DeepSeek's lightning indexer: the
        others are dropped from the softmax like masked keys, but shown apart from them
        (``trace.kept``).  Combined with the mask only for the softmax.
    latent : ndarray, shape (n_keys, rank), optional
        The compressed vector each key and value is made from (multi-head latent attention's
        ``c_kv``), shown as ``trace.latent``.
    options : dict
        Further keyword arguments of :func:`~attention_widget.engine.attend`.
    """

    x: np.ndarray
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    scale: float
    window: int | None = None
    key_positions: np.ndarray | None = None
    mask: np.ndarray | None = None
    kept: np.ndarray | None = None
    latent: np.ndarray | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LayerAttention:
    """One layer's attention at temperature 1: what went in, the mask and what ``attend`` gave."""

    inputs: AttentionInputs
    mask: np.ndarray | None  # None: every key allowed
    attended: Attended

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays."""
        a, att = self.inputs, self.attended
        return sum(x.nbytes for x in (a.x, a.q, a.k, a.v, att.scores, att.weights))


@dataclass
class LayerCache:
    """The keys and values one layer has computed so far: a key/value cache for generation.

    Empty at first; :meth:`Family.extend_cache` puts each new token's keys and values behind
    the cached ones.

    Attributes
    ----------
    k : ndarray, shape (n_kv_heads, n_keys, d_head), or None while empty
    v : ndarray, shape (n_kv_heads, n_keys, d_v), or None while empty
    key_positions : ndarray of int, shape (n_keys,), or None while empty
        Position of each cached key.
    window : int, optional
        The layer's sliding window, as its attention inputs last gave it.
    state : dict
        Whatever else a family keeps between steps (for example tokens waiting to be
        compressed into one entry).
    """

    k: np.ndarray | None = None
    v: np.ndarray | None = None
    key_positions: np.ndarray | None = None
    window: int | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def n_keys(self) -> int:
        """Keys held."""
        return 0 if self.key_positions is None else int(self.key_positions.size)

    def entries(self, position: int) -> int:
        """Keys a query at ``position`` may still attend: what a cache has to keep.

        All of them, or with a sliding window only those less than ``window`` positions back.
        """
        if self.key_positions is None:
            return 0
        if self.window is None:
            return self.n_keys
        return int(np.count_nonzero(self.key_positions > position - self.window))


class Family:
    """A checkpoint's configuration, tensors and layers, and one layer's forward step.

    Parameters
    ----------
    path : pathlib.Path
        The checkpoint folder.
    config : dict
        Its ``config.json``.
    tensors : Tensors
        Its tensors.
    cache_bytes : int
        Budget for prepared layers kept between calls (see :meth:`layer_weights`).
    """

    _HEAD_ROWS = 8192  # rows of a bfloat16 or float16 output embedding upcast at a time
    causal = True
    family_name = ""  # e.g. "BERT encoder", shown by describe()
    prefixes: tuple[str, ...] = ()  # optional tensor name prefixes, e.g. "bert."
    embedding = ""  # the token embedding's name: also locates the prefix

    def __init__(self, path: Path, config: dict, tensors: Tensors, cache_bytes: int) -> None:
        self.path = path
        self.name = path.name
        self.config = config
        self.model_type = str(config["model_type"])
        self.tensors = tensors
        self.cache_bytes = int(cache_bytes)
        self._layer_cache: dict[int, dict[str, np.ndarray | None]] = {}
        self._last_layer: tuple[int, dict[str, np.ndarray | None]] | None = None
        self._cached_bytes = 0
        self.configure(Config(path / "config.json", config))
        self.prefix = self._find_prefix()
        self._check_shapes()
        self.vocab_size = self.tensors.shape(self.prefix + self.embedding)[0]
        self.stored_dtype = self.tensors.dtype(self.prefix + self.embedding)

    # ---- the family's part --------------------------------------------------------------------
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_ff: int
    max_positions: int

    def configure(self, config: Config) -> None:
        """Read the architecture: set ``n_layers`` ... ``max_positions`` and the family's own."""
        raise NotImplementedError

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The tensors outside the layers, besides the token embedding, and their shapes.

        Names are without the prefix.
        """
        raise NotImplementedError

    def layer_tensors(self, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """The tensors of layer ``i``: key in :meth:`prepare_layer` -> (name, shape)."""
        raise NotImplementedError

    def prepare_layer(self, i: int) -> dict[str, np.ndarray | None]:
        """The tensors of layer ``i`` as float32 arrays, under the keys of :meth:`layer_tensors`.

        Kept by :meth:`layer_weights`.  A family may override this to arrange them.
        """
        return {key: self.weight(name) for key, (name, _) in self.layer_tensors(i).items()}

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the family reads (name without the prefix) and its shape."""
        vocab = self.tensors.shape(self.prefix + self.embedding)[0]
        out = {self.embedding: (vocab, self.d_model), **self.tensor_shapes()}
        for i in range(self.n_layers):
            out.update(self.layer_tensors(i).values())
        return out

    def embed(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Token ids (seq,) at ``positions`` (seq,) -> the input of layer 0, (seq, d_model)."""
        raise NotImplementedError

    def attention_inputs(self, i: int, h: np.ndarray, positions: np.ndarray) -> AttentionInputs:
        """From the input ``h`` (seq, d_model) of layer ``i``: what its attention works on."""
        raise NotImplementedError

    def attention_output(self, i: int, concat: np.ndarray) -> np.ndarray:
        """The output projection of layer ``i``: (seq, n_heads * d_v) -> (seq, d_model).

        By default ``concat @ w_o.T + b_o`` with the layer's ``"w_o"`` (d_model, n_heads *
        d_v) and ``"b_o"`` (d_model,) or None.
        """
        w = self.layer_weights(i)
        return linear(concat, w["w_o"], w.get("b_o"))

    def finish_block(self, i: int, h: np.ndarray, attn_out: np.ndarray) -> np.ndarray:
        """The rest of layer ``i``: block input ``h`` and attention output -> block output.

        ``attn_out`` (seq, d_model) is a new array that the family may overwrite.
        """
        raise NotImplementedError

    def final_norm(self, h: np.ndarray) -> np.ndarray:
        """The norm after the last layer (none by default)."""
        return h

    # ---- the family's part for generation (causal families; defaults fit most) ---------------
    def logits(self, h: np.ndarray) -> np.ndarray:
        """Next-token logits from final hidden states (after :meth:`final_norm`).

        By default ``h @ W.T`` with ``W`` (vocab, d_model) the checkpoint's ``lm_head.weight``,
        or the token embedding when ``tie_word_embeddings`` says the two are tied (when the
        config does not say, they are tied if the checkpoint has no ``lm_head.weight``).  A
        family with more (a final soft-cap, a scale) overrides this.

        Parameters
        ----------
        h : ndarray, shape (seq, d_model)

        Returns
        -------
        ndarray of float32, shape (seq, vocab)
        """
        name = self._head_name()
        if self.tensors.dtype(name) == "F32":  # a view of the file: no copy
            return linear(h, self.tensors.f32(name))
        vocab = self.tensors.shape(name)[0]
        out = np.empty((h.shape[0], vocab), dtype=np.float32)
        for start in range(0, vocab, self._HEAD_ROWS):  # upcast a block of rows at a time
            stop = min(start + self._HEAD_ROWS, vocab)
            out[:, start:stop] = linear(h, self.tensors.f32(name, rows=np.arange(start, stop)))
        return out

    def extend_cache(
        self, i: int, inputs: AttentionInputs, positions: np.ndarray, cache: LayerCache
    ) -> AttentionInputs:
        """Put the new tokens' keys and values behind the cached ones; keep them all.

        By default the keys and values of ``inputs`` (those of the new tokens) are appended to
        ``cache`` (and their positions to ``cache.key_positions``), and ``inputs`` is returned
        with every cached key and value, so that :meth:`attention_mask` and
        :meth:`run_attention` see all the keys and their positions.  A family whose keys are
        not one per token (entries compressed from blocks of tokens, keys chosen among all
        the earlier ones) overrides this.

        Parameters
        ----------
        i : int
            The layer.
        inputs : AttentionInputs
            From :meth:`attention_inputs` on the new tokens only.
        positions : ndarray of int, shape (seq,)
            Positions of the new tokens.
        cache : LayerCache
            The layer's cache; updated in place.

        Returns
        -------
        AttentionInputs
            ``inputs`` with ``k``, ``v`` (n_kv_heads, n_keys, .) and ``key_positions``
            (n_keys,) of every key so far.
        """
        if (inputs.mask is not None or inputs.kept is not None) and cache.n_keys:
            raise NotImplementedError(
                f"{self.model_type}: its attention has a mask or a selection of its own, which "
                "the default key/value cache cannot extend; the family must override "
                "extend_cache"
            )
        keys = positions if inputs.key_positions is None else inputs.key_positions
        if cache.k is None:
            cache.k, cache.v, cache.key_positions = inputs.k, inputs.v, keys
        else:
            cache.k = np.concatenate([cache.k, inputs.k], axis=1)  # (n_kv, n_keys, d_head)
            cache.v = np.concatenate([cache.v, inputs.v], axis=1)
            cache.key_positions = np.concatenate([cache.key_positions, keys])
        cache.window = inputs.window
        return replace(inputs, k=cache.k, v=cache.v, key_positions=cache.key_positions)

    def cache_parts(self, i: int) -> dict[str, int]:
        """What a key/value cache keeps per token (per entry) in layer ``i``, part by part.

        ``{"keys": n_kv_heads * d_head, "values": n_kv_heads * d_head}`` by default (a key and a
        value per key/value head).  A family whose cache holds something else (a latent vector
        and a rotary key, as in multi-head latent attention) overrides this.
        """
        return {"keys": self.n_kv_heads * self.d_head, "values": self.n_kv_heads * self.d_head}

    def cache_width(self, i: int) -> int:
        """Numbers a key/value cache keeps per token (per entry) in layer ``i``.

        The sum of :meth:`cache_parts`: ``2 * n_kv_heads * d_head`` by default, fewer with
        grouped-query attention than with multi-head attention, fewer still with a latent.
        """
        return sum(self.cache_parts(i).values())

    # ---- helpers for families -----------------------------------------------------------------
    def weight(self, name: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Tensor ``name`` (without the prefix) as float32; only ``rows`` if given."""
        return self.tensors.f32(self.prefix + name, rows=rows)

    def stacked(self, names: list[str]) -> np.ndarray:
        """Tensors ``names`` stacked along their first axis, as one new float32 array."""
        return self.tensors.f32_stacked([self.prefix + n for n in names])

    def has(self, name: str) -> bool:
        """Whether the checkpoint holds tensor ``name`` (without the prefix)."""
        return self.prefix + name in self.tensors

    def layer_weights(self, i: int) -> dict[str, np.ndarray | None]:
        """:meth:`prepare_layer`, kept while the prepared layers fit in ``cache_bytes``.

        A layer beyond the budget is kept until another one is asked for: a block calls this
        several times.
        """
        if i in self._layer_cache:
            return self._layer_cache[i]
        if self._last_layer is not None and self._last_layer[0] == i:
            return self._last_layer[1]
        self._last_layer = None  # let it go before the next layer is read
        w = self.prepare_layer(i)
        size = held_bytes(w)
        if self._cached_bytes + size <= self.cache_bytes:
            self._layer_cache[i] = w
            self._cached_bytes += size
        else:  # beyond the budget: kept only while this layer runs
            self._last_layer = (i, w)
        return w

    def _head_name(self) -> str:
        """The tensor that maps final hidden states to logits (see :meth:`logits`)."""
        head = next((n for n in (self.prefix + "lm_head.weight", "lm_head.weight")
                     if n in self.tensors), None)  # fmt: skip
        tied = self.config.get("tie_word_embeddings")
        if tied is None:
            tied = head is None
        if tied:
            return self.prefix + self.embedding
        if head is None:
            raise ValueError(
                f"{self.path}: config.json says tie_word_embeddings=false but "
                f"{self.tensors.file_names} has no lm_head.weight: the output layer is missing"
            )
        if self.tensors.shape(head)[1:] != (self.d_model,):
            raise ValueError(
                f"{self.path}: tensor {head!r} has shape {self.tensors.shape(head)}, expected "
                f"(vocab_size, d_model={self.d_model})"
            )
        return head

    def _find_prefix(self) -> str:
        for prefix in (*self.prefixes, ""):
            if prefix + self.embedding in self.tensors:
                return prefix
        raise ValueError(
            f"{self.path}: {self.tensors.file_names} has no tensor named '{self.embedding}' "
            f"(with an optional prefix {', '.join(repr(p) for p in self.prefixes)}): the "
            f"weights do not look like a {self.model_type!r} model, though config.json says so"
        )

    def _check_shapes(self) -> None:
        t = self.tensors
        for name, shape in self.expected_shapes().items():
            name = self.prefix + name
            if name not in t:
                raise ValueError(
                    f"{self.path}: tensor {name!r} is missing from {t.file_names} "
                    f"(config.json says {self.n_layers} layers of a {self.model_type!r} model)"
                )
            where = t.file(name).path.name
            if t.shape(name) != shape:
                raise ValueError(
                    f"{self.path}: config.json disagrees with the weights: tensor {name!r} in "
                    f"{where} has shape {t.shape(name)}, but config.json "
                    f"(d_model={self.d_model}, n_heads={self.n_heads}, n_kv_heads="
                    f"{self.n_kv_heads}, d_head={self.d_head}, d_ff={self.d_ff}, n_layers="
                    f"{self.n_layers}) implies {shape}"
                )
            if t.dtype(name) not in FLOAT_DTYPES:
                raise ValueError(
                    f"{self.path}: tensor {name!r} in {where} has dtype {t.dtype(name)}; "
                    f"weights must be one of {', '.join(FLOAT_DTYPES)}"
                )

    # ---- one layer ------------------------------------------------------------------------------
    def attention_mask(self, inputs: AttentionInputs, positions: np.ndarray) -> np.ndarray | None:
        """Which keys each query may attend: causal, sliding window and the family's own mask.

        Parameters
        ----------
        inputs : AttentionInputs
            Its ``window``, ``key_positions`` and ``mask`` are used.
        positions : ndarray of int, shape (seq,)
            Positions of the queries.

        Returns
        -------
        ndarray of bool, shape (seq, n_keys), or None when every key is allowed
        """
        keys = positions if inputs.key_positions is None else inputs.key_positions
        mask = inputs.mask
        if self.causal or inputs.window is not None:
            behind = positions[:, None] - keys[None, :]  # (seq, n_keys): how far back key j is
            allowed = behind >= 0 if self.causal else np.ones(behind.shape, dtype=bool)
            if inputs.window is not None:
                allowed &= behind < inputs.window
            mask = allowed if mask is None else allowed & mask
        return mask

    def run_attention(
        self, inputs: AttentionInputs, mask: np.ndarray | None, temperature: float = 1.0
    ) -> Attended:
        """The engine's :func:`~attention_widget.engine.attend` on ``inputs``.

        Parameters
        ----------
        inputs : AttentionInputs
        mask : ndarray of bool, shape (seq, n_keys), or None
            From :meth:`attention_mask`; ``inputs.kept`` (if any) narrows it further.
        temperature : float, default 1.0

        Returns
        -------
        Attended
            ``scores`` and ``weights`` (n_heads, seq, n_keys), ``head_outputs``
            (n_heads, seq, d_v), ``entropy`` (n_heads, seq).
        """
        if inputs.kept is not None:
            mask = inputs.kept if mask is None else mask & inputs.kept
        return attend(
            inputs.q, inputs.k, inputs.v, mask=mask, temperature=temperature,
            scale=inputs.scale, **inputs.options,
        )  # fmt: skip

    def run_block(
        self, i: int, h: np.ndarray, positions: np.ndarray, cache: LayerCache | None = None
    ) -> tuple[np.ndarray, LayerAttention]:
        """Layer ``i`` on ``h`` (seq, d_model): its output and its attention.

        With a ``cache``, ``h`` holds only new tokens: their queries attend the cached keys and
        their own (see :meth:`extend_cache`), and the cache keeps their keys and values.
        """
        inputs = self.attention_inputs(i, h, positions)
        if cache is not None:
            inputs = self.extend_cache(i, inputs, positions, cache)
        mask = self.attention_mask(inputs, positions)
        att = self.run_attention(inputs, mask)
        out = self.attention_output(i, merge_heads(att.head_outputs))
        return self.finish_block(i, h, out), LayerAttention(inputs, mask, att)

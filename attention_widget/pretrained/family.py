"""What a model family fills in, and the tools it works with.

:class:`Family` is the arithmetic half of :class:`~attention_widget.pretrained.PretrainedModel`:
reading ``config.json`` and the tensors, preparing layers (kept within a byte budget), and one
layer's forward step, whose attention always runs through the engine's
:func:`~attention_widget.engine.attend`.  A family subclasses
:class:`~attention_widget.pretrained.PretrainedModel` and fills in the methods of the section
"the family's part" (see the package docstring for the order in which they run).

Above :data:`~attention_widget.long.LONG_THRESHOLD` tokens a layer's attention runs block by
block (:func:`~attention_widget.long.long_attend`): no ``(seq, seq)`` array in any layer, and
the layer shown is a :class:`~attention_widget.long.LongTrace`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import check_int
from ..engine import Attended, AttentionTrace, attend, merge_heads
from ..long import LONG_THRESHOLD, LongAttended, LongTrace, Selector, long_attend
from .blocks import linear
from .checkpoint import Config, Tensors
from .weights import CheckpointWeights

__all__ = ["AttentionInputs", "BlockwiseLayers", "Family", "LayerAttention", "LayerCache"]


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
    causal : bool, optional
        Whether query ``i`` sees only keys at positions ``<= i``; the family's ``causal`` by
        default.  An encoder-decoder's decoder sets it (True for its self-attention, False
        for its cross-attention).
    options : dict
        Further keyword arguments of :func:`~attention_widget.engine.attend`: the engine's
        variants (``bias``, ``softcap``, ``sinks``, ``top_k``).
    x_kv : ndarray, shape (n_keys, d_model), optional
        What the keys and values are made of, where it is not ``x``: a cross-attention's
        second input (the encoder's output).
    alibi : bool
        Whether ``options["bias"]`` is ALiBi's (BLOOM's slopes), for the trace.
    select : callable, optional
        Above ``LONG_THRESHOLD`` tokens, ``kept`` as a function of blocks (no (seq, seq)
        array): ``select(rows, keys, visible)``, as
        :attr:`~attention_widget.long.LongTrace.select`.
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
    causal: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)
    x_kv: np.ndarray | None = None
    alibi: bool = False
    select: Selector | None = None


@dataclass
class LayerAttention:
    """One layer's attention at temperature 1: what went in, the mask and what ``attend`` gave.

    Above ``LONG_THRESHOLD`` tokens ``attended`` is what the block-wise ``long_attend`` keeps
    and ``mask`` is None (the mask is described, see :meth:`Family.described_mask`).
    """

    inputs: AttentionInputs
    mask: np.ndarray | None  # None: every key allowed
    attended: Attended | LongAttended

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The arrays it holds (the overviews rather than scores and weights when long)."""
        a, att = self.inputs, self.attended
        kept = (att.scores, att.weights) if isinstance(att, Attended) else (
            att.head_outputs, att.weights_overview, att.scores_overview)
        return (a.x, a.q, a.k, a.v, *kept)

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays."""
        return sum(x.nbytes for x in self.arrays())


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


class BlockwiseLayers:
    """What a family does with inputs longer than ``LONG_THRESHOLD`` (a base of :class:`Family`).

    Each layer's attention runs block by block (:func:`~attention_widget.long.long_attend`) on
    the queries, keys and values the family made, under a described mask; the layer shown is a
    :class:`~attention_widget.long.LongTrace`.
    """

    name: str
    causal: bool
    attention_output: Callable[[int, np.ndarray], np.ndarray]  # (the family's, see Family)
    #: Checked between the blocks of a long layer: once set (a ``threading.Event``), the
    #: forward stops with :class:`~attention_widget.long.AttentionCancelled`.
    cancel: object = None
    progress: Any = None  # callable(fraction, message) or None: the model's, see PretrainedModel

    def described_mask(self, inputs: AttentionInputs) -> tuple[str, int | None]:
        """The mask of a long layer as :func:`~attention_widget.long.long_attend` takes it.

        ``("causal" | "none" | "sliding", window)``; ValueError when the layer's attention
        needs more than a described mask and the variants of :meth:`long_variants` (its own
        mask, a selector's keys, cached keys, another option).
        """
        beyond = [what for what, there in (
            ("its own mask", inputs.mask is not None),
            ("a selector's keys given for every cell", inputs.kept is not None),
            ("keys that are not one per token", inputs.key_positions is not None),
            *((f"the option {name!r}", True) for name in inputs.options
              if name not in ("softcap", "sinks") and not (name == "bias" and inputs.alibi)),
        ) if there]  # fmt: skip
        if beyond:
            raise ValueError(
                f"{self.name}: this layer's attention ({', '.join(beyond)}) has no block-wise "
                f"form; inputs longer than {LONG_THRESHOLD} tokens cannot be shown")
        if inputs.window is None:
            return ("causal" if self.causal else "none"), None
        if not self.causal:
            raise ValueError(f"{self.name}: a bidirectional sliding window has no block-wise "
                             f"form; inputs longer than {LONG_THRESHOLD} tokens cannot be shown")
        return "sliding", inputs.window

    @staticmethod
    def long_variants(inputs: AttentionInputs) -> dict[str, Any]:
        """The variants of a long layer as :func:`~attention_widget.long.long_attend` takes them.

        ``{"alibi": bool, "softcap": c or None, "sinks": (n_heads,) or None, "select": ...}``:
        ALiBi's bias (computed block by block from the slopes, whatever
        ``inputs.options["bias"]`` holds), the soft-cap and the sinks of ``inputs.options``, and
        a selector's choice (``inputs.select``).
        """
        return {"alibi": inputs.alibi, "softcap": inputs.options.get("softcap"),
                "sinks": inputs.options.get("sinks"), "select": inputs.select}

    def run_long_attention(self, inputs: AttentionInputs, temperature: float = 1.0,
                           what: str | None = "attention", scores_overview: bool = True,
                           head_outputs: bool = True) -> LongAttended:
        """:func:`~attention_widget.long.long_attend` on ``inputs``.

        It reports progress as ``what`` and stops once :attr:`cancel` is set; with ``what``
        None, neither.
        """
        kind, window = self.described_mask(inputs)
        progress = self.progress if what is not None else None
        report = None if progress is None else (lambda f, m: progress(f, f"{what}: {m}"))
        return long_attend(inputs.q, inputs.k, inputs.v, scale=inputs.scale,
                           temperature=temperature, mask=kind, window=window,
                           scores_overview=scores_overview, progress=report,
                           cancel=None if what is None else self.cancel,
                           head_outputs=head_outputs, **self.long_variants(inputs))

    def long_trace(self, i: int, layer: LayerAttention, temperature: float) -> LongTrace:
        """Layer ``i``'s attention as a :class:`~attention_widget.long.LongTrace` at ``T``.

        ``layer`` is its block-wise attention at temperature 1 (its scores overview is kept:
        scores come before the temperature).
        """
        a, att = layer.inputs, layer.attended
        kind, window = self.described_mask(a)

        def outputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # when first read
            heads = layer.attended.head_outputs  # at T = 1; at another T, computed again
            if temperature != 1.0:
                heads = self.run_long_attention(a, temperature, None, False).head_outputs
            concat = merge_heads(heads)  # (seq, n_heads * d_v)
            return heads, concat, self.attention_output(i, concat)

        if temperature != 1.0:  # the weights alone: no view draws the outputs
            att = self.run_long_attention(a, temperature, f"layer {i + 1}, temperature "
                                          f"{temperature:g}", False, head_outputs=False)
            att = att._replace(scores_overview=layer.attended.scores_overview)
        return LongTrace(
            x=a.x, q=a.q, k=a.k, v=a.v, outputs=outputs, entropy=att.entropy, lse=att.lse,
            weights_overview=att.weights_overview, scores_overview=att.scores_overview,
            tile=att.tile, mask_kind=kind, window=window, temperature=temperature,
            scale=a.scale, sink_weights=att.sink_weights, **self.long_variants(a))


class Family(CheckpointWeights, BlockwiseLayers):
    """A checkpoint's configuration, tensors and layers, and one layer's forward step.

    Built from a checkpoint folder as :class:`~.weights.CheckpointWeights` is (the same
    parameters); reads its configuration (:meth:`configure`), then checks its tensors.
    """

    causal = True
    family_name = ""  # e.g. "BERT encoder", shown by describe()

    def __init__(self, path: Path, config: dict, tensors: Tensors, cache_bytes: int) -> None:
        super().__init__(path, config, tensors, cache_bytes)
        self._all_true: dict[tuple[int, ...], np.ndarray] = {}  # masks of unmasked traces
        self.configure(Config(path / "config.json", config))
        self.locate_tensors()

    # ---- the family's part --------------------------------------------------------------------
    # configure() sets n_layers, n_heads, n_kv_heads, d_model, d_head, d_ff (annotated on
    # CheckpointWeights, which checks the tensors against them) and:
    max_positions: int

    def configure(self, config: Config) -> None:
        """Read the architecture: set ``n_layers`` ... ``max_positions`` and the family's own."""
        raise NotImplementedError

    def embed(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Token ids (seq,) at ``positions`` (seq,) -> the input of layer 0, (seq, d_model)."""
        raise NotImplementedError

    def attention_inputs(self, i: int, h: np.ndarray, positions: np.ndarray) -> AttentionInputs:
        """From the input ``h`` (seq, d_model) of layer ``i``: what its attention works on."""
        raise NotImplementedError

    def concat_heads(self, inputs: AttentionInputs, head_outputs: np.ndarray) -> np.ndarray:
        """The input of the output projection: by default the head outputs side by side.

        Parameters
        ----------
        inputs : AttentionInputs
            What the heads worked on.
        head_outputs : ndarray, shape (n_heads, seq, d_v)

        Returns
        -------
        ndarray, shape (seq, n_heads * d_v)
        """
        return merge_heads(head_outputs)

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

    def layer_window(self, i: int) -> int | None:
        """The sliding window of layer ``i`` (see :class:`AttentionInputs`); None: no window."""
        return None

    # ---- the family's part for generation (causal families; defaults fit most) ---------------
    def logits(self, h: np.ndarray) -> np.ndarray:
        """Next-token logits from final hidden states (after :meth:`final_norm`).

        By default ``h @ W.T`` with ``W`` (vocab, d_model) the checkpoint's ``lm_head.weight``,
        or the token embedding when ``tie_word_embeddings`` says the two are tied (when the
        config does not say, they are tied if the checkpoint has no ``lm_head.weight``): ``h``
        (seq, d_model) -> float32 (seq, vocab).  A family with more (a final soft-cap, a scale)
        overrides this.
        """
        return self.output_projection(h)

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

    # ---- one layer ------------------------------------------------------------------------------
    def attention_mask(self, inputs: AttentionInputs, positions: np.ndarray) -> np.ndarray | None:
        """Which keys each query may attend: causal, sliding window and the family's own mask.

        Parameters
        ----------
        inputs : AttentionInputs
            Its ``window``, ``key_positions``, ``mask`` and ``causal`` are used.
        positions : ndarray of int, shape (seq,)
            Positions of the queries.

        Returns
        -------
        ndarray of bool, shape (seq, n_keys), or None when every key is allowed
        """
        keys = positions if inputs.key_positions is None else inputs.key_positions
        causal = self.causal if inputs.causal is None else inputs.causal
        mask = inputs.mask
        if causal or inputs.window is not None:
            behind = positions[:, None] - keys[None, :]  # (seq, n_keys): how far back key j is
            allowed = behind >= 0 if causal else np.ones(behind.shape, dtype=bool)
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

    def attend_layer(
        self, i: int, h: np.ndarray, positions: np.ndarray, cache: LayerCache | None = None
    ) -> LayerAttention:
        """Layer ``i``'s attention on its input ``h`` (seq, d_model), block by block if long.

        With a ``cache``, ``h`` holds only new tokens: their queries attend the cached keys and
        their own (see :meth:`extend_cache`), and the cache keeps their keys and values.
        """
        inputs = self.attention_inputs(i, h, positions)
        if cache is not None:
            inputs = self.extend_cache(i, inputs, positions, cache)
        elif h.shape[0] > LONG_THRESHOLD:  # block by block: no (seq, seq) array
            return LayerAttention(inputs, None, self.run_long_attention(
                inputs, what=f"layer {i + 1}"))
        return self.attend_inputs(inputs, positions)

    def attend_inputs(self, inputs: AttentionInputs, positions: np.ndarray) -> LayerAttention:
        """The attention on ready-made ``inputs``: their mask and the softmax."""
        mask = self.attention_mask(inputs, positions)
        return LayerAttention(inputs, mask, self.run_attention(inputs, mask))

    def attention_step(
        self, i: int, h: np.ndarray, positions: np.ndarray, cache: LayerCache | None = None
    ) -> tuple[np.ndarray, LayerAttention]:
        """Layer ``i``'s attention (:meth:`attend_layer`) and its output (seq, d_model)."""
        layer = self.attend_layer(i, h, positions, cache)
        concat = self.concat_heads(layer.inputs, layer.attended.head_outputs)
        return self.attention_output(i, concat), layer

    def run_block(
        self,
        i: int,
        h: np.ndarray,
        positions: np.ndarray,
        cache: LayerCache | None = None,
        ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, LayerAttention]:
        """Layer ``i`` on ``h`` (seq, d_model): its output and its attention.

        With a ``cache``, see :meth:`attention_step`.  ``ids`` (seq,) are the token ids, for
        families whose blocks read them (DeepSeek V4 routes its first feed-forwards by token
        id); the others ignore them.
        """
        out, layer = self.attention_step(i, h, positions, cache)
        return self.finish_block(i, h, out), layer

    def make_trace(
        self,
        layer: LayerAttention,
        temperature: float,
        project: Callable[[np.ndarray], np.ndarray],
    ) -> AttentionTrace:
        """The trace of one layer's attention (kept at temperature 1) at ``temperature``.

        Parameters
        ----------
        layer : LayerAttention
            Its inputs, mask and the ``attend`` result at temperature 1 (whose scores are
            reused: they do not depend on the temperature).
        temperature : float
            Checked already.
        project : callable
            The layer's output projection, (seq, n_heads * d_v) -> (seq, d_model).

        Returns
        -------
        AttentionTrace
            As :meth:`~attention_widget.pretrained.PretrainedModel.trace` describes it.
        """
        a, options = layer.inputs, layer.inputs.options
        att = self.run_attention(a, layer.mask, temperature)
        concat = self.concat_heads(a, att.head_outputs)
        mask = layer.mask
        if mask is None:  # every key allowed: the same all-True array each time
            shape = att.scores.shape[1:]
            mask = self._all_true.get(shape)
            if mask is None:
                mask = self._all_true[shape] = np.ones(shape, dtype=bool)
                mask.setflags(write=False)
        kept = att.kept
        if a.kept is not None:  # a selector's (seq, n_keys) -> (n_heads, seq, n_keys)
            kept = np.broadcast_to(a.kept & mask, att.weights.shape)
        return AttentionTrace(
            x=a.x, q=a.q, k=a.k, v=a.v, scores=layer.attended.scores, weights=att.weights,
            head_outputs=att.head_outputs, concat=concat, output=project(concat), mask=mask,
            entropy=att.entropy, temperature=temperature, x_kv=a.x_kv, latent=a.latent,
            alibi=a.alibi, softcap=options.get("softcap"), sinks=options.get("sinks"),
            top_k=options.get("top_k"), sink_weights=att.sink_weights, kept=kept,
        )  # fmt: skip

    def layer_kind(self, layer: int) -> str:
        """What kind of attention ``layer`` has, in a few words (for a layer control).

        ``"sliding, window 4096"`` for a layer whose queries see only the last keys,
        ``"full"`` for the other layers of a model that has such layers, else ``"causal"``
        (decoders) or ``"bidirectional"`` (encoders).  Families with other kinds of layers
        name them their own way.

        Raises
        ------
        TypeError, ValueError
            For a bad ``layer``.
        """
        layer = self.check_layer(layer)
        window = self.layer_window(layer)
        if window is not None:
            return f"sliding, window {window}"
        if any(self.layer_window(i) is not None for i in range(self.n_layers)):
            return "full"
        return "causal" if self.causal else "bidirectional"

    def check_layer(self, layer: object, count: int | None = None, stack: str = "") -> int:
        """``layer`` as an int, checked: ``0 <= layer < count`` (``n_layers`` by default).

        ``stack`` names the layers in the message (``"decoder "``: "has 6 decoder layers").

        Raises
        ------
        TypeError, ValueError
            Naming ``layer``.
        """
        count = self.n_layers if count is None else count
        layer = check_int("layer", layer, minimum=None)  # the range is checked below
        if not 0 <= layer < count:
            raise ValueError(
                f"layer must be in 0..{count - 1} ({self.name} has {count} {stack}layers), "
                f"got {layer}"
            )
        return int(layer)

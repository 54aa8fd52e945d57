"""BART: ``model_type`` ``"bart"``, an encoder-decoder.

Both stacks start alike: token embeddings (times ``sqrt(d_model)`` when the config sets
``scale_embedding``) plus learned position embeddings read at ``position + 2`` (BART's offset:
rows 0 and 1 are never read), then a LayerNorm (``layernorm_embedding``).  Encoder layers are
post-LayerNorm, like BERT's::

    a = LayerNorm(h + attention(h) @ w_o.T + b_o)              # every token sees every token
    h = LayerNorm(a + gelu(a @ fc1.T + b1) @ fc2.T + b2)

Decoder layers put a cross-attention between the two, whose queries come from the decoder
and whose keys and values come from the encoder's output ``e``::

    a = LayerNorm(h + causal_attention(h) @ w_o.T + b_o)
    c = LayerNorm(a + cross_attention(a, e) @ w_co.T + b_co)   # weights (target, source)
    h = LayerNorm(c + gelu(c @ fc1.T + b1) @ fc2.T + b2)

The inherited methods (:meth:`~Bart.trace`, :meth:`~Bart.attentions`,
:meth:`~Bart.hidden_states`, ...) are the encoder's, on the source text.  The decoder's take
the source and the target: :meth:`~Bart.decoder_attentions`, :meth:`~Bart.cross_attentions`,
:meth:`~Bart.decoder_hidden_states`, :meth:`~Bart.decoder_trace` and
:meth:`~Bart.cross_trace`.  The target is the decoder's input as the tokenizer gives it
(special tokens included), like ``decoder_input_ids`` in ``transformers``.  Tensor names follow
``transformers``' ``BartModel`` (``encoder.layers.{i}.self_attn.q_proj.weight``,
``decoder.layers.{i}.encoder_attn.q_proj.weight``, ...), optionally prefixed with ``model.``
(``BartForConditionalGeneration``).  Layers are prepared under one numbering: the encoder's
``0 .. n_layers - 1``, then the decoder's.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._checks import check_temperature
from ..engine import AttentionTrace, merge_heads, split_heads
from . import AttentionInputs, LayerAttention, PretrainedModel
from .blocks import layer_norm, linear
from .checkpoint import Config, Tensors
from .tokenizer import Tokenizer

__all__ = ["POSITION_OFFSET", "Bart", "DecoderRun"]

#: BART reads the position embedding of position ``p`` at row ``p + 2``.
POSITION_OFFSET = 2


class DecoderRun(NamedTuple):
    """The decoder on one target, given the encoder's output.

    Attributes
    ----------
    hidden : list of ndarray, n_decoder_layers + 1 arrays of shape (target_len, d_model)
        The decoder's embeddings, then the output of each decoder layer.
    self_attention, cross_attention : list of LayerAttention, one per decoder layer
        Each layer's causal self-attention and its cross-attention (keys: the source).
    """

    hidden: list[np.ndarray]
    self_attention: list[LayerAttention]
    cross_attention: list[LayerAttention]


class Bart(PretrainedModel):
    """A BART encoder-decoder (see the module docstring).

    ``n_layers``, ``n_heads``, ``d_head`` and ``d_ff`` describe the encoder;
    ``n_decoder_layers``, ``n_decoder_heads``, ``d_decoder_head`` and ``d_decoder_ff`` the
    decoder (whose heads also do the cross-attention).
    """

    causal = False  # the encoder; the decoder's self-attention sets its own causal mask
    family_name = "BART encoder-decoder"
    prefixes = ("model.",)
    embedding = "shared.weight"
    _PAIR_CACHE = 4  # (source, target) pairs whose decoder run is kept

    def __init__(
        self, path: Path, config: dict, tensors: Tensors, tokenizer: Tokenizer, *args, **kwargs
    ) -> None:
        self._pairs: OrderedDict[tuple[str, str], DecoderRun] = OrderedDict()
        super().__init__(path, config, tensors, tokenizer, *args, **kwargs)

    # ---- configuration and tensors ------------------------------------------------------------
    def configure(self, config: Config) -> None:
        """Read both stacks' sizes, the activation and ``scale_embedding``."""
        self.d_model = config.positive_int("d_model", "hidden_size")
        self.n_layers = config.positive_int("encoder_layers", "num_hidden_layers")
        self.n_heads = config.positive_int("encoder_attention_heads", "num_attention_heads")
        self.n_kv_heads = self.n_heads
        self.d_ff = config.positive_int("encoder_ffn_dim")
        self.n_decoder_layers = config.positive_int("decoder_layers")
        self.n_decoder_heads = config.positive_int("decoder_attention_heads")
        self.d_decoder_ff = config.positive_int("decoder_ffn_dim")
        for key, heads in (
            ("encoder_attention_heads", self.n_heads),
            ("decoder_attention_heads", self.n_decoder_heads),
        ):
            if self.d_model % heads:
                raise config.error(f"d_model={self.d_model} is not divisible by {key}={heads}")
        self.d_head = self.d_model // self.n_heads
        self.d_decoder_head = self.d_model // self.n_decoder_heads
        self.max_positions = config.positive_int("max_position_embeddings", default=1024)
        self.act = config.activation("activation_function", default="gelu")
        scaled = bool(config.get("scale_embedding", default=False))
        self.embed_scale = math.sqrt(self.d_model) if scaled else 1.0
        for key in ("normalize_before", "add_final_layer_norm"):
            if config.get(key, default=False):
                raise config.error(
                    f"{key}=true (pre-LayerNorm layers, as in mBART) is not supported: BART's "
                    "layers are post-LayerNorm"
                )
        self.eps = 1e-5  # torch.nn.LayerNorm's default, which BART's norms keep

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Both stacks' position embeddings and embedding norms."""
        d, rows = self.d_model, self.max_positions + POSITION_OFFSET
        out = {}
        for stack in ("encoder", "decoder"):
            out[f"{stack}.embed_positions.weight"] = (rows, d)
            out[f"{stack}.layernorm_embedding.weight"] = (d,)
            out[f"{stack}.layernorm_embedding.bias"] = (d,)
        return out

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """The encoder's tensors and the decoder layers'."""
        out = super().expected_shapes()
        for j in range(self.n_decoder_layers):
            out.update(self.layer_tensors(self.n_layers + j).values())
        return out

    def layer_tensors(self, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Layer ``i``: encoder layer ``i``, or decoder layer ``i - n_layers``.

        Keys: ``w_q ... b_o`` (self-attention), ``w_cq ... b_co`` (cross-attention, decoder
        only), ``ln1`` / ``lnc`` / ``ln2`` (after self-attention, cross-attention and the
        feed-forward), ``fc1``, ``fc2``.
        """
        d = self.d_model
        if i < self.n_layers:
            p, ff = f"encoder.layers.{i}.", self.d_ff
            parts = self._projections(p + "self_attn.", "")
        else:
            p, ff = f"decoder.layers.{i - self.n_layers}.", self.d_decoder_ff
            parts = self._projections(p + "self_attn.", "")
            parts.update(self._projections(p + "encoder_attn.", "c"))
            parts["lnc_w"] = (p + "encoder_attn_layer_norm.weight", (d,))
            parts["lnc_b"] = (p + "encoder_attn_layer_norm.bias", (d,))
        parts.update({
            "ln1_w": (p + "self_attn_layer_norm.weight", (d,)),
            "ln1_b": (p + "self_attn_layer_norm.bias", (d,)),
            "fc1_w": (p + "fc1.weight", (ff, d)),
            "fc1_b": (p + "fc1.bias", (ff,)),
            "fc2_w": (p + "fc2.weight", (d, ff)),
            "fc2_b": (p + "fc2.bias", (d,)),
            "ln2_w": (p + "final_layer_norm.weight", (d,)),
            "ln2_b": (p + "final_layer_norm.bias", (d,)),
        })  # fmt: skip
        return parts

    def _projections(self, prefix: str, tag: str) -> dict[str, tuple[str, tuple[int, ...]]]:
        d = self.d_model
        out = {}
        for key, name in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj")):
            out[f"w_{tag}{key}"] = (f"{prefix}{name}.weight", (d, d))
            out[f"b_{tag}{key}"] = (f"{prefix}{name}.bias", (d,))
        return out

    # ---- the encoder (the inherited steps) ----------------------------------------------------
    def embed(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The encoder's embeddings of ``ids`` at ``positions``."""
        return self._embed("encoder", ids, positions)

    def _embed(self, stack: str, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """``LayerNorm(tokens[ids] * embed_scale + positions[positions + 2])``, (seq, d_model)."""
        own = f"{stack}.embed_tokens.weight"  # present only where not tied to ``shared``
        h = self.weight(own if self.has(own) else self.embedding, rows=ids)  # (seq, d_model)
        if self.embed_scale != 1.0:
            h *= np.float32(self.embed_scale)
        h += self.weight(f"{stack}.embed_positions.weight", rows=positions + POSITION_OFFSET)
        return layer_norm(
            h,
            self.weight(f"{stack}.layernorm_embedding.weight"),
            self.weight(f"{stack}.layernorm_embedding.bias"),
            self.eps,
        )

    def _inputs(
        self, i: int, tag: str, x: np.ndarray, source: np.ndarray, n_heads: int, causal: bool
    ) -> AttentionInputs:
        """Queries of ``x``, keys and values of ``source`` (x itself for self-attention)."""
        w = self.layer_weights(i)
        q = linear(x, w[f"w_{tag}q"], w[f"b_{tag}q"])  # (n_q, d_model)
        k = linear(source, w[f"w_{tag}k"], w[f"b_{tag}k"])  # (n_k, d_model)
        v = linear(source, w[f"w_{tag}v"], w[f"b_{tag}v"])
        return AttentionInputs(
            x=x,
            q=split_heads(q, n_heads),  # (n_heads, n_q, d_head)
            k=split_heads(k, n_heads),  # (n_heads, n_k, d_head)
            v=split_heads(v, n_heads),
            scale=1.0 / math.sqrt(self.d_model // n_heads),
            causal=causal,
            x_kv=None if source is x else source,
        )

    def attention_inputs(self, i: int, h: np.ndarray, positions: np.ndarray) -> AttentionInputs:
        """Encoder layer ``i``: queries, keys and values of the block input (no norm before)."""
        return self._inputs(i, "", h, h, self.n_heads, causal=False)

    def finish_block(self, i: int, h: np.ndarray, attn_out: np.ndarray) -> np.ndarray:
        """Residual + LayerNorm, then the feed-forward (``attn_out`` is reused)."""
        w = self.layer_weights(i)
        attn_out += h  # residual
        return self._feed_forward(w, layer_norm(attn_out, w["ln1_w"], w["ln1_b"], self.eps))

    def _feed_forward(self, w: dict, a: np.ndarray) -> np.ndarray:
        """``LayerNorm(a + act(a @ fc1.T + b1) @ fc2.T + b2)``, (seq, d_model)."""
        ff = self.act(linear(a, w["fc1_w"], w["fc1_b"]))  # (seq, d_ff)
        out = linear(ff, w["fc2_w"], w["fc2_b"])  # (seq, d_model)
        out += a  # residual
        return layer_norm(out, w["ln2_w"], w["ln2_b"], self.eps)

    # ---- the decoder --------------------------------------------------------------------------
    def _attention(self, inputs: AttentionInputs, positions: np.ndarray) -> LayerAttention:
        mask = self.attention_mask(inputs, positions)
        return LayerAttention(inputs, mask, self.run_attention(inputs, mask))

    def decoder_block(
        self, j: int, h: np.ndarray, memory: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, LayerAttention, LayerAttention]:
        """Decoder layer ``j`` on ``h`` (target, d_model), the encoder output ``memory``.

        Returns
        -------
        out : ndarray, shape (target_len, d_model)
        self_attention, cross_attention : LayerAttention
            Weights (n_decoder_heads, target_len, target_len) and (..., source_len).
        """
        i = self.n_layers + j
        w = self.layer_weights(i)
        heads = self.n_decoder_heads
        own = self._attention(self._inputs(i, "", h, h, heads, causal=True), positions)
        a = linear(merge_heads(own.attended.head_outputs), w["w_o"], w["b_o"])  # (tgt, d)
        a += h  # residual
        a = layer_norm(a, w["ln1_w"], w["ln1_b"], self.eps)
        cross = self._attention(self._inputs(i, "c", a, memory, heads, causal=False), positions)
        c = linear(merge_heads(cross.attended.head_outputs), w["w_co"], w["b_co"])  # (tgt, d)
        c += a  # residual
        c = layer_norm(c, w["lnc_w"], w["lnc_b"], self.eps)
        return self._feed_forward(w, c), own, cross

    def run_decoder(self, memory: np.ndarray, target_ids: np.ndarray) -> DecoderRun:
        """The whole decoder on ``target_ids`` (target_len,), given the encoder output."""
        positions = np.arange(target_ids.size)
        h = self._embed("decoder", target_ids, positions)
        run = DecoderRun([h], [], [])
        for j in range(self.n_decoder_layers):
            h, own, cross = self.decoder_block(j, h, memory, positions)
            run.hidden.append(h)
            run.self_attention.append(own)
            run.cross_attention.append(cross)
        return run

    def _decoded(self, source: str, target: str) -> DecoderRun:
        """The decoder run on ``target`` after the encoder on ``source`` (kept, read-only)."""
        key = (source, target)
        run = self._pairs.get(key)
        if run is None:
            ids = self.encode(target).ids
            run = self.run_decoder(self.hidden_states(source)[-1], ids)
            for layer in run.self_attention + run.cross_attention:
                a = layer.inputs
                for arr in (a.x, a.q, a.k, a.v, layer.attended.scores, layer.attended.weights):
                    arr.setflags(write=False)
            for arr in run.hidden:
                arr.setflags(write=False)
            self._pairs[key] = run
            while len(self._pairs) > self._PAIR_CACHE:
                self._pairs.popitem(last=False)
        self._pairs.move_to_end(key)
        return run

    def clear_cache(self) -> None:
        """Forget prepared layers and cached results, the decoder's runs too."""
        super().clear_cache()
        self._pairs.clear()

    # ---- the decoder's results ----------------------------------------------------------------
    def decoder_hidden_states(self, source: str, target: str) -> list[np.ndarray]:
        """The decoder's embeddings and each decoder layer's output, on ``target``.

        Like ``decoder_hidden_states`` of ``transformers`` with ``source`` as the input and
        ``target`` (tokenized, special tokens included) as the decoder's input.

        Returns
        -------
        list of ndarray, n_decoder_layers + 1 arrays of shape (target_len, d_model), read-only
        """
        return list(self._decoded(source, target).hidden)

    def decoder_attentions(self, source: str, target: str) -> list[np.ndarray]:
        """Causal self-attention probabilities of each decoder layer.

        Returns
        -------
        list of ndarray, n_decoder_layers arrays of shape (n_decoder_heads, target_len,
        target_len), read-only
        """
        return [a.attended.weights for a in self._decoded(source, target).self_attention]

    def cross_attentions(self, source: str, target: str) -> list[np.ndarray]:
        """Cross-attention probabilities of each decoder layer: target tokens over source tokens.

        Returns
        -------
        list of ndarray, n_decoder_layers arrays of shape (n_decoder_heads, target_len,
        source_len), read-only
        """
        return [a.attended.weights for a in self._decoded(source, target).cross_attention]

    def decoder_trace(
        self, source: str, target: str, layer: int, temperature: float = 1.0
    ) -> AttentionTrace:
        """The causal self-attention of decoder layer ``layer`` on ``target``.

        As :meth:`trace` for the encoder: ``x`` is the decoder layer's input, ``q``, ``k`` and
        ``v`` (n_decoder_heads, target_len, d_decoder_head), ``weights`` (n_decoder_heads,
        target_len, target_len), ``output`` the self-attention's output projection.
        """
        return self._decoder_trace(source, target, layer, temperature, cross=False)

    def cross_trace(
        self, source: str, target: str, layer: int, temperature: float = 1.0
    ) -> AttentionTrace:
        """The cross-attention of decoder layer ``layer``: target queries over source keys.

        ``x`` (target_len, d_model) is what the queries are made of (the decoder state after
        the layer's self-attention); ``q`` (n_decoder_heads, target_len, d_decoder_head);
        ``k`` and ``v`` (n_decoder_heads, source_len, d_decoder_head) are projections of the
        encoder's output (``hidden_states(source)[-1]``); ``scores``, ``weights`` and ``mask``
        are (n_decoder_heads, target_len, source_len) and (target_len, source_len): every
        source token is visible.
        """
        return self._decoder_trace(source, target, layer, temperature, cross=True)

    def _decoder_trace(
        self, source: str, target: str, layer: int, temperature: float, cross: bool
    ) -> AttentionTrace:
        j = self.check_layer(layer, self.n_decoder_layers, "decoder ")
        temperature = check_temperature(temperature)
        run = self._decoded(source, target)
        kept = (run.cross_attention if cross else run.self_attention)[j]
        w = self.layer_weights(self.n_layers + j)
        tag = "c" if cross else ""
        return self.make_trace(
            kept, temperature, lambda concat: linear(concat, w[f"w_{tag}o"], w[f"b_{tag}o"])
        )

    def forward_pair_ids(
        self, ids: np.ndarray, target_ids: np.ndarray
    ) -> tuple[list[np.ndarray], list[np.ndarray], DecoderRun]:
        """The encoder on ``ids`` and the decoder on ``target_ids``, without caching.

        Returns
        -------
        encoder_hidden, encoder_attentions : lists of ndarray
            As :meth:`forward_ids` returns them.
        decoder : DecoderRun
        """
        hidden, attentions = self.forward_ids(ids)
        target_ids = np.asarray(target_ids, dtype=np.int64)
        if target_ids.ndim != 1 or target_ids.size == 0:
            raise ValueError(
                f"target_ids must be a non-empty 1-D array of token ids, got shape "
                f"{target_ids.shape}"
            )
        if target_ids.min() < 0 or target_ids.max() >= self.vocab_size:
            raise ValueError(f"target_ids must lie in [0, {self.vocab_size})")
        if target_ids.size > self.max_tokens:
            raise ValueError(
                f"target_ids has {target_ids.size} tokens; max_tokens is {self.max_tokens}"
            )
        return hidden, attentions, self.run_decoder(hidden[-1], target_ids)

    def generate(self, *args: object, **kwargs: object) -> None:
        """Not for an encoder-decoder: a target is given, not generated.

        Raises
        ------
        ValueError
            Always: see :meth:`decoder_attentions` and :meth:`cross_attentions` for the
            decoder's attention on a target text.
        """
        raise ValueError(
            f"{self.name} is a {self.family_name}: generate runs causal decoders only; give the "
            "target text to decoder_attentions, cross_attentions or cross_trace instead"
        )

    def describe(self) -> str:
        """One line on the architecture: both stacks."""
        return (
            f"{self.name}: {self.family_name}, encoder {self.n_layers} layers x {self.n_heads} "
            f"heads (bidirectional), decoder {self.n_decoder_layers} layers x "
            f"{self.n_decoder_heads} heads (causal self-attention and cross-attention), "
            f"d_model {self.d_model} ({self.stored_dtype})"
        )

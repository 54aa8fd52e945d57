"""BERT-style encoders (BERT, MiniLM): ``model_type`` ``"bert"``.

Word, position and token-type embeddings summed and LayerNormed; then per layer, post-LayerNorm::

    a = LayerNorm(h + attention(h) @ w_o.T + b_o)
    h = LayerNorm(a + gelu(a @ w_in.T + b_in) @ w_out.T + b_out)

Attention is bidirectional (every token sees every token).  Tensor names follow
``transformers``' ``BertModel`` (``encoder.layer.{i}.attention.self.query.weight``, ...),
optionally prefixed with ``bert.`` (``BertForMaskedLM`` and friends).
"""

from __future__ import annotations

import math

import numpy as np

from ..engine import split_heads
from . import AttentionInputs, PretrainedModel
from .blocks import layer_norm, linear
from .checkpoint import Config

__all__ = ["Bert"]


class Bert(PretrainedModel):
    """A BERT encoder (see the module docstring)."""

    causal = False
    family_name = "BERT encoder"
    prefixes = ("bert.",)
    embedding = "embeddings.word_embeddings.weight"

    def configure(self, config: Config) -> None:
        """Read sizes, ``layer_norm_eps``, ``hidden_act`` and the position embedding type."""
        self.d_model = config.positive_int("hidden_size")
        self.n_heads = config.positive_int("num_attention_heads")
        self.n_kv_heads = self.n_heads
        self.n_layers = config.positive_int("num_hidden_layers")
        self.d_ff = config.positive_int("intermediate_size")
        if self.d_model % self.n_heads:
            raise config.error(
                f"hidden_size={self.d_model} is not divisible by num_attention_heads={self.n_heads}"
            )
        self.d_head = self.d_model // self.n_heads
        self.eps = config.number("layer_norm_eps", default=1e-12)
        self.max_positions = config.positive_int("max_position_embeddings", default=512)
        self.act = config.activation("hidden_act", default="gelu")
        position_type = config.get("position_embedding_type", default="absolute")
        if position_type != "absolute":
            raise config.error(
                f"position_embedding_type={position_type!r} is not supported (only 'absolute')"
            )

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The position embeddings and the embeddings' LayerNorm."""
        d = self.d_model
        return {
            "embeddings.position_embeddings.weight": (self.max_positions, d),
            "embeddings.LayerNorm.weight": (d,),
            "embeddings.LayerNorm.bias": (d,),
        }

    def layer_tensors(self, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """The projections, feed-forward and norms of layer ``i``."""
        d, ff, p = self.d_model, self.d_ff, f"encoder.layer.{i}."
        return {
            "w_q": (p + "attention.self.query.weight", (d, d)),
            "b_q": (p + "attention.self.query.bias", (d,)),
            "w_k": (p + "attention.self.key.weight", (d, d)),
            "b_k": (p + "attention.self.key.bias", (d,)),
            "w_v": (p + "attention.self.value.weight", (d, d)),
            "b_v": (p + "attention.self.value.bias", (d,)),
            "w_o": (p + "attention.output.dense.weight", (d, d)),
            "b_o": (p + "attention.output.dense.bias", (d,)),
            "ln1_w": (p + "attention.output.LayerNorm.weight", (d,)),
            "ln1_b": (p + "attention.output.LayerNorm.bias", (d,)),
            "w_in": (p + "intermediate.dense.weight", (ff, d)),
            "b_in": (p + "intermediate.dense.bias", (ff,)),
            "w_out": (p + "output.dense.weight", (d, ff)),
            "b_out": (p + "output.dense.bias", (d,)),
            "ln2_w": (p + "output.LayerNorm.weight", (d,)),
            "ln2_b": (p + "output.LayerNorm.bias", (d,)),
        }

    def embed(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """``LayerNorm(word[ids] + position[positions] + token_type[0])``: one segment."""
        h = self.weight(self.embedding, rows=ids) + self.weight(
            "embeddings.position_embeddings.weight", rows=positions
        )
        token_type = "embeddings.token_type_embeddings.weight"
        if self.has(token_type):
            h += self.weight(token_type, rows=np.zeros(1, dtype=np.int64))
        return layer_norm(
            h,
            self.weight("embeddings.LayerNorm.weight"),
            self.weight("embeddings.LayerNorm.bias"),
            self.eps,
        )

    def attention_inputs(self, i: int, h: np.ndarray, positions: np.ndarray) -> AttentionInputs:
        """Queries, keys and values of the block input itself (no norm before attention)."""
        w = self.layer_weights(i)
        q = linear(h, w["w_q"], w["b_q"])  # (seq, d_model)
        k = linear(h, w["w_k"], w["b_k"])
        v = linear(h, w["w_v"], w["b_v"])
        return AttentionInputs(
            x=h,
            q=split_heads(q, self.n_heads),  # (n_heads, seq, d_head)
            k=split_heads(k, self.n_heads),
            v=split_heads(v, self.n_heads),
            scale=1.0 / math.sqrt(self.d_head),
        )

    def finish_block(self, i: int, h: np.ndarray, attn_out: np.ndarray) -> np.ndarray:
        """Residual + LayerNorm, feed-forward, residual + LayerNorm (``attn_out`` is reused)."""
        w = self.layer_weights(i)
        attn_out += h  # residual
        a = layer_norm(attn_out, w["ln1_w"], w["ln1_b"], self.eps)  # (seq, d_model)
        ff = self.act(linear(a, w["w_in"], w["b_in"]))  # (seq, d_ff)
        out = linear(ff, w["w_out"], w["b_out"])  # (seq, d_model)
        out += a  # residual
        return layer_norm(out, w["ln2_w"], w["ln2_b"], self.eps)

"""BLOOM: ``model_type`` ``"bloom"``.

No position embeddings at all: each head ``h`` adds a linear bias to its scores instead
(ALiBi), ``-m_h (i - j)`` for query ``i`` and key ``j``, so far keys count less, by a slope
``m_h`` of its own (BLOOM's slopes: ``2^(-8h/n)`` for ``n`` a power of two), from the
positions of queries and keys (:func:`~attention_widget.variants.alibi_bias`); the engine's
``attend`` adds it to the scores.  Token embeddings are LayerNormed
(``word_embeddings_layernorm``); then per layer, pre-LayerNorm::

    x = LayerNorm_1(h)
    a = h + alibi_causal_attention(x) @ w_o.T + b_o
    h = a + gelu_tanh(LayerNorm_2(a) @ w_up.T + b_up) @ w_down.T + b_down

and a final LayerNorm (``ln_f``).  With ``apply_residual_connection_post_layernorm`` the
residuals start from the normed states (``x``, ``LayerNorm_2(a)``) instead.  The query, key
and value projections are one fused ``query_key_value`` whose output columns are grouped by
head: ``[q_0 k_0 v_0 | q_1 k_1 v_1 | ...]``, each part ``d_head`` wide.  Tensor names follow
``transformers``' ``BloomModel`` (``h.{i}.self_attention.query_key_value.weight``, ...),
optionally prefixed with ``transformer.`` (``BloomForCausalLM``).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..long import LONG_THRESHOLD
from ..variants import alibi_bias
from . import AttentionInputs, LayerCache, PretrainedModel
from .blocks import gelu_tanh, layer_norm, linear
from .checkpoint import Config

__all__ = ["Bloom"]


class Bloom(PretrainedModel):
    """A BLOOM decoder (see the module docstring)."""

    causal = True
    family_name = "BLOOM decoder"
    prefixes = ("transformer.",)
    embedding = "word_embeddings.weight"

    def configure(self, config: Config) -> None:
        """Read sizes, ``layer_norm_epsilon`` and where the residuals start."""
        self.d_model = config.positive_int("hidden_size", "n_embed")
        self.n_heads = config.positive_int("n_head", "num_attention_heads")
        self.n_kv_heads = self.n_heads
        self.n_layers = config.positive_int("n_layer", "num_hidden_layers")
        if self.d_model % self.n_heads:
            raise config.error(
                f"hidden_size={self.d_model} is not divisible by n_head={self.n_heads}"
            )
        self.d_head = self.d_model // self.n_heads
        self.d_ff = 4 * self.d_model
        self.eps = config.number("layer_norm_epsilon", default=1e-5)
        # ALiBi has no table of positions: the length is bounded by memory (and training)
        self.max_positions = config.positive_int("seq_length", default=2048)
        self._last_bias: tuple = (None, None)  # (positions and dtype, their ALiBi bias)
        self.residual_from_norm = bool(
            config.get("apply_residual_connection_post_layernorm", default=False)
        )

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The embedding's LayerNorm and the final one."""
        d = self.d_model
        return {
            "word_embeddings_layernorm.weight": (d,),
            "word_embeddings_layernorm.bias": (d,),
            "ln_f.weight": (d,),
            "ln_f.bias": (d,),
        }

    def layer_tensors(self, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """The norms, the fused attention projection, its output and the MLP of layer ``i``."""
        d, ff, p = self.d_model, self.d_ff, f"h.{i}."
        return {
            "ln1_w": (p + "input_layernorm.weight", (d,)),
            "ln1_b": (p + "input_layernorm.bias", (d,)),
            "w_qkv": (p + "self_attention.query_key_value.weight", (3 * d, d)),
            "b_qkv": (p + "self_attention.query_key_value.bias", (3 * d,)),
            "w_o": (p + "self_attention.dense.weight", (d, d)),
            "b_o": (p + "self_attention.dense.bias", (d,)),
            "ln2_w": (p + "post_attention_layernorm.weight", (d,)),
            "ln2_b": (p + "post_attention_layernorm.bias", (d,)),
            "w_up": (p + "mlp.dense_h_to_4h.weight", (ff, d)),
            "b_up": (p + "mlp.dense_h_to_4h.bias", (ff,)),
            "w_down": (p + "mlp.dense_4h_to_h.weight", (d, ff)),
            "b_down": (p + "mlp.dense_4h_to_h.bias", (d,)),
        }

    def embed(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """``LayerNorm(word_embeddings[ids])``: no positions (ALiBi adds them to the scores)."""
        return layer_norm(
            self.weight(self.embedding, rows=ids),
            self.weight("word_embeddings_layernorm.weight"),
            self.weight("word_embeddings_layernorm.bias"),
            self.eps,
        )

    def attention_inputs(self, i: int, h: np.ndarray, positions: np.ndarray) -> AttentionInputs:
        """``x = LayerNorm_1(h)``; q, k, v from the fused projection, grouped by head."""
        w = self.layer_weights(i)
        x = layer_norm(h, w["ln1_w"], w["ln1_b"], self.eps)  # (seq, d_model)
        fused = linear(x, w["w_qkv"], w["b_qkv"])  # (seq, 3 d_model) = per head [q_h k_h v_h]
        fused = fused.reshape(x.shape[0], self.n_heads, 3, self.d_head)  # (seq, heads, 3, dh)
        q, k, v = (np.ascontiguousarray(fused[:, :, j].transpose(1, 0, 2)) for j in range(3))
        long = positions.size > LONG_THRESHOLD
        return AttentionInputs(
            x=x,
            q=q,  # (n_heads, seq, d_head)
            k=k,
            v=v,
            scale=1.0 / math.sqrt(self.d_head),
            # (n_heads, seq, seq); above LONG_THRESHOLD tokens made block by block instead
            options={} if long else {"bias": self._alibi(positions, x.dtype)},
            alibi=True,
        )

    def _alibi(self, positions: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """ALiBi's bias over ``positions`` in ``dtype``, made once for every layer of a forward."""
        key, last = (positions.tobytes(), np.dtype(dtype)), self._last_bias
        if last[0] != key:  # (one read and one write: safe when threads share the model)
            last = self._last_bias = (key, alibi_bias(self.n_heads, positions).astype(dtype))
        return last[1]

    def extend_cache(
        self, i: int, inputs: AttentionInputs, positions: np.ndarray, cache: LayerCache
    ) -> AttentionInputs:
        """The cached keys and values in front, and ALiBi's bias over every one of them."""
        inputs = super().extend_cache(i, inputs, positions, cache)
        bias = alibi_bias(self.n_heads, positions, inputs.key_positions)  # (heads, new, n_keys)
        return replace(inputs, options={**inputs.options, "bias": bias})

    def finish_block(self, i: int, h: np.ndarray, attn_out: np.ndarray) -> np.ndarray:
        """Residual, then ``LayerNorm_2``, the GELU MLP and its residual."""
        w = self.layer_weights(i)
        if self.residual_from_norm:
            attn_out += layer_norm(h, w["ln1_w"], w["ln1_b"], self.eps)
        else:
            attn_out += h  # residual
        x = layer_norm(attn_out, w["ln2_w"], w["ln2_b"], self.eps)  # (seq, d_model)
        out = linear(gelu_tanh(linear(x, w["w_up"], w["b_up"])), w["w_down"], w["b_down"])
        out += x if self.residual_from_norm else attn_out  # residual
        return out

    def final_norm(self, h: np.ndarray) -> np.ndarray:
        """``ln_f``."""
        return layer_norm(h, self.weight("ln_f.weight"), self.weight("ln_f.bias"), self.eps)

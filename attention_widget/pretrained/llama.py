"""Llama and Qwen3: ``model_type`` ``"llama"`` and ``"qwen3"``.

Token embeddings only (positions enter through the rotary embedding); then per layer,
pre-RMSNorm::

    x = RMSNorm_1(h)
    q, k = RoPE(x @ w_q.T), RoPE(x @ w_k.T);  v = x @ w_v.T      # grouped: fewer k, v heads
    a = h + causal_attention(q, k, v) @ w_o.T
    h = a + (silu(x2 @ w_gate.T) * (x2 @ w_up.T)) @ w_down.T,  x2 = RMSNorm_2(a)

and a final RMSNorm.  Query head ``j`` shares key/value head ``j // (n_heads / n_kv_heads)``.
Qwen3 adds an RMSNorm of each query and key head (``q_norm``, ``k_norm``) before the rotation,
and its ``head_dim`` (often 128) need not equal ``d_model / n_heads``.  Tensor names follow
``transformers``' ``LlamaModel`` (``layers.{i}.self_attn.q_proj.weight``, ...), optionally
prefixed with ``model.`` (``LlamaForCausalLM``).
"""

from __future__ import annotations

import math

import numpy as np

from ..engine import split_heads
from . import AttentionInputs, PretrainedModel
from .blocks import apply_rope, linear, rms_norm, rope_angles, rope_inverse_frequencies
from .checkpoint import Config

__all__ = ["Llama", "Qwen3"]


class Llama(PretrainedModel):
    """A Llama decoder (see the module docstring)."""

    causal = True
    family_name = "Llama decoder"
    prefixes = ("model.",)
    embedding = "embed_tokens.weight"
    qk_norm = False  # Qwen3: RMSNorm of each query and key head before RoPE
    default_head_dim: int | None = None  # None: d_model // n_heads
    sliding_layers = False  # families with sliding-window layers read layer_types themselves

    def configure(self, config: Config) -> None:
        """Read sizes, biases, ``rms_norm_eps``, the activation and the RoPE parameters."""
        self.d_model = config.positive_int("hidden_size")
        self.n_heads = config.positive_int("num_attention_heads")
        self.n_kv_heads = config.positive_int("num_key_value_heads", default=self.n_heads)
        self.n_layers = config.positive_int("num_hidden_layers")
        self.d_ff = config.positive_int("intermediate_size")
        self.d_head = config.positive_int(
            "head_dim", default=self.default_head_dim or self.d_model // self.n_heads
        )
        if self.n_heads % self.n_kv_heads:
            raise config.error(
                f"num_attention_heads={self.n_heads} is not divisible by "
                f"num_key_value_heads={self.n_kv_heads}"
            )
        self.eps = config.number("rms_norm_eps", default=1e-6)
        self.max_positions = config.positive_int("max_position_embeddings", default=2048)
        self.act = config.activation("hidden_act", default="silu")
        self.attention_bias = bool(config.get("attention_bias", default=False))
        self.mlp_bias = bool(config.get("mlp_bias", default=False))
        layer_types = config.get("layer_types", default=()) or ()
        sliding = config.get("use_sliding_window", default=False) or (
            "sliding_attention" in layer_types
        )
        if sliding and not self.sliding_layers:
            raise config.error(
                "sliding-window attention (use_sliding_window / layer_types) is not supported"
            )
        self.scale = 1.0 / math.sqrt(self.d_head)  # multiplies q k^T
        self.rope_attention_factor = 1.0  # multiplies RoPE's cos and sin (YaRN)
        self.inv_freq = self._rope(config)

    def _rope(self, config: Config) -> np.ndarray:
        """RoPE's inverse frequencies from ``rope_parameters`` (or the older ``rope_scaling``)."""
        params = config.get("rope_parameters", "rope_scaling", default={})
        if not isinstance(params, dict):
            raise config.error(f"rope_parameters must be an object, got {params!r}")
        theta = params.get("rope_theta", config.get("rope_theta", default=10000.0))
        if float(params.get("partial_rotary_factor", 1.0)) != 1.0:
            raise config.error("partial_rotary_factor != 1 is not supported")
        try:
            return rope_inverse_frequencies(self.d_head, float(theta), params)
        except ValueError as err:
            raise config.error(str(err)) from None

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The final norm."""
        return {"norm.weight": (self.d_model,)}

    def layer_tensors(self, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """The norms, projections (biases if the config has them) and MLP of layer ``i``."""
        d, ff, dh, p = self.d_model, self.d_ff, self.d_head, f"layers.{i}."
        hd, kvd = self.n_heads * dh, self.n_kv_heads * dh
        parts = {
            "ln1": (p + "input_layernorm.weight", (d,)),
            "w_q": (p + "self_attn.q_proj.weight", (hd, d)),
            "w_k": (p + "self_attn.k_proj.weight", (kvd, d)),
            "w_v": (p + "self_attn.v_proj.weight", (kvd, d)),
            "w_o": (p + "self_attn.o_proj.weight", (d, hd)),
            "ln2": (p + "post_attention_layernorm.weight", (d,)),
            "w_gate": (p + "mlp.gate_proj.weight", (ff, d)),
            "w_up": (p + "mlp.up_proj.weight", (ff, d)),
            "w_down": (p + "mlp.down_proj.weight", (d, ff)),
        }
        if self.attention_bias:
            parts["b_q"] = (p + "self_attn.q_proj.bias", (hd,))
            parts["b_k"] = (p + "self_attn.k_proj.bias", (kvd,))
            parts["b_v"] = (p + "self_attn.v_proj.bias", (kvd,))
            parts["b_o"] = (p + "self_attn.o_proj.bias", (d,))
        if self.mlp_bias:
            parts["b_gate"] = (p + "mlp.gate_proj.bias", (ff,))
            parts["b_up"] = (p + "mlp.up_proj.bias", (ff,))
            parts["b_down"] = (p + "mlp.down_proj.bias", (d,))
        if self.qk_norm:
            parts["q_norm"] = (p + "self_attn.q_norm.weight", (dh,))
            parts["k_norm"] = (p + "self_attn.k_norm.weight", (dh,))
        return parts

    def embed(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """``embed_tokens[ids]`` (positions enter through RoPE)."""
        return self.weight(self.embedding, rows=ids)

    def attention_inputs(self, i: int, h: np.ndarray, positions: np.ndarray) -> AttentionInputs:
        """``x = RMSNorm_1(h)``; q, k, v; Qwen3's per-head norms; q and k rotated by RoPE."""
        w = self.layer_weights(i)
        x = rms_norm(h, w["ln1"], self.eps)  # (seq, d_model)
        q = split_heads(linear(x, w["w_q"], w.get("b_q")), self.n_heads)  # (n_heads, seq, d_head)
        k = split_heads(linear(x, w["w_k"], w.get("b_k")), self.n_kv_heads)  # (n_kv, seq, d_head)
        v = split_heads(linear(x, w["w_v"], w.get("b_v")), self.n_kv_heads)
        if self.qk_norm:
            q = rms_norm(q, w["q_norm"], self.eps)
            k = rms_norm(k, w["k_norm"], self.eps)
        cos, sin = rope_angles(positions, self.inv_freq, self.rope_attention_factor)  # (seq, dh)
        return AttentionInputs(
            x=x,
            q=apply_rope(q, cos, sin),
            k=apply_rope(k, cos, sin),
            v=v,
            scale=self.scale,
            window=self.layer_window(i),
            options=self.attention_options(i),
        )

    def attention_options(self, i: int) -> dict:
        """Further arguments of the engine's ``attend`` for layer ``i`` (none for Llama)."""
        return {}

    def finish_block(self, i: int, h: np.ndarray, attn_out: np.ndarray) -> np.ndarray:
        """Residual, then RMSNorm_2, the SwiGLU MLP and its residual (``attn_out`` is reused)."""
        w = self.layer_weights(i)
        attn_out += h  # residual
        x = rms_norm(attn_out, w["ln2"], self.eps)  # (seq, d_model)
        gate = self.act(linear(x, w["w_gate"], w.get("b_gate")))  # (seq, d_ff)
        gate *= linear(x, w["w_up"], w.get("b_up"))
        out = linear(gate, w["w_down"], w.get("b_down"))  # (seq, d_model)
        out += attn_out  # residual
        return out

    def final_norm(self, h: np.ndarray) -> np.ndarray:
        """The final RMSNorm."""
        return rms_norm(h, self.weight("norm.weight"), self.eps)


class Qwen3(Llama):
    """A Qwen3 decoder: Llama with ``q_norm`` and ``k_norm``, ``head_dim`` 128 by default."""

    family_name = "Qwen3 decoder"
    qk_norm = True
    default_head_dim = 128

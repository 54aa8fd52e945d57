"""GPT-2: ``model_type`` ``"gpt2"``.

Token plus learned position embeddings; then per layer, pre-LayerNorm::

    x = LayerNorm_1(h)
    a = h + causal_attention(x) @ c_proj + b
    h = a + gelu_tanh(LayerNorm_2(a) @ c_fc + b) @ c_proj + b

and a final LayerNorm (``ln_f``).  The query, key and value projections are one fused ``c_attn``.
Its layers are ``Conv1D``: the weight is stored ``(in, out)``, the transpose of
``torch.nn.Linear``'s; the layers are prepared as transposed views.  Tensor names follow
``transformers``' ``GPT2Model`` (``h.{i}.attn.c_attn.weight``, ...), optionally prefixed with
``transformer.`` (``GPT2LMHeadModel``).
"""

from __future__ import annotations

import math

import numpy as np

from ..engine import split_heads
from . import AttentionInputs, PretrainedModel
from .blocks import layer_norm, linear
from .checkpoint import Config

__all__ = ["GPT2"]


class GPT2(PretrainedModel):
    """A GPT-2 decoder (see the module docstring)."""

    causal = True
    family_name = "GPT-2 decoder"
    prefixes = ("transformer.",)
    embedding = "wte.weight"

    def configure(self, config: Config) -> None:
        """Read sizes, ``layer_norm_epsilon``, the activation and the attention scale flags."""
        self.d_model = config.positive_int("n_embd", "hidden_size")
        self.n_heads = config.positive_int("n_head", "num_attention_heads")
        self.n_kv_heads = self.n_heads
        self.n_layers = config.positive_int("n_layer", "num_hidden_layers")
        if self.d_model % self.n_heads:
            raise config.error(f"n_embd={self.d_model} is not divisible by n_head={self.n_heads}")
        self.d_head = self.d_model // self.n_heads
        self.d_ff = config.positive_int("n_inner", default=4 * self.d_model)
        self.eps = config.number("layer_norm_epsilon", default=1e-5)
        self.max_positions = config.positive_int(
            "n_positions", "max_position_embeddings", default=1024
        )
        self.act = config.activation("activation_function", default="gelu_new")
        self.scale_attn_weights = bool(config.get("scale_attn_weights", default=True))
        self.scale_by_layer = bool(config.get("scale_attn_by_inverse_layer_idx", default=False))

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The position embeddings and the final norm."""
        d = self.d_model
        return {"wpe.weight": (self.max_positions, d), "ln_f.weight": (d,), "ln_f.bias": (d,)}

    def layer_tensors(self, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """The norms, attention and MLP of layer ``i`` (``Conv1D`` weights stored (in, out))."""
        d, ff, p = self.d_model, self.d_ff, f"h.{i}."
        return {
            "ln1_w": (p + "ln_1.weight", (d,)),
            "ln1_b": (p + "ln_1.bias", (d,)),
            "w_qkv": (p + "attn.c_attn.weight", (d, 3 * d)),
            "b_qkv": (p + "attn.c_attn.bias", (3 * d,)),
            "w_o": (p + "attn.c_proj.weight", (d, d)),
            "b_o": (p + "attn.c_proj.bias", (d,)),
            "ln2_w": (p + "ln_2.weight", (d,)),
            "ln2_b": (p + "ln_2.bias", (d,)),
            "w_fc": (p + "mlp.c_fc.weight", (d, ff)),
            "b_fc": (p + "mlp.c_fc.bias", (ff,)),
            "w_proj": (p + "mlp.c_proj.weight", (ff, d)),
            "b_proj": (p + "mlp.c_proj.bias", (d,)),
        }

    def prepare_layer(self, i: int) -> dict[str, np.ndarray | None]:
        """The tensors of layer ``i`` as float32; the ``Conv1D`` weights as transposed views.

        Transposed, the weights (``"w_..."``) are ``(out, in)`` like ``torch.nn.Linear``'s,
        for :func:`~attention_widget.pretrained.blocks.linear`.
        """
        w = super().prepare_layer(i)
        return {key: a.T if key.startswith("w_") else a for key, a in w.items()}

    def embed(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """``wte[ids] + wpe[positions]``."""
        h = self.weight(self.embedding, rows=ids)  # (seq, d_model)
        h += self.weight("wpe.weight", rows=positions)
        return h

    def attention_inputs(self, i: int, h: np.ndarray, positions: np.ndarray) -> AttentionInputs:
        """``x = ln_1(h)``, then q, k, v from the fused ``c_attn``."""
        w = self.layer_weights(i)
        x = layer_norm(h, w["ln1_w"], w["ln1_b"], self.eps)  # (seq, d_model)
        qkv = linear(x, w["w_qkv"], w["b_qkv"])  # (seq, 3 d_model)
        q, k, v = np.split(qkv, 3, axis=1)  # 3 x (seq, d_model)
        scale = 1.0 / math.sqrt(self.d_head) if self.scale_attn_weights else 1.0
        if self.scale_by_layer:
            scale /= i + 1
        return AttentionInputs(
            x=x,
            q=split_heads(q, self.n_heads),  # (n_heads, seq, d_head)
            k=split_heads(k, self.n_heads),
            v=split_heads(v, self.n_heads),
            scale=scale,
        )

    def finish_block(self, i: int, h: np.ndarray, attn_out: np.ndarray) -> np.ndarray:
        """Residual, then ``ln_2``, the MLP and its residual (``attn_out`` is reused)."""
        w = self.layer_weights(i)
        attn_out += h  # residual
        x = layer_norm(attn_out, w["ln2_w"], w["ln2_b"], self.eps)  # (seq, d_model)
        ff = self.act(linear(x, w["w_fc"], w["b_fc"]))  # (seq, d_ff)
        out = linear(ff, w["w_proj"], w["b_proj"])  # (seq, d_model)
        out += attn_out  # residual
        return out

    def final_norm(self, h: np.ndarray) -> np.ndarray:
        """``ln_f``."""
        return layer_norm(h, self.weight("ln_f.weight"), self.weight("ln_f.bias"), self.eps)

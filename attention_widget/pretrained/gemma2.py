"""Gemma 2: ``model_type`` ``"gemma2"``.

Llama's attention (grouped-query heads, rotary embeddings) with Gemma 2's changes:

* **soft-capped scores**: ``scores <- c tanh(scores / c)`` with ``c = attn_logit_softcapping``,
  before the mask, so no score leaves ``(-c, c)``; the final logits are capped the same way
  with ``final_logit_softcapping`` (:meth:`Gemma2.logits`, which generation uses);
* **the scale** is ``query_pre_attn_scalar ** -0.5``, not ``head_dim ** -0.5``;
* **sliding and global layers**, alternating as ``layer_types`` says (sliding first);
* **norms around both halves of the block**, each an RMSNorm with weight ``1 + w``::

      h = h + RMSNorm_post_attn(attention(RMSNorm_in(h)))
      h = h + RMSNorm_post_ff(mlp(RMSNorm_pre_ff(h)))

* **token embeddings scaled** by ``sqrt(hidden_size)``, and a GeGLU MLP (``gelu_tanh(x
  w_gate) * (x w_up)``).

Tensor names follow ``transformers``' ``Gemma2Model`` (``layers.{i}.pre_feedforward_layernorm
.weight``, ...), optionally prefixed with ``model.``.  The prepared norm weights hold ``1 + w``.
"""

from __future__ import annotations

import math

import numpy as np

from ..variants import softcap
from .blocks import linear, rms_norm
from .checkpoint import Config
from .llama import Llama

__all__ = ["Gemma2"]

_NORMS = ("ln1", "ln2", "ln_pre_ff", "ln_post_ff")  # prepared as 1 + weight


class Gemma2(Llama):
    """A Gemma 2 decoder (see the module docstring)."""

    family_name = "Gemma 2 decoder"
    default_head_dim = 256
    sliding_layers = True

    def configure(self, config: Config) -> None:
        """Llama's sizes, then the scale, the soft-caps, the layer kinds and the activation."""
        super().configure(config)
        if config.get("use_bidirectional_attention", default=False):
            raise config.error("use_bidirectional_attention=true is not supported")
        self.scale = config.number("query_pre_attn_scalar", default=256) ** -0.5
        self.softcap = config.get("attn_logit_softcapping", default=None)
        self.final_softcap = config.get("final_logit_softcapping", default=None)
        for key, cap in (("attn_logit_softcapping", self.softcap),
                         ("final_logit_softcapping", self.final_softcap)):  # fmt: skip
            if cap is not None and not (isinstance(cap, (int, float)) and cap > 0):
                raise config.error(f"{key} must be a number > 0 or null, got {cap!r}")
        self.windows = config.layer_windows(self.n_layers)
        self.act = config.activation("hidden_activation", "hidden_act", default="gelu_pytorch_tanh")
        self.embed_scale = np.float32(math.sqrt(self.d_model))

    def layer_tensors(self, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Llama's tensors and the norms before and after the MLP."""
        parts = super().layer_tensors(i)
        p, d = f"layers.{i}.", self.d_model
        parts["ln_pre_ff"] = (p + "pre_feedforward_layernorm.weight", (d,))
        parts["ln_post_ff"] = (p + "post_feedforward_layernorm.weight", (d,))
        return parts

    def prepare_layer(self, i: int) -> dict[str, np.ndarray | None]:
        """The layer's tensors as float32, its norm weights as ``1 + w``."""
        w = super().prepare_layer(i)
        for key in _NORMS:
            w[key] = 1.0 + w[key]
        return w

    def layer_window(self, i: int) -> int | None:
        """The window of a ``"sliding_attention"`` layer; None for a global one."""
        return self.windows[i]

    def attention_options(self, i: int) -> dict:
        """The soft-cap of the scores (none when ``attn_logit_softcapping`` is null)."""
        return {} if self.softcap is None else {"softcap": float(self.softcap)}

    def embed(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """``embed_tokens[ids] * sqrt(hidden_size)`` (positions enter through RoPE)."""
        h = self.weight(self.embedding, rows=ids)  # (seq, d_model)
        h *= self.embed_scale
        return h

    def finish_block(self, i: int, h: np.ndarray, attn_out: np.ndarray) -> np.ndarray:
        """Norm the attention output, residual; normed MLP, norm its output, residual."""
        w = self.layer_weights(i)
        a = rms_norm(attn_out, w["ln2"], self.eps)  # post-attention norm
        a += h  # residual
        x = rms_norm(a, w["ln_pre_ff"], self.eps)  # (seq, d_model)
        gate = self.act(linear(x, w["w_gate"]))  # (seq, d_ff)
        gate *= linear(x, w["w_up"])
        out = rms_norm(linear(gate, w["w_down"]), w["ln_post_ff"], self.eps)  # (seq, d_model)
        out += a  # residual
        return out

    def final_norm(self, h: np.ndarray) -> np.ndarray:
        """The final RMSNorm (weight ``1 + w``)."""
        return rms_norm(h, 1.0 + self.weight("norm.weight"), self.eps)

    def logits(self, h: np.ndarray) -> np.ndarray:
        """Next-token logits of final hidden states, soft-capped by ``final_logit_softcapping``.

        Parameters
        ----------
        h : ndarray, shape (seq, d_model), after :meth:`final_norm`

        Returns
        -------
        ndarray of float32, shape (seq, vocab_size)
        """
        z = super().logits(h)  # (seq, vocab): lm_head, or the tied token embedding
        return z if self.final_softcap is None else softcap(z, float(self.final_softcap))

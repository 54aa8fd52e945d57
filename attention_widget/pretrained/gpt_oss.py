"""gpt-oss: ``model_type`` ``"gpt_oss"``.

Llama's layout (pre-RMSNorm, grouped-query attention, rotary embeddings, a final RMSNorm) with
four changes:

* **sinks**: each head has one learned logit ``sinks[h]`` that joins every row's softmax and is
  dropped afterwards, so a query may give part of its attention to no key at all (rows sum to
  less than one)::

      weights_i = softmax([scores_i, sinks[h]])[:-1]

* **sliding and full layers**, alternating as ``layer_types`` says: a sliding layer's queries
  see the last ``sliding_window`` keys (themselves included);
* **RoPE with YaRN** scaling as ``rope_parameters`` configures it (the default), and biases
  on the attention projections (``attention_bias``);
* **a mixture of experts** instead of the MLP: a router picks each token's
  ``num_experts_per_tok`` experts (softmax over their logits), each expert is a clamped SwiGLU::

      gate, up = (x @ gate_up_proj[e] + b)[..., ::2], (...)[..., 1::2]  # interleaved
      gate, up = min(gate, limit), clip(up, -limit, limit)
      out = ((up + 1) * gate * sigmoid(alpha * gate)) @ down_proj[e] + b

Tensor names follow ``transformers``' ``GptOssModel`` (``layers.{i}.self_attn.sinks``,
``layers.{i}.mlp.router.weight``, ``layers.{i}.mlp.experts.gate_up_proj`` stored ``(experts,
in, out)``, ...), optionally prefixed with ``model.``.  Released gpt-oss checkpoints store the
experts quantized (MXFP4, ``quantization_config``): those are not read.
"""

from __future__ import annotations

import numpy as np

from ..engine import softmax
from .blocks import (
    linear,
    mixture_of_experts,
    rms_norm,
    rope_inverse_frequencies,
    sigmoid,
    top_k,
    yarn_rope,
)
from .checkpoint import Config
from .llama import Llama

__all__ = ["GptOss", "clamped_swiglu"]


def clamped_swiglu(gate_up: np.ndarray, alpha: float, limit: float) -> np.ndarray:
    """gpt-oss's expert activation on the interleaved gate and up columns.

    Parameters
    ----------
    gate_up : ndarray, shape (n, 2 * d_ff)
        ``x @ gate_up_proj + bias``: gate in the even columns, up in the odd ones.
    alpha : float
        ``swiglu_alpha``: the sigmoid's gain.
    limit : float
        ``swiglu_limit``: gate clamped from above, up on both sides.

    Returns
    -------
    ndarray, shape (n, d_ff)
        ``(up + 1) * gate * sigmoid(alpha * gate)``.
    """
    gate = np.minimum(gate_up[:, ::2], limit)  # (n, d_ff)
    up = np.clip(gate_up[:, 1::2], -limit, limit)
    return (up + 1.0) * gate * sigmoid(alpha * gate)


class GptOss(Llama):
    """A gpt-oss decoder (see the module docstring)."""

    family_name = "gpt-oss decoder"
    sliding_layers = True

    def configure(self, config: Config) -> None:
        """Llama's sizes, then the layer kinds, the experts and the clamped SwiGLU."""
        method = (config.get("quantization_config", default={}) or {}).get("quant_method")
        if method is not None:
            raise config.error(
                f"quantization_config (quant_method {method!r}) is not supported: quantized "
                "expert weights (MXFP4) are not read; use a checkpoint with float weights"
            )
        super().configure(config)
        self.attention_bias = bool(config.get("attention_bias", default=True))
        self.windows = config.layer_windows(self.n_layers)
        self.n_experts = config.positive_int("num_local_experts", "num_experts")
        self.n_active = config.positive_int("num_experts_per_tok")
        if self.n_active > self.n_experts:
            raise config.error(
                f"num_experts_per_tok={self.n_active} is more than num_local_experts="
                f"{self.n_experts}"
            )
        self.alpha = config.number("swiglu_alpha", default=1.702)
        self.limit = config.number("swiglu_limit", default=7.0)

    def _rope(self, config: Config) -> np.ndarray:
        """RoPE's inverse frequencies; YaRN (the default) sets ``rope_attention_factor``."""
        params = config.get("rope_parameters", "rope_scaling", default=None)
        if params is None:  # transformers' default for gpt-oss
            params = {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                      "truncate": False, "original_max_position_embeddings": 4096}  # fmt: skip
        if not isinstance(params, dict):
            raise config.error(f"rope_parameters must be an object, got {params!r}")
        theta = float(params.get("rope_theta", config.get("rope_theta", default=150000.0)))
        if float(params.get("partial_rotary_factor", 1.0)) != 1.0:
            raise config.error("partial_rotary_factor != 1 is not supported")
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type not in ("yarn", "default", "linear", "llama3"):
            raise config.error(
                f"rope_parameters: rope type {rope_type!r} is not supported (only 'yarn', "
                "'default', 'linear' and 'llama3')"
            )
        try:
            if rope_type == "yarn":
                inv_freq, self.rope_attention_factor = yarn_rope(
                    self.d_head, theta, params, self.max_positions
                )
                return inv_freq
            return rope_inverse_frequencies(self.d_head, theta, params)
        except ValueError as err:
            raise config.error(f"rope_parameters: {err}") from None

    def layer_window(self, i: int) -> int | None:
        """The window of a ``"sliding_attention"`` layer; None for a full one."""
        return self.windows[i]

    def attention_options(self, i: int) -> dict:
        """The layer's sink logits, one per head."""
        return {"sinks": self.layer_weights(i)["sinks"]}

    def layer_tensors(self, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Llama's attention tensors and norms, the sinks, the router and the experts."""
        parts = super().layer_tensors(i)
        for key in ("w_gate", "w_up", "w_down", "b_gate", "b_up", "b_down"):
            parts.pop(key, None)
        d, ff, n, p = self.d_model, self.d_ff, self.n_experts, f"layers.{i}."
        parts.update({
            "sinks": (p + "self_attn.sinks", (self.n_heads,)),
            "router_w": (p + "mlp.router.weight", (n, d)),
            "router_b": (p + "mlp.router.bias", (n,)),
            "gate_up": (p + "mlp.experts.gate_up_proj", (n, d, 2 * ff)),
            "gate_up_b": (p + "mlp.experts.gate_up_proj_bias", (n, 2 * ff)),
            "down": (p + "mlp.experts.down_proj", (n, ff, d)),
            "down_b": (p + "mlp.experts.down_proj_bias", (n, d)),
        })  # fmt: skip
        return parts

    def route(self, i: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Layer ``i``'s router on ``x`` (seq, d_model): each token's experts and their weights.

        Returns
        -------
        experts : ndarray of int, shape (seq, num_experts_per_tok), best first
        weights : ndarray, shape (seq, num_experts_per_tok): softmax of their router logits
        """
        w = self.layer_weights(i)
        logits = linear(x, w["router_w"], w["router_b"])  # (seq, n_experts)
        experts, best = top_k(np.ascontiguousarray(logits), self.n_active)  # (seq, k) each
        return experts, softmax(best)

    def finish_block(self, i: int, h: np.ndarray, attn_out: np.ndarray) -> np.ndarray:
        """Residual, then RMSNorm_2, the mixture of experts and its residual."""
        w = self.layer_weights(i)
        attn_out += h  # residual
        x = rms_norm(attn_out, w["ln2"], self.eps)  # (seq, d_model)

        def expert(e: int, rows: np.ndarray) -> np.ndarray:  # (n, d_model) -> (n, d_model)
            gate_up = rows @ w["gate_up"][e] + w["gate_up_b"][e]  # (n, 2 d_ff): stored (in, out)
            out = clamped_swiglu(gate_up, self.alpha, self.limit) @ w["down"][e]
            out += w["down_b"][e]
            return out

        out = mixture_of_experts(x, *self.route(i, x), expert)
        out += attn_out  # residual
        return out

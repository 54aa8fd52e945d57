"""DeepSeek-V3 and DeepSeek-V3.2: ``model_type`` ``"deepseek_v3"`` and ``"deepseek_v32"``.

Token embeddings only (positions enter through the rotary embedding); then per layer,
pre-RMSNorm, with multi-head latent attention (MLA)::

    x = RMSNorm_1(h)
    q = x @ w_q.T, or RMSNorm_q(x @ w_qa.T) @ w_qb.T (q_lora_rank)  # per head [q_nope | q_rope]
    [c_kv | k_r] = x @ w_kva.T                       # (seq, kv_lora_rank + qk_rope_head_dim)
    c_kv = RMSNorm_kv(c_kv)                          # the latent: all a cache keeps, with k_r
    [k_nope | v] = c_kv @ w_kvb.T                    # per head (qk_nope_head_dim, v_head_dim)
    q_h = [q_nope | RoPE(q_rope)],  k_h = [k_nope | RoPE(k_r)]     # k_r: one for all heads
    a = h + causal_attention(q, k, v, scale=mscale^2 / sqrt(qk_nope + qk_rope)) @ w_o.T
    h = a + FFN(RMSNorm_2(a))

RoPE turns interleaved pairs of dimensions where the config says ``rope_interleave`` (the
default); YaRN (``rope_type`` ``"yarn"``) also multiplies ``cos`` and ``sin`` by its attention
factor and, with ``mscale_all_dim``, the scale by ``mscale^2``.  The first
``first_k_dense_replace`` layers have a gated MLP; the others a mixture of experts: the shared
experts on every token plus ``num_experts_per_tok`` routed experts, chosen by sigmoid scores
(plus ``e_score_correction_bias``) within the best ``topk_group`` of ``n_group`` groups, and
weighted by the scores (normalised with ``norm_topk_prob``) times ``routed_scaling_factor``.

DeepSeek-V3.2 adds DeepSeek Sparse Attention: a lightning indexer scores every (query, key)
pair, ``I = sum_j w_j relu(q_j . k / sqrt(index_head_dim))`` over ``index_n_heads`` heads (its
queries from the query latent, one shared LayerNorm-ed key, both partly rotated), and each
query keeps its ``index_topk`` best keys among those the causal mask allows: the others are
dropped from MLA's softmax (``trace.kept``).

Tensor names follow ``transformers``' ``DeepseekV3ForCausalLM`` (``model.layers.{i}.self_attn.
kv_a_proj_with_mqa.weight``, ``mlp.experts.{e}.gate_proj.weight``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..engine import split_heads
from ..long import LONG_THRESHOLD
from . import AttentionInputs, PretrainedModel
from .blocks import (
    apply_rope,
    apply_rope_interleaved,
    indexer_scores,
    layer_norm,
    linear,
    mixture_of_experts,
    rms_norm,
    rope_angles,
    rope_inverse_frequencies,
    sigmoid,
    top_k,
    top_k_kept,
    yarn_mscale,
    yarn_rope,
)
from .checkpoint import Config
from .family import LayerCache

__all__ = ["DeepseekV3", "DeepseekV32", "gated_mlp"]

#: RoPE types of ``rope_parameters`` (or ``rope_scaling``) that DeepSeek's families read.
ROPE_TYPES = ("default", "linear", "llama3", "yarn")

#: Epsilon of the RMSNorms of the query and key/value latents (not ``rms_norm_eps``).
LATENT_NORM_EPS = 1e-6


def gated_mlp(
    x: np.ndarray,
    w_gate: np.ndarray,
    w_up: np.ndarray,
    w_down: np.ndarray,
    act: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """The gated feed-forward block: ``(act(x w_gate^T) * x w_up^T) w_down^T`` (SwiGLU).

    DeepSeek's dense layers, shared experts and routed experts are all of this form.

    Parameters
    ----------
    x : ndarray, shape (seq, d_model)
    w_gate, w_up : ndarray, shape (d_ff, d_model)
    w_down : ndarray, shape (d_model, d_ff)
    act : callable, e.g. :func:`~attention_widget.pretrained.blocks.silu`

    Returns
    -------
    ndarray, shape (seq, d_model)
    """
    hidden = act(linear(x, w_gate))  # (seq, d_ff)
    hidden *= linear(x, w_up)
    return linear(hidden, w_down)


class DeepseekV3(PretrainedModel):
    """A DeepSeek-V3 decoder (see the module docstring)."""

    causal = True
    family_name = "DeepSeek-V3 decoder"
    prefixes = ("model.",)
    embedding = "embed_tokens.weight"

    # ---- configuration ------------------------------------------------------------------------
    def configure(self, config: Config) -> None:
        """Read the attention, RoPE and feed-forward sizes (see the module docstring)."""
        if config.get("quantization_config", default=None) is not None:
            raise config.error(
                "quantization_config is set: quantized weights (e.g. fp8 with weight_scale_inv) "
                "are not supported; use a checkpoint in bfloat16 or float32"
            )
        self.d_model = config.positive_int("hidden_size")
        self.n_heads = config.positive_int("num_attention_heads")
        n_kv = config.positive_int("num_key_value_heads", default=self.n_heads)
        if n_kv != self.n_heads:
            raise config.error(
                f"num_key_value_heads={n_kv} must equal num_attention_heads={self.n_heads}: in "
                "latent attention every head has its own keys and values"
            )
        self.n_kv_heads = self.n_heads
        self.n_layers = config.positive_int("num_hidden_layers")
        self.d_ff = config.positive_int("intermediate_size")
        self.kv_rank = config.positive_int("kv_lora_rank")
        q_rank = config.get("q_lora_rank", default=None)
        self.q_rank = None if q_rank is None else config.positive_int("q_lora_rank")
        self.d_nope = config.positive_int("qk_nope_head_dim")
        self.d_rope = config.positive_int("qk_rope_head_dim")
        self.d_v = config.positive_int("v_head_dim")
        self.d_head = self.d_nope + self.d_rope  # width of q and k; v has d_v
        if self.d_rope % 2:
            raise config.error(f"qk_rope_head_dim must be even, got {self.d_rope}")
        self.eps = config.number("rms_norm_eps", default=1e-6)
        self.max_positions = config.positive_int("max_position_embeddings", default=4096)
        self.act = config.activation("hidden_act", default="silu")
        self.attention_bias = bool(config.get("attention_bias", default=False))
        self.interleave = self._interleave(config)
        self._configure_rope(config)
        self._configure_experts(config)

    def _interleave(self, config: Config) -> bool:
        """Whether RoPE turns interleaved pairs (``rope_interleave``, default True)."""
        return bool(config.get("rope_interleave", default=True))

    def _configure_rope(self, config: Config) -> None:
        """RoPE's speeds and ``cos``/``sin`` factor, and the score scale (YaRN's mscale^2)."""
        params = config.get("rope_parameters", "rope_scaling", default={})
        if not isinstance(params, dict):
            raise config.error(f"rope_parameters must be an object, got {params!r}")
        scaling = dict(params)
        theta = float(scaling.get("rope_theta", config.get("rope_theta", default=10000.0)))
        rope_type = scaling.get("rope_type", scaling.get("type", "default"))
        original = config.get("original_max_position_embeddings", default=None)
        if original is not None and rope_type == "yarn":  # the top-level field wins
            scaling["original_max_position_embeddings"] = original
        if float(scaling.get("partial_rotary_factor", 1.0)) != 1.0:
            raise config.error("partial_rotary_factor != 1 is not supported")
        if rope_type not in ROPE_TYPES:
            raise config.error(
                f"rope_parameters: rope type {rope_type!r} is not supported (only "
                f"{', '.join(repr(t) for t in ROPE_TYPES)})"
            )
        try:
            if rope_type == "yarn":
                self.inv_freq, self.rope_factor = yarn_rope(
                    self.d_rope, theta, scaling, self.max_positions
                )
            else:
                self.inv_freq = rope_inverse_frequencies(self.d_rope, theta, scaling)
                self.rope_factor = 1.0
        except ValueError as err:
            raise config.error(f"rope_parameters: {err}") from None
        self.scale = 1.0 / math.sqrt(self.d_head)
        mscale_all_dim = scaling.get("mscale_all_dim")
        if rope_type != "default" and mscale_all_dim:
            factor = scaling.get("factor")
            if isinstance(factor, bool) or not isinstance(factor, (int, float)):
                raise config.error(
                    f"rope_parameters: mscale_all_dim needs a number 'factor', got {factor!r}"
                )
            self.scale *= yarn_mscale(factor, mscale_all_dim) ** 2

    def _configure_experts(self, config: Config) -> None:
        """The mixture of experts: sizes, routing, and which layers have it."""
        for key, supported in (("scoring_func", "sigmoid"), ("topk_method", "noaux_tc")):
            value = config.get(key, default=supported)
            if value != supported:
                raise config.error(f"{key}={value!r} is not supported (only {supported!r})")
        self.d_expert = config.positive_int("moe_intermediate_size")
        self.n_experts = config.positive_int("n_routed_experts")
        self.n_shared = config.positive_int("n_shared_experts", default=1)
        self.top_k = config.positive_int("num_experts_per_tok", default=8)
        self.n_group = config.positive_int("n_group", default=8)
        self.topk_group = config.positive_int("topk_group", default=4)
        self.routed_scaling = config.number("routed_scaling_factor", default=2.5)
        self.norm_topk = bool(config.get("norm_topk_prob", default=True))
        per_group = self.n_experts // self.n_group
        if self.n_experts % self.n_group or per_group < 2:
            raise config.error(
                f"n_routed_experts={self.n_experts} must split into n_group={self.n_group} "
                "groups of at least 2 experts (a group is scored by its best two)"
            )
        if self.topk_group > self.n_group or self.top_k > self.topk_group * per_group:
            raise config.error(
                f"num_experts_per_tok={self.top_k} experts cannot be chosen from "
                f"topk_group={self.topk_group} groups of {per_group} (n_group={self.n_group})"
            )
        self.moe_layers = self._moe_layers(config)

    def _moe_layers(self, config: Config) -> list[bool]:
        """For each layer, whether its feed-forward is the mixture of experts."""
        dense = config.get("first_k_dense_replace", default=3)
        if isinstance(dense, bool) or not isinstance(dense, int) or dense < 0:
            raise config.error(f"first_k_dense_replace must be an integer >= 0, got {dense!r}")
        return [i >= dense for i in range(self.n_layers)]

    # ---- tensors ------------------------------------------------------------------------------
    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The final norm."""
        return {"norm.weight": (self.d_model,)}

    def layer_tensors(self, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """The norms and projections of latent attention, and the feed-forward of layer ``i``."""
        d, h, p = self.d_model, self.n_heads, f"layers.{i}."
        a = p + "self_attn."
        parts = {
            "ln1": (p + "input_layernorm.weight", (d,)),
            "w_kva": (a + "kv_a_proj_with_mqa.weight", (self.kv_rank + self.d_rope, d)),
            "kv_norm": (a + "kv_a_layernorm.weight", (self.kv_rank,)),
            "w_kvb": (a + "kv_b_proj.weight", (h * (self.d_nope + self.d_v), self.kv_rank)),
            "w_o": (a + "o_proj.weight", (d, h * self.d_v)),
            "ln2": (p + "post_attention_layernorm.weight", (d,)),
        }
        if self.q_rank is None:
            parts["w_q"] = (a + "q_proj.weight", (h * self.d_head, d))
        else:
            parts["w_qa"] = (a + "q_a_proj.weight", (self.q_rank, d))
            parts["q_norm"] = (a + "q_a_layernorm.weight", (self.q_rank,))
            parts["w_qb"] = (a + "q_b_proj.weight", (h * self.d_head, self.q_rank))
        if self.attention_bias:
            if self.q_rank is not None:
                parts["b_qa"] = (a + "q_a_proj.bias", (self.q_rank,))
            parts["b_kva"] = (a + "kv_a_proj_with_mqa.bias", (self.kv_rank + self.d_rope,))
            parts["b_o"] = (a + "o_proj.bias", (d,))
        parts.update(self._ffn_tensors(i))
        return parts

    def _ffn_tensors(self, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        d, m = self.d_model, f"layers.{i}.mlp."
        if not self.moe_layers[i]:
            return {
                "w_gate": (m + "gate_proj.weight", (self.d_ff, d)),
                "w_up": (m + "up_proj.weight", (self.d_ff, d)),
                "w_down": (m + "down_proj.weight", (d, self.d_ff)),
            }
        shared, e = self.n_shared * self.d_expert, self.d_expert
        parts = {
            "router": (m + "gate.weight", (self.n_experts, d)),
            "router_bias": (m + "gate.e_score_correction_bias", (self.n_experts,)),
            "shared_gate": (m + "shared_experts.gate_proj.weight", (shared, d)),
            "shared_up": (m + "shared_experts.up_proj.weight", (shared, d)),
            "shared_down": (m + "shared_experts.down_proj.weight", (d, shared)),
        }
        for j in range(self.n_experts):
            parts[f"expert{j}_gate"] = (m + f"experts.{j}.gate_proj.weight", (e, d))
            parts[f"expert{j}_up"] = (m + f"experts.{j}.up_proj.weight", (e, d))
            parts[f"expert{j}_down"] = (m + f"experts.{j}.down_proj.weight", (d, e))
        return parts

    # ---- one layer ----------------------------------------------------------------------------
    def embed(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """``embed_tokens[ids]`` (positions enter through RoPE)."""
        return self.weight(self.embedding, rows=ids)

    def rope(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``cos`` and ``sin`` at ``positions`` (seq,), each (seq, qk_rope_head_dim).

        Times YaRN's attention factor where the config asks for YaRN.
        """
        return rope_angles(positions, self.inv_freq, self.rope_factor)

    def attention_inputs(self, i: int, h: np.ndarray, positions: np.ndarray) -> AttentionInputs:
        """Latent attention's q, k, v from ``RMSNorm_1(h)``; ``latent`` is ``c_kv``."""
        w = self.layer_weights(i)
        nope, rank = self.d_nope, self.kv_rank
        x = rms_norm(h, w["ln1"], self.eps)  # (seq, d_model)
        c_q = self.query_latent(w, x)  # (seq, q_rank), or None
        q = linear(x, w["w_q"]) if c_q is None else linear(c_q, w["w_qb"])  # (seq, h * d_head)
        q = split_heads(q, self.n_heads)  # (n_heads, seq, d_nope + d_rope)
        kv = linear(x, w["w_kva"], w.get("b_kva"))  # (seq, kv_rank + d_rope)
        c_kv = rms_norm(kv[:, :rank], w["kv_norm"], LATENT_NORM_EPS)  # (seq, kv_rank): latent
        k_rope = np.ascontiguousarray(kv[None, :, rank:])  # (1, seq, d_rope): shared by heads
        cos, sin = self.rope(positions)
        rotate = apply_rope_interleaved if self.interleave else apply_rope
        q = np.concatenate([q[..., :nope], rotate(q[..., nope:], cos, sin)], axis=-1)
        k_rope = rotate(k_rope, cos, sin)
        kv_heads = split_heads(linear(c_kv, w["w_kvb"]), self.n_heads)  # (heads, seq, nope + v)
        k = np.concatenate(
            [kv_heads[..., :nope], np.broadcast_to(k_rope, (self.n_heads, *k_rope.shape[1:]))],
            axis=-1,
        )  # (n_heads, seq, d_nope + d_rope)
        return AttentionInputs(
            x=x,
            q=q,
            k=k,
            v=np.ascontiguousarray(kv_heads[..., nope:]),  # (n_heads, seq, d_v)
            scale=self.scale,
            latent=c_kv,
            **self.key_selection(i, x, c_q, positions),
        )

    def query_latent(self, w: dict, x: np.ndarray) -> np.ndarray | None:
        """``RMSNorm_q(x @ w_qa.T)``, (seq, q_lora_rank): what queries are made from; or None.

        None without ``q_lora_rank`` (queries straight from ``x``).
        """
        if self.q_rank is None:
            return None
        c_q = linear(x, w["w_qa"], w.get("b_qa"))  # (seq, q_rank)
        return rms_norm(c_q, w["q_norm"], LATENT_NORM_EPS)

    def key_selection(
        self, i: int, x: np.ndarray, c_q: np.ndarray | None, positions: np.ndarray
    ) -> dict:
        """Keys each query keeps in layer ``i``: all of them in DeepSeek-V3 (``{}``; see V3.2)."""
        return {}

    def finish_block(self, i: int, h: np.ndarray, attn_out: np.ndarray) -> np.ndarray:
        """Residual, then RMSNorm_2, the gated MLP or the mixture of experts, and its residual."""
        w = self.layer_weights(i)
        attn_out += h  # residual
        x = rms_norm(attn_out, w["ln2"], self.eps)  # (seq, d_model)
        if self.moe_layers[i]:
            out = self.experts(w, x)
        else:
            out = gated_mlp(x, w["w_gate"], w["w_up"], w["w_down"], self.act)
        out += attn_out  # residual
        return out

    def route(self, w: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The routed experts each token chooses, and their weights (grouped top-k).

        Parameters
        ----------
        w : dict
            The layer's weights.
        x : ndarray, shape (seq, d_model)

        Returns
        -------
        experts : ndarray of int, shape (seq, num_experts_per_tok)
        weights : ndarray of float32, shape (seq, num_experts_per_tok)
        """
        seq = x.shape[0]
        scores = sigmoid(linear(x, w["router"]))  # (seq, n_experts)
        choice = scores + w["router_bias"]  # the bias steers the choice, not the weights
        groups = choice.reshape(seq, self.n_group, -1)  # (seq, n_group, experts per group)
        group_scores = np.sort(groups, axis=-1)[..., -2:].sum(axis=-1)  # best two of each
        best, _ = top_k(group_scores, self.topk_group)  # (seq, topk_group)
        open_group = np.zeros((seq, self.n_group), dtype=bool)
        np.put_along_axis(open_group, best, True, axis=1)
        choice = np.where(np.repeat(open_group, groups.shape[-1], axis=1), choice, -np.inf)
        experts, _ = top_k(choice, self.top_k)  # (seq, num_experts_per_tok)
        weights = np.take_along_axis(scores, experts, axis=1)
        if self.norm_topk:
            weights /= weights.sum(axis=1, keepdims=True) + 1e-20
        weights *= np.float32(self.routed_scaling)
        return experts, weights

    def experts(self, w: dict, x: np.ndarray) -> np.ndarray:
        """The mixture of experts on ``x`` (seq, d_model): routed experts plus shared ones."""
        chosen, weights = self.route(w, x)

        def expert(j: int, rows: np.ndarray) -> np.ndarray:
            return gated_mlp(
                rows, w[f"expert{j}_gate"], w[f"expert{j}_up"], w[f"expert{j}_down"], self.act
            )

        out = mixture_of_experts(x, chosen, weights, expert)
        out += gated_mlp(x, w["shared_gate"], w["shared_up"], w["shared_down"], self.act)
        return out

    def final_norm(self, h: np.ndarray) -> np.ndarray:
        """The final RMSNorm."""
        return rms_norm(h, self.weight("norm.weight"), self.eps)

    # ---- what the widget shows ----------------------------------------------------------------
    def layer_kind(self, layer: int) -> str:
        """The attention and the feed-forward: ``"latent, MoE"``, ``"latent, dense"``, ..."""
        layer = self.check_layer(layer)
        return f"{self.attention_kind}, {'MoE' if self.moe_layers[layer] else 'dense'}"

    @property
    def attention_kind(self) -> str:
        """``"latent"``: multi-head latent attention over every key the causal mask allows."""
        return "latent"

    def cache_parts(self, i: int) -> dict[str, int]:
        """Per token: the latent ``c_kv`` (kv_lora_rank) and the shared rotary key.

        What DeepSeek's cache keeps (keys and values are made from them when needed); this
        package's own generation keeps the keys and values themselves, the same numbers.
        """
        return {"latent c_kv": self.kv_rank, "rotary key": self.d_rope}

    def describe(self) -> str:
        """One line: sizes, the latent's rank and what a cache keeps per token and layer."""
        q = "q from x" if self.q_rank is None else f"q_lora_rank {self.q_rank}"
        return (
            f"{self.name}: {self.family_name}, {self.n_layers} layers x {self.n_heads} heads, "
            f"d_model {self.d_model}, latent attention (kv_lora_rank {self.kv_rank}, {q}, "
            f"q/k {self.d_nope} + rope {self.d_rope}, v {self.d_v}; cache "
            f"{self.cache_width(0)} numbers per token and layer), {self.n_experts} "
            f"experts (top {self.top_k}), causal ({self.stored_dtype})"
        )


class DeepseekV32(DeepseekV3):
    """A DeepSeek-V3.2 decoder: DeepSeek-V3 with the lightning indexer (sparse attention)."""

    family_name = "DeepSeek-V3.2 decoder"

    def configure(self, config: Config) -> None:
        """DeepSeek-V3's fields, a required ``q_lora_rank`` and the indexer's sizes."""
        super().configure(config)
        if self.q_rank is None:
            raise config.error(
                "q_lora_rank must be set for deepseek_v32: the indexer reads the query latent"
            )
        self.index_heads = config.positive_int("index_n_heads", default=64)
        self.index_dim = config.positive_int("index_head_dim", default=128)
        self.index_topk = config.positive_int("index_topk", default=2048)
        if self.index_dim < self.d_rope:
            raise config.error(
                f"index_head_dim={self.index_dim} must be at least qk_rope_head_dim="
                f"{self.d_rope} (the indexer rotates that many dimensions)"
            )

    def _interleave(self, config: Config) -> bool:
        if config.get("rope_interleave", default=True) is not True:
            raise config.error(
                "rope_interleave must be true for deepseek_v32: its attention rotates "
                "interleaved pairs"
            )
        return True

    def _moe_layers(self, config: Config) -> list[bool]:
        """``mlp_layer_types`` (``"dense"`` / ``"sparse"``), else ``first_k_dense_replace``."""
        kinds = config.get("mlp_layer_types", default=None)
        if kinds is None:
            return super()._moe_layers(config)
        if not isinstance(kinds, list) or len(kinds) != self.n_layers:
            raise config.error(f"mlp_layer_types must list {self.n_layers} layers, got {kinds!r}")
        if not set(kinds) <= {"dense", "sparse"}:
            raise config.error(
                f"mlp_layer_types must hold 'dense' or 'sparse', got {sorted(set(kinds))}"
            )
        return [kind == "sparse" for kind in kinds]

    def layer_tensors(self, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """DeepSeek-V3's tensors and the indexer's."""
        a = f"layers.{i}.self_attn.indexer."
        parts = super().layer_tensors(i)
        parts["index_wq"] = (a + "wq_b.weight", (self.index_heads * self.index_dim, self.q_rank))
        parts["index_wk"] = (a + "wk.weight", (self.index_dim, self.d_model))
        parts["index_norm_w"] = (a + "k_norm.weight", (self.index_dim,))
        parts["index_norm_b"] = (a + "k_norm.bias", (self.index_dim,))
        parts["index_w"] = (a + "weights_proj.weight", (self.index_heads, self.d_model))
        return parts

    def index_inputs(
        self, i: int, x: np.ndarray, c_q: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The lightning indexer's queries, keys and head weights in layer ``i``.

        Its RoPE turns the first ``qk_rope_head_dim`` dimensions of each, in the half-split
        convention (unlike MLA's interleaved pairs); its one key per token is LayerNorm-ed.

        Parameters
        ----------
        i : int
        x : ndarray, shape (seq, d_model)
            The normed input of the attention block.
        c_q : ndarray, shape (seq, q_lora_rank)
            The query latent (:meth:`query_latent`).
        positions : ndarray of int, shape (seq,)

        Returns
        -------
        q : ndarray, shape (index_n_heads, seq, index_head_dim)
        k : ndarray, shape (seq, index_head_dim)
        head_weights : ndarray, shape (seq, index_n_heads)
            ``x @ weights_proj.T / sqrt(index_n_heads)``.
        """
        w = self.layer_weights(i)
        r = self.d_rope
        q = split_heads(linear(c_q, w["index_wq"]), self.index_heads)  # (heads, seq, dim)
        k = layer_norm(linear(x, w["index_wk"]), w["index_norm_w"], w["index_norm_b"], 1e-6)
        cos, sin = self.rope(positions)
        q = np.concatenate([apply_rope(q[..., :r], cos, sin), q[..., r:]], axis=-1)
        k = np.concatenate([apply_rope(k[None, :, :r], cos, sin)[0], k[:, r:]], axis=-1)
        head_weights = linear(x, w["index_w"]) * np.float32(self.index_heads**-0.5)
        return q, k, head_weights

    def index_scores(self, i: int, text: str) -> np.ndarray:
        """The lightning indexer's score of every key for every query of ``text`` in layer ``i``.

        ``I[t, s] = sum_j w[t, j] relu(q[j, t] . k[s] / sqrt(index_head_dim))`` (see
        :func:`~attention_widget.pretrained.blocks.indexer_scores`); each query keeps the
        ``index_topk`` best keys the causal mask allows (``trace(text, i).kept``).

        Returns
        -------
        ndarray of float32, shape (seq, seq)
            Before the causal mask.
        """
        x = self.trace(text, i).x
        positions = np.arange(x.shape[0])
        c_q = self.query_latent(self.layer_weights(i), x)
        return indexer_scores(*self.index_inputs(i, x, c_q, positions))

    def key_selection(
        self, i: int, x: np.ndarray, c_q: np.ndarray | None, positions: np.ndarray
    ) -> dict:
        """The indexer's choice in layer ``i``: ``{"kept": (seq, seq) bool}``.

        Above ``LONG_THRESHOLD`` tokens ``{"select": select}`` instead, which chooses for one
        block of queries at a time (see :class:`~attention_widget.pretrained.AttentionInputs`).
        """
        if positions.size <= LONG_THRESHOLD:
            return {"kept": self.selected_keys(i, x, c_q, positions)}
        q, k, head_weights = self.index_inputs(i, x, c_q, positions)

        def select(rows: np.ndarray, keys: np.ndarray, visible: np.ndarray) -> np.ndarray:
            scores = indexer_scores(q[:, rows], k[keys], head_weights[rows])  # (rows, keys)
            return top_k_kept(scores, visible, self.index_topk)

        return {"select": select}

    def selected_keys(
        self, i: int, x: np.ndarray, c_q: np.ndarray | None, positions: np.ndarray
    ) -> np.ndarray:
        """The ``index_topk`` keys of best index score among those each query may see."""
        scores = indexer_scores(*self.index_inputs(i, x, c_q, positions))  # (seq, seq)
        allowed = positions[:, None] >= positions[None, :]  # causal
        return top_k_kept(scores, allowed, self.index_topk)

    def extend_cache(
        self, i: int, inputs: AttentionInputs, positions: np.ndarray, cache: LayerCache
    ) -> AttentionInputs:
        """The default cache of keys and values, plus the indexer's keys (``state["index_k"]``).

        New queries choose among every cached key, not only among the new tokens.
        """
        x = inputs.x
        q, k, head_weights = self.index_inputs(
            i, x, self.query_latent(self.layer_weights(i), x), positions
        )
        earlier, kept = cache.state.get("index_k"), inputs.kept
        cache.state["index_k"] = k if earlier is None else np.concatenate([earlier, k])
        inputs = super().extend_cache(i, replace(inputs, kept=None, select=None), positions,
                                      cache)
        if earlier is not None or kept is None:  # (a long prompt brings only a selector)
            scores = indexer_scores(q, cache.state["index_k"], head_weights)  # (seq, n_keys)
            allowed = positions[:, None] >= inputs.key_positions[None, :]
            kept = top_k_kept(scores, allowed, self.index_topk)
        return replace(inputs, kept=kept)

    @property
    def attention_kind(self) -> str:
        """``"latent sparse, top 2048"``: latent attention over the keys the indexer keeps."""
        return f"latent sparse, top {self.index_topk}"

    def cache_parts(self, i: int) -> dict[str, int]:
        """DeepSeek-V3's parts and the indexer's key (index_head_dim)."""
        return {**super().cache_parts(i), "indexer key": self.index_dim}

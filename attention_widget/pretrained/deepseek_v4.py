"""DeepSeek V4: ``model_type`` ``"deepseek_v4"``.

The residual is ``n = hc_mult`` parallel streams (seq, n, d_model).  Each sub-block reads a
mix of them and writes back through a hyper-connection (:func:`.hyper_connection`)::

    pre, post, comb = hyper_connection(h)                   # (seq, n), (seq, n), (seq, n, n)
    x = RMSNorm(sum_j pre_j h_j)                            # (seq, d_model): the block's input
    h_k <- post_k * block(x) + sum_j comb_jk h_j            # every stream k

The attention block (one per layer, of the kind ``layer_types[i]`` names)::

    c_q = RMSNorm(x @ wq_a.T)                               # (seq, q_lora_rank)
    q = RoPE(RMSNorm_per_head(c_q @ wq_b.T))                # (n_heads, seq, d_head), no weight
    kv = RoPE(RMSNorm(x @ wkv.T))                           # (seq, d_head): ONE head, key = value
    keys = [kv of every token | compressed entries]         # entries: compressed layers only
    weights = softmax([q keys^T / sqrt(d_head) | sink_h])   # the sink column is then dropped
    o = RoPE^-1(weights @ keys)                             # undo the rotation at the query
    out = concat_g(o_g @ wo_a_g.T) @ wo_b.T                 # grouped low-rank projection

* every layer sees the last ``sliding_window`` tokens (itself included);
* ``compressed_sparse_attention``: a compressor turns each window of ``compress_rate`` (4)
  tokens into an entry (overlapping windows), and a lightning indexer keeps the
  ``index_topk`` entries that score highest for each query;
* ``heavily_compressed_attention``: one entry per window of ``compress_rate`` (128) tokens,
  every complete one seen;
* an entry is seen once its window is complete (its key position is the window's last
  token); RoPE is partial, on the last ``qk_rope_head_dim`` features of each head, in
  adjacent pairs; sliding layers rotate with ``rope_theta``, compressed ones with
  ``compress_rope_theta``.

The feed-forward is a mixture of experts (clamped SwiGLU experts plus a shared one); layers
marked ``hash_moe`` choose their experts by token id (``tid2eid``).  At the end a last
hyper-connection collapses the streams, then the final RMSNorm.  Tensor names follow the
checkpoints as saved (``layers.{i}.attn.wq_a.weight``, ``layers.{i}.ffn.experts.{e}.w1``, ...),
optionally prefixed with ``model.``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from ..engine import merge_heads, split_heads
from . import AttentionInputs, PretrainedModel
from .blocks import linear, rms_norm, rope_inverse_frequencies
from .checkpoint import Config
from .deepseek_v4_parts import (
    ROUTER_SCORES,
    compress,
    hyper_connection,
    indexer_scores,
    mixture_of_experts,
    rope_tail,
    sigmoid,
    top_k_kept,
    unweighted_rms_norm,
)
from .family import LayerAttention

__all__ = ["DeepseekV4"]

SLIDING, SPARSE, HEAVY = (
    "sliding_attention",
    "compressed_sparse_attention",
    "heavily_compressed_attention",
)
_RATE_KINDS = {0: SLIDING, 4: SPARSE, 128: HEAVY}  # older configs: compress_ratios per layer


class SinkAttended(NamedTuple):
    """:class:`~attention_widget.engine.Attended` with what each query gave its head's sink."""

    scores: np.ndarray  # (n_heads, n_q, n_k): scale * q k^T, before temperature and mask
    weights: np.ndarray  # (n_heads, n_q, n_k): the sink's share left out, rows sum to < 1
    head_outputs: np.ndarray  # (n_heads, n_q, d_v): weights @ v
    entropy: np.ndarray  # (n_heads, n_q): entropy of each row, the sink included, in nats
    sink_weights: np.ndarray  # (n_heads, n_q)


@dataclass
class CompressedAttentionInputs(AttentionInputs):
    """:class:`AttentionInputs` of a DeepSeek V4 layer, with what its heads need besides.

    Attributes
    ----------
    rotation : tuple of ndarray, each shape (seq, rope_dim // 2)
        ``cos, sin`` of the queries' rotation, undone on the head outputs.
    sinks : ndarray, shape (n_heads,)
        One logit per head that joins each row's softmax (then dropped).
    """

    rotation: tuple[np.ndarray, np.ndarray] | None = None
    sinks: np.ndarray | None = None


def _layer_kinds(config: Config, n_layers: int) -> tuple[list[str], dict[str, int]]:
    """Each layer's attention kind and each compressed kind's rate (older names included)."""
    rates = dict(config.get("compress_rates", default={SPARSE: 4, HEAVY: 128}))
    for kind, key in ((SPARSE, "compress_rate_csa"), (HEAVY, "compress_rate_hca")):
        rates[kind] = config.get(key, default=rates.get(kind))
    kinds = config.get("layer_types", default=None)
    if kinds is None and config.get("compress_ratios", default=None) is not None:
        kinds = [_RATE_KINDS.get(r, r) for r in config.get("compress_ratios")]
    if kinds is None:  # two heavily compressed layers, then sparse and heavy in turn
        kinds = [HEAVY] * min(n_layers, 2)
        kinds += [SPARSE if j % 2 else HEAVY for j in range(max(n_layers - 2, 0))]
    kinds = list(kinds)[:n_layers]
    if len(kinds) != n_layers or set(kinds) - {SLIDING, SPARSE, HEAVY}:
        raise config.error(
            f"layer_types must give one of {SLIDING!r}, {SPARSE!r}, {HEAVY!r} for each of "
            f"the {n_layers} layers, got {kinds!r}"
        )
    for kind in set(kinds) - {SLIDING}:
        rate = rates.get(kind)
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise config.error(f"compress_rates[{kind!r}] must be a positive integer, got {rate!r}")
    return kinds, rates


def _rotations(config: Config, d_head: int, index_dim: int) -> dict[str, tuple[np.ndarray, float]]:
    """RoPE of sliding layers (``"main"``) and of compressed ones (``"compress"``).

    Each as ``(inv_freq, factor)``: the rotation speeds of the rotated pairs and the factor
    on ``cos`` and ``sin``.  ``rope_parameters`` nests both; older configs give
    ``rope_theta``, ``compress_rope_theta`` and ``qk_rope_head_dim`` at the top level.
    """
    params = config.get("rope_parameters", default={}) or {}
    if not (isinstance(params.get("main"), dict) and isinstance(params.get("compress"), dict)):
        factor = config.get("partial_rotary_factor", default=None)
        if factor is None:
            factor = config.get("qk_rope_head_dim", default=d_head // 8) / d_head
        scaling = {k: v for k, v in params.items() if k not in ("main", "compress")}
        params = {
            "main": {"rope_theta": config.number("rope_theta", default=10000.0)},
            "compress": {
                **scaling,
                "rope_theta": config.number("compress_rope_theta", default=160000.0),
            },
        }
        for p in params.values():
            p["partial_rotary_factor"] = factor
    tables = {}
    for name in ("main", "compress"):
        p = params[name]
        rope_type = p.get("rope_type", p.get("type", "default"))
        if rope_type != "default":
            raise config.error(
                f"rope_parameters[{name!r}]: rope_type {rope_type!r} is not supported "
                "(only 'default')"
            )
        dim = int(d_head * float(p.get("partial_rotary_factor", 1.0)))
        if dim % 2 or not 0 < dim <= min(d_head, index_dim):
            raise config.error(
                f"rope_parameters[{name!r}]: partial_rotary_factor gives {dim} rotated "
                "features; need an even number, at most head_dim and index_head_dim"
            )
        tables[name] = (rope_inverse_frequencies(dim, float(p.get("rope_theta", 10000.0))), 1.0)
    return tables


def _mlp_kinds(config: Config, n_layers: int) -> list[str]:
    """Each layer's feed-forward: ``"hash_moe"`` (experts by token id) or ``"moe"``."""
    kinds = config.get("mlp_layer_types", default=None)
    if kinds is None:
        n_hash = config.get("num_hash_layers", default=3)
        kinds = ["hash_moe"] * min(n_layers, n_hash) + ["moe"] * max(n_layers - n_hash, 0)
    kinds = list(kinds)[:n_layers]
    if len(kinds) != n_layers or set(kinds) - {"hash_moe", "moe"}:
        raise config.error(
            f"mlp_layer_types must give 'hash_moe' or 'moe' for each of the {n_layers} layers, "
            f"got {kinds!r}"
        )
    return kinds


def with_sink_key(
    inputs: CompressedAttentionInputs, mask: np.ndarray | None
) -> tuple[CompressedAttentionInputs, np.ndarray | None]:
    """The inputs with each head's sink as one more key, last, and the mask that allows it.

    Every query head gets one more feature, ``sink_h / scale``, that only the sink key reads
    (1 there, 0 in every other key), so the sink's score is ``sink_h``; its value is 0, so it
    adds nothing to the head outputs.
    """
    q, k, v = inputs.q, inputs.k, inputs.v
    n_heads, seq, d = q.shape
    n_keys = k.shape[1]
    sink = (inputs.sinks / np.float32(inputs.scale)).astype(q.dtype)  # (n_heads,)
    q1 = np.concatenate([q, np.broadcast_to(sink[:, None, None], (n_heads, seq, 1))], -1)
    k1 = np.zeros((1, n_keys + 1, d + 1), dtype=k.dtype)  # (1, n_keys + 1, d + 1)
    k1[0, :n_keys, :d], k1[0, n_keys, d] = k[0], 1.0
    v1 = np.concatenate([v, np.zeros((1, 1, v.shape[2]), dtype=v.dtype)], axis=1)

    def and_the_sink(keys: np.ndarray | None) -> np.ndarray | None:  # (seq, n_keys + 1)
        return None if keys is None else np.concatenate([keys, np.ones((seq, 1), bool)], 1)

    one_more = replace(inputs, q=q1, k=k1, v=v1, kept=and_the_sink(inputs.kept))
    return one_more, and_the_sink(mask)


class DeepseekV4(PretrainedModel):
    """A DeepSeek V4 decoder (see the module docstring)."""

    causal = True
    family_name = "DeepSeek V4 decoder"
    prefixes = ("model.",)
    embedding = "embed_tokens.weight"

    # ---- configuration ------------------------------------------------------------------------
    def configure(self, config: Config) -> None:
        """Read sizes, layer kinds, compression, the indexer, RoPE, hyper-connections and MoE."""
        pos = config.positive_int
        self.d_model, self.n_heads = pos("hidden_size"), pos("num_attention_heads")
        self.n_kv_heads = 1  # one key = value head, shared by every query head
        self.n_layers, self.d_head = pos("num_hidden_layers"), pos("head_dim")
        self.q_rank, self.d_ff = pos("q_lora_rank"), pos("moe_intermediate_size")
        self.eps = config.number("rms_norm_eps", default=1e-6)
        self.max_positions = pos("max_position_embeddings", default=1048576)
        self.window = pos("sliding_window")
        self.o_groups, self.o_rank = pos("o_groups"), pos("o_lora_rank")
        if (self.n_heads * self.d_head) % self.o_groups:
            raise config.error(
                f"o_groups={self.o_groups} does not divide num_attention_heads * head_dim = "
                f"{self.n_heads * self.d_head}"
            )
        self.index_heads, self.index_dim = pos("index_n_heads"), pos("index_head_dim")
        self.index_topk = pos("index_topk")
        self.hc_mult, self.hc_iters = pos("hc_mult"), pos("hc_sinkhorn_iters", default=20)
        self.hc_eps = config.number("hc_eps", default=1e-6)
        self.layer_kinds, self.rates = _layer_kinds(config, self.n_layers)
        self.rope = _rotations(config, self.d_head, self.index_dim)
        self.mlp_kinds = _mlp_kinds(config, self.n_layers)
        self.top_k = config.positive_int("num_experts_per_tok")
        self.n_experts = config.positive_int("n_routed_experts")
        scoring = config.get("scoring_func", default="sqrtsoftplus")
        if scoring not in ROUTER_SCORES:
            raise config.error(
                f"scoring_func {scoring!r} is not supported (supported: {', '.join(ROUTER_SCORES)})"
            )
        self.router_scores = ROUTER_SCORES[scoring]
        self.routed_scaling = config.number("routed_scaling_factor", default=1.0)
        self.swiglu_limit = config.number("swiglu_limit", default=10.0)
        self.act = config.activation("hidden_act", default="silu")
        self.mlp_bias = bool(config.get("mlp_bias", default=False))

    # ---- tensors ------------------------------------------------------------------------------
    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The final norm and the last hyper-connection."""
        n, d = self.hc_mult, self.d_model
        return {
            "norm.weight": (d,),
            "hc_head.hc_fn": (n, n * d),
            "hc_head.hc_base": (n,),
            "hc_head.hc_scale": (1,),
        }

    def layer_tensors(self, i: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Attention (with its compressor and indexer), norms, hyper-connections and experts."""
        d, dh, h, n = self.d_model, self.d_head, self.n_heads, self.hc_mult
        p, a = f"layers.{i}.", f"layers.{i}.attn."
        parts = {
            "attn_norm": (p + "attn_norm.weight", (d,)),
            "wq_a": (a + "wq_a.weight", (self.q_rank, d)),
            "q_norm": (a + "q_norm.weight", (self.q_rank,)),
            "wq_b": (a + "wq_b.weight", (h * dh, self.q_rank)),
            "wkv": (a + "wkv.weight", (dh, d)),
            "kv_norm": (a + "norm.weight", (dh,)),
            "wo_a": (a + "wo_a.weight", (self.o_groups * self.o_rank, h * dh // self.o_groups)),
            "wo_b": (a + "wo_b.weight", (d, self.o_groups * self.o_rank)),
            "sinks": (a + "attn_sink", (h,)),
            "ffn_norm": (p + "ffn_norm.weight", (d,)),
            "gate": (p + "ffn.gate.weight", (self.n_experts, d)),
        }
        for hc in ("attn", "ffn"):
            parts[f"hc_{hc}_fn"] = (p + f"hc_{hc}_fn", ((2 + n) * n, n * d))
            parts[f"hc_{hc}_base"] = (p + f"hc_{hc}_base", ((2 + n) * n,))
            parts[f"hc_{hc}_scale"] = (p + f"hc_{hc}_scale", (3,))
        kind = self.layer_kinds[i]
        if kind != SLIDING:
            width = (2 if kind == SPARSE else 1) * dh
            parts.update(self._compressor(a + "compressor.", "c_", width, dh, kind))
        if kind == SPARSE:
            parts.update(self._compressor(a + "indexer.compressor.", "i_", 2 * self.index_dim,
                                          self.index_dim, kind))  # fmt: skip
            parts["i_wq_b"] = (a + "indexer.wq_b.weight", (self.index_heads * self.index_dim,
                                                           self.q_rank))  # fmt: skip
            parts["i_weights"] = (a + "indexer.weights_proj.weight", (self.index_heads, d))
        if self.mlp_kinds[i] == "moe":
            parts["gate_bias"] = (p + "ffn.gate.bias", (self.n_experts,))
        experts = [f"experts.{e}." for e in range(self.n_experts)] + ["shared_experts."]
        shapes = {"w1": (self.d_ff, d), "w3": (self.d_ff, d), "w2": (d, self.d_ff)}
        for e, name in enumerate(experts):
            for w, shape in shapes.items():
                parts[f"e{e}_{w}"] = (p + f"ffn.{name}{w}.weight", shape)
                if self.mlp_bias and name == "shared_experts.":
                    parts[f"e{e}_{w}_bias"] = (p + f"ffn.{name}{w}.bias", shape[:1])
        return parts

    def _compressor(
        self, prefix: str, key: str, width: int, dim: int, kind: str
    ) -> dict[str, tuple[str, tuple[int, ...]]]:
        return {
            key + "wkv": (prefix + "wkv.weight", (width, self.d_model)),
            key + "wgate": (prefix + "wgate.weight", (width, self.d_model)),
            key + "ape": (prefix + "ape", (self.rates[kind], width)),
            key + "norm": (prefix + "norm.weight", (dim,)),
        }

    def prepare_layer(self, i: int) -> dict[str, np.ndarray | None]:
        """The tensors of layer ``i``, with the experts grouped and the hash table (int)."""
        w = super().prepare_layer(i)
        if self.mlp_kinds[i] == "hash_moe":
            name = self.prefix + f"layers.{i}.ffn.gate.tid2eid"
            if name not in self.tensors:
                raise ValueError(f"{self.path}: tensor {name!r} is missing (hash_moe layer {i})")
            w["tid2eid"] = np.asarray(self.tensors.file(name).get(name), dtype=np.int64)
        return w

    def _experts(self, w: dict) -> dict:
        def expert(e: int) -> dict:
            return {k: w.get(f"e{e}_{k}") for k in ("w1", "w2", "w3")} | {
                f"b{k[1]}": w.get(f"e{e}_{k}_bias") for k in ("w1", "w2", "w3")
            }

        return {
            "gate": w["gate"],
            "bias": w.get("gate_bias"),
            "k": self.top_k,
            "experts": [expert(e) for e in range(self.n_experts)],
            "shared": expert(self.n_experts),
        }

    # ---- the steps ----------------------------------------------------------------------------
    def embed(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The token embeddings copied into every stream: (seq, hc_mult, d_model)."""
        e = self.weight(self.embedding, rows=ids)  # (seq, d_model)
        return np.repeat(e[:, None, :], self.hc_mult, axis=1)

    def _hc(self, w: dict, which: str, streams: np.ndarray):
        parts = {k: w[f"hc_{which}_{k}"] for k in ("fn", "base", "scale")}
        return hyper_connection(streams, parts, self.hc_iters, self.hc_eps, self.eps)

    def _angles(self, kind: str, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``cos, sin`` (seq, rope_dim / 2) of the rotation that layers of ``kind`` use."""
        inv, factor = self.rope["main" if kind == SLIDING else "compress"]
        angles = positions.astype(np.float32)[:, None] * inv[None, :]
        return np.cos(angles) * np.float32(factor), np.sin(angles) * np.float32(factor)

    def attention_inputs(self, i: int, h: np.ndarray, positions: np.ndarray) -> AttentionInputs:
        """Collapse the streams into the block's input, then :meth:`attention_on` it."""
        w = self.layer_weights(i)
        pre, _, _ = self._hc(w, "attn", h)
        x = rms_norm(np.einsum("sn,snd->sd", pre, h), w["attn_norm"], self.eps)  # (seq, d_model)
        return self.attention_on(i, x, positions)

    def attention_on(self, i: int, x: np.ndarray, positions: np.ndarray) -> AttentionInputs:
        """Queries, the one key = value head and the compressed entries of layer ``i``.

        Parameters
        ----------
        i : int
            The layer.
        x : ndarray, shape (seq, d_model)
            Its attention's input (the streams collapsed, then normed).
        positions : ndarray of int, shape (seq,)
            Positions ``0 .. seq - 1`` (compression starts at the first token).

        Returns
        -------
        CompressedAttentionInputs
        """
        w, kind = self.layer_weights(i), self.layer_kinds[i]
        c_q = rms_norm(linear(x, w["wq_a"]), w["q_norm"], self.eps)  # (seq, q_lora_rank)
        q = split_heads(linear(c_q, w["wq_b"]), self.n_heads)  # (n_heads, seq, d_head)
        cos, sin = self._angles(kind, positions)
        q = rope_tail(unweighted_rms_norm(q, self.eps), cos, sin)
        kv = rope_tail(rms_norm(linear(x, w["wkv"]), w["kv_norm"], self.eps), cos, sin)
        behind = positions[:, None] - positions[None, :]  # (seq, seq)
        mask = behind < self.window  # the sliding branch (causality comes from key positions)
        key_positions, kept = positions, None
        if kind != SLIDING:
            if not np.array_equal(positions, np.arange(len(positions))):
                raise ValueError(
                    f"layer {i} compresses windows counted from the first token: positions must "
                    f"be 0 .. {len(positions) - 1}, got {positions[:3]}..."
                )
            entries = self._entries(w, kind, x)  # (n_entries, d_head)
            rate = self.rates[kind]
            ends = np.arange(1, entries.shape[0] + 1) * rate - 1  # last token of each window
            kv = np.concatenate([kv, entries])
            key_positions = np.concatenate([positions, ends])
            mask = np.concatenate([mask, np.ones((len(positions), len(ends)), bool)], axis=1)
            if kind == SPARSE:
                chosen = self._indexer(w, x, c_q, positions, ends)  # (seq, n_entries)
                kept = np.concatenate([np.ones_like(behind, dtype=bool), chosen], axis=1)
        kv = kv[None]  # (1, n_keys, d_head)
        return CompressedAttentionInputs(
            x=x, q=q, k=kv, v=kv, scale=1.0 / math.sqrt(self.d_head), key_positions=key_positions,
            mask=mask, kept=kept, rotation=(cos, sin), sinks=w["sinks"],
        )  # fmt: skip

    def _entries(self, w: dict, kind: str, x: np.ndarray, key: str = "c_") -> np.ndarray:
        """The compressed entries of the windows of ``x`` (normed, rotated at their start)."""
        rate = self.rates[kind]
        pooled = compress(
            linear(x, w[key + "wkv"]), linear(x, w[key + "wgate"]), w[key + "ape"], rate,
            overlap=kind == SPARSE,
        )  # fmt: skip
        cos, sin = self._angles(kind, np.arange(pooled.shape[0]) * rate)
        return rope_tail(rms_norm(pooled, w[key + "norm"], self.eps), cos, sin)

    def _indexer(
        self, w: dict, x: np.ndarray, c_q: np.ndarray, positions: np.ndarray, ends: np.ndarray
    ) -> np.ndarray:
        """Which compressed entries each query keeps: the indexer's top ``index_topk``."""
        keys = self._entries(w, SPARSE, x, key="i_")  # (n_entries, index_head_dim)
        q = split_heads(linear(c_q, w["i_wq_b"]), self.index_heads)  # (heads, seq, index_dim)
        q = rope_tail(q, *self._angles(SPARSE, positions))
        head_weights = linear(x, w["i_weights"]) * np.float32(self.index_heads**-0.5)
        scores = indexer_scores(q, keys, head_weights)  # (seq, n_entries)
        visible = positions[:, None] >= ends[None, :]
        return top_k_kept(scores, visible, self.index_topk)

    def run_attention(
        self, inputs: AttentionInputs, mask: np.ndarray | None, temperature: float = 1.0
    ) -> SinkAttended:
        """The engine's :func:`~attention_widget.engine.attend`, with each head's sink.

        The sink joins the softmax as one more key (see :func:`with_sink_key`); its column is
        taken out of the weights afterwards.
        """
        n_keys = inputs.k.shape[1]
        att = super().run_attention(*with_sink_key(inputs, mask), temperature)
        return SinkAttended(
            np.ascontiguousarray(att.scores[..., :n_keys]),
            np.ascontiguousarray(att.weights[..., :n_keys]),
            att.head_outputs, att.entropy, np.ascontiguousarray(att.weights[..., n_keys]),
        )  # fmt: skip

    def concat_heads(self, inputs: AttentionInputs, head_outputs: np.ndarray) -> np.ndarray:
        """The head outputs rotated back by their query's angle, side by side."""
        cos, sin = inputs.rotation
        return merge_heads(rope_tail(head_outputs, cos, -sin))

    def attention_output(self, i: int, concat: np.ndarray) -> np.ndarray:
        """Grouped low-rank projection: each group of heads to ``o_lora_rank``, then mixed."""
        w = self.layer_weights(i)
        g, seq = self.o_groups, concat.shape[0]
        groups = concat.reshape(seq, g, -1).transpose(1, 0, 2)  # (g, seq, heads d_head / g)
        wo_a = w["wo_a"].reshape(g, self.o_rank, -1)  # (g, o_rank, heads d_head / g)
        low = groups @ wo_a.transpose(0, 2, 1)  # (g, seq, o_rank)
        return linear(low.transpose(1, 0, 2).reshape(seq, -1), w["wo_b"])

    def run_block(
        self, i: int, h: np.ndarray, positions: np.ndarray, ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, LayerAttention]:
        """Layer ``i`` on the streams ``h`` (seq, hc_mult, d_model); ``ids`` for hash routing."""
        out, layer = self.attention_step(i, h, positions)
        return self.finish_block(i, h, out, ids), layer

    def finish_block(
        self, i: int, h: np.ndarray, attn_out: np.ndarray, ids: np.ndarray | None = None
    ) -> np.ndarray:
        """Write the attention into the streams, then the experts through a hyper-connection."""
        w = self.layer_weights(i)
        _, post, comb = self._hc(w, "attn", h)
        h = post[:, :, None] * attn_out[:, None, :] + np.einsum("sjk,sjd->skd", comb, h)
        pre, post, comb = self._hc(w, "ffn", h)
        x = rms_norm(np.einsum("sn,snd->sd", pre, h), w["ffn_norm"], self.eps)
        experts = None
        if self.mlp_kinds[i] == "hash_moe":
            if ids is None:
                raise ValueError(f"layer {i} routes tokens by id: run_block needs the token ids")
            experts = w["tid2eid"][ids]  # (seq, k)
        y = mixture_of_experts(
            x, self._experts(w), experts, act=self.act, limit=self.swiglu_limit,
            scores=self.router_scores, scaling=self.routed_scaling,
        )  # fmt: skip
        return post[:, :, None] * y[:, None, :] + np.einsum("sjk,sjd->skd", comb, h)

    def final_norm(self, h: np.ndarray) -> np.ndarray:
        """Collapse the streams with the last hyper-connection, then the final RMSNorm."""
        fn, base, scale = (self.weight(f"hc_head.hc_{k}") for k in ("fn", "base", "scale"))
        seq, n, d = h.shape
        mixes = linear(unweighted_rms_norm(h.reshape(seq, n * d), self.eps), fn)  # (seq, n)
        pre = sigmoid(mixes * scale + base) + self.hc_eps  # (seq, n)
        return rms_norm(np.einsum("sn,snd->sd", pre, h), self.weight("norm.weight"), self.eps)

    # ---- what the layers are ------------------------------------------------------------------
    def layer_kind(self, layer: int) -> str:
        """The kind of ``layer``, e.g. ``"sliding, window 128"``.

        Or ``"compressed sparse, rate 4, top 512"``, ``"heavily compressed, rate 128"``.
        """
        kind = self.layer_kinds[self._check_layer(layer)]
        if kind == SLIDING:
            return f"sliding, window {self.window}"
        if kind == SPARSE:
            return f"compressed sparse, rate {self.rates[kind]}, top {self.index_topk}"
        return f"heavily compressed, rate {self.rates[kind]}"

    def entry_tokens(self, layer: int, n_tokens: int) -> list[tuple[int, int]]:
        """The tokens each compressed entry of ``layer`` stands for, as (first, last) positions.

        An entry of a compressed sparse layer pools its window and the window before; a
        sliding layer has none.
        """
        kind = self.layer_kinds[self._check_layer(layer)]
        if kind == SLIDING:
            return []
        rate = self.rates[kind]
        back = rate if kind == SPARSE else 0
        return [(max(w * rate - back, 0), (w + 1) * rate - 1) for w in range(n_tokens // rate)]

    def key_labels(self, text: str, layer: int) -> list[str]:
        """The tokens, then ``"compressed block w (tokens a-b)"`` for each compressed entry."""
        tokens = self.tokenize(text)
        entries = self.entry_tokens(layer, len(tokens))
        return tokens + [f"compressed block {w} (tokens {a}-{b})" for w, (a, b) in
                         enumerate(entries)]  # fmt: skip

    def kv_cache_parts(self, layer: int = 0) -> dict[str, float]:
        """Numbers the cache of ``layer`` gains per token over a long text, per part.

        The sliding window's keys (one key = value head) are a fixed amount, not counted here
        (see :meth:`kv_cache_size`); a compressed layer gains one entry of ``head_dim``
        numbers per ``rate`` tokens, and a compressed sparse one also one indexer key of
        ``index_head_dim``.
        """
        kind = self.layer_kinds[self._check_layer(layer)]
        if kind == SLIDING:
            return {}
        parts = {"compressed": self.d_head / self.rates[kind]}
        if kind == SPARSE:
            parts["indexer"] = self.index_dim / self.rates[kind]
        return parts

    def kv_cache_size(self, layer: int, n_tokens: int) -> dict[str, int]:
        """Numbers the cache of ``layer`` holds after ``n_tokens`` tokens, per part.

        * ``"window"``: the key = value vectors of the last ``sliding_window - 1`` tokens
          (the next token makes the window full);
        * ``"compressed"``, ``"indexer"``: one entry (``head_dim``, and ``index_head_dim``
          for the indexer of a compressed sparse layer) per complete window of ``rate``;
        * ``"pending"``: the projections and gates of the tokens of the unfinished window,
          and, for a compressed sparse layer, the first halves of the last complete window
          (the next entry pools them too).
        """
        kind = self.layer_kinds[self._check_layer(layer)]
        sizes = {"window": min(n_tokens, self.window - 1) * self.d_head}
        if kind == SLIDING:
            return sizes
        rate = self.rates[kind]
        full, rest = divmod(n_tokens, rate)
        dims = [self.d_head] + ([self.index_dim] if kind == SPARSE else [])
        sizes["compressed"] = full * self.d_head
        if kind == SPARSE:
            sizes["indexer"] = full * self.index_dim
        width = 2 if kind == SPARSE else 1  # features per token of the compressor: [a | b]
        sizes["pending"] = sum(2 * rest * width * d for d in dims)  # kv and gate
        if kind == SPARSE and full:
            sizes["pending"] += sum(2 * rate * d for d in dims)  # the last window's a halves
        return sizes

    def describe(self) -> str:
        """One line: sizes, the layer kinds and the stored dtype."""
        counts = {k: self.layer_kinds.count(k) for k in (SLIDING, SPARSE, HEAVY)}
        kinds = ", ".join(
            f"{n} {kind.replace('_attention', '').replace('_', ' ')}"
            for kind, n in counts.items() if n
        )  # fmt: skip
        return (
            f"{self.name}: {self.family_name}, {self.n_layers} layers ({kinds}) x "
            f"{self.n_heads} heads (1 shared key = value head), d_model {self.d_model}, d_head "
            f"{self.d_head}, sliding window {self.window}, {self.hc_mult} residual streams, "
            f"{self.n_experts} experts ({self.stored_dtype})"
        )

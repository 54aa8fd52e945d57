"""DeepSeek V4's checkpoint: its configuration, its tensors and what its layers are.

:class:`DeepseekV4Layout` reads ``config.json`` (the layer kinds, compression rates, the two
rotations, hyper-connections and experts, older field names included), names every tensor of
the checkpoint as transformers saves it (``layers.{i}.attn.wq_a.weight``,
``layers.{i}.ffn.experts.{e}.w1.weight``, ..., optionally prefixed with ``model.``), and says
what each layer is: its kind, the tokens behind each compressed entry, and what a key/value
cache keeps.  :class:`~.deepseek_v4.DeepseekV4` adds the computation.
"""

from __future__ import annotations

import numpy as np

from . import PretrainedModel
from .blocks import rope_inverse_frequencies
from .checkpoint import Config
from .deepseek_v4_parts import ROUTER_SCORES

__all__ = ["HEAVY", "SLIDING", "SPARSE", "DeepseekV4Layout"]

#: The attention kinds of ``layer_types``.
SLIDING, SPARSE, HEAVY = (
    "sliding_attention",
    "compressed_sparse_attention",
    "heavily_compressed_attention",
)
_RATE_KINDS = {0: SLIDING, 4: SPARSE, 128: HEAVY}  # older configs: compress_ratios per layer


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


class DeepseekV4Layout(PretrainedModel):
    """DeepSeek V4's configuration and tensors, and what its layers are (no computation)."""

    causal = True
    family_name = "DeepSeek V4 decoder"
    prefixes = ("model.",)
    embedding = "embed_tokens.weight"
    output_head = "head.weight"

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

    def cache_width(self, i: int) -> int:
        """``head_dim``: one vector per cached key, which is also its value.

        A token of the window and a compressed entry are each one such vector; what else the
        cache holds (the indexer's keys, the inputs of an unfinished window) is counted by
        :meth:`kv_cache_size`.
        """
        return self.d_head

    # ---- what the layers are ------------------------------------------------------------------
    def layer_kind(self, layer: int) -> str:
        """The kind of ``layer``, e.g. ``"sliding, window 128"``.

        Or ``"compressed sparse, rate 4, top 512"``, ``"heavily compressed, rate 128"``.
        """
        kind = self.layer_kinds[self.check_layer(layer)]
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
        kind = self.layer_kinds[self.check_layer(layer)]
        if kind == SLIDING:
            return []
        rate = self.rates[kind]
        back = rate if kind == SPARSE else 0
        return [(max(w * rate - back, 0), (w + 1) * rate - 1) for w in range(n_tokens // rate)]

    def key_labels(self, text: str, layer: int) -> list[str]:
        """The tokens, then ``"cw a-b"`` for compressed entry ``w`` of tokens ``a..b``.

        Short enough to stand whole under a column of the weights.
        """
        tokens = self.tokenize(text)
        entries = self.entry_tokens(layer, len(tokens))
        return tokens + [f"c{w} {a}-{b}" for w, (a, b) in enumerate(entries)]

    def kv_cache_size(self, layer: int, n_tokens: int) -> dict[str, int]:
        """Numbers the key/value cache of ``layer`` holds after ``n_tokens`` tokens, per part.

        What transformers' cache of this layer keeps, part by part (generation's
        ``cache_numbers`` count the keys only: the window's and the entries):

        * ``"window"``: the key = value vectors of the last ``sliding_window - 1`` tokens
          (the next token makes the window full);
        * ``"compressed"``, ``"indexer"``: one entry (``head_dim``, and ``index_head_dim``
          for the indexer of a compressed sparse layer) per complete window of ``rate``;
        * ``"pending"``: the projections and gates of the tokens of the unfinished window,
          and, for a compressed sparse layer, the first halves of the last complete window
          (the next entry pools them too).
        """
        kind = self.layer_kinds[self.check_layer(layer)]
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

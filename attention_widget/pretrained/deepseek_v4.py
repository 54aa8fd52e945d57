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
hyper-connection collapses the streams, then the final RMSNorm.  The configuration, the
tensors and what each layer is are read by :class:`~.deepseek_v4_layout.DeepseekV4Layout`; the
formulas of the parts are in :mod:`.deepseek_v4_parts`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..engine import merge_heads, split_heads
from . import AttentionInputs
from .blocks import indexer_scores, linear, rms_norm, sigmoid, top_k_kept
from .deepseek_v4_layout import SLIDING, SPARSE, DeepseekV4Layout
from .deepseek_v4_parts import (
    compress,
    hyper_connection,
    mixture_of_experts,
    rope_tail,
    unweighted_rms_norm,
)
from .family import LayerAttention, LayerCache

__all__ = ["DeepseekV4"]


@dataclass
class CompressedAttentionInputs(AttentionInputs):
    """:class:`AttentionInputs` of a DeepSeek V4 layer, with what its heads need besides.

    Attributes
    ----------
    rotation : tuple of ndarray, each shape (seq, rope_dim // 2)
        ``cos, sin`` of the queries' rotation, undone on the head outputs.
    query_latent : ndarray, shape (seq, q_lora_rank)
        ``c_q``, which the queries (and the indexer's) are made from.
    """

    rotation: tuple[np.ndarray, np.ndarray] | None = None
    query_latent: np.ndarray | None = None


class DeepseekV4(DeepseekV4Layout):
    """A DeepSeek V4 decoder (see the module docstring)."""

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

    def _block_input(self, w: dict, h: np.ndarray) -> np.ndarray:
        """The attention's input: the streams (seq, n, d) collapsed, then normed: (seq, d)."""
        pre, _, _ = self._hc(w, "attn", h)
        return rms_norm(np.einsum("sn,snd->sd", pre, h), w["attn_norm"], self.eps)

    def attention_inputs(self, i: int, h: np.ndarray, positions: np.ndarray) -> AttentionInputs:
        """Collapse the streams into the block's input, then :meth:`attention_on` it."""
        return self.attention_on(i, self._block_input(self.layer_weights(i), h), positions)

    def attention_on(self, i: int, x: np.ndarray, positions: np.ndarray) -> AttentionInputs:
        """Queries, the one key = value head and the compressed entries of layer ``i``.

        Parameters
        ----------
        i : int
            The layer.
        x : ndarray, shape (seq, d_model)
            Its attention's input (the streams collapsed, then normed).
        positions : ndarray of int, shape (seq,)
            Positions ``0 .. seq - 1`` (compression starts at the first token; generation
            goes through :meth:`extend_cache`).

        Returns
        -------
        CompressedAttentionInputs
        """
        w, kind = self.layer_weights(i), self.layer_kinds[i]
        inputs = self._token_inputs(w, kind, x, positions)
        if kind == SLIDING:
            return inputs
        if not np.array_equal(positions, np.arange(len(positions))):
            raise ValueError(
                f"layer {i} compresses windows counted from the first token: positions must "
                f"be 0 .. {len(positions) - 1}, got {positions[:3]}..."
            )
        index_keys = self._entries(w, SPARSE, x, key="i_") if kind == SPARSE else None
        return self._with_entries(w, kind, inputs, positions, self._entries(w, kind, x), index_keys)

    def _token_inputs(
        self, w: dict, kind: str, x: np.ndarray, positions: np.ndarray
    ) -> CompressedAttentionInputs:
        """The tokens' queries and keys: each query sees the last ``sliding_window`` tokens."""
        c_q = rms_norm(linear(x, w["wq_a"]), w["q_norm"], self.eps)  # (seq, q_lora_rank)
        q = split_heads(linear(c_q, w["wq_b"]), self.n_heads)  # (n_heads, seq, d_head)
        cos, sin = self._angles(kind, positions)
        q = rope_tail(unweighted_rms_norm(q, self.eps), cos, sin)
        kv = rope_tail(rms_norm(linear(x, w["wkv"]), w["kv_norm"], self.eps), cos, sin)[None]
        behind = positions[:, None] - positions[None, :]  # (seq, seq); causality: key positions
        return CompressedAttentionInputs(
            x=x, q=q, k=kv, v=kv, scale=1.0 / math.sqrt(self.d_head), key_positions=positions,
            mask=behind < self.window, options={"sinks": w["sinks"]}, rotation=(cos, sin),
            query_latent=c_q,
        )  # fmt: skip

    def _with_entries(
        self, w: dict, kind: str, inputs: CompressedAttentionInputs, positions: np.ndarray,
        entries: np.ndarray, index_keys: np.ndarray | None,
    ) -> CompressedAttentionInputs:  # fmt: skip
        """The compressed entries as more keys, after the tokens; the indexer's choice of them.

        Entry ``e`` is seen once its window is complete: its key position is the window's last
        token.  In a compressed sparse layer each query keeps the ``index_topk`` entries its
        indexer scores highest.
        """
        ends = np.arange(1, len(entries) + 1) * self.rates[kind] - 1  # (n_entries,)
        k = np.concatenate([inputs.k[0], entries])[None]  # (1, n_tokens + n_entries, d_head)
        n_q, n_tokens = inputs.mask.shape
        mask = np.concatenate([inputs.mask, np.ones((n_q, len(ends)), dtype=bool)], axis=1)
        kept = None
        if kind == SPARSE:
            chosen = self._indexer(w, inputs, positions, index_keys, ends)  # (n_q, n_entries)
            kept = np.concatenate([np.ones((n_q, n_tokens), dtype=bool), chosen], axis=1)
        key_positions = np.concatenate([inputs.key_positions, ends])
        return replace(inputs, k=k, v=k, key_positions=key_positions, mask=mask, kept=kept)

    def _entries(
        self, w: dict, kind: str, x: np.ndarray, key: str = "c_", first: int = 0
    ) -> np.ndarray:
        """The entries of the complete windows of ``x``: pooled, normed, rotated at their start.

        ``x`` starts at window ``first`` (a compressed sparse layer's, when ``first > 0``, at
        the window before, whose first halves entry ``first`` pools too).
        """
        rate, overlap = self.rates[kind], kind == SPARSE
        pooled = compress(
            linear(x, w[key + "wkv"]), linear(x, w[key + "wgate"]), w[key + "ape"], rate,
            overlap=overlap,
        )[int(overlap and first > 0) :]  # fmt: skip
        cos, sin = self._angles(kind, (first + np.arange(len(pooled))) * rate)
        return rope_tail(rms_norm(pooled, w[key + "norm"], self.eps), cos, sin)

    def _indexer(
        self, w: dict, inputs: CompressedAttentionInputs, positions: np.ndarray,
        keys: np.ndarray, ends: np.ndarray,
    ) -> np.ndarray:  # fmt: skip
        """Which compressed entries each query keeps: the indexer's top ``index_topk``."""
        q = split_heads(linear(inputs.query_latent, w["i_wq_b"]), self.index_heads)
        q = rope_tail(q, *self._angles(SPARSE, positions))  # (heads, seq, index_head_dim)
        head_weights = linear(inputs.x, w["i_weights"]) * np.float32(self.index_heads**-0.5)
        scores = indexer_scores(q, keys, head_weights)  # (seq, n_entries)
        visible = positions[:, None] >= ends[None, :]
        return top_k_kept(scores, visible, self.index_topk)

    # ---- generation with a cache --------------------------------------------------------------
    def attend_layer(
        self, i: int, h: np.ndarray, positions: np.ndarray, cache: LayerCache | None = None
    ) -> LayerAttention:
        """As every family's; with a cache, the new tokens' keys go through :meth:`extend_cache`."""
        if cache is None:
            return super().attend_layer(i, h, positions)
        w = self.layer_weights(i)
        inputs = self._token_inputs(w, self.layer_kinds[i], self._block_input(w, h), positions)
        return self.attend_inputs(self.extend_cache(i, inputs, positions, cache), positions)

    def extend_cache(
        self, i: int, inputs: AttentionInputs, positions: np.ndarray, cache: LayerCache
    ) -> AttentionInputs:
        """The new tokens' keys behind the cached ones, then every compressed entry.

        ``cache.state`` keeps the key = value vectors of the last ``sliding_window - 1``
        tokens, the entries (and indexer keys) of the complete windows, and the attention
        inputs of the tokens of the unfinished window (and of the window before it, in a
        compressed sparse layer): when the new tokens complete a window, its entry is made.
        ``cache.k``, ``cache.v`` and ``cache.key_positions`` are the keys the new tokens
        attended.
        """
        st, w, kind = cache.state, self.layer_weights(i), self.layer_kinds[i]
        tokens = np.concatenate([st.get("tokens", inputs.k[0][:0]), inputs.k[0]])
        token_positions = np.concatenate([st.get("token_positions", positions[:0]), positions])
        behind = positions[:, None] - token_positions[None, :]
        out = replace(inputs, k=tokens[None], v=tokens[None], key_positions=token_positions,
                      mask=behind < self.window)  # fmt: skip
        still = token_positions > positions[-1] + 1 - self.window  # the next query's window
        st["tokens"], st["token_positions"] = tokens[still], token_positions[still]
        if kind != SLIDING:
            entries, index_keys = self._compress_more(w, kind, inputs.x, positions, st)
            out = self._with_entries(w, kind, out, positions, entries, index_keys)
        cache.k, cache.v, cache.key_positions, cache.window = out.k, out.v, out.key_positions, None
        return out

    def _compress_more(
        self, w: dict, kind: str, x: np.ndarray, positions: np.ndarray, state: dict
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Every entry so far, with those of the windows that the new tokens complete.

        ``x`` (seq, d_model) are the new tokens' attention inputs, at ``positions``; ``state``
        holds the entries made so far and the inputs of the tokens still needed (from window
        ``"x_from"``), and is updated.
        """
        rate, sparse = self.rates[kind], kind == SPARSE
        entries, keys = state.get("entries"), state.get("index_keys")
        x = np.concatenate([state["x"], x]) if "x" in state else x  # from window x_from
        x_from, done = state.get("x_from", 0), 0 if entries is None else len(entries)
        complete = (int(positions[-1]) + 1) // rate  # windows complete now
        if complete > done:
            start = (done - int(sparse and done > 0) - x_from) * rate  # row of window done (- 1)
            more = self._entries(w, kind, x[start:], first=done)
            entries = more if entries is None else np.concatenate([entries, more])
            if sparse:
                more = self._entries(w, kind, x[start:], key="i_", first=done)
                keys = more if keys is None else np.concatenate([keys, more])
        keep = max(complete - int(sparse), 0)  # the inputs the next entries need, from this window
        state["x"], state["x_from"] = x[(keep - x_from) * rate :], keep
        state["entries"], state["index_keys"] = entries, keys
        if entries is None:
            entries = np.zeros((0, self.d_head), dtype=x.dtype)
            keys = np.zeros((0, self.index_dim), dtype=x.dtype) if sparse else None
        return entries, keys

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
        self,
        i: int,
        h: np.ndarray,
        positions: np.ndarray,
        cache: LayerCache | None = None,
        ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, LayerAttention]:
        """Layer ``i`` on the streams ``h`` (seq, hc_mult, d_model); ``ids`` for hash routing."""
        out, layer = self.attention_step(i, h, positions, cache)
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

"""DeepSeek V4 in NumPy against transformers' ``DeepseekV4ForCausalLM`` (eager attention).

Tiny random checkpoints saved by transformers (several sizes, every attention kind, hash and
top-k routed experts, bfloat16, sharded) and texts longer than the sliding windows and the
compression rates, so that compressed entries and the indexer's choice matter.  The references
are transformers' ``output_attentions`` (every column: the tokens, then the compressed
entries), ``output_hidden_states`` (the residual streams), the attention modules' own inputs
and outputs, and the key/value cache transformers fills.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers

from attention_widget.engine import AttentionTrace
from attention_widget.pretrained import load_pretrained
from attention_widget.pretrained.blocks import top_k_kept
from attention_widget.pretrained.deepseek_v4_parts import compress, sinkhorn

transformers.logging.set_verbosity_error()
torch.set_grad_enabled(False)

TOL = 1e-4
SLIDING, SPARSE, HEAVY = (
    "sliding_attention",
    "compressed_sparse_attention",
    "heavily_compressed_attention",
)
VOCAB = 80
CONFIGS = {
    # every kind once; a hash-routed layer, then top-k routed ones
    "small": dict(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, head_dim=32,
        q_lora_rank=48, layer_types=[SLIDING, SPARSE, HEAVY],
        compress_rates={SPARSE: 4, HEAVY: 16}, sliding_window=8, partial_rotary_factor=0.25,
        index_n_heads=8, index_head_dim=16, index_topk=3, hc_mult=2, o_groups=2,
        o_lora_rank=16, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        mlp_layer_types=["hash_moe", "moe", "moe"],
    ),
    # V4's default schedule (two heavy layers, then sparse and heavy in turn), wider heads,
    # four streams, a sigmoid router, shared-expert biases
    "wide": dict(
        hidden_size=48, num_hidden_layers=5, num_attention_heads=8, head_dim=16,
        q_lora_rank=32, compress_rates={SPARSE: 4, HEAVY: 8}, sliding_window=16,
        partial_rotary_factor=0.5, index_n_heads=8, index_head_dim=8, index_topk=5,
        hc_mult=4, o_groups=4, o_lora_rank=8, n_routed_experts=6, num_experts_per_tok=2,
        moe_intermediate_size=24, scoring_func="sigmoid", mlp_bias=True,
        routed_scaling_factor=2.5, rope_theta=500.0, compress_rope_theta=5000.0,
    ),
    # three streams, one expert per token, more entries allowed than there are, a rate of 2
    "three": dict(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, head_dim=32,
        q_lora_rank=16, layer_types=[SPARSE, SLIDING, SPARSE],
        compress_rates={SPARSE: 2, HEAVY: 128}, sliding_window=5, partial_rotary_factor=0.5,
        index_n_heads=8, index_head_dim=16, index_topk=40, hc_mult=3, o_groups=1,
        o_lora_rank=8, n_routed_experts=3, num_experts_per_tok=1, moe_intermediate_size=16,
        mlp_layer_types=["moe", "hash_moe", "moe"],
    ),
    # the default rates (4 and 128) and window (128), at 300 tokens
    "long": dict(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, head_dim=32,
        q_lora_rank=32, layer_types=[SLIDING, SPARSE, HEAVY], index_n_heads=8,
        index_head_dim=16, index_topk=16, hc_mult=2, o_groups=2, o_lora_rank=16,
        n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        mlp_layer_types=["hash_moe", "moe", "moe"], max_position_embeddings=512,
    ),
}  # fmt: skip
LENGTHS = {"small": 70, "wide": 90, "three": 37, "long": 300}


def make_checkpoint(kind: str, folder: Path, dtype=torch.float32, **save_kw) -> Path:
    """Save a tiny random DeepSeek V4 (``CONFIGS[kind]``) and a word-level tokenizer.json."""
    torch.manual_seed(sorted(CONFIGS).index(kind))
    cfg = transformers.DeepseekV4Config(vocab_size=VOCAB, **{"max_position_embeddings": 256,
                                                             **CONFIGS[kind]})  # fmt: skip
    model = transformers.DeepseekV4ForCausalLM(cfg)
    # Weights scaled by 1/sqrt(fan-in) keep the residual streams near 1 through the layers, so
    # that 1e-4 is a real tolerance; sinks, position biases and router biases are nonzero, and
    # the key/value norm is larger than 1 for sharp heads.
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            p.normal_(0.0, p.shape[-1] ** -0.5)
        elif "kv_norm" in name:
            p.copy_(2.0 + 0.5 * torch.randn_like(p))
        elif "norm" in name:
            p.copy_(1.0 + 0.3 * torch.randn_like(p))
        else:
            p.normal_(0.0, 0.5)
    for name, b in model.named_buffers():
        if name.endswith("tid2eid") and kind == "wide":  # a token may name an expert twice
            b.copy_(torch.randint(0, cfg.n_routed_experts, b.shape))
        elif name.endswith("tid2eid"):  # distinct experts per token, as a real table has
            b.copy_(torch.stack([torch.randperm(cfg.n_routed_experts)[: b.shape[1]]
                                 for _ in range(b.shape[0])]))  # fmt: skip
        elif name.endswith("e_score_correction_bias"):
            b.normal_(0.0, 0.1)
    model.to(dtype).save_pretrained(folder, **save_kw)
    words = [f"w{i}" for i in range(VOCAB - 2)]
    vocab = {"<unk>": 0, "<s>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def text_of(kind: str, n: int | None = None) -> str:
    rng = np.random.default_rng(len(kind))
    return " ".join(f"w{i}" for i in rng.integers(0, VOCAB - 2, n or LENGTHS[kind]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("v4")
    out = {kind: make_checkpoint(kind, root / kind) for kind in CONFIGS}
    out["small_bf16"] = make_checkpoint("small", root / "small_bf16", torch.bfloat16)
    out["wide_sharded"] = make_checkpoint("wide", root / "wide_sharded", max_shard_size="20KB")
    return out


def _hf(folder: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation="eager", dtype=torch.float32
    ).eval()


def _run_hf(ref, ids: np.ndarray, **kw):
    ids_t = torch.from_numpy(ids[None].copy())
    return ref(ids_t, output_attentions=True, output_hidden_states=True, **kw)


def _indexer_scores(ref, ids: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
    """transformers' lightning-indexer scores (seq, n_entries) per sparse layer, rate, top-k."""
    seen, hooks = [], []
    for layer in ref.model.layers:
        compressor = layer.self_attn.compressor
        if compressor is not None and hasattr(compressor, "indexer"):
            rate, k = compressor.compress_rate, compressor.indexer.index_topk

            def hook(_m, _args, out, rate=rate, k=k):
                seen.append((out[0].numpy().copy(), rate, k))

            hooks.append(compressor.indexer.scorer.register_forward_hook(hook))
    try:
        ref(torch.from_numpy(ids[None].copy()))
    finally:
        for h in hooks:
            h.remove()
    return seen


def _no_ties_at_the_cut(scores: np.ndarray, rate: int, k: int) -> bool:
    """Whether each query's k-th and (k+1)-th visible scores differ (the choice is one set).

    Equal scores (several entries that every indexer head scores below zero get exactly 0)
    make a top-k ambiguous: torch and NumPy may break the tie differently.
    """
    for t, row in enumerate(scores):
        visible = np.sort(row[: (t + 1) // rate])[::-1]
        if visible.size > k and visible[k - 1] == visible[k]:
            return False
    return True


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b)
    assert all(x.shape == y.shape for x, y in zip(a, b, strict=True))
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------------------------
# the whole model
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["small", "wide", "three", "long", "small_bf16", "wide_sharded"])
def test_matches_transformers(tiny, name):
    kind = name.split("_")[0]
    model, ref = load_pretrained(tiny[name]), _hf(tiny[name])
    text = text_of(kind)
    ids = model.encode(text).ids
    out = _run_hf(ref, ids)
    at_ref = [a[0].numpy() for a in out.attentions]
    hs_ref = [h[0].numpy() for h in out.hidden_states]
    at, hs = model.attentions(text), model.hidden_states(text)
    seq = ids.size
    for i, a in enumerate(at_ref):  # the keys: the tokens, then the compressed entries
        layer_type = ref.config.layer_types[i]
        rate = ref.config.compress_rates.get(layer_type)
        assert a.shape == (model.n_heads, seq, seq + (seq // rate if rate else 0))
    if kind == "long":  # rates 4 and 128 at 300 tokens: 75 and 2 entries
        assert [a.shape for a in at] == [(4, 300, 300), (4, 300, 375), (4, 300, 302)]
    assert _max_diff(at, at_ref) < TOL
    assert hs[0].shape == (seq, model.hc_mult, model.d_model)  # the residual streams
    assert _max_diff(hs, hs_ref) < TOL
    # the comparison means something: sharp heads, sinks that take a share, attended entries
    assert max(float(a.max()) for a in at_ref) > 0.5
    assert min(float(a.sum(-1).min()) for a in at_ref) < 0.9
    entries = [a[..., seq:] for a in at_ref if a.shape[-1] > seq]
    assert entries and max(float(e.max()) for e in entries) > 0.05
    assert max(float(np.abs(h).max()) for h in hs_ref) < 50
    assert all(_no_ties_at_the_cut(*layer) for layer in _indexer_scores(ref, ids))


@pytest.mark.parametrize("n", [1, 3, 4, 5, 17])
def test_short_texts_match_transformers(tiny, n):
    """Texts with no complete window, one, or just past one: entries appear on time."""
    model, ref = load_pretrained(tiny["small"]), _hf(tiny["small"])
    text = text_of("small", n)
    out = _run_hf(ref, model.encode(text).ids)
    assert [a.shape[-1] for a in model.attentions(text)] == [n, n + n // 4, n + n // 16]
    assert _max_diff(model.attentions(text), [a[0].numpy() for a in out.attentions]) < TOL
    assert _max_diff(model.hidden_states(text), [h[0].numpy() for h in out.hidden_states]) < TOL


def test_forward_ids_matches_transformers(tiny):
    model, ref = load_pretrained(tiny["wide"]), _hf(tiny["wide"])
    ids = model.encode(text_of("wide", 61)).ids
    out = _run_hf(ref, ids)
    hs, at = model.forward_ids(ids)
    assert _max_diff(at, [a[0].numpy() for a in out.attentions]) < TOL
    assert _max_diff(hs, [h[0].numpy() for h in out.hidden_states]) < TOL


def test_indexer_drops_entries(tiny):
    """Compressed sparse layers: each query keeps at most index_topk of the entries it sees."""
    model = load_pretrained(tiny["small"])
    text = text_of("small")
    seq, k = len(model.tokenize(text)), model.index_topk
    tr = model.trace(text, 1)
    visible = tr.mask[:, seq:]
    kept = tr.kept[:, :, seq:]
    assert kept.shape == (model.n_heads, seq, seq // 4)
    assert (kept <= visible).all() and (kept.sum(-1) == np.minimum(visible.sum(-1), k)).all()
    assert (visible.sum(-1) > k).any()  # entries were dropped ...
    assert (tr.weights[:, :, seq:][~kept] == 0).all()  # ... and get nothing
    assert (tr.weights[:, :, seq:][kept] > 0).all()
    assert (tr.kept[:, :, :seq] == tr.mask[:, :seq]).all()  # tokens are not selected


# --------------------------------------------------------------------------------------------
# the attention layer on transformers' own inputs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["small", "wide", "three", "long"])
def test_attention_layer_given_its_input(tiny, name):
    """Each layer's attention on the very input transformers gave it: weights and output."""
    model, ref = load_pretrained(tiny[name]), _hf(tiny[name])
    ids = model.encode(text_of(name)).ids
    seen = {}

    def record(i):
        def pre(_m, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            seen[i, "x"] = x[0].numpy().copy()

        def post(_m, _args, output):
            seen[i, "out"] = output[0][0].numpy().copy()
            seen[i, "weights"] = output[1][0].numpy().copy()

        return pre, post

    hooks = []
    for i, layer in enumerate(ref.model.layers):
        pre, post = record(i)
        hooks.append(layer.self_attn.register_forward_pre_hook(pre, with_kwargs=True))
        hooks.append(layer.self_attn.register_forward_hook(post))
    try:
        _run_hf(ref, ids)
    finally:
        for hook in hooks:
            hook.remove()
    positions = np.arange(ids.size)
    for i in range(model.n_layers):
        inputs = model.attention_on(i, seen[i, "x"], positions)
        att = model.run_attention(inputs, model.attention_mask(inputs, positions))
        out = model.attention_output(i, model.concat_heads(inputs, att.head_outputs))
        assert np.abs(att.weights - seen[i, "weights"]).max() < TOL, i
        assert np.abs(out - seen[i, "out"]).max() < TOL, i


# --------------------------------------------------------------------------------------------
# what the widget draws
# --------------------------------------------------------------------------------------------
def test_trace_carries_sinks_entries_and_labels(tiny):
    model = load_pretrained(tiny["small"])
    text = text_of("small")
    seq = len(model.tokenize(text))
    kinds = [model.layer_kind(i) for i in range(3)]
    assert kinds == ["sliding, window 8", "compressed sparse, rate 4, top 3",
                     "heavily compressed, rate 16"]  # fmt: skip
    for layer, n_entries in ((0, 0), (1, seq // 4), (2, seq // 16)):
        for temperature in (1.0, 0.7):
            tr = model.trace(text, layer, temperature=temperature)
            assert isinstance(tr, AttentionTrace)
            assert tr.sinks.shape == (4,)
            assert tr.weights.shape == (4, seq, seq + n_entries) == (4, *tr.mask.shape)
            assert tr.k.shape == (1, seq + n_entries, 32)
            # rows and sinks together sum to one; masked keys get nothing
            np.testing.assert_allclose(tr.weights.sum(-1) + tr.sink_weights, 1, atol=1e-6)
            assert (tr.weights[:, ~tr.mask] == 0).all() and (tr.sink_weights > 0).all()
        labels = model.key_labels(text, layer)
        assert len(labels) == seq + n_entries and labels[:seq] == model.tokenize(text)
        # a token sees the last 8 tokens, and the entries whose window is complete
        assert tr.mask[20, :seq].sum() == 8
        assert tr.mask[20, seq:].sum() == (0, 21 // 4, 21 // 16)[layer]
    assert model.key_labels(text, 1)[seq:seq + 3] == [
        "c0 0-3", "c1 0-7",
        "c2 4-11",
    ]  # fmt: skip
    assert model.key_labels(text, 2)[seq] == "c0 0-15"
    assert model.trace(text, 0).kept is None and model.trace(text, 2).kept is None
    # the temperature is a what-if: the sinks' share moves with it
    hot, cold = model.trace(text, 2, 3.0), model.trace(text, 2, 0.5)
    assert not np.allclose(hot.sink_weights, cold.sink_weights)
    assert "DeepSeek V4" in model.describe() and "1 compressed sparse" in model.describe()


def _cache_numbers(layer) -> int:
    """Numbers held by one layer of transformers' DeepSeek V4 cache (batch of one)."""
    n = layer.keys.numel()  # key = value: stored once
    for name in ("compressed_kv", "buffer_kv", "buffer_gate", "overlap_kv", "overlap_gate"):
        n += sum(t.numel() for t in getattr(layer, name, {}).values() if t is not None)
    return n


@pytest.mark.parametrize("n", [3, 21, 37])
def test_kv_cache_size_is_what_transformers_keeps(tiny, n):
    model, ref = load_pretrained(tiny["small"]), _hf(tiny["small"])
    ids = model.encode(text_of("small", n)).ids
    cache = ref(torch.from_numpy(ids[None].copy()), use_cache=True).past_key_values
    for i, layer in enumerate(cache.layers):
        assert sum(model.kv_cache_size(i, n).values()) == _cache_numbers(layer), i
    assert set(model.kv_cache_size(0, n)) == {"window"}
    assert model.kv_cache_size(1, n)["indexer"] == n // 4 * 16  # index_head_dim per entry
    assert model.kv_cache_size(2, n)["compressed"] == n // 16 * 32  # head_dim per entry


# --------------------------------------------------------------------------------------------
# generation with a cache
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "n_prompt"), [("small", 3), ("small", 13), ("wide", 9),
                                                ("three", 5)])  # fmt: skip
def test_generation_matches_transformers(tiny, name, n_prompt):
    """Greedy tokens and every step's attention row: the window's tokens, then the entries."""
    model = load_pretrained(tiny[name])
    out = model.generate(text_of(name, n_prompt), 20)
    t = torch.from_numpy(out.prompt_ids[None].copy())
    ref = _hf(tiny[name]).generate(
        t, attention_mask=torch.ones_like(t), do_sample=False, max_new_tokens=20,
        pad_token_id=0, return_dict_in_generate=True, output_attentions=True,
    )  # fmt: skip
    np.testing.assert_array_equal(out.all_ids, ref.sequences[0].numpy())
    assert len(set(out.ids.tolist())) > 1
    for step, layers in zip(out.steps, ref.attentions, strict=True):
        for ours, theirs in zip(step.attentions, layers, strict=True):
            theirs = theirs[0, :, -1:].numpy()  # (n_heads, 1, n_keys)
            assert ours.shape == theirs.shape
            np.testing.assert_allclose(ours, theirs, atol=1e-5)
    for ours, theirs in zip(out.prompt_attentions, ref.attentions[0], strict=True):
        np.testing.assert_allclose(ours, theirs[0].numpy(), atol=1e-5)


def test_cached_rows_equal_the_full_recomputation(tiny):
    """Each step's row: the last sliding_window tokens and every entry, as without a cache."""
    model = load_pretrained(tiny["small"])
    out = model.generate(text_of("small", 13), 20)
    assert out.steps[-1].position >= 20  # past several windows of both rates
    for step in out.steps:
        n = step.position + 1
        _, full = model.forward_ids(out.all_ids[:n])  # keys: n tokens, then the entries
        # the prompt's pass keeps every prompt token (each query has its own window); later
        # steps, the last 8 tokens
        first = 0 if step.index == 0 else max(n - 8, 0)
        for layer, (row, att) in enumerate(zip(step.attentions, full, strict=True)):
            keys = step.key_positions[layer]
            n_entries = att.shape[-1] - n
            np.testing.assert_array_equal(keys[: keys.size - n_entries], np.arange(first, n))
            columns = np.concatenate([np.arange(first, n), n + np.arange(n_entries)])
            np.testing.assert_allclose(row[:, 0], att[:, -1, columns], atol=1e-5)
            assert not att[:, -1, :first].any()  # the tokens the cache let go had no weight
        assert step.cache_entries == (n - first, n - first + n // 4, n - first + n // 16)
    assert out.cache_width == (32,) * 3


# --------------------------------------------------------------------------------------------
# properties of the parts
# --------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), seq=st.integers(0, 40), rate=st.integers(1, 6),
       overlap=st.booleans())  # fmt: skip
def test_compressed_entries_average_their_windows(seed, seq, rate, overlap):
    """Each feature of an entry is a softmax-weighted average of what its windows hold."""
    rng = np.random.default_rng(seed)
    width = 6 if overlap else 3
    kv, gate = rng.standard_normal((2, seq, width)).astype(np.float32)
    bias = rng.standard_normal((rate, width)).astype(np.float32)
    entries = compress(kv, gate, bias, rate, overlap)
    assert entries.shape == (seq // rate, 3)
    for w, entry in enumerate(entries):
        pooled = kv[w * rate : (w + 1) * rate, 3:] if overlap else kv[w * rate : (w + 1) * rate]
        if overlap and w > 0:  # and the first halves of the window before
            pooled = np.concatenate([kv[(w - 1) * rate : w * rate, :3], pooled])
        assert (pooled.min(0) - 1e-5 <= entry).all() and (entry <= pooled.max(0) + 1e-5).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5))
def test_sinkhorn_makes_rows_and_columns_sum_to_one(seed, n):
    comb = np.random.default_rng(seed).uniform(0.05, 1.0, (3, n, n)).astype(np.float32)
    out = sinkhorn(comb, 20, 1e-6)
    np.testing.assert_allclose(out.sum(-2), 1, atol=1e-4)  # the last step: columns
    np.testing.assert_allclose(out.sum(-1), 1, atol=2e-2)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), seq=st.integers(1, 12), n=st.integers(0, 12),
       k=st.integers(1, 6))  # fmt: skip
def test_the_indexer_keeps_the_best_visible_entries(seed, seq, n, k):
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((seq, n)).astype(np.float32)
    visible = rng.random((seq, n)) < 0.7
    kept = top_k_kept(scores, visible, k)
    assert (kept <= visible).all()
    assert (kept.sum(-1) == np.minimum(visible.sum(-1), k)).all()
    for t in range(seq):
        dropped = visible[t] & ~kept[t]
        if kept[t].any() and dropped.any():
            assert scores[t, kept[t]].min() >= scores[t, dropped].max()


# --------------------------------------------------------------------------------------------
# configurations that are not supported, or wrong
# --------------------------------------------------------------------------------------------
def _edit_config(folder: Path, tmp_path: Path, **changes) -> Path:
    out = tmp_path / "edited"
    out.mkdir()
    for f in folder.iterdir():
        (out / f.name).symlink_to(f)
    (out / "config.json").unlink()
    config = json.loads((folder / "config.json").read_text()) | changes
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"layer_types": [SLIDING, "full_attention", HEAVY]}, "layer_types"),
        ({"layer_types": [SLIDING, SPARSE]}, "layer_types"),
        ({"compress_rates": {SPARSE: 0, HEAVY: 16}}, "compress_rates"),
        ({"mlp_layer_types": ["moe", "dense", "moe"]}, "mlp_layer_types"),
        ({"scoring_func": "softmax"}, "scoring_func"),
        ({"o_groups": 3}, "o_groups"),
        ({"partial_rotary_factor": 0.9, "rope_parameters": None}, "partial_rotary_factor"),
        (
            {"rope_parameters": {"main": {"rope_theta": 1e4, "partial_rotary_factor": 0.25},
                                 "compress": {"rope_type": "longrope", "rope_theta": 1e4}}},
            "rope_type",
        ),
    ],
)  # fmt: skip
def test_unsupported_configs_name_the_field(tiny, tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        load_pretrained(_edit_config(tiny["small"], tmp_path, **changes))


def test_older_config_names(tiny, tmp_path):
    """``compress_ratios`` and ``num_hash_layers`` of older configs mean what transformers reads."""
    folder = _edit_config(
        tiny["small"], tmp_path, layer_types=None, compress_ratios=[0, 4, 128],
        compress_rates=None, compress_rate_csa=4, compress_rate_hca=16, mlp_layer_types=None,
        num_hash_layers=1,
    )  # fmt: skip
    model = load_pretrained(folder)
    assert [model.layer_kind(i).split(",")[0] for i in range(3)] == [
        "sliding", "compressed sparse", "heavily compressed"
    ]  # fmt: skip
    text = text_of("small", 30)
    assert _max_diff(model.attentions(text), load_pretrained(tiny["small"]).attentions(text)) == 0


def test_compressed_layers_need_the_text_from_its_start(tiny):
    """Entries are windows counted from the first token: other positions are refused."""
    model = load_pretrained(tiny["small"])
    ids = model.encode(text_of("small", 10)).ids
    h = model.embed(ids, np.arange(10))
    model.run_block(0, h, np.arange(5, 15), ids=ids)  # a sliding layer: any positions
    with pytest.raises(ValueError, match=r"positions must be 0 \.\. 9"):
        model.run_block(1, h, np.arange(5, 15), ids=ids)
    with pytest.raises(ValueError, match="token ids"):
        model.run_block(0, h, np.arange(10))  # a hash-routed layer needs the ids

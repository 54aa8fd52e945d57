"""DeepSeek-V3 and DeepSeek-V3.2 in NumPy, checked against transformers on torch CPU.

References are independent: ``transformers``' ``DeepseekV3ForCausalLM`` and
``DeepseekV32ForCausalLM`` (eager attention, ``output_attentions=True``,
``output_hidden_states=True``) on tiny random checkpoints saved with ``save_pretrained`` (float32,
bfloat16 and sharded), hooks on their modules for the intermediate steps, their RoPE and router
modules for the building blocks, and their key/value cache for the numbers kept per token.
"""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pretrained import _copy, _hf, _max_diff, _run_hf, _softmax64, _word_tokenizer
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as hf_v3

from attention_widget.pretrained import PretrainedTrace, blocks, load_pretrained

transformers.logging.set_verbosity_error()
torch.set_grad_enabled(False)

TOL = 1e-4
TEXT = (
    "the cat sat on the mat and the dog ran after the cat and the cat ran away attention "
    "is all you need the dog sat on the mat"
)  # 30 tokens with <s>

YARN = {
    "rope_type": "yarn",
    "rope_theta": 500.0,
    "factor": 4.0,
    "original_max_position_embeddings": 32,
    "beta_fast": 8,
    "beta_slow": 1,
}
SMALL = dict(
    hidden_size=32,
    intermediate_size=48,
    moe_intermediate_size=16,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=4,
    kv_lora_rank=16,
    qk_nope_head_dim=12,
    qk_rope_head_dim=8,
    v_head_dim=12,
    n_routed_experts=8,
    max_position_embeddings=128,
)
#: name -> (model_type, config): q_lora_rank null and set, rope_interleave on and off, YaRN on
#: (with and without mscale_all_dim) and off, first_k_dense_replace 0 and 1, several groupings.
CONFIGS = {
    "v3": ("deepseek_v3", {
        **SMALL, "q_lora_rank": 24, "rope_interleave": True, "first_k_dense_replace": 1,
        "n_group": 2, "topk_group": 1, "num_experts_per_tok": 2,
    }),
    "v3_no_q_lora_yarn": ("deepseek_v3", {
        **SMALL, "q_lora_rank": None, "rope_interleave": False, "first_k_dense_replace": 0,
        "n_group": 4, "topk_group": 2, "num_experts_per_tok": 3, "norm_topk_prob": False,
        "attention_bias": True, "rope_parameters": {**YARN, "mscale": 1.0, "mscale_all_dim": 0.7},
    }),
    "v3_wide_yarn": ("deepseek_v3", {
        **SMALL, "hidden_size": 48, "num_attention_heads": 6, "num_key_value_heads": 6,
        "kv_lora_rank": 24, "q_lora_rank": 16, "qk_rope_head_dim": 16, "v_head_dim": 8,
        "n_routed_experts": 12, "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1,
        "num_experts_per_tok": 4, "n_shared_experts": 2, "routed_scaling_factor": 1.5,
        "rope_parameters": {**YARN, "mscale": 1.0, "mscale_all_dim": 1.0}, "rms_norm_eps": 0.05,
    }),
    "v32": ("deepseek_v32", {
        **SMALL, "q_lora_rank": 24, "first_k_dense_replace": 1, "n_group": 2, "topk_group": 1,
        "num_experts_per_tok": 2, "index_topk": 6, "index_n_heads": 8, "index_head_dim": 16,
    }),
    "v32_yarn": ("deepseek_v32", {
        **SMALL, "q_lora_rank": 16, "first_k_dense_replace": 0, "n_group": 4, "topk_group": 2,
        "num_experts_per_tok": 3, "index_topk": 11, "index_n_heads": 16, "index_head_dim": 12,
        "rope_parameters": {**YARN, "mscale": 0.8, "mscale_all_dim": 1.0}, "rms_norm_eps": 0.05,
    }),
}  # fmt: skip
CHECKPOINTS = [*CONFIGS, "v3_bf16", "v32_bf16", "v3_sharded", "v32_sharded"]


# --------------------------------------------------------------------------------------------
# tiny random checkpoints
# --------------------------------------------------------------------------------------------
def _make(name: str, folder, dtype=torch.float32, **save_kw):
    """Save the tiny random model ``CONFIGS[name]`` (+ tokenizer.json) into ``folder``."""
    model_type, fields = CONFIGS[name]
    tok = _word_tokenizer(bos=True)
    torch.manual_seed(sorted(CONFIGS).index(name))
    if model_type == "deepseek_v3":
        model = transformers.DeepseekV3ForCausalLM(
            transformers.DeepseekV3Config(vocab_size=tok.get_vocab_size(), **fields)
        )
    else:
        model = transformers.DeepseekV32ForCausalLM(
            transformers.DeepseekV32Config(vocab_size=tok.get_vocab_size(), **fields)
        )
    # Sharp heads and routers (the default init gives near-uniform ones), non-trivial norms
    # and a routing bias; smaller output projections keep the hidden states of order 1-10.
    for pname, p in model.named_parameters():
        if p.ndim >= 2:
            p.normal_(0.0, 0.12 if ("down_proj" in pname or "o_proj" in pname) else 0.35)
        elif "norm" in pname:
            p.copy_(1.0 + 0.3 * torch.randn_like(p))
        else:
            p.normal_(0.0, 0.1)
    for bname, b in model.named_buffers():
        if "e_score_correction_bias" in bname:
            b.normal_(0.0, 0.1)
    model.to(dtype).save_pretrained(folder, **save_kw)
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepseek")
    out = {name: _make(name, root / name) for name in CONFIGS}
    for name in ("v3", "v32"):
        out[f"{name}_bf16"] = _make(name, root / f"{name}_bf16", torch.bfloat16)
        out[f"{name}_sharded"] = _make(name, root / f"{name}_sharded", max_shard_size="30KB")
    return out


def _config(name: str) -> dict:
    return CONFIGS[name.split("_bf16")[0].split("_sharded")[0]][1]


def _indexer_topk(ref, ids: np.ndarray) -> list[np.ndarray]:
    """The keys transformers' indexer kept per layer, (seq, seq) bool, within the causal mask."""
    seen: list[np.ndarray] = []
    hooks = [
        layer.self_attn.indexer.register_forward_hook(
            lambda _m, _a, out: seen.append(out[0].numpy().astype(np.int64))
        )
        for layer in ref.model.layers
    ]
    try:
        ref(torch.from_numpy(ids[None].copy()))
    finally:
        for hook in hooks:
            hook.remove()
    kept = []
    for idx in seen:
        k = np.zeros((ids.size, ids.size), dtype=bool)
        np.put_along_axis(k, idx, True, axis=1)
        kept.append(k & np.tri(ids.size, dtype=bool))
    return kept


# --------------------------------------------------------------------------------------------
# whole models against transformers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_matches_transformers(tiny, name):
    model = load_pretrained(tiny[name])
    ids = model.encode(TEXT).ids
    assert ids.size == 30
    hs_ref, at_ref = _run_hf(_hf(tiny[name]), ids)
    hs, at = model.hidden_states(TEXT), model.attentions(TEXT)
    assert len(hs) == model.n_layers + 1 and len(at) == model.n_layers
    assert _max_diff(hs, hs_ref) < TOL
    assert _max_diff(at, at_ref) < TOL
    # the same through forward_ids (no caches)
    hs2, at2 = model.forward_ids(ids)
    assert _max_diff(hs2, hs_ref) < TOL and _max_diff(at2, at_ref) < TOL
    # sharp heads, causal, and hidden states of a size where 1e-4 means something
    assert np.mean([float(a[:, 8:].max(-1).mean()) for a in at_ref]) > 0.4
    assert max(float(np.abs(h).max()) for h in hs_ref) < 100
    for a in at:
        assert not np.triu(a, k=1).any()
    assert model.stored_dtype == ("BF16" if "bf16" in name else "F32")
    if "sharded" in name:
        assert len(list(tiny[name].glob("model-*.safetensors"))) > 1


@pytest.mark.parametrize("name", ["v32", "v32_yarn"])
def test_indexer_selection_matches_transformers(tiny, name):
    """Each query keeps the keys transformers' indexer keeps; the selection matters (rows
    with more allowed keys than index_topk drop some), and dropped keys get exactly 0."""
    model = load_pretrained(tiny[name])
    ids = model.encode(TEXT).ids
    n, k = ids.size, model.index_topk
    causal = np.tri(n, dtype=bool)
    ref_kept = _indexer_topk(_hf(tiny[name]), ids)
    for layer in range(model.n_layers):
        tr = model.trace(TEXT, layer)
        # no near-tie at the boundary of the selection, where the order of float32 sums
        # (or torch.topk's unspecified order among equals) could decide
        scores = model.index_scores(layer, TEXT)
        for i in range(k, n):
            ranked = np.sort(scores[i, : i + 1])[::-1]
            assert ranked[k - 1] - ranked[k] > 1e-4, (layer, i)
        assert isinstance(tr, PretrainedTrace) and tr.kept.shape == tr.weights.shape
        np.testing.assert_array_equal(tr.kept[0], ref_kept[layer])
        assert (tr.kept == tr.kept[:1]).all()  # one selection for all heads
        np.testing.assert_array_equal(tr.mask, causal)  # the mask stays causal ...
        assert not tr.weights[~tr.kept].any()  # ... the dropped keys get nothing
        assert (tr.kept[0].sum(1) == np.minimum(np.arange(1, n + 1), k)).all()
        assert (causal & ~tr.kept[0]).sum() > 100


def test_kept_keys_follow_temperature(tiny):
    model = load_pretrained(tiny["v32"])
    base = model.trace(TEXT, 1)
    for t in (0.3, 2.0):
        tr = model.trace(TEXT, 1, temperature=t)
        np.testing.assert_array_equal(tr.kept, base.kept)
        np.testing.assert_array_equal(tr.scores, base.scores)
        expected = _softmax64(base.scores / t, base.kept)
        np.testing.assert_allclose(tr.weights, expected, atol=1e-6)


@pytest.mark.parametrize("name", ["v3", "v3_no_q_lora_yarn", "v32_yarn"])
def test_trace_stages_match_transformers(tiny, name):
    """q, k, v, the latent c_kv, the scale, the output projection: against transformers'
    modules run on the same normed input."""
    model = load_pretrained(tiny[name])
    ref = _hf(tiny[name])
    ids = model.encode(TEXT).ids
    n, nope, h = ids.size, model.d_nope, model.n_heads
    positions = torch.arange(n)[None]
    for layer in range(model.n_layers):
        tr = model.trace(TEXT, layer)
        attn = ref.model.layers[layer].self_attn
        x = torch.from_numpy(tr.x.copy())[None]  # (1, seq, d_model)
        block_in = torch.from_numpy(model.hidden_states(TEXT)[layer].copy())
        norm = ref.model.layers[layer].input_layernorm
        np.testing.assert_allclose(tr.x, norm(block_in).numpy(), atol=TOL)
        # the latent: kv_a_proj_with_mqa, split, kv_a_layernorm
        kv = attn.kv_a_proj_with_mqa(x)
        c_kv = attn.kv_a_layernorm(kv[..., : model.kv_rank])
        assert tr.latent.shape == (n, model.kv_rank)
        np.testing.assert_allclose(tr.latent, c_kv[0].numpy(), atol=TOL)
        # queries and keys before and after RoPE, in transformers' own steps
        if attn.q_lora_rank is None:
            q = attn.q_proj(x)
        else:
            q = attn.q_b_proj(attn.q_a_layernorm(attn.q_a_proj(x)))
        q = q.view(1, n, h, -1).transpose(1, 2)
        cos, sin = ref.model.rotary_emb(x, positions)
        k_rot = kv[..., model.kv_rank :].view(1, 1, n, -1)
        interleave = ref.config.model_type == "deepseek_v32" or ref.config.rope_interleave
        rotate = hf_v3.apply_rotary_pos_emb_interleave if interleave else hf_v3.apply_rotary_pos_emb
        q_rot, k_rot = rotate(q[..., nope:], k_rot, cos, sin)
        kv_up = attn.kv_b_proj(c_kv).view(1, n, h, -1).transpose(1, 2)
        # ours keeps interleaved pairs in place; transformers lists evens then odds
        perm = np.r_[0 : model.d_rope : 2, 1 : model.d_rope : 2] if interleave else slice(None)
        np.testing.assert_allclose(tr.q[..., :nope], q[0, ..., :nope].numpy(), atol=TOL)
        np.testing.assert_allclose(tr.q[..., nope:][..., perm], q_rot[0].numpy(), atol=TOL)
        np.testing.assert_allclose(tr.k[..., :nope], kv_up[0, ..., :nope].numpy(), atol=TOL)
        for head in range(h):  # one rotary key shared by every head
            np.testing.assert_allclose(tr.k[head, :, nope:][..., perm], k_rot[0, 0], atol=TOL)
        np.testing.assert_allclose(tr.v, kv_up[0, ..., nope:].numpy(), atol=TOL)
        # the scale, with YaRN's mscale^2 where configured, and the scores it gives
        assert model.scale == pytest.approx(attn.scaling, rel=1e-12)
        np.testing.assert_allclose(
            tr.scores, tr.q @ tr.k.transpose(0, 2, 1) * attn.scaling, atol=TOL
        )
        # the output projection of the attention's own head outputs
        np.testing.assert_allclose(
            tr.output, attn.o_proj(torch.from_numpy(tr.concat)).numpy(), atol=TOL
        )
        assert tr.v.shape == (h, n, model.d_v) and tr.concat.shape == (n, h * model.d_v)


# --------------------------------------------------------------------------------------------
# the parts: RoPE and YaRN, routing, selection
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["v3", "v3_no_q_lora_yarn", "v3_wide_yarn", "v32_yarn"])
def test_rope_and_scale_match_transformers(tiny, name):
    """RoPE's speeds, YaRN's factor on cos and sin, and the score scale with mscale^2."""
    model = load_pretrained(tiny[name])
    ref = _hf(tiny[name]).model
    np.testing.assert_allclose(model.inv_freq, ref.rotary_emb.inv_freq.numpy(), rtol=1e-6)
    assert model.rope_factor == pytest.approx(ref.rotary_emb.attention_scaling, rel=1e-12)
    assert model.scale == pytest.approx(ref.layers[0].self_attn.scaling, rel=1e-12)
    rope = _config(name).get("rope_parameters", {})
    if rope.get("mscale_all_dim"):
        m = blocks.yarn_mscale(rope["factor"], rope["mscale_all_dim"])
        assert model.scale == pytest.approx(m * m / math.sqrt(model.d_head), rel=1e-12)
        assert model.scale > 1.1 / math.sqrt(model.d_head)
    if rope.get("mscale", 1.0) != rope.get("mscale_all_dim", 1.0):
        assert abs(model.rope_factor - 1.0) > 0.01  # the rotated part is scaled too


@pytest.mark.parametrize("seq", [1, 7])
def test_interleaved_rope_matches_transformers(seq):
    """Pairs of neighbouring dimensions turn: transformers' result, evens listed before odds."""
    rng = np.random.default_rng(seq)
    x = rng.standard_normal((3, seq, 8)).astype(np.float32)
    positions = np.arange(5, 5 + seq)
    cos, sin = blocks.rope_angles(positions, blocks.rope_inverse_frequencies(8, 500.0))
    ours = blocks.apply_rope_interleaved(x, cos, sin)
    ref, _ = hf_v3.apply_rotary_pos_emb_interleave(
        torch.from_numpy(x[None]), torch.from_numpy(x[None]),
        torch.from_numpy(cos[None]), torch.from_numpy(sin[None]),
    )  # fmt: skip
    np.testing.assert_allclose(ours[..., np.r_[0:8:2, 1:8:2]], ref[0].numpy(), atol=1e-6)
    # a rotation: lengths kept, and dot products depend only on the distance
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), np.linalg.norm(x, axis=-1), 1e-5)
    c2, s2 = blocks.rope_angles(positions + 11, blocks.rope_inverse_frequencies(8, 500.0))
    shifted = blocks.apply_rope_interleaved(x, c2, s2)
    np.testing.assert_allclose(
        ours @ ours.transpose(0, 2, 1), shifted @ shifted.transpose(0, 2, 1), atol=1e-4
    )


@pytest.mark.parametrize(
    ("n_experts", "n_group", "topk_group", "top_k", "norm"),
    [(16, 4, 2, 4, True), (16, 1, 1, 3, False), (12, 6, 3, 5, True)],
)
def test_routing_matches_transformers(tiny, n_experts, n_group, topk_group, top_k, norm):
    """Grouped top-k routing on 300 tokens against transformers' DeepseekV3TopkRouter."""
    cfg = transformers.DeepseekV3Config(
        **{**SMALL, "n_routed_experts": n_experts}, n_group=n_group, topk_group=topk_group,
        num_experts_per_tok=top_k, norm_topk_prob=norm, routed_scaling_factor=2.5,
    )  # fmt: skip
    torch.manual_seed(n_experts + top_k)
    router = hf_v3.DeepseekV3TopkRouter(cfg)
    router.weight.normal_(0.0, 0.3)
    router.e_score_correction_bias.normal_(0.0, 0.2)
    x = torch.randn(300, 32)
    _, weights_ref, experts_ref = router(x)
    model = load_pretrained(tiny["v3"])
    model.n_experts, model.n_group, model.topk_group = n_experts, n_group, topk_group
    model.top_k, model.norm_topk, model.routed_scaling = top_k, norm, 2.5
    w = {"router": router.weight.numpy(), "router_bias": router.e_score_correction_bias.numpy()}
    experts, weights = model.route(w, x.numpy())
    order, order_ref = np.argsort(experts, 1), np.argsort(experts_ref.numpy(), 1)
    np.testing.assert_array_equal(
        np.take_along_axis(experts, order, 1), np.take_along_axis(experts_ref.numpy(), order_ref, 1)
    )
    np.testing.assert_allclose(
        np.take_along_axis(weights, order, 1),
        np.take_along_axis(weights_ref.numpy(), order_ref, 1),
        atol=1e-6,
    )
    # the chosen experts lie in at most topk_group groups
    groups = experts // (n_experts // n_group)
    assert max(len(set(row)) for row in groups) <= topk_group


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 12),
    k=st.integers(1, 14),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
)
def test_top_k_kept_property(n, k, seed, ties):
    """Each query keeps min(k, allowed) keys, all allowed, none worse than a dropped one;
    ties go to the earlier key."""
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((n, n)).astype(np.float32)
    if ties:
        scores = np.round(scores)
    allowed = rng.random((n, n)) < 0.7
    kept = blocks.top_k_kept(scores, allowed, k)
    assert not (kept & ~allowed).any()
    assert (kept.sum(1) == np.minimum(allowed.sum(1), k)).all()
    for i in range(n):
        dropped = allowed[i] & ~kept[i]
        if kept[i].any() and dropped.any():
            assert scores[i, kept[i]].min() >= scores[i, dropped].max()
            worst = scores[i, kept[i]].min()
            # among equal scores at the boundary, the kept ones come first
            tied = np.nonzero(allowed[i] & (scores[i] == worst))[0]
            assert kept[i, tied].tolist() == sorted(kept[i, tied].tolist(), reverse=True)


# --------------------------------------------------------------------------------------------
# what the widget shows
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["v3", "v3_wide_yarn", "v32_yarn"])
def test_cache_width_matches_transformers_cache(tiny, name):
    """The numbers cached per token and layer are what transformers' cache really holds."""
    model = load_pretrained(tiny[name])
    ids = model.encode(TEXT).ids
    out = _hf(tiny[name])(torch.from_numpy(ids[None].copy()), use_cache=True)
    fields = _config(name)
    expected = fields["kv_lora_rank"] + fields["qk_rope_head_dim"]
    if model.model_type == "deepseek_v32":
        expected += fields["index_head_dim"]
    for layer, cached in enumerate(out.past_key_values.layers):
        tensors = [t for t in vars(cached).values() if isinstance(t, torch.Tensor) and t.ndim > 1]
        per_token = sum(t[0].numel() // ids.size for t in tensors)
        assert per_token == model.cache_width(layer) == expected, (layer, tensors)
    assert model.cache_width(0) < model.n_heads * (model.d_head + model.d_v)  # every head's k, v
    assert sum(model.cache_parts(0).values()) == expected


def test_widget_facing_facts(tiny):
    v3, v32 = load_pretrained(tiny["v3"]), load_pretrained(tiny["v32_yarn"])
    assert [v3.layer_kind(i) for i in range(3)] == ["latent, dense", "latent, MoE", "latent, MoE"]
    assert v32.layer_kind(0) == "latent sparse, top 11, MoE"
    assert v3.key_labels(TEXT, 2) == v3.tokenize(TEXT)
    assert "DeepSeek-V3 decoder" in v3.describe() and "kv_lora_rank 16" in v3.describe()
    assert "DeepSeek-V3.2 decoder" in v32.describe()
    assert v3.cache_parts(0) == {"latent c_kv": 16, "rotary key": 8}
    assert v32.cache_parts(2) == {"latent c_kv": 16, "rotary key": 8, "indexer key": 12}
    tr = v3.trace(TEXT, 0)
    assert tr.kept is None and tr.latent.shape == (30, 16)
    assert (tr.n_heads, tr.n_kv_heads, tr.d_head) == (4, 4, 20)
    with pytest.raises(ValueError, match=r"layer must be in 0\.\.2"):
        v3.layer_kind(3)


# --------------------------------------------------------------------------------------------
# generation with a key/value cache
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["v3_no_q_lora_yarn", "v32", "v32_yarn"])
def test_generation_matches_transformers(tiny, name):
    """Greedy tokens and every step's attention row as transformers' generate; the indexer
    chooses among all the cached keys."""
    model = load_pretrained(tiny[name])
    out = model.generate(TEXT, 8)
    t = torch.from_numpy(out.prompt_ids[None].copy())
    ref = _hf(tiny[name]).generate(
        t, attention_mask=torch.ones_like(t), do_sample=False, max_new_tokens=8, pad_token_id=0,
        return_dict_in_generate=True, output_attentions=True,
    )  # fmt: skip
    np.testing.assert_array_equal(out.all_ids, ref.sequences[0].numpy())
    for step, layers in zip(out.steps[1:], ref.attentions[1:], strict=True):
        for ours, theirs in zip(step.attentions, layers, strict=True):
            np.testing.assert_allclose(ours, theirs[0].numpy(), atol=TOL)
            if model.model_type == "deepseek_v32":  # dropped keys: exactly 0 on both sides
                assert (ours > 0).sum(-1).max() == model.index_topk
                assert ((theirs[0].numpy() > 0) == (ours > 0)).all()
    assert out.cache_width == (model.cache_width(0),) * model.n_layers


@pytest.mark.parametrize("name", ["v3", "v32_yarn"])
def test_cached_rows_equal_the_full_recomputation(tiny, name):
    model = load_pretrained(tiny[name])
    out = model.generate(TEXT, 6)
    n_prompt = out.prompt_ids.size
    for step in out.steps:
        _, full = model.forward_ids(out.all_ids[: n_prompt + step.index])
        for row, att in zip(step.attentions, full, strict=True):
            np.testing.assert_allclose(row, att[:, -1:], atol=1e-5)


# --------------------------------------------------------------------------------------------
# configs outside what is supported
# --------------------------------------------------------------------------------------------
def _edited(tiny, tmp_path, name: str, **changes):
    folder = _copy(tiny[name], tmp_path / "edited")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        ("v3", {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}},
         r"config\.json: rope_parameters: rope type 'dynamic' is not supported"),
        ("v3", {"num_key_value_heads": 2}, "num_key_value_heads=2 must equal"),
        ("v3", {"quantization_config": {"quant_method": "fp8"}}, "quantization_config is set"),
        ("v3", {"scoring_func": "softmax"}, "scoring_func='softmax' is not supported"),
        ("v3", {"n_group": 3}, "n_routed_experts=8 must split into n_group=3"),
        ("v3", {"topk_group": 3}, "num_experts_per_tok=2 experts cannot be chosen"),
        ("v3", {"qk_rope_head_dim": 7}, "qk_rope_head_dim must be even"),
        ("v3", {"rope_parameters": {**YARN, "factor": None, "mscale_all_dim": 1.0}},
         "mscale_all_dim needs a number 'factor'"),
        ("v3", {"first_k_dense_replace": -1}, "first_k_dense_replace must be an integer >= 0"),
        ("v32", {"q_lora_rank": None}, "q_lora_rank must be set for deepseek_v32"),
        ("v32", {"rope_interleave": False}, "rope_interleave must be true for deepseek_v32"),
        ("v32", {"mlp_layer_types": ["dense", "sparse"]}, "mlp_layer_types must list 3 layers"),
        ("v32", {"mlp_layer_types": ["dense", "moe", "moe"]}, "must hold 'dense' or 'sparse'"),
        ("v32", {"index_head_dim": 4}, "index_head_dim=4 must be at least qk_rope_head_dim=8"),
        ("v32", {"kv_lora_rank": 8}, "kv_a_proj_with_mqa.weight"),
    ],
)  # fmt: skip
def test_unsupported_configs(tiny, tmp_path, name, changes, message):
    with pytest.raises(ValueError, match=message):
        load_pretrained(_edited(tiny, tmp_path, name, **changes))


def test_v32_mlp_layer_types_choose_the_feed_forward(tiny, tmp_path):
    """mlp_layer_types, where given, says which layers have experts (not first_k_dense_replace)."""
    folder = _edited(tiny, tmp_path, "v32", first_k_dense_replace=0)
    model = load_pretrained(folder)
    assert model.moe_layers == [False, True, True]  # from the saved mlp_layer_types
    assert math.isclose(model.scale, 1 / math.sqrt(20))

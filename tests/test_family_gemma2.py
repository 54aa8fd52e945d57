"""Gemma 2 in NumPy against transformers' Gemma2ForCausalLM (eager attention).

Tiny random checkpoints saved by ``save_pretrained`` in the test: grouped-query, multi-query
and plain heads, sliding layers whose window is shorter than the text, soft-caps that bite
(and none), ``query_pre_attn_scalar`` unlike ``head_dim``, float32, bfloat16 and sharded.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch
import transformers
from support import tiny
from test_pretrained import TOL, _attend_spy, _hf, _max_diff, _word_tokenizer

from attention_widget.pretrained import blocks, load_pretrained
from attention_widget.pretrained.gemma2 import Gemma2

# 19 tokens with BOS: longer than every sliding window below
TEXT = "the cat sat on the mat and the dog ran after the cat and the cat ran away"

CONFIGS = {
    # grouped-query heads wider than d_model / n_heads; caps low enough to change the scores
    "gqa": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                num_hidden_layers=3, intermediate_size=48, sliding_window=4,
                query_pre_attn_scalar=24, attn_logit_softcapping=4.0,
                final_logit_softcapping=3.0, max_position_embeddings=64),
    # multi-query, no soft-caps, global before sliding, linear RoPE scaling
    "mqa": dict(hidden_size=16, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                num_hidden_layers=2, intermediate_size=24, sliding_window=3,
                query_pre_attn_scalar=8, attn_logit_softcapping=None,
                final_logit_softcapping=None,
                layer_types=["full_attention", "sliding_attention"],
                rope_parameters={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0}),
    # plain heads, four layers, transformers' default caps (50 and 30)
    "mha": dict(hidden_size=24, num_attention_heads=3, num_key_value_heads=3, head_dim=8,
                num_hidden_layers=4, intermediate_size=32, sliding_window=5,
                query_pre_attn_scalar=16),
}  # fmt: skip


checkpoints = tiny.fixture(
    tiny.maker(transformers.Gemma2Config, transformers.Gemma2ForCausalLM, CONFIGS,
               lambda: _word_tokenizer(bos=True), seed=31),
    CONFIGS, bf16="gqa", sharded="gqa", shard="30KB",
)  # fmt: skip


@pytest.mark.parametrize("kind", ["gqa", "mqa", "mha", "bf16", "sharded"])
def test_gemma2_matches_transformers(checkpoints, kind):
    model, seen = tiny.assert_decoder_matches(checkpoints[kind], TEXT, TOL)
    assert isinstance(model, Gemma2)
    for a in seen["attentions"]:
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
    logits = model.logits(seen["hidden"][-1])  # soft-capped by final_logit_softcapping
    assert _max_diff([logits], [seen["logits"]]) < TOL
    if model.final_softcap is not None:
        assert np.abs(logits).max() <= model.final_softcap


def test_softcap_scale_and_layer_kinds(checkpoints):
    """The trace's scores are capped scale * q k^T, with Gemma 2's own scale."""
    model = load_pretrained(checkpoints["gqa"])
    assert [model.layer_kind(i) for i in range(3)] == [
        "sliding, window 4",
        "full",
        "sliding, window 4",
    ]
    assert model.scale == pytest.approx(24**-0.5) and model.softcap == 4.0
    tr = model.trace(TEXT, 1)
    raw = tr.q @ np.repeat(tr.k, 2, axis=0).transpose(0, 2, 1) * 24**-0.5
    np.testing.assert_allclose(tr.scores, 4.0 * np.tanh(raw / 4.0), atol=1e-5)
    assert np.abs(raw).max() > 8.0  # the cap changes these scores
    assert np.abs(tr.scores).max() <= 4.0 and tr.softcap == 4.0
    # at another temperature the capped scores are divided by T before the softmax
    hot = model.trace(TEXT, 1, temperature=2.0)
    z = np.where(hot.mask, hot.scores.astype(np.float64) / 2.0, -np.inf)
    e = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(hot.weights, e / e.sum(-1, keepdims=True), atol=1e-6)
    assert load_pretrained(checkpoints["mqa"]).layer_kind(0) == "full"


def test_norms_embedding_and_mlp_against_transformers(checkpoints):
    model = load_pretrained(checkpoints["gqa"])
    ref = _hf(checkpoints["gqa"]).model
    x = np.random.default_rng(2).standard_normal((5, model.d_model)).astype(np.float32)
    tx = torch.from_numpy(x)
    layer = ref.layers[0]
    w = model.layer_weights(0)
    for key, norm in (
        ("ln1", layer.input_layernorm),
        ("ln_pre_ff", layer.pre_feedforward_layernorm),
    ):
        np.testing.assert_allclose(
            blocks.rms_norm(x, w[key], model.eps), norm(tx).numpy(), atol=1e-5
        )
    np.testing.assert_allclose(model.final_norm(x), ref.norm(tx).numpy(), atol=1e-5)
    ids = model.encode(TEXT).ids
    embedded = ref.embed_tokens(torch.from_numpy(ids.copy())).numpy()
    np.testing.assert_allclose(model.embed(ids, np.arange(ids.size)), embedded, rtol=1e-6)
    # the whole second half of the block on x
    a = layer.post_attention_layernorm(tx) + tx
    half = layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(a))) + a
    np.testing.assert_allclose(model.finish_block(0, x, x.copy()), half.numpy(), atol=1e-4)


def test_every_attention_is_the_engines_attend_with_softcap(checkpoints, monkeypatch):
    for kind, cap in (("gqa", 4.0), ("mqa", None)):
        model = load_pretrained(checkpoints[kind])
        calls = _attend_spy(monkeypatch)
        _, at = model.forward_ids(model.encode(TEXT).ids)
        assert len(calls) == model.n_layers
        for a, (_q, _k, _v, kwargs, out) in zip(at, calls, strict=True):
            assert a is out.weights and kwargs.get("softcap") == cap
            assert kwargs["scale"] == pytest.approx(model.scale)


def test_unsupported_configs_are_named(checkpoints, tmp_path):
    folder = checkpoints["gqa"]
    cases = [
        (dict(use_bidirectional_attention=True), r"use_bidirectional_attention=true"),
        (dict(attn_logit_softcapping=-1), r"attn_logit_softcapping must be a number > 0"),
        (dict(rope_parameters={"rope_type": "yarn", "factor": 2.0}), r"rope type 'yarn'"),
        (dict(layer_types=["sliding_attention"] * 2), r"layer_types must list .* 3 layers"),
    ]
    for n, (changes, pattern) in enumerate(cases):
        out = tmp_path / str(n)
        out.mkdir()
        for name in ("model.safetensors", "tokenizer.json"):
            (out / name).symlink_to(folder / name)
        cfg = json.loads((folder / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**cfg, **changes}))
        with pytest.raises(ValueError, match=r"config\.json: " + pattern):
            load_pretrained(out)
    assert "Gemma 2 decoder" in load_pretrained(folder).describe()
    assert "causal, sliding window 4 in 2 of 3 layers" in load_pretrained(folder).describe()

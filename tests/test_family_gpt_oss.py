"""gpt-oss in NumPy against transformers' GptOssForCausalLM (eager attention).

Tiny random checkpoints saved by ``save_pretrained`` in the test: grouped-query and plain
heads, sliding layers whose window is shorter than the text, YaRN and plain RoPE, a mixture of
experts with clamped SwiGLU experts, float32, bfloat16 and sharded files.
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
from support import tiny
from test_pretrained import TOL, _attend_spy, _hf, _word_tokenizer

from attention_widget.pretrained import blocks, load_pretrained
from attention_widget.pretrained.gpt_oss import GptOss, clamped_swiglu

# 19 tokens with BOS: longer than every sliding window below
TEXT = "the cat sat on the mat and the dog ran after the cat and the cat ran away"

YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0, "beta_fast": 32.0,
        "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 1024}  # fmt: skip

CONFIGS = {
    # grouped-query heads wider than d_model / n_heads, YaRN with a ramp inside the head,
    # sliding / full / sliding, a tight clamp of the experts' SwiGLU
    "gqa": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                num_hidden_layers=3, intermediate_size=24, num_local_experts=4,
                num_experts_per_tok=2, sliding_window=4, swiglu_limit=1.5,
                max_position_embeddings=8192, rope_parameters=YARN),
    # multi-query, transformers' own default RoPE for gpt-oss (YaRN, factor 32, truncated)
    "mqa": dict(hidden_size=24, num_attention_heads=3, num_key_value_heads=1, head_dim=8,
                num_hidden_layers=2, intermediate_size=16, num_local_experts=3,
                num_experts_per_tok=1, sliding_window=3, max_position_embeddings=4096),
    # plain heads, no attention biases, plain RoPE, full before sliding
    "plain": dict(hidden_size=16, num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                  num_hidden_layers=2, intermediate_size=12, num_local_experts=3,
                  num_experts_per_tok=3, sliding_window=5, attention_bias=False,
                  layer_types=["full_attention", "sliding_attention"],
                  max_position_embeddings=64,
                  rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
}  # fmt: skip


checkpoints = tiny.fixture(
    tiny.maker(transformers.GptOssConfig, transformers.GptOssForCausalLM, CONFIGS,
               lambda: _word_tokenizer(bos=True), seed=21, stds={"sinks": 1.5}),  # big sinks
    CONFIGS, bf16="gqa", sharded="gqa", shard="40KB",
)  # fmt: skip


@pytest.mark.parametrize("kind", ["gqa", "mqa", "plain", "bf16", "sharded"])
def test_gpt_oss_matches_transformers(checkpoints, kind):
    model, seen = tiny.assert_decoder_matches(checkpoints[kind], TEXT, TOL)
    assert isinstance(model, GptOss)
    for a in seen["attentions"]:
        assert (a.sum(axis=-1) < 1 - 1e-3).any()  # the sinks take a share of the rows
    assert model.stored_dtype == ("BF16" if kind == "bf16" else "F32")


def test_sink_share_and_layer_kinds(checkpoints):
    """What each query gives its head's sink is 1 - the row's sum: exp(sink) over the row's
    exp(scores) and exp(sink), computed here from the trace's scores."""
    model = load_pretrained(checkpoints["gqa"])
    assert [model.layer_kind(i) for i in range(3)] == [
        "sliding, window 4",
        "full",
        "sliding, window 4",
    ]
    sinks = model.layer_weights(1)["sinks"].astype(np.float64)
    for layer in (0, 1):
        tr = model.trace(TEXT, layer)
        z = np.where(tr.mask, tr.scores.astype(np.float64), -np.inf)
        top = np.maximum(
            z.max(-1, keepdims=True), model.layer_weights(layer)["sinks"][:, None, None]
        )
        e = np.exp(z - top).sum(-1)
        s = np.exp(model.layer_weights(layer)["sinks"][:, None] - top[..., 0])
        np.testing.assert_allclose(1 - tr.weights.sum(-1), s / (e + s), atol=1e-5)
        np.testing.assert_allclose(tr.head_outputs, tr.weights @ np.repeat(tr.v, 2, 0), atol=1e-5)
        np.testing.assert_allclose(tr.sink_weights, s / (e + s), atol=1e-5)
        np.testing.assert_array_equal(tr.sinks, model.layer_weights(layer)["sinks"])
    assert sinks.shape == (4,)
    hot = model.trace(TEXT, 1, temperature=3.0)
    assert (hot.weights.sum(-1) < 1).all()


def test_router_and_experts_match_transformers(checkpoints):
    """Each layer's routing (experts and weights) and its mixture of experts, on the same input."""
    model = load_pretrained(checkpoints["gqa"])
    ref = _hf(checkpoints["gqa"])
    x = np.random.default_rng(0).standard_normal((7, model.d_model)).astype(np.float32)
    for i, layer in enumerate(ref.model.layers):
        _, scores, indices = layer.mlp.router(torch.from_numpy(x))
        experts, weights = model.route(i, x)
        np.testing.assert_array_equal(experts, indices.numpy())
        np.testing.assert_allclose(weights, scores.numpy(), atol=1e-6)
        assert len(np.unique(experts)) > 1  # tokens go to different experts
        # the block's feed-forward half on x: finish_block(h = x - 0, attention output 0)
        zero = np.zeros_like(x)
        mine = model.finish_block(i, x, zero) - x  # minus the residual
        normed = layer.post_attention_layernorm(torch.from_numpy(x))
        np.testing.assert_allclose(mine, layer.mlp(normed[None])[0][0].numpy(), atol=1e-4)
    # the clamp matters here: some gate or up values pass the limit of 1.5
    w = model.layer_weights(0)
    assert np.abs(x @ w["gate_up"][0] + w["gate_up_b"][0]).max() > model.limit


def test_clamped_swiglu_against_transformers():
    cfg = transformers.GptOssConfig(hidden_size=8, intermediate_size=6, num_local_experts=2,
                                    swiglu_limit=2.0, swiglu_alpha=1.3)  # fmt: skip
    experts = transformers.models.gpt_oss.modeling_gpt_oss.GptOssExperts(cfg)
    gate_up = np.random.default_rng(1).normal(0, 3, (5, 12)).astype(np.float32)
    ref = experts._apply_gate(torch.from_numpy(gate_up)).numpy()
    np.testing.assert_allclose(clamped_swiglu(gate_up, 1.3, 2.0), ref, atol=1e-6)


@pytest.mark.parametrize(
    "params",
    [
        YARN,
        {**YARN, "truncate": True},
        {"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
         "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 4096},
        {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "mscale": 1.0,
         "mscale_all_dim": 0.707, "original_max_position_embeddings": 64},
        {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0, "attention_factor": 1.3,
         "original_max_position_embeddings": 32},
    ],
)  # fmt: skip
def test_yarn_against_transformers(params):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = transformers.LlamaConfig(
        hidden_size=64,
        num_attention_heads=2,
        head_dim=32,
        max_position_embeddings=256,
        rope_parameters=dict(params),
    )
    inv_ref, factor_ref = ROPE_INIT_FUNCTIONS["yarn"](cfg)
    inv, factor = blocks.yarn_rope(32, params["rope_theta"], params, 256)
    np.testing.assert_allclose(inv, inv_ref.numpy(), rtol=2e-6)
    assert factor == pytest.approx(factor_ref, rel=1e-12)
    assert inv.dtype == np.float32


def test_every_attention_is_the_engines_attend_with_sinks(checkpoints, monkeypatch):
    model = load_pretrained(checkpoints["gqa"])
    calls = _attend_spy(monkeypatch)
    _, at = model.forward_ids(model.encode(TEXT).ids)
    assert len(calls) == model.n_layers
    for i, (a, (_q, _k, _v, kwargs, out)) in enumerate(zip(at, calls, strict=True)):
        assert a is out.weights
        np.testing.assert_array_equal(kwargs["sinks"], model.layer_weights(i)["sinks"])
        assert kwargs["scale"] == pytest.approx(16**-0.5)


def _with_config(folder: Path, tmp_path: Path, **changes) -> Path:
    out = tmp_path / "changed"
    out.mkdir(exist_ok=True)
    for name in ("model.safetensors", "tokenizer.json"):
        if not (out / name).exists():
            (out / name).symlink_to(folder / name)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def test_unsupported_configs_are_named(checkpoints, tmp_path):
    folder = checkpoints["gqa"]
    cases = [
        (dict(quantization_config={"quant_method": "mxfp4"}), r"quantization_config .*mxfp4"),
        (dict(rope_parameters={**YARN, "rope_type": "longrope"}),
         r"rope_parameters: rope type 'longrope' is not supported \(only 'yarn'"),
        (dict(layer_types=["sliding_attention", "chunked_attention", "full_attention"]),
         r"layer_types \['chunked_attention'\] not supported"),
        (dict(layer_types=["full_attention"]), r"layer_types must list the kind of each of 3"),
        (dict(num_experts_per_tok=9), r"num_experts_per_tok=9 is more than"),
        (dict(sliding_window=None), r"missing 'sliding_window'"),
    ]  # fmt: skip
    for changes, pattern in cases:
        with pytest.raises(ValueError, match=r"config\.json: " + pattern):
            load_pretrained(_with_config(folder, tmp_path, **changes))
    assert "gpt-oss decoder" in load_pretrained(folder).describe()

"""BLOOM in NumPy against transformers' BloomForCausalLM (eager attention).

Tiny random checkpoints saved by ``save_pretrained`` in the test: head counts that are powers
of two and not (ALiBi's slopes differ there), residuals from the normed states, float32,
bfloat16 and sharded files.
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
from support import tiny
from test_pretrained import TOL, _attend_spy, _hf, _word_tokenizer
from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

from attention_widget.pretrained import load_pretrained
from attention_widget.pretrained.bloom import Bloom
from attention_widget.variants import alibi_bias

TEXT = "the cat sat on the mat and the dog ran after the cat and the cat ran away"

CONFIGS = {
    "four_heads": dict(hidden_size=32, n_head=4, n_layer=3),
    # 6 heads: the slopes of 4 heads, then every other slope of 8
    "six_heads": dict(hidden_size=30, n_head=6, n_layer=2,
                      apply_residual_connection_post_layernorm=True),
    # 12 heads: the slopes of 8, then 4 of 16
    "twelve_heads": dict(hidden_size=48, n_head=12, n_layer=2),
}  # fmt: skip


checkpoints = tiny.fixture(
    tiny.maker(transformers.BloomConfig, transformers.BloomForCausalLM, CONFIGS,
               lambda: _word_tokenizer(bos=True), seed=41),
    CONFIGS, bf16="six_heads", sharded="four_heads", shard="20KB",
)  # fmt: skip


@pytest.mark.parametrize("kind", ["four_heads", "six_heads", "twelve_heads", "bf16", "sharded"])
def test_bloom_matches_transformers(checkpoints, kind):
    model, _ = tiny.assert_decoder_matches(checkpoints[kind], TEXT, TOL)
    assert isinstance(model, Bloom) and model.layer_kind(0) == "causal"
    assert model.stored_dtype == ("BF16" if kind == "bf16" else "F32")


@pytest.mark.parametrize("kind", ["four_heads", "six_heads", "twelve_heads"])
def test_alibi_bias_and_fused_layout(checkpoints, kind):
    """Scores are scale * q k^T - m_h (i - j) with BLOOM's slopes (transformers' own function);
    q, k and v are the per-head thirds of the fused projection, as transformers splits it."""
    model = load_pretrained(checkpoints[kind])
    ref = _hf(checkpoints[kind])
    ids = model.encode(TEXT).ids
    n = ids.size
    slopes = _get_alibi_slopes(model.n_heads, torch.device("cpu")).numpy().astype(np.float64)
    distance = np.arange(n)[:, None] - np.arange(n)[None, :]  # i - j
    for layer in range(model.n_layers):
        tr = model.trace(TEXT, layer)
        plain = tr.q.astype(np.float64) @ tr.k.transpose(0, 2, 1) / math.sqrt(model.d_head)
        bias = tr.scores - plain  # (heads, n, n)
        causal = np.tri(n, dtype=bool)
        np.testing.assert_allclose(
            np.where(causal, bias, 0), np.where(causal, -slopes[:, None, None] * distance, 0),
            atol=1e-4,
        )  # fmt: skip
        attention = ref.transformer.h[layer].self_attention
        fused = attention.query_key_value(torch.from_numpy(tr.x.copy()[None]))
        q_ref, k_ref, v_ref = (t[0].numpy() for t in attention._reshape(fused))
        np.testing.assert_allclose(tr.q, q_ref, atol=1e-5)
        np.testing.assert_allclose(tr.k, k_ref, atol=1e-5)
        np.testing.assert_allclose(tr.v, v_ref, atol=1e-5)
        out_ref = attention.dense(torch.from_numpy(tr.concat.copy())).numpy()
        np.testing.assert_allclose(tr.output, out_ref, atol=1e-5)
    # slopes of a power of two, and the interleaved extra slopes otherwise
    expected = {4: [2**-2, 2**-4, 2**-6, 2**-8],
                6: [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]}  # fmt: skip
    if model.n_heads in expected:
        np.testing.assert_allclose(slopes, expected[model.n_heads])


def test_every_attention_is_the_engines_attend_with_alibi(checkpoints, monkeypatch):
    model = load_pretrained(checkpoints["six_heads"])
    calls = _attend_spy(monkeypatch)
    _, at = model.forward_ids(model.encode(TEXT).ids)
    assert len(calls) == model.n_layers
    for a, (_q, _k, _v, kwargs, out) in zip(at, calls, strict=True):
        assert a is out.weights
        np.testing.assert_allclose(kwargs["bias"], alibi_bias(6, np.arange(a.shape[1])))
    assert model.trace(TEXT, 1).alibi is True


def test_description_and_config_errors(checkpoints, tmp_path):
    model = load_pretrained(checkpoints["six_heads"])
    assert "BLOOM decoder" in model.describe() and model.residual_from_norm
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (folder / name).symlink_to(checkpoints["six_heads"] / name)
    cfg = json.loads((checkpoints["six_heads"] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "n_head": 4}))
    with pytest.raises(
        ValueError, match=r"config\.json: hidden_size=30 is not divisible by n_head=4"
    ):
        load_pretrained(folder)


def test_generation_with_a_cache_keeps_alibi_over_the_cached_keys(checkpoints):
    """Each generated token's attention rows, with the key/value cache (ALiBi's bias built
    from the cached keys' positions), equal the last rows of a forward over the whole text."""
    model = load_pretrained(checkpoints["six_heads"])
    out = model.generate("the cat sat on the mat", 6)
    n_prompt = out.prompt_ids.size
    for step in out.steps:
        _, full = model.forward_ids(out.all_ids[: n_prompt + step.index])
        for row, att in zip(step.attentions, full, strict=True):
            np.testing.assert_allclose(row, att[:, -1:], atol=1e-5)

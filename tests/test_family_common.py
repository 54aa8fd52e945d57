"""What every causal family shares: layers read on demand, the widget and its model view.

References: each family's ``PretrainedModel.attentions`` (matched to transformers' eager
``output_attentions`` in the test_family_*.py files and test_pretrained.py) and attention
rollout written out here from its definition.  Sinks (gpt-oss, DeepSeek V4) leave rows that sum
to less than 1; DeepSeek V4's rows have more keys than tokens (the compressed entries).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import re

import numpy as np
import pytest
from test_generate import CONFIGS, PROMPTS, _hf, _hf_generate, _save
from test_modelview import rollout_by_hand
from test_pretrained import _count_reads

from attention_widget import AttentionWidget
from attention_widget.pretrained import load_pretrained

#: one tiny checkpoint of each causal family (written by transformers in test_generate)
FAMILY_CONFIGS = {kind: name for name, (kind, _, _) in reversed(CONFIGS.items())}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("family_widget")
    return {kind: _save(name, root / name) for kind, name in FAMILY_CONFIGS.items()}


@pytest.mark.parametrize("kind", sorted(FAMILY_CONFIGS))
def test_every_family_opens_with_its_weights_and_model_view(folders, kind):
    model = load_pretrained(folders[kind])
    text = PROMPTS[kind] + " and the cat sat on the mat"
    layers = model.attentions(text)
    last = model.n_layers - 1
    w = AttentionWidget.from_pretrained(model, text, layer=last, show_special=True,
                                        progress=False)  # fmt: skip
    assert w.error == ""
    n = len(w.tokens)
    assert n == model.encode(text).ids.size
    np.testing.assert_array_equal(w.trace.weights, layers[last])  # every key column
    # the model view: every layer's weights over the token keys, and their rollout
    shown = w.model_view.displayed()
    tokens_only = [a[..., :n].astype(np.float64) for a in layers]
    np.testing.assert_allclose(shown["heads"], np.stack(tokens_only), rtol=0, atol=1e-7)
    np.testing.assert_allclose(shown["rollout"], rollout_by_hand(tokens_only), atol=1e-6)
    extra_keys = any(a.shape[-1] > n for a in layers)
    assert extra_keys == (kind == "deepseek_v4")
    assert ("compressed entries" in w.model_view.legend.value) == extra_keys
    for layer in range(model.n_layers):  # every kind of layer draws, in the layer control
        w.layer = layer
        assert w.error == "", (layer, w.error)
        np.testing.assert_array_equal(w.trace.weights, layers[layer])
    if kind in ("gpt_oss", "deepseek_v4"):  # sinks take a share of the rows
        assert min(float(a[..., :n].sum(-1).min()) for a in layers) < 0.99


@pytest.mark.parametrize("kind", sorted(FAMILY_CONFIGS))
def test_a_layer_reads_only_the_tensors_it_needs(folders, kind, monkeypatch):
    """Layer 0 reads layer 0's tensors and no later layer's; a new temperature reads nothing."""
    model = load_pretrained(folders[kind])
    reads = _count_reads(model, monkeypatch)
    model.trace(PROMPTS[kind], 0)
    layers = {int(m.group(1)) for r in reads if (m := re.search(r"\.(?:layers|h)\.(\d+)\.", r))}
    assert layers == {0}, sorted(reads)
    reads.clear()
    model.trace(PROMPTS[kind], 0, temperature=2.0)
    assert reads == []
    model.trace(PROMPTS[kind], 1)
    assert any(".1." in r for r in reads) and not any(re.search(r"\.(?:layers|h)\.0\.", r)
                                                        for r in reads)  # fmt: skip


#: families whose layers run block by block above LONG_THRESHOLD, and those that refuse
#: (DeepSeek V4's compressed entries are keys that are not one per token)
BLOCKWISE = ("bloom", "deepseek_v3", "deepseek_v32", "gemma2", "gpt2", "gpt_oss", "llama",
             "qwen3")
LONG_WORDS = "the cat sat on the mat and the dog ran after a".split()
LONG_REFUSALS = {"deepseek_v4": "its own mask"}


@pytest.fixture(scope="module")
def long_folders(tmp_path_factory):
    """Each family's tiny checkpoint again, with positions for 600 tokens."""
    root = tmp_path_factory.mktemp("family_long")
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        for kind, name in FAMILY_CONFIGS.items():
            model_type, cls, fields = CONFIGS[name]
            key = "n_positions" if kind == "gpt2" else "max_position_embeddings"
            patch.setitem(CONFIGS, name, (model_type, cls, {**fields, key: 1024}))
            out[kind] = _save(name, root / name)
    return out


@pytest.mark.parametrize("kind", sorted(FAMILY_CONFIGS))
def test_texts_longer_than_the_threshold(long_folders, kind):
    """Above LONG_THRESHOLD every layer runs block by block and equals transformers' eager
    attention (sliding and full layers, sinks, soft-capped scores, ALiBi); families whose
    attention has no block-wise form refuse with a clear message naming what is missing."""
    import torch
    import transformers

    from attention_widget import LongTrace
    from attention_widget.long import LONG_THRESHOLD

    assert set(BLOCKWISE) | set(LONG_REFUSALS) == set(FAMILY_CONFIGS)
    model = load_pretrained(long_folders[kind])
    text = " ".join(LONG_WORDS[i % len(LONG_WORDS)] for i in range(LONG_THRESHOLD + 80))
    ids = model.encode(text).ids
    if kind in LONG_REFUSALS:
        with pytest.raises(ValueError, match=rf"{kind}: .*{re.escape(LONG_REFUSALS[kind])}.*no "
                           rf"block-wise form; inputs longer than {LONG_THRESHOLD} tokens "
                           "cannot be shown"):
            model.trace(text, model.n_layers - 1)
        return
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        long_folders[kind], attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        real = ref(torch.from_numpy(ids[None].copy()), output_attentions=True).attentions
    for layer in range(model.n_layers):
        trace = model.trace(text, layer)
        assert isinstance(trace, LongTrace) and trace.seq_len == ids.size > LONG_THRESHOLD
        expected = real[layer][0].numpy()  # (n_heads, n, n)
        assert expected.max() > 0.5  # sharp heads
        window = model.layer_window(layer)
        assert trace.mask_kind == ("causal" if window is None else "sliding")
        rows = untied_rows(model, text, layer) if kind == "deepseek_v32" else slice(None)
        for h in range(model.n_heads):
            weights = trace.head_weights(h)
            np.testing.assert_allclose(weights[rows], expected[h][rows], rtol=0, atol=1e-4)
            if trace.sinks is not None:  # each row gave the rest of its weight to the sink
                np.testing.assert_allclose(trace.sink_weights[h], 1 - expected[h].sum(-1),
                                           rtol=0, atol=1e-4)
    if kind == "gpt_oss":
        assert trace.sink_weights.max() > 0.01  # the sinks take a visible share
    if kind in ("gpt_oss", "gemma2"):
        assert {model.layer_window(i) for i in range(model.n_layers)} == {None, 4}


def test_a_long_indexer_layer_shades_the_keys_it_dropped(long_folders):
    """DeepSeek V3.2 above LONG_THRESHOLD in the widget: the zoom and the query lens draw the
    visible keys the indexer did not keep in the dropped colour, the masked ones grey."""
    from attention_widget import AttentionWidget
    from attention_widget.long import LONG_THRESHOLD
    from attention_widget.marks import DROPPED, MASKED

    model = load_pretrained(long_folders["deepseek_v32"])
    text = " ".join(LONG_WORDS[i % len(LONG_WORDS)] for i in range(LONG_THRESHOLD + 80))
    w = AttentionWidget.from_pretrained(model, text, layer=1)
    assert w.wait(120) and w.error == "", w.error
    tr = w.trace
    zoom = (slice(500, 540), slice(440, 560))
    w.zoom((500, 540), (440, 560))
    visible, kept = tr.visible(*zoom), tr.kept(*zoom)
    assert kept.sum(axis=1).max() == model.index_topk and (visible & ~kept).any()
    cells = w.long_figs["long-zoom"].displayed_cells()[0]
    np.testing.assert_array_equal(cells == DROPPED, visible & ~kept)
    np.testing.assert_array_equal(cells == MASKED, ~visible)
    assert "not among the keys the indexer kept" in w._long._texts["zoom-note"].value
    w.query = 530
    strip = w.long_figs["long-lens"].displayed_cells()[0].ravel()[: tr.seq_len]
    row = (530, slice(None))
    np.testing.assert_array_equal(strip == DROPPED, (tr.visible(*row) & ~tr.kept(*row))[0])


def untied_rows(model, text, layer):
    """Rows whose top-``index_topk`` keys are one set: the indexer's k-th best score is not
    tied with the next (exact ties, e.g. at ReLU's 0, torch's topk breaks its own way)."""
    scores = model.index_scores(layer, text).astype(np.float64)  # (n, n) before the mask
    n, k = scores.shape[0], model.index_topk
    scores[np.triu_indices(n, 1)] = -np.inf  # causal
    ranked = -np.sort(-scores, axis=1)  # (n, n): best first
    untied = ranked[:, k - 1] != ranked[:, k]  # (rows with k keys or fewer: -inf != -inf)
    untied[:k] = True
    assert untied.mean() > 0.95  # only a few rows are left out
    return untied


def test_long_alibi_is_made_block_by_block(long_folders, monkeypatch):
    """BLOOM above LONG_THRESHOLD: ALiBi's bias exists only for blocks of rows, never n x n."""
    import attention_widget.pretrained.bloom as bloom
    from attention_widget import long, variants

    shapes = []

    def recorded(*args, **kwargs):
        bias = variants_alibi_bias(*args, **kwargs)
        shapes.append(bias.shape)
        return bias

    variants_alibi_bias = variants.alibi_bias
    monkeypatch.setattr(variants, "alibi_bias", recorded)
    monkeypatch.setattr(bloom, "alibi_bias", recorded)
    model = load_pretrained(long_folders["bloom"])
    text = " ".join(LONG_WORDS[i % len(LONG_WORDS)] for i in range(long.LONG_THRESHOLD + 80))
    n = model.encode(text).ids.size
    trace = model.trace(text, 1, temperature=0.5)
    assert trace.alibi and trace.seq_len == n
    trace.block(0, slice(0, 40), slice(0, 30))
    assert shapes and max(shape[-2] for shape in shapes) <= long.BLOCK_ROWS < n
    assert (1, 40, 30) in shapes  # the zoom's cells


@pytest.mark.parametrize("kind", ["bloom", "deepseek_v32", "gemma2", "gpt_oss"])
def test_the_widget_shows_long_texts_of_families_with_variants(long_folders, kind):
    """from_pretrained above LONG_THRESHOLD: the long view, its cells the model's own, on
    every kind of layer (sliding and full) and after a temperature step."""
    from attention_widget import LongTrace
    from attention_widget.long import LONG_THRESHOLD

    model = load_pretrained(long_folders[kind])
    text = " ".join(LONG_WORDS[i % len(LONG_WORDS)] for i in range(LONG_THRESHOLD + 40))
    w = AttentionWidget.from_pretrained(model, text, layer=0, progress=False)
    for layer in range(model.n_layers):
        w.layer = layer
        assert w.wait(60) and w.error == "", w.error
        assert isinstance(w.trace, LongTrace) and len(w.tokens) > LONG_THRESHOLD
        expected = model.trace(text, layer)
        np.testing.assert_array_equal(w.head_weights(1), expected.head_weights(1))
        w.zoom((500, 540), (470, 530))
        np.testing.assert_array_equal(w.displayed("long-zoom")[0],
                                      expected.block(w.head, slice(500, 540), slice(470, 530)))
    w.temperature = 0.5
    assert w.wait(60) and w.error == "", w.error
    expected = model.trace(text, model.n_layers - 1, temperature=0.5)
    np.testing.assert_array_equal(w.head_weights(2), expected.head_weights(2))
    for h in (0, model.n_heads - 1):  # the outputs at T = 0.5, computed when first read
        np.testing.assert_allclose(expected.head_outputs[h], expected.head_weights(h)
                                   @ expected.v[expected.kv_head(h)], rtol=1e-5, atol=1e-5)
    visible = w.trace.overview_visible  # never NaN on a tile that holds a visible cell
    assert np.isfinite(w.trace.weights_overview[:, visible]).all()


def test_deepseek_v32_generates_after_a_long_prompt(long_folders):
    """The prompt's indexer choice is made block by block (no (n, n) array of kept keys);
    the cache then chooses among every key, as transformers does."""
    from attention_widget.long import LONG_THRESHOLD

    model = load_pretrained(long_folders["deepseek_v32"])
    text = " ".join(LONG_WORDS[i % len(LONG_WORDS)] for i in range(LONG_THRESHOLD + 80))
    out = model.generate(text, 6)
    assert out.prompt_ids.size > LONG_THRESHOLD
    ref = _hf_generate(_hf(long_folders["deepseek_v32"]), out.prompt_ids, 6)
    assert list(out.ids) == ref.sequences[0, out.prompt_ids.size :].tolist()

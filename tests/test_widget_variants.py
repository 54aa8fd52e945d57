"""The attention variants in the widget: what each view shows is the trace's, state files
reproduce it, bad settings are refused by name and keep the last diagram.

The engine's variants are checked against torch and transformers in test_variants_reference;
here the widget's side: its settings reach the engine, and its pictures show the arrays.
"""

from __future__ import annotations

import html

import numpy as np
import pytest
import traitlets as T

from attention_widget import AttentionWidget, cross_attention, latent_attention
from attention_widget.colors import levels
from attention_widget.engine import init_params, multi_head_attention
from attention_widget.inputs import embed, tokenize
from attention_widget.kinds import init_latent_params
from attention_widget.marks import DROPPED, MASKED
from attention_widget.variants import kv_cache_per_token
from tests.support.png import decode_palette_png

TEXT = "the cat sat on the mat because it was tired"
SOURCE = "le chat dort sur le tapis"

#: One widget setting per variant (and kinds), as a teacher would turn them on.
VARIANTS = {
    "rope": {"rope": 10000.0},
    "alibi": {"alibi": True, "mask": "causal"},
    "softcap": {"softcap": 2.0},
    "sinks": {"sinks": True},
    "top_k": {"top_k": 3, "mask": "causal"},
    "latent": {"kind": "latent", "kv_rank": 8, "rope_dim": 4, "rope": 10000.0},
    "cross": {"kind": "cross", "source_text": SOURCE},
    "gqa": {"n_kv_heads": 2},
    "all scores": {"rope": 500000.0, "alibi": True, "softcap": 3.0, "sinks": True, "top_k": 2},
}


def widget(view: str = "overview", **kw) -> AttentionWidget:
    return AttentionWidget(TEXT, d_model=32, n_heads=4, view=view, **kw)


def test_standard_variants_reach_the_engine():
    """The widget's trace equals multi_head_attention called by hand with the same X and W."""
    w = widget(rope=10000.0, alibi=True, softcap=2.0, top_k=3, mask="causal")
    x = embed(tokenize(TEXT), 32, seed=0)
    direct = multi_head_attention(x, init_params(32, 4, seed=0), n_heads=4, mask="causal",
                                  rope=10000.0, alibi=True, softcap=2.0, top_k=3)
    np.testing.assert_array_equal(w.trace.weights, direct.weights)
    np.testing.assert_array_equal(w.trace.kept, direct.kept)
    assert (w.trace.rope, w.trace.alibi, w.trace.softcap, w.trace.top_k) == (10000.0, True,
                                                                             2.0, 3)


def test_latent_and_cross_reach_the_engine():
    x = embed(tokenize(TEXT), 32, seed=0)
    w = widget(kind="latent", kv_rank=8, rope_dim=4, rope=10000.0, mask="causal")
    direct = latent_attention(x, init_latent_params(32, 4, 8, rope_dim=4, seed=0), n_heads=4,
                              mask="causal", rope=10000.0)
    np.testing.assert_array_equal(w.trace.latent, direct.latent)
    np.testing.assert_array_equal(w.trace.weights, direct.weights)
    assert "latent kv_rank=8" in w.summary and "n_kv_heads" not in w.summary  # (no kv heads)
    w = widget(kind="cross", source_text=SOURCE)
    x_kv = embed(tokenize(SOURCE), 32, seed=0)
    direct = cross_attention(x, x_kv, init_params(32, 4, seed=0), n_heads=4)
    np.testing.assert_array_equal(w.trace.weights, direct.weights)
    assert w.trace.weights.shape == (4, len(tokenize(TEXT)), len(tokenize(SOURCE)))


def test_the_sink_column_shows_the_sink_weights_apart_from_the_keys():
    w = widget(sinks=True)
    tr = w.trace
    assert np.all(tr.weights.sum(-1) < 1.0)  # the sinks took a share of every row
    shown = w._overview.displayed("sinks")
    lanes = w._overview._plan.lanes
    np.testing.assert_array_equal(np.concatenate(shown, axis=1), tr.sink_weights[lanes].T)
    p = w._overview._plan
    for i in range(len(lanes)):  # right of the keys' columns, with a gap
        assert p.panels[f"sink {i}"].x > p.panels[f"weights {i}"].right
    assert "sink" in [t.text for t in p.texts]
    w.view = "detailed"
    (sinks,) = w.displayed("sinks")
    np.testing.assert_array_equal(sinks, tr.sink_weights.T.astype(np.float32))
    # on the weights' fixed scale 0..1: the overview's pixels are the sink weights' levels
    grid, _, _ = decode_palette_png(w._overview.images["sinks"].png)
    box, top = p.panels["sink 0"], p.panels["sink 0"].y
    rows = (np.arange(tr.seq_len) * p.cell + p.cell // 2).astype(int)
    np.testing.assert_array_equal(grid[rows + round(box.y - top), 0],
                                  levels(tr.sink_weights[lanes[0]].astype(np.float32), 0, 1))


def test_keys_dropped_by_top_k_are_shaded_apart_from_masked_keys():
    w = widget(top_k=2, mask="causal", view="detailed")
    tr = w.trace
    dropped = tr.mask & ~tr.kept
    assert dropped.any() and (~tr.mask).any()
    for h, cells in enumerate(w.figs["weights"].displayed_cells()):
        np.testing.assert_array_equal(cells == DROPPED, dropped[h])
        np.testing.assert_array_equal(cells == MASKED, ~tr.mask)
    w.view = "overview"
    grid, _, _ = decode_palette_png(w._overview.images["weights"].png)
    p = w._overview._plan
    top = p.panels["weights 0"].y
    for i, h in enumerate(p.lanes):
        box = p.panels[f"weights {i}"]
        rows = (round(box.y - top) + np.arange(tr.seq_len) * p.cell + p.cell // 2).astype(int)
        cells = grid[rows][:, : tr.seq_len]
        np.testing.assert_array_equal(cells == DROPPED, dropped[h])
        np.testing.assert_array_equal(cells == MASKED, ~tr.mask)
    assert "rose" in w._overview.notes.value.lower()


def test_cross_attention_puts_the_source_tokens_on_the_key_axis():
    w = widget(kind="cross", source_text=SOURCE, view="detailed")
    src, toks = tokenize(SOURCE), tokenize(TEXT)
    assert w._traced.key_tokens == src
    for panel in w.displayed("weights"):
        assert panel.shape == (len(toks), len(src))
    labels = set(w.figs["weights"].x_axis.tick_labels.values())
    assert {"chat", "tapis"} <= labels and "cat" not in labels
    rows = [a.shape[0] for a in w.displayed("x")]
    assert rows == [len(toks), len(src)]  # the text's X, then the source's
    w.view = "overview"
    p = w._overview._plan
    assert p.panels["weights 0"].w == pytest.approx(len(src) * p.cell)
    assert p.panels["weights 0"].h == pytest.approx(len(toks) * p.cell)
    assert p.panels["x_kv"].h / p.panels["x"].h == pytest.approx(len(src) / len(toks))
    vertical = [t.text for t in p.texts if t.rotate]  # (every k-th where columns are narrow)
    assert vertical and set(vertical) <= set(src) and "le" in vertical


def test_the_latent_is_a_panel_between_x_and_k_v():
    w = widget(kind="latent", kv_rank=8, rope_dim=4)
    p = w._overview._plan
    assert p.panels["x"].right < p.panels["latent"].x < p.panels["k"].x
    (latent,) = w._overview.displayed("latent")
    np.testing.assert_array_equal(latent, w.trace.latent)
    assert [c[0] for c in p.columns][:3] == ["x", "latent", "qkv"]
    w.view = "detailed"
    assert w.displayed("qkv")[0].shape == (len(tokenize(TEXT)), 8)
    np.testing.assert_array_equal(w.displayed("qkv")[0], w.trace.latent.astype(np.float32))


def test_rope_and_score_shaping_are_said_where_they_act():
    w = widget(rope=10000.0, alibi=True, softcap=2.0)
    texts = [t.text for t in w._overview._plan.texts]
    assert any(t.startswith("Q · RoPE") for t in texts)
    assert "c·tanh((QKᵀ/√d + B)/c)" in texts
    stages = w._traced.shown_stages
    assert "RoPE" in stages["q"].formula and "RoPE" in stages["k"].formula
    assert "m_h (i − j)" in stages["scores"].formula and "tanh" in stages["scores"].formula
    assert "rope θ=10000" in w.summary and "softcap=2" in w.summary


@pytest.mark.parametrize("kv, rank, expected", [(4, None, "100 %"), (2, None, "50 %"),
                                                (1, None, "25 %"), (None, 8, "%")])
def test_the_kv_cache_readout_follows_the_settings(kv, rank, expected):
    kw = {"n_kv_heads": kv} if rank is None else {"kind": "latent", "kv_rank": rank}
    w = widget(**kw)
    d_head = 8
    mha = 2 * 4 * d_head
    ours = (kv_cache_per_token(4, d_head, kv) if rank is None
            else kv_cache_per_token(4, d_head, kv_rank=rank, rope_dim=0))
    assert f"{ours} numbers" in w.kv_cache and f"MHA's {mha}" in w.kv_cache
    assert f"{100 * ours / mha:.3g} %" in w.kv_cache and expected in w.kv_cache
    assert w._panel.kv_cache.value == html.escape(w.kv_cache)
    w.n_heads = 8  # live: the readout follows (d_head 4: MHA caches 2 * 8 * 4)
    assert "MHA&#x27;s 64" in w._panel.kv_cache.value


@pytest.mark.parametrize("name", list(VARIANTS))
def test_state_files_reproduce_each_variant(name, tmp_path):
    w = widget(**VARIANTS[name])
    assert w.error == ""
    path = w.save_state(tmp_path / "s.npz")
    back = AttentionWidget.load_state(path)  # (load_state checks every array is identical)
    for key, value in VARIANTS[name].items():
        assert getattr(back, key) == value
        assert back.settings[key] == value
    np.testing.assert_array_equal(back.trace.weights, w.trace.weights)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_variant_exports_to_svg_png_and_html(name, tmp_path):
    w = widget(**VARIANTS[name])
    svg = w.save_figure(tmp_path / "a.svg").read_text()
    if name == "latent":
        assert 'data-stage="latent"' in svg
    if "sinks" in VARIANTS[name]:
        assert svg.count('class="aw-panel aw-sink"') == 4 and ">sink<" in svg
    if name == "cross":
        assert ">tapis<" in svg and "source X" in svg
    if "top_k" in VARIANTS[name]:
        assert "top-k dropped" in svg
    assert w.save_figure(tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    page = w.to_html(tmp_path / "a.html", temperatures=(0.5,), head_counts=[]).read_text()
    assert "aw-variant" in page


@pytest.mark.parametrize("name, value, words", [
    ("top_k", -1, "top_k must be 0"), ("softcap", -2.0, "softcap must be 0"),
    ("kv_rank", 0, "kv_rank must be between 1 and d_model"), ("rope", -1.0, "rope must be"),
    ("rope_dim", 3, "rope_dim must be an even"), ("kind", "sparse", "kind"),
])
def test_bad_values_from_python_are_refused_by_name(name, value, words):
    w = widget()
    with pytest.raises(T.TraitError, match=words):
        setattr(w, name, value)
    assert getattr(w, name) != value


@pytest.mark.parametrize("start, change, words", [
    ({"kind": "cross"}, {"mask": "causal"}, "mask='causal' needs one sequence"),
    ({"kind": "latent"}, {"alibi": True}, "alibi cannot be used with kind='latent'"),
    ({"kind": "cross"}, {"rope": 10000.0}, "rope cannot be used with kind='cross'"),
    ({"kind": "cross"}, {"source_text": "   "}, "The source text is empty"),
    ({}, {"kind": "latent", "weights": "designed"}, "weights='designed'"),
])
def test_impossible_combinations_show_an_error_and_keep_the_last_diagram(start, change, words):
    w = widget(**start)
    good = w.trace
    with w.hold_trait_notifications():
        for name, value in change.items():
            setattr(w, name, value)
    assert words in w.error
    assert w.trace is good
    error = w._panel._error
    assert words.split("'")[0] in error.value and error.layout.display != "none"


def test_variant_controls_follow_the_kind():
    w = widget()
    c = w.controls
    assert c["kv_rank"].layout.display == "none" and c["source_text"].layout.display == "none"
    c["kind"].value = "latent"
    assert w.kind == "latent" and w.trace.latent is not None
    assert c["kv_rank"].layout.display is None and c["rope_dim"].layout.display is None
    c["kv_rank"].value = 4
    assert w.trace.latent.shape[1] == 4 and "kv_rank 4" in w.kv_cache
    c["kind"].value = "cross"
    assert c["source_text"].layout.display is None and c["kv_rank"].layout.display == "none"
    c["source_text"].value = SOURCE
    assert w.trace.weights.shape[-1] == len(tokenize(SOURCE))
    for name, value in (("rope", 10000.0), ("alibi", True), ("softcap", 3.0), ("sinks", True),
                        ("top_k", 2)):
        c["kind"].value = "standard"
        c[name].value = value
        assert getattr(w, name) == value and w.error == "", name


def test_from_arrays_keeps_the_score_variants_and_fixes_the_kind():
    x = embed(tokenize(TEXT), 16, seed=1)
    w = AttentionWidget.from_arrays(x, init_params(16, 2, seed=1), n_heads=2, top_k=2,
                                    softcap=4.0)
    assert w.trace.top_k == 2 and w.trace.softcap == 4.0
    with pytest.raises(T.TraitError, match="kind is fixed at 'standard'"):
        w.kind = "latent"

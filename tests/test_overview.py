"""The overview (the default view): its geometry at every head count, its numbers, its words.

The browser tests measure the real text boxes; here the plan's estimated boxes are checked at
many more sizes, and the images against the trace.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from support.png import decode_palette_png, image_widget_png

from attention_widget import AttentionWidget, tokenize
from attention_widget.colors import levels
from attention_widget.designed import DESIGNED_INPUT_NOTE
from attention_widget.overview import FONTS, MAX_LANES, WIDTH, lane_heads, plan
from attention_widget.sources import Settings, TextSource
from attention_widget.stages import source_stages

TEXT = "The animal didn't cross the street because it was too tired."
REPEATS = "the cat saw the dog and the cat ran to the dog"


def _overlap(a, b, tol=0.5) -> bool:
    return (a.x < b.right - tol and b.x < a.right - tol and a.y < b.bottom - tol
            and b.y < a.bottom - tol)


def _traced(text: str, d_model: int, n_heads: int, **kw):
    return TextSource().trace(Settings(text=text, d_model=d_model, n_heads=n_heads, **kw))


@pytest.mark.parametrize("projector", [False, True])
@pytest.mark.parametrize(("n_words", "d_model", "n_heads", "head"), [
    (12, 64, 1, 0), (12, 64, 2, 0), (12, 64, 4, 0), (12, 64, 16, 5), (12, 64, 64, 63),
    (3, 8, 8, 0), (40, 96, 12, 11), (64, 768, 12, 0), (1, 16, 4, 0),
])
def test_no_text_overlaps_another_or_a_panel_and_all_is_inside(projector, n_words, d_model,
                                                              n_heads, head):
    words = tokenize(TEXT) * 6
    traced = _traced(" ".join(words[:n_words]), d_model, n_heads)
    lanes = lane_heads(n_heads, head)
    p = plan(traced.tokens, traced.trace, lanes, traced.head_titles(), projector)
    assert head in lanes and len(lanes) == min(n_heads, MAX_LANES)
    assert p.width == WIDTH[projector]
    texts = [(t, t.box()) for t in p.texts if t.text]
    boxes = list(p.panels.values()) + list(p.bars.values())
    for box in [b for _, b in texts] + boxes:
        assert 0 <= box.x and box.right <= p.width and 0 <= box.y and box.bottom <= p.height, (
            box, p.width, p.height)
    for (t1, b1), (t2, b2) in itertools.combinations(texts, 2):
        assert not _overlap(b1, b2), (t1.text, t2.text)
    for t, b in texts:
        for name, panel in p.panels.items():
            assert not _overlap(b, panel), (t.text, name)
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlap(a, b, tol=0.0), (a, b)
    if projector:  # token labels and titles of at least 14 px
        f = FONTS[True]
        assert min(f["token"], f["title"], f["text"]) >= 14


@pytest.mark.parametrize("projector", [False, True])
@pytest.mark.parametrize("n_source", [12, 200, 700, 3000])
def test_a_long_source_narrows_the_key_columns_to_fit(projector, n_source):
    """Cross-attention over a source of thousands of tokens: the key columns narrow (the rows
    keep their height) so that every column of the picture stays inside it."""
    source = " ".join((tokenize(TEXT) * 300)[:n_source])
    traced = _traced(TEXT, 64, 4, kind="cross", source_text=source)
    assert traced.trace.weights.shape[-1] == n_source
    p = plan(traced.tokens, traced.trace, lane_heads(4, 0), traced.head_titles(), projector,
             keys=traced.key_tokens)
    boxes = list(p.panels.values()) + list(p.bars.values())
    assert all(0 <= b.x and b.right <= p.width for b in boxes), [
        (k, b) for k, b in p.panels.items() if b.right > p.width]
    assert all(t.box().right <= p.width for t in p.texts if t.text)
    assert p.panels["weights 0"].w == pytest.approx(n_source * p.key_cell)
    assert p.panels["weights 0"].h == pytest.approx(len(traced.tokens) * p.cell)
    if n_source == 12:  # room for square cells
        assert p.key_cell == p.cell
    if n_source >= 700:  # rows of several pixels, narrower key columns
        assert p.cell >= 4 and p.key_cell < 1
    assert p.panels["output"].right > p.panels["weights 0"].right  # every stage drawn
    n = len(traced.tokens)  # the text's rows keep their height beside a long source
    for key in ("x", "q", "concat", "output"):
        assert p.panels[key].h >= 4 * n, (key, p.panels[key])


@pytest.mark.parametrize("projector", [False, True])
@pytest.mark.parametrize("kw", [{}, {"n_kv_heads": 2}, {"rope": 10000.0},
                                {"rope": 10000.0, "n_kv_heads": 1}])
def test_q_k_and_v_are_named_alike(projector, kw):
    """Q, K and V carry the same detail (all with their head counts, or none), whatever fits."""
    traced = _traced(TEXT, 64, 4, **kw)
    p = plan(traced.tokens, traced.trace, lane_heads(4, 0), traced.head_titles(), projector)
    names = {t.text.split(" ")[0]: t.text for t in p.texts if t.section == 2 and t.bold
             and t.text.split(" ")[0] in ("Q", "K", "V")}
    assert set(names) == {"Q", "K", "V"}, names
    counts = {key: "heads" in text for key, text in names.items()}
    assert len(set(counts.values())) == 1, names
    if not projector and "rope" not in kw:  # room for the whole names
        kv = kw.get("n_kv_heads", 4)
        assert names["K"].endswith(f"· {kv} kv heads") and names["Q"].endswith("· 4 heads")


def test_overview_images_show_the_trace_on_its_scales():
    w = AttentionWidget(TEXT, d_model=32, n_heads=4, mask="causal")
    ov, tr = w._overview, w.trace
    p = ov._plan
    # the weights image: the lanes' panels, row by row, on the fixed 0..1 scale; masked grey
    img = ov.images["weights"]
    indices, _, _ = decode_palette_png(image_widget_png(img.mark.image))
    assert indices.shape == (round(p.panels[f"weights {len(p.lanes) - 1}"].bottom
                                   - p.panels["weights 0"].y), tr.seq_len)
    for i, h in enumerate(p.lanes):
        top = round(p.panels[f"weights {i}"].y - p.panels["weights 0"].y)
        cell = int(p.cell)
        shown = indices[top: top + tr.seq_len * cell: cell]
        want = levels(tr.weights[h].astype(np.float32), 0.0, 1.0)
        want[~tr.mask] = 253  # MASKED
        np.testing.assert_array_equal(shown, want)
    # X: one pixel per cell on the shared symmetric scale
    x_idx, _, _ = decode_palette_png(image_widget_png(ov.images["x"].mark.image))
    lim = ov._limits["x"][0]
    np.testing.assert_array_equal(x_idx, levels(tr.x.astype(np.float32), lim.low, lim.high))


def test_a_temperature_step_redraws_what_follows_the_softmax_only():
    w = AttentionWidget(TEXT, d_model=32, n_heads=4)
    before = {k: img.png for k, img in w._overview.images.items()}
    w.temperature = 0.4
    after = {k: img.png for k, img in w._overview.images.items()}
    assert {k for k in before if before[k] != after[k]} == {"weights", "outputs", "concat",
                                                           "output"}


def test_many_heads_show_the_focus_group_and_say_what_is_hidden():
    w = AttentionWidget(TEXT, d_model=64, n_heads=16)
    assert w._overview._plan.lanes == [0, 1, 2, 3]
    assert "Heads 0–3 of 16 drawn" in w._overview.notes.value
    w.head = 9
    assert w._overview._plan.lanes == [8, 9, 10, 11]
    assert "Heads 8–11 of 16" in w._overview.notes.value
    lane_titles = [t.text for t in w._overview._plan.texts if t.text.startswith("head ")]
    assert lane_titles == [t for t in w.head_titles[8:12]]


def test_the_stage_player_hides_later_stages():
    w = AttentionWidget(TEXT, d_model=32, n_heads=4)
    w.step = 2
    shown = {k for k, img in w._overview.images.items() if img.mark.visible}
    assert shown == {"x", "qkv"}
    texts = [str(t) for label in w._overview._labels.values() for t in label.text]
    assert "3 · scores" not in texts and "2 · Q K V" in texts
    w.step = 6
    # (the latent and sink images belong to those variants only)
    assert all(img.mark.visible for key, img in w._overview.images.items()
               if key not in ("latent", "sinks"))


def test_designed_heads_name_their_job_and_say_how():
    w = AttentionWidget(REPEATS, d_model=64, n_heads=8, weights="designed")
    jobs = ["previous token", "duplicate token", "first token", "local window"] * 2
    assert w.head_titles == [f"head {h} · {j}" for h, j in enumerate(jobs)]
    notes = w._overview.notes.value
    assert DESIGNED_INPUT_NOTE.split(":")[0] in notes
    assert "designed input X" in notes
    w.view = "detailed"
    below = w._diagram._notes_html.value
    assert "head 0 · previous token: W_K copies the position code" in below
    assert w.figs["weights"].titles.text[0] == "head 0"  # the job on a line of its own
    assert w.figs["weights"].roles.text[0] == "previous token"
    # head 0 does its job on the shown weights: every query i >= 1 puts most on key i - 1
    assert (w.trace.weights[0].argmax(axis=1)[1:] == np.arange(len(w.tokens) - 1)).all()


def test_designed_heads_that_cannot_do_their_job_say_so():
    w = AttentionWidget(REPEATS, d_model=8, n_heads=8, weights="designed")  # d_head 1
    assert w.head_titles[0] == "head 0 · previous token (cannot at d_head 1)"
    assert "Heads 0, 1, 3, 4, 5, 7 cannot do their job" in " ".join(w._diagram._notes_html.value
                                                                  .split()) or (
        "cannot do their job" in w._overview.notes.value)


def test_stage_titles_follow_the_source_and_family():
    text = source_stages("text")
    assert text["x"].formula == "x_i = embedding(token_i) + PE(i), one row per token"
    assert "no positional code" in source_stages("text", positional=False)["x"].formula
    assert source_stages("text", weights="designed")["x"].title == "designed input X"
    assert source_stages("arrays")["x"].title == "your input X"
    bert0 = source_stages("pretrained", family="bert", layer=0)
    assert bert0["x"].title == "embeddings + LayerNorm" and "b_Q" in bert0["q"].formula
    assert source_stages("pretrained", family="bert", layer=3)["x"].title == (
        "hidden state entering layer 3")
    gpt2 = source_stages("pretrained", family="gpt2", layer=2)
    assert "ln_1" in gpt2["x"].formula and "layer 1" in gpt2["x"].formula
    llama = source_stages("pretrained", family="llama", layer=1)
    assert "RoPE" in llama["q"].formula and "RoPE" in llama["k"].formula
    assert "RoPE" not in llama["v"].formula
    qwen = source_stages("pretrained", family="qwen3", layer=0)
    assert "q_norm" in qwen["q"].formula and "k_norm" in qwen["k"].formula
    other = source_stages("pretrained", family="unknown-family", layer=4)
    assert other["x"].title == "hidden state entering layer 4"
    for stages in (text, bert0, gpt2, llama, qwen, other):  # every stage, in order
        assert list(stages) == ["x", "latent", "q", "k", "v", "scores", "weights", "outputs",
                                "concat", "output"]


def test_widget_says_what_x_is_for_its_source():
    w = AttentionWidget(TEXT, d_model=32, n_heads=4, positional=False)
    assert "no positional code" in w._overview.notes.value
    w.view = "detailed"
    assert "no positional code" in w._diagram._heads[0][0].value


def test_robust_scale_marks_its_clipped_ends():
    x = np.zeros((6, 8))
    x[:, 0] = np.arange(6)
    x[0, 1] = 40.0  # one outlier: X's robust end stays near the bulk of the values
    from attention_widget import init_params

    w = AttentionWidget.from_arrays(x, init_params(8, 2, seed=1), n_heads=2,
                                    scales={"x": "robust"})
    lim = w._overview._limits["x"][0]
    assert lim.clipped and lim.high < 40.0 and lim.mode == "robust"
    bar = [str(t) for label in w._overview._labels.values() for t in label.text]
    assert f"◂{lim.low:.2g}" in bar and f"{lim.high:.2g}▸" in bar
    assert "clipped" in w._overview.notes.value
    w.view = "detailed"
    assert w.figs["x"].c_axis.label == "X · clipped ◂▸"
    assert (w.figs["x"].color_scale.min, w.figs["x"].color_scale.max) == (lim.low, lim.high)


def test_scale_choices_from_the_controls():
    w = AttentionWidget(TEXT, d_model=32, n_heads=4)
    pick, buttons = w._panel.scale_controls["scale-of"], w._panel.scale_controls["scale"]
    pick.value = "scores"
    buttons.value = "per head"
    assert w.scales == {"scores": "per head"}
    pick.value = "weights"
    assert buttons.value == "fixed" and [v for _, v in buttons.options] == ["fixed", "per head"]
    buttons.value = "per head"
    assert w.scales == {"scores": "per head", "weights": "per head"}
    lims = w._overview._limits["weights"]
    assert [x.high for x in lims] != [1.0] * len(lims)
    with pytest.raises(Exception, match="scales must map"):
        w.scales = {"scores": "sideways"}


def test_projector_makes_the_text_large():
    w = AttentionWidget(TEXT, d_model=64, n_heads=4, projector=True)
    sizes = {label.default_size for label in w._overview._labels.values()}
    assert min(sizes) >= 13 and 14 in sizes
    tokens = [t for t in w._overview._plan.texts if t.section == 1 and t.anchor == "end"]
    assert tokens and all(t.size >= 14 for t in tokens)


@pytest.mark.parametrize("mode", ["shared", "per head", "robust"])
def test_both_views_colour_a_head_on_the_same_scale(mode):
    w = AttentionWidget(TEXT, d_model=64, n_heads=8, scales={"scores": mode, "outputs": mode})
    w.head = 5
    lanes = w._overview._plan.lanes
    overview = {k: w._overview._limits[k] for k in ("scores", "outputs")}
    w.view = "detailed"
    for key in ("scores", "outputs"):
        detailed = w.figs[key].limits()
        assert overview[key] == [detailed[h] for h in lanes], key


def test_a_new_colour_table_recolours_the_overview():
    w = AttentionWidget(TEXT, d_model=32, n_heads=4)
    before = w._overview.images["weights"].png
    w.colormap = "magma"
    _, palette, _ = decode_palette_png(w._overview.images["weights"].png)
    from attention_widget.colors import palette as table

    assert w._overview.images["weights"].png != before
    np.testing.assert_array_equal(palette[:253], table("magma"))


def test_designed_heads_start_on_per_head_scales():
    """A local-window head's scores are some hundreds, a previous-token head's about ten:
    designed weights come with per-head scales for Q, K, V and the scores."""
    w = AttentionWidget(REPEATS, d_model=64, n_heads=4)
    assert w.scales == {}
    w.weights = "designed"
    assert w.scales == {"qkv": "per head", "scores": "per head"}
    highs = [x.high for x in w._overview._limits["scores"]]
    assert max(highs) / min(highs) > 10  # each head on its own end
    w.weights = "random"
    assert w.scales == {}
    w2 = AttentionWidget(REPEATS, weights="designed", scales={"scores": "shared"})
    assert w2.scales == {"qkv": "per head", "scores": "shared"}  # a choice given wins

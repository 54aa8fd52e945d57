"""Headless widget tests: what the heatmaps hold equals what the engine computes."""

from __future__ import annotations

import functools

import bqplot as bq
import numpy as np
import pytest
import traitlets
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from support.comm import by_class, from_browser, record_comm_messages
from support.png import decode_palette_png, image_widget_png

from attention_widget import (
    AttentionWidget,
    colors,
    embed,
    init_params,
    multi_head_attention,
    plots,
    tokenize,
)
from attention_widget.widget import MAX_TOKENS

TEXT = "The cat sat on the mat because the cat was tired."

#: The detailed view (one section per stage): what these tests look at.
Detailed = functools.partial(AttentionWidget, view="detailed")


def reference(w: AttentionWidget):
    """The trace recomputed from the widget's settings through the public engine API."""
    tokens = tokenize(w.text)
    x = embed(tokens, w.d_model, seed=w.seed, positional=w.positional)
    params = init_params(w.d_model, w.n_heads, w.n_kv_heads, seed=w.seed)
    window = min(w.window, len(tokens)) if w.mask == "sliding" else None
    return multi_head_attention(x, params, n_heads=w.n_heads, n_kv_heads=w.n_kv_heads,
                                temperature=w.temperature, mask=w.mask, window=window)


def on_page(w: AttentionWidget, name: str):
    """The one readout or box with CSS class ``aw-<name>`` on the page of ``w``."""
    found = by_class(w, f"aw-{name}")
    assert len(found) == 1, (name, len(found))
    return found[0]


def d3_palette(anchors) -> np.ndarray:
    """The colour of each of the LEVELS levels of a bqplot ColorScale with these colours:
    d3's scaleLinear over evenly spaced anchors, RGB interpolation, channels rounded."""
    rgb = np.array([[int(c[k:k + 2], 16) for k in (1, 3, 5)] for c in anchors], dtype=float)
    out = np.empty((colors.LEVELS, 3))
    for level in range(colors.LEVELS):
        t = level / (colors.LEVELS - 1) * (len(rgb) - 1)
        k = min(int(t), len(rgb) - 2)
        out[level] = rgb[k] + (rgb[k + 1] - rgb[k]) * (t - k)
    return np.floor(out + 0.5).astype(np.uint8)


def assert_image_shows(fig) -> None:
    """The PNG the figure's Image mark points at draws each panel's array, cell by cell, in
    the colour bqplot's scale gives its value (to within half of one of the 253 levels), grey
    on masked cells, transparent around the panels."""
    png = image_widget_png(fig.image.image)  # what the mark shows (a data: URL, decoded)
    assert png == fig.png
    indices, palette, alpha = decode_palette_png(png)
    scale = fig.color_scale
    low, high = float(scale.min), float(scale.max)
    levels = np.linspace(low, high, colors.LEVELS)
    # the cells are drawn in the colours the colour bar shows for their values
    np.testing.assert_array_equal(palette[: colors.LEVELS], d3_palette(scale.colors))
    assert (alpha[: plots.TRANSPARENT] == 255).all() and alpha[plots.TRANSPARENT] == 0
    inside = np.zeros(indices.shape, dtype=bool)
    for arr, (x0, y0) in zip(fig.displayed(), fig.panel_offsets(), strict=True):
        rows, cols = arr.shape
        cells = indices[int(y0):int(y0) + rows, int(x0):int(x0) + cols]
        inside[int(y0):int(y0) + rows, int(x0):int(x0) + cols] = True
        shown = cells != plots.MASKED
        value = np.clip(arr, low, high)[shown]
        assert (np.abs(levels[cells[shown]] - value) <= 0.5001 * (high - low) / (colors.LEVELS - 1)
                ).all()
    assert (indices[~inside] == plots.TRANSPARENT).all()


def assert_display_matches(w: AttentionWidget) -> None:
    tr = w.trace
    weights = w.displayed("weights")
    assert len(weights) == tr.n_heads == w.n_heads
    for h in range(tr.n_heads):
        np.testing.assert_allclose(weights[h], tr.weights[h], atol=1e-6)
        np.testing.assert_allclose(w.displayed("scores")[h], tr.scores[h], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(w.displayed("outputs")[h], tr.head_outputs[h], rtol=1e-6,
                                   atol=1e-5)
    x_disp, = w.displayed("x")
    np.testing.assert_allclose(x_disp, tr.x, rtol=1e-6, atol=1e-5)
    q_disp, k_disp, v_disp = w.displayed("qkv")
    np.testing.assert_allclose(q_disp, tr.q.transpose(1, 0, 2).reshape(tr.seq_len, -1),
                               rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(k_disp, tr.k.transpose(1, 0, 2).reshape(tr.seq_len, -1),
                               rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(v_disp, tr.v.transpose(1, 0, 2).reshape(tr.seq_len, -1),
                               rtol=1e-6, atol=1e-5)
    concat, output = w.displayed("concat")
    np.testing.assert_allclose(concat, tr.concat, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(output, tr.output, rtol=1e-6, atol=1e-5)
    for stage in ("x", "qkv", "scores", "weights", "outputs", "concat", "focus"):
        for arr in w.displayed(stage):
            assert np.isfinite(arr).all(), stage
        assert_image_shows(w.figs[stage])
    assert w.summary == (
        f"seq_len={tr.seq_len}, d_model={w.d_model}, n_heads={w.n_heads}, "
        f"n_kv_heads={w.n_kv_heads or w.n_heads}, temperature={w.temperature:.3g}, "
        f"mask={w.mask}" + (f", window={min(w.window, tr.seq_len)}" if w.mask == "sliding" else "")
    )
    assert on_page(w, "summary").value.startswith("seq_len=")


@pytest.fixture
def w() -> AttentionWidget:
    return Detailed(TEXT, d_model=32, n_heads=4)


def test_default_widget_matches_engine(w):
    ref = reference(w)
    np.testing.assert_array_equal(w.trace.weights, ref.weights)
    np.testing.assert_array_equal(w.trace.output, ref.output)
    assert w.tokens == tokenize(TEXT)
    assert w.tokens.count("the") == 2 and w.tokens.count("cat") == 2  # repeats keep their rows
    assert_display_matches(w)
    assert "attention-widget" in w._dom_classes
    assert w.error == ""


@pytest.mark.parametrize(
    ("name", "value", "changed", "unchanged"),
    [
        ("temperature", 0.3, ["weights", "outputs", "concat"], ["x", "qkv", "scores"]),
        # heads are slices of the same projection: Q, K, V themselves do not change
        ("n_heads", 8, ["scores", "weights", "outputs"], ["x", "qkv"]),
        ("d_model", 48, ["x", "qkv", "scores", "weights", "outputs", "concat"], []),
        ("mask", "causal", ["weights", "outputs", "concat"], ["x", "qkv", "scores"]),
        ("seed", 5, ["x", "qkv", "scores", "weights"], []),
        ("positional", False, ["x", "qkv", "scores", "weights"], []),
        ("n_kv_heads", 2, ["qkv", "scores", "weights"], ["x"]),
        ("text", "A different sentence here.", ["x", "qkv", "weights"], []),
    ],
)
def test_each_control_updates_its_panels(w, name, value, changed, unchanged):
    before = {stage: [a.copy() for a in w.displayed(stage)] for stage in w.figs}
    setattr(w, name, value)  # from Python; the controls are linked to the same traits
    assert_display_matches(w)
    for stage in changed:
        after = w.displayed(stage)
        assert len(after) != len(before[stage]) or any(
            a.shape != b.shape or not np.array_equal(a, b)
            for a, b in zip(after, before[stage], strict=True)
        ), stage
    for stage in unchanged:
        for a, b in zip(w.displayed(stage), before[stage], strict=True):
            np.testing.assert_array_equal(a, b)


def test_no_figure_offers_the_pan_zoom_toolbar():
    """bqplot's hover toolbar would cover labels, and its pan/zoom would move a figure's
    marks off the pixels they are drawn for: no figure of any view shows it."""
    w = AttentionWidget(n_heads=4)
    figures = {id(f): f for f in (w._overview.figure,
                                  *(fig.figure for fig in w._diagram.figs.values()))}
    assert len(figures) > 4
    assert [f for f in figures.values() if f.display_toolbar] == []


def test_controls_drive_traits(w):
    w.controls["temperature"].value = 2.0
    assert w.temperature == 2.0 and w.trace.temperature == 2.0
    w.controls["n_heads"].value = 8
    assert w.n_heads == 8 and len(w.displayed("weights")) == 8
    w.controls["mask"].value = "causal"
    assert w.mask == "causal"
    assert (w.trace.weights[:, np.triu_indices(w.trace.seq_len, 1)[0],
                            np.triu_indices(w.trace.seq_len, 1)[1]] == 0).all()
    w.controls["n_kv_heads"].value = 2
    assert w.trace.n_kv_heads == 2
    assert_display_matches(w)


def test_controls_show_every_setting_made_from_python(w):
    changes = {"text": "A new sentence, here.", "d_model": 48, "n_heads": 6, "n_kv_heads": 3,
               "temperature": 2.5, "mask": "sliding", "window": 2, "seed": 4,
               "positional": False, "colormap": "magma", "head": 5, "query": 3, "step": 5}
    for name, value in changes.items():
        setattr(w, name, value)
        for other, ctrl in w.controls.items():
            want = w.n_kv_heads or w.n_heads if other == "n_kv_heads" else getattr(w, other)
            assert ctrl.value == want, (name, other)
    assert not w.controls["window"].disabled
    w.n_kv_heads = None  # as many as n_heads: the control shows that number
    assert w.controls["n_kv_heads"].value == 6 and list(w.controls["n_kv_heads"].options) == [
        1, 2, 3, 6]
    w.mask = "causal"
    assert w.controls["window"].disabled
    assert [label for label, _ in w.controls["query"].options] == [
        "(none)", "0: A", "1: new", "2: sentence", "3: ,", "4: here", "5: ."]


def test_one_change_computes_once_and_the_controls_never_write_back():
    """d_model 64 -> 24 snaps 16 heads to 12 and gives the n_heads slider new options; while the
    controls are updated, their own change events (a slider whose options change passes through
    other values) must not reach the traits."""
    w = Detailed(TEXT, d_model=64, n_heads=16)
    calls, seen = [], []
    trace = w._source.trace
    w._source.trace = lambda *a: calls.append(1) or trace(*a)
    w.observe(lambda change: seen.append(change["new"]), "n_heads")
    w.d_model = 24
    assert (w.n_heads, seen, len(calls)) == (12, [12], 1)
    assert w.controls["n_heads"].value == 12 and w.controls["d_model"].value == 24
    assert_display_matches(w)


def test_n_heads_control_offers_only_divisors(w):
    for d in (24, 48, 96):
        w.d_model = d
        options = list(w.controls["n_heads"].options)
        assert options == [h for h in range(1, d + 1) if d % h == 0]
        assert w.n_heads in options


def test_d_model_change_snaps_heads_and_says_so():
    w = Detailed(TEXT, d_model=64, n_heads=16)
    w.d_model = 24
    assert 24 % w.n_heads == 0
    assert "snapped" in w.notice and "n_heads" in w.notice
    assert "snapped" in on_page(w, "notice").value
    assert_display_matches(w)


def test_a_drag_through_widths_snaps_from_the_head_count_the_user_chose():
    """d_model dragged 64 -> 48 -> 32 with 64 heads: the notice names 64, the user's choice,
    not 48, a count the drag passed through; back at 64 the 64 heads return."""
    w = Detailed(TEXT, d_model=64, n_heads=64)
    w.controls["d_model"].value = 48  # what a drag sends, one value at a time
    assert w.n_heads == 48 and w.notice == "n_heads 64 does not divide d_model 48: snapped to 48"
    w.controls["d_model"].value = 32
    assert w.n_heads == 32 and w.notice == "n_heads 64 does not divide d_model 32: snapped to 32"
    w.controls["d_model"].value = 64
    assert w.n_heads == 64 and w.notice == ""
    w.controls["n_heads"].value = 8  # a new choice
    w.controls["d_model"].value = 12
    assert w.n_heads == 6 and "n_heads 8 does not divide d_model 12" in w.notice


def test_n_heads_change_snaps_kv_heads():
    w = Detailed(TEXT, d_model=48, n_heads=4, n_kv_heads=4)
    w.n_heads = 6
    assert w.n_heads % (w.n_kv_heads or w.n_heads) == 0
    assert_display_matches(w)


@pytest.mark.parametrize(("name", "value", "words"), [
    ("n_heads", 5, "does not divide d_model=32"),
    ("n_heads", 0, "n_heads=0"),
    ("temperature", 0.0, "temperature must be"),
    ("temperature", -1.0, "temperature must be"),
    ("temperature", float("nan"), "temperature must be"),
    ("n_kv_heads", 3, "does not divide n_heads=4"),
    ("window", 0, "window must be"),
])
def test_impossible_values_raise_and_change_nothing(w, name, value, words):
    before = w.trace
    old = getattr(w, name)
    with pytest.raises(traitlets.TraitError, match=words):
        setattr(w, name, value)
    assert getattr(w, name) == old
    assert w.trace is before


@pytest.mark.parametrize("bad", ["", "   ", "\n\t", " ".join(["tok"] * (MAX_TOKENS + 1))])
def test_bad_text_shows_message_and_recovers(w, bad):
    good = w.trace
    w.text = bad
    assert w.error and w.error in on_page(w, "error").value.replace("&#x27;", "'")
    assert w.trace is good  # the last valid diagram stays on screen
    w.text = "Now it works again."
    assert w.error == "" and on_page(w, "error").value == ""
    assert w.tokens == ["Now", "it", "works", "again", "."]
    assert_display_matches(w)


def test_user_text_is_escaped(w):
    evil = "hi <img src=x onerror=alert(1)> <script>alert(2)</script> & bye"
    w.text = evil
    html = on_page(w, "tokens").value
    assert "<img" not in html and "<script" not in html
    assert "&lt;" in html and "&amp;" in html
    assert "img" in w.tokens and "script" in w.tokens
    w.query = w.tokens.index("<")
    assert "<script" not in on_page(w, "focus-readout").value
    # axis labels are SVG text set by d3 .text(): they hold the raw token, never parsed as HTML
    labels = w.figs["weights"].y_axis.tick_labels
    assert set(labels.values()) <= set(w.tokens) and ">" in labels.values()


SENTENCE_16 = "The animal didn't cross the street because it was too tired to walk any further."


def _cell_height_px(fig) -> float:
    """A cell's height on screen: the plot's pixel height over the grid's height in cells."""
    m = fig.figure.fig_margin
    plot_px = float(fig.figure.layout.height.removesuffix("px")) - m["top"] - m["bottom"]
    return plot_px / (fig.y_scale.max - fig.y_scale.min)


def _first_row_gap_px(fig) -> float:
    """Pixels between the top axis and the first row of panels (where their titles go)."""
    return (fig.panel_offsets()[0][1] - 0.5 - fig.y_scale.min) * _cell_height_px(fig)


@pytest.mark.parametrize("n_words", [3, 12, 64, 300])
def test_titles_and_row_labels_have_room_at_every_length(n_words):
    """Every figure leaves room for a 14 px title (and a gap) between its top axis and the first
    row of panels, and its row labels (10 px text) at least 8 px apart: titles used to rise
    into the axis labels, and row labels to overprint each other, once cells got small (64
    tokens and more)."""
    words = (SENTENCE_16.rstrip(".").split() * 30)[:n_words]
    w = Detailed(" ".join(words), d_model=64, n_heads=8)
    w.query = 1  # (the query-row figure draws panels only for a chosen query)
    drawn = {name: fig for name, fig in w.figs.items() if fig.panel_offsets()}
    assert len(drawn) == len(w.figs)
    for name, fig in drawn.items():
        assert _first_row_gap_px(fig) >= 18, name
        rows = sorted(float(v) for v in fig.y_axis.tick_values)
        if len(rows) > 1:
            assert min(np.diff(rows)) * _cell_height_px(fig) >= 8 - 1e-9, name


@pytest.mark.parametrize("n_source", [60, 660])
def test_a_long_source_keeps_readable_rows_in_the_detailed_view(n_source):
    """Cross-attention over a long source: panels far wider than tall keep rows of MIN_ROW_PX
    (they were a fraction of a pixel at 660 source tokens, the rows unlabelled) while their
    columns narrow to the width; every row labelled; self-attention keeps square cells."""
    from attention_widget import plots

    source = " ".join((SENTENCE_16.split() * 60)[:n_source])
    w = Detailed("The cat sat on the mat.", d_model=64, n_heads=4, kind="cross",
                 source_text=source)
    for name in ("scores", "weights"):
        fig = w.figs[name]
        assert _cell_height_px(fig) >= plots.MIN_ROW_PX - 1e-9, name
        assert fig._cell_px < _cell_height_px(fig), name  # narrower columns, taller rows
        assert set(fig.y_axis.tick_labels.values()) == set(w.tokens), name
    square = Detailed(SENTENCE_16, d_model=64, n_heads=4).figs["weights"]
    assert square._cell_px == pytest.approx(_cell_height_px(square), rel=0.01)  # (whole px)


def test_figures_with_too_many_rows_for_titles_keep_every_panel_inside_the_image():
    """64 heads make 16 rows of panels: titles cannot all get their room there.  The layout
    then keeps the panels inside the image (it once placed them by one title gap and sized
    the image by another, drawing the last rows off its edge)."""
    w = Detailed(" ".join(["token"] * 64), d_model=64, n_heads=64)
    w.query = 1  # (the query-row figure draws panels only for a chosen query)
    for name, fig in w.figs.items():
        height, width = fig._size
        assert (fig.y_scale.max - fig.y_scale.min, fig.x_scale.max - fig.x_scale.min) == (
            height, width), name
        for (x0, y0), a in zip(fig.panel_offsets(), fig.displayed(), strict=True):
            assert y0 + a.shape[0] <= height and x0 + a.shape[1] <= width, name
        assert fig.png == b"" or decode_palette_png(fig.png)[0].shape == (height, width), name


def test_column_labels_slant_when_there_is_room_and_stand_up_when_columns_are_narrow():
    """Square figures label every key column while a label fits: slanted (-45 degrees) on wide
    columns, upright (-90) on narrow ones, where slanted labels had to drop every other token;
    labels longer than MAX_LABEL_CHARS are cut with an ellipsis, the row labels keep them."""
    from attention_widget import plots

    wide = Detailed("Tokens attend to tokens.", d_model=16, n_heads=4)
    fig = wide.figs["weights"]
    assert fig._cell_px >= plots.LABEL_PX and fig.x_axis.tick_rotate == -45
    assert sorted(fig.x_axis.tick_labels.values()) == sorted(wide.tokens * 4)

    narrow = Detailed(SENTENCE_16, d_model=64, n_heads=8)  # 16 tokens, 4 heads a row
    for name in ("scores", "weights"):
        fig = narrow.figs[name]
        assert fig._cell_px < plots.LABEL_PX and fig.x_axis.tick_rotate == -90, name
        assert sorted(fig.x_axis.tick_labels.values()) == sorted(narrow.tokens * 4), name

    long = Detailed("a supercalifragilistic word", d_model=16, n_heads=2)
    cols = set(long.figs["weights"].x_axis.tick_labels.values())
    assert cols == {"a", "supercalif…", "word"} and len("supercalif…") == plots.MAX_LABEL_CHARS
    assert "supercalifragilistic" in long.figs["weights"].y_axis.tick_labels.values()


def test_gqa_shares_kv_heads():
    w = Detailed(TEXT, d_model=32, n_heads=8, n_kv_heads=2)
    tr = w.trace
    assert tr.k.shape == (2, tr.seq_len, 4)
    assert [tr.kv_head(h) for h in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    k_disp = w.displayed("qkv")[1]
    assert k_disp.shape == (tr.seq_len, 8)  # 2 kv heads x d_head 4
    assert_display_matches(w)


def test_masks_draw_masked_cells():
    w = Detailed(TEXT, d_model=32, n_heads=4, mask="sliding", window=2)
    tr = w.trace
    expected = np.tri(tr.seq_len, dtype=bool) & ~np.tri(tr.seq_len, k=-2, dtype=bool)
    np.testing.assert_array_equal(tr.mask, expected)
    cells = w.figs["weights"].displayed_cells()
    assert len(cells) == w.n_heads
    for grid in cells:  # grey exactly on the masked cells, a colour level elsewhere
        np.testing.assert_array_equal(grid == plots.MASKED, ~expected)
    assert_image_shows(w.figs["weights"])
    assert all((grid != plots.MASKED).all() for grid in w.figs["scores"].displayed_cells())
    _, palette, _ = decode_palette_png(w.figs["weights"].png)
    assert tuple(palette[plots.MASKED]) == colors.MASK_RGB
    w.mask = "none"
    for grid in w.figs["weights"].displayed_cells():
        assert (grid != plots.MASKED).all()


def test_colormap_switch(w):
    w.colormap = "cividis"
    assert w.controls["colormap"].value == "cividis"
    weights = w.figs["weights"].color_scale
    assert list(weights.colors) == colors.hex_colors("cividis")
    assert weights.min == 0 and weights.max == 1
    scale = w.figs["scores"].color_scale
    assert list(scale.colors) == colors.hex_colors(colors.PAIRED_DIVERGING["cividis"])
    assert scale.min == -scale.max  # signed arrays: symmetric around 0
    for name in ("weights", "scores"):
        assert_image_shows(w.figs[name])  # the images were coloured anew
    w.controls["colormap"].value = "magma"  # the control drives the trait
    assert w.colormap == "magma" and list(weights.colors) == colors.hex_colors("magma")


@pytest.mark.parametrize("colormap", ["viridis", "cividis", "greys"])
def test_screen_colours_are_the_colour_systems(colormap):
    """Every cell of every figure is drawn in the RGB that attention_widget.colors gives its
    value (the colours the exports use): weights on the sequential table over 0..1, signed
    arrays on its paired diverging table over the figure's symmetric range; masked cells in
    the mask grey."""
    w = Detailed(TEXT, d_model=32, n_heads=4, mask="causal", colormap=colormap)
    w.query = 2
    for name, fig in w.figs.items():
        indices, palette, _ = decode_palette_png(fig.png)
        table = colormap if name in ("weights", "focus") else colors.PAIRED_DIVERGING[colormap]
        low, high = float(fig.color_scale.min), float(fig.color_scale.max)
        for arr, (x0, y0) in zip(fig.displayed(), fig.panel_offsets(), strict=True):
            rows, cols = arr.shape
            rgb = palette[indices[int(y0):int(y0) + rows, int(x0):int(x0) + cols]]
            want = colors.to_rgb(arr, table, low, high)
            if name in ("weights", "focus"):
                want[~w.trace.mask] = colors.MASK_RGB
            np.testing.assert_array_equal(rgb, want, err_msg=name)


def test_focus_head_and_query(w):
    w.head = 2
    np.testing.assert_allclose(w.displayed("focus")[0], w.trace.weights[2], atol=1e-6)
    w.query = 3
    contrib, out_row = w.displayed("contrib")
    tr = w.trace
    np.testing.assert_allclose(contrib.sum(axis=0), tr.head_outputs[2, 3], atol=1e-5)
    np.testing.assert_allclose(out_row[0], tr.head_outputs[2, 3], atol=1e-6)
    assert w.figs["weights"].highlight.visible
    assert by_class(w, "aw-fig-contrib") == [w.figs["contrib"].figure]
    w.query = -1
    assert by_class(w, "aw-fig-contrib") == []
    assert not w.figs["weights"].highlight.visible
    with pytest.raises(traitlets.TraitError):
        w.head = 4


def hover_grid(w: AttentionWidget) -> list:
    """The focus figure's per-cell hover marks."""
    return [m for m in w.figs["focus"].figure.marks if isinstance(m, bq.GridHeatMap)]


def test_hover_readout_names_tokens(w):
    # bqplot sends the hovered cell's row and column values (data coordinates of the grid,
    # which sits below the panel's title rows), as seen in Chromium
    grid, = hover_grid(w)
    readout = on_page(w, "hover")
    from_browser(grid, {"event": "hover", "data": {
        "row": float(grid.row[1]), "column": float(grid.column[3]), "color": 0.0}})
    assert "query <b>cat</b> (1)" in readout.value
    assert "key <b>on</b> (3)" in readout.value
    assert f"{w.trace.weights[0, 1, 3]:.4f}" in readout.value
    before = readout.value
    # not a cell: nothing changes
    from_browser(grid, {"event": "hover", "data": {"row": 99.5, "column": 0.5}})
    assert readout.value == before


def test_step_through_reveals_stages_in_order(w):
    def stages_on_page():
        return [len(by_class(w, f"aw-stage-{i}")) for i in range(1, 7)]

    w.step = 1
    assert stages_on_page() == [1, 0, 0, 0, 0, 0]
    assert by_class(w, "aw-focus") == []
    play = on_page(w, "play")
    assert w.controls["step"].value == 1 and play.value == 1
    play.value = 4  # the player drives the same trait
    assert w.step == 4
    assert stages_on_page() == [1] * 4 + [0] * 2
    w.temperature = 0.5  # hidden stages still follow the controls
    w.step = 6
    assert stages_on_page() == [1] * 6 and len(by_class(w, "aw-focus")) == 1
    assert_display_matches(w)


def test_temperature_change_sends_only_what_changed():
    w = Detailed(" ".join(f"w{i}" for i in range(64)), d_model=256, n_heads=8)
    w.temperature = 0.5
    tr = w.trace
    # one byte a cell (palette PNG) at most, for the stages that change, and the focus panel
    cells = tr.weights.size + tr.head_outputs.size + tr.concat.size + tr.output.size
    assert 0 < w.bytes_sent <= 1.1 * (cells + tr.weights[0].size)


def test_from_arrays_shows_user_arrays():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 12))
    params = init_params(12, 3, seed=7, bias=True)
    w = AttentionWidget.from_arrays(x, params, tokens=["a", "b", "<b>", "a", "."], n_heads=3,
                                    view="detailed", mask="causal")
    ref = multi_head_attention(x, params, n_heads=3, mask="causal")
    np.testing.assert_array_equal(w.trace.output, ref.output)
    np.testing.assert_allclose(w.displayed("weights")[1], ref.weights[1], atol=1e-6)
    # fixed by the arrays: not drawn, and one line says so
    assert all(w.controls[n].layout.display == "none" for n in ("text", "d_model", "seed"))
    assert "the tokens, d_model 12" in w._panel.source_line.value
    w.temperature = 0.5
    ref = multi_head_attention(x, params, n_heads=3, mask="causal", temperature=0.5)
    np.testing.assert_allclose(w.trace.weights, ref.weights)
    with pytest.raises(traitlets.TraitError, match="d_model is fixed"):
        w.d_model = 24
    with pytest.raises(ValueError, match="tokens has 2 entries"):
        AttentionWidget.from_arrays(x, params, tokens=["a", "b"], n_heads=3)
    with pytest.raises(ValueError, match="x has width"):
        AttentionWidget.from_arrays(x[:, :4], params, n_heads=3)
    with pytest.raises(ValueError, match=r"mask must be 'none', 'causal' or 'sliding', got a "
                                         r"ndarray; .*from_attentions\(trace.weights"):
        AttentionWidget.from_arrays(x, params, n_heads=3, mask=np.tri(5, dtype=bool))


def test_large_input_stays_drawable():
    text = " ".join(f"t{i % 50}" for i in range(300))
    w = Detailed(text, d_model=64, n_heads=4)
    assert w.trace.seq_len == 300
    assert len(w.figs["weights"].x_axis.tick_values) <= 4 * 32  # labels thinned, not 300/panel
    assert w.figs["focus"].png and hover_grid(w) == []  # no per-cell DOM at this size


# ----------------------------------------------------------------------------------------------
# stateful: random sequences of changes keep every invariant
# ----------------------------------------------------------------------------------------------
class WidgetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.w = Detailed("one two three two one", d_model=16, n_heads=2)

    @rule(d=st.sampled_from([8, 12, 16, 24, 32]))
    def set_d_model(self, d):
        self.w.d_model = d

    @rule(data=st.data())
    def set_heads(self, data):
        self.w.n_heads = data.draw(st.sampled_from(list(self.w.controls["n_heads"].options)))

    @rule(data=st.data())
    def set_kv(self, data):
        self.w.controls["n_kv_heads"].value = data.draw(
            st.sampled_from(list(self.w.controls["n_kv_heads"].options)))

    @rule(t=st.floats(0.05, 20))
    def set_temperature(self, t):
        self.w.temperature = t

    @rule(m=st.sampled_from(["none", "causal", "sliding"]), win=st.integers(1, 6))
    def set_mask(self, m, win):
        self.w.window = win
        self.w.mask = m

    @rule(text=st.text(max_size=40))
    def set_text(self, text):
        self.w.text = text

    @rule(h=st.integers(-3, 40))
    def set_bad_heads(self, h):
        try:
            self.w.n_heads = h
        except traitlets.TraitError:
            pass

    @rule(q=st.integers(-1, 10))
    def set_query(self, q):
        if q < len(self.w.tokens):
            self.w.query = q

    @invariant()
    def consistent(self):
        w = self.w
        # what is drawn is always one consistent trace; while the text is bad it is the last
        # valid one (the error says so), otherwise it follows every setting
        assert len(w.figs["weights"].displayed()) == w.trace.n_heads
        assert on_page(w, "summary").value == w.summary
        if not w.error:
            assert w.trace.n_heads == w.n_heads
            assert_display_matches(w)
            assert w.trace.q.shape == (w.n_heads, len(w.tokens), w.d_model // w.n_heads)


WidgetMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=12, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestWidgetStateful = WidgetMachine.TestCase


def test_stage_headers_state_shapes():
    w = Detailed(TEXT, d_model=32, n_heads=8, n_kv_heads=2)
    heads = [h.value for h in by_class(w, "aw-stage-head")]
    assert len(heads) == 6 and "1 · tokens and input X" in heads[0]
    assert "[input X: 12 × 32]" in heads[0]
    assert "[queries Q: 8 × 12 × 4 · keys K: 2 × 12 × 4 · values V: 2 × 12 × 4]" in heads[1]
    assert "[scores: 8 × 12 × 12]" in heads[2] and "[attention weights: 8 × 12 × 12]" in heads[3]
    assert "[head outputs: 8 × 12 × 4]" in heads[4]
    assert "[concat: 12 × 32 · output: 12 × 32]" in heads[5]
    assert "softmax(scores / T)" in heads[3] and "√d<sub>head</sub>" in heads[2]
    w.n_heads = 4
    heads = [h.value for h in by_class(w, "aw-stage-head")]
    assert "[attention weights: 4 × 12 × 12]" in heads[3] and "keys K: 2 × 12 × 8" in heads[1]


def test_a_view_is_built_when_first_shown():
    """A new widget sends the models of the view it shows, not those of every view.

    With every view built, a widget of a sentence sent 961 messages (682 widget models); a
    notebook showing several at once lost some of them on the way to the browser.
    """
    with record_comm_messages() as rec:
        w = AttentionWidget(TEXT, d_model=32, n_heads=4)
    assert len(rec.messages) <= 400, len(rec.messages)  # 372 in December 2026
    assert by_class(w, "aw-overview") and not by_class(w, "aw-stage")
    assert w._built_diagram is None and w._built_long is None
    w.colormap = "cividis"
    with record_comm_messages() as rec:
        w.view = "detailed"  # built now, in the colours chosen before
    assert len(rec.messages) > 200 and len(by_class(w, "aw-stage")) == 6
    assert list(w.figs["weights"].color_scale.colors) == colors.hex_colors("cividis")
    assert_image_shows(w.figs["weights"])
    np.testing.assert_allclose(w.displayed("weights")[0], w.trace.weights[0], atol=1e-6)


def test_a_new_widget_sends_its_settings_with_its_models():
    """CSS classes and description widths travel in each model as it opens, and the PNG
    buffers of the overview share one layout: none costs a message of its own."""
    with record_comm_messages() as rec:
        AttentionWidget(TEXT, d_model=32, n_heads=4)
    updated = {key for kind, data, _ in rec.messages if kind != "comm_open"
               for key in data.get("state", {})}
    assert not updated & {"_dom_classes", "description_width", "layout"}, updated
    opened = [data["state"] for kind, data, _ in rec.messages if kind == "comm_open"]
    buffers = [st for st in opened if st["_model_name"] == "ImageModel"
               and st["_model_module"] == "@jupyter-widgets/controls"]
    assert len(buffers) > 20 and len({st["layout"] for st in buffers}) == 1
    classes = {c for st in opened for c in st.get("_dom_classes", ())}
    assert {"attention-widget", "aw-text", "aw-temperature", "aw-group", "aw-controls",
            "aw-overview", "aw-export-button", "aw-play"} <= classes
    widths = [st["description_width"] for st in opened if "description_width" in st]
    assert widths.count("initial") >= 20


def test_the_weights_header_names_only_the_marks_drawn():
    """Grey (masked) and rose (not kept) are explained where such cells are drawn, only."""
    w = AttentionWidget(TEXT, d_model=32, n_heads=4, view="detailed")

    def weights_head() -> str:
        return by_class(w, "aw-stage-head")[3].value

    assert "grey" not in weights_head() and "rose" not in weights_head()
    w.mask = "causal"
    assert "grey = masked" in weights_head() and "rose" not in weights_head()
    w.top_k = 2  # the formula names both (as in the exports): once, not twice
    assert weights_head().count("rose") == 1 and weights_head().count("grey") == 1
    w.mask, w.top_k = "none", 0
    assert "grey" not in weights_head() and "rose" not in weights_head()


def test_head_query_and_step_can_be_given_when_the_widget_is_made():
    """They are set after n_heads and the text, so they are checked against those."""
    w = AttentionWidget(TEXT, d_model=32, n_heads=8, head=6, query=3, step=2, top_k=2,
                        show_model_view=False)
    assert (w.head, w.query, w.step, w.top_k, w.show_model_view) == (6, 3, 2, 2, False)
    with pytest.raises(traitlets.TraitError, match=r"head must be in 0\.\.7, got 8"):
        AttentionWidget(TEXT, d_model=32, n_heads=8, head=8)
    with pytest.raises(ValueError, match="query must be -1 or a token index < 12, got 12"):
        AttentionWidget(TEXT, d_model=32, n_heads=8, query=12)
    with pytest.raises(traitlets.TraitError, match="query must be -1 or a token index, got -2"):
        AttentionWidget(TEXT, d_model=32, query=-2)


def test_a_misspelt_keyword_is_refused_not_ignored():
    with pytest.raises(TypeError, match="'temprature'; did you mean 'temperature'"):
        AttentionWidget(TEXT, temprature=0.5)
    with pytest.raises(traitlets.TraitError, match="scales must be a dict"):
        AttentionWidget(TEXT, scales="per head")
    w = AttentionWidget(TEXT, layout={"width": "500px"})  # the box's own traits still pass
    assert w.layout.width == "500px"
    with pytest.raises(ValueError, match=r"stage must be one of .*'weights'.*, got 'weight'"):
        w.displayed("weight")


def test_a_title_too_long_for_its_panel_keeps_the_head():
    # "head 0: weights (3 × 3)" over a 3-key panel: its head, not its last word "3)"
    w = Detailed("a short one", d_model=16, n_heads=2)
    assert list(w.figs["focus"].titles.text) == ["head 0"]
    w.text = TEXT
    assert list(w.figs["focus"].titles.text) == ["head 0: weights (12 × 12)"]


def test_slow_recompute_shows_busy_before_computing():
    with record_comm_messages() as rec:
        w = Detailed(TEXT, d_model=32, n_heads=4)
        w._last_compute_s = 0.5  # the previous update was slow: the next one announces itself
        rec.clear()
        w.temperature = 0.25
    busy = [d["state"]["value"] for _, d, _ in rec.messages
            if d.get("method") == "update" and "computing" in str(d.get("state", {}).get("value"))]
    assert busy and "temperature=0.25" in busy[0]
    assert on_page(w, "busy").value == ""  # cleared once the diagram is drawn


def test_panel_titles_follow_a_new_layout():
    w = Detailed(TEXT, d_model=64, n_heads=16)
    fig = w.figs["scores"]
    w.text = " ".join(f"t{i}" for i in range(31))
    expected = [x0 - 0.5 for x0, _ in fig.panel_offsets()]
    np.testing.assert_array_equal(fig.titles.x, expected)
    # anchored at each panel's top edge, and drawn a fixed number of pixels above it: bqplot
    # centres the text (a 14 px box) there, so the box ends above the panel and stays within
    # TITLE_PX of it (the browser tests check where titles land on screen)
    np.testing.assert_array_equal(fig.titles.y, [y0 - 0.5 for _, y0 in fig.panel_offsets()])
    assert 8 <= -fig.titles.y_offset <= plots.TITLE_PX - 7


def test_unexpected_failure_keeps_the_widget_alive(w, monkeypatch):
    import attention_widget.cached as module

    def boom(*args, **kwargs):
        raise MemoryError("no room")

    good = w.trace
    # (a temperature step reuses the scores through with_temperature; other changes recompute)
    monkeypatch.setattr(module, "multi_head_attention", boom)
    monkeypatch.setattr(module, "with_temperature", boom)
    for name, value in (("temperature", 0.5), ("seed", 3)):
        setattr(w, name, value)
        assert "MemoryError: no room" in w.error and "MemoryError" in on_page(w, "error").value, (
            name)
        assert w.trace is good
    monkeypatch.undo()
    w.temperature = 0.6
    assert w.error == "" and w.trace.temperature == 0.6 and w.trace is not good


def test_a_temperature_step_reuses_the_scores_and_draws_what_a_fresh_widget_draws(monkeypatch):
    import attention_widget.cached as module

    w = Detailed(TEXT, d_model=32, n_heads=4, n_kv_heads=2, mask="causal")
    first = w.trace
    calls = []
    full = module.multi_head_attention
    monkeypatch.setattr(module, "multi_head_attention",
                        lambda *a, **k: calls.append(1) or full(*a, **k))
    for t in (0.3, 2.5):
        w.temperature = t
        assert not calls, "a temperature step ran the whole layer"
        assert w.trace.scores is first.scores and w.trace.q is first.q
        fresh = Detailed(TEXT, d_model=32, n_heads=4, n_kv_heads=2, mask="causal",
                                temperature=t)
        for stage in w.figs:
            for got, want in zip(w.displayed(stage), fresh.displayed(stage), strict=True):
                np.testing.assert_array_equal(got, want, err_msg=stage)
            assert w.figs[stage].png == fresh.figs[stage].png, stage
        assert w.summary == fresh.summary
        assert_display_matches(w)
        calls.clear()
    monkeypatch.undo()
    for name, value in (("n_heads", 8), ("mask", "none"), ("text", TEXT + " Again."),
                        ("d_model", 16), ("seed", 1)):  # anything else computes anew
        before = w.trace
        setattr(w, name, value)
        assert w.trace.scores is not before.scores, name
        assert_display_matches(w)


def test_unchanged_stages_send_nothing_and_a_new_layout_redraws():
    w = Detailed(TEXT, d_model=32, n_heads=4)
    before = {s: (w.figs[s].png, w.figs[s].image.image) for s in ("x", "qkv", "scores")}
    w.temperature = 0.5  # scores are before the temperature: stages 1-3 stay as they are
    for stage, (png, shown) in before.items():
        assert w.figs[stage].png is png and w.figs[stage].image.image is shown, stage
    assert_display_matches(w)
    fig = plots.PanelFigure("aw-test", signed=True)
    panels = [plots.Panel(np.eye(3) * (i + 1)) for i in range(4)]
    fig.update(panels, ncols=4)
    wide = fig.png
    assert fig.update(panels, ncols=4) == 0 and fig.png is wide  # same arrays: nothing sent
    assert fig.update(panels, ncols=2) > 0  # same arrays, new grid: a new image
    assert decode_palette_png(fig.png)[0].shape != decode_palette_png(wide)[0].shape
    assert_image_shows(fig)


def test_a_step_sends_every_image_then_switches_them_back_to_back():
    """Each new PNG goes out as its figure is drawn; the marks switch to them at the end, one
    message after another, then the summary: the browser repaints once, not once per figure."""
    with record_comm_messages() as rec:
        w = Detailed(TEXT, d_model=32, n_heads=4)
        buffers = {id(b): s for s, f in w.figs.items() for b in f._image._buffers}
        marks = {f.image.comm.comm_id: s for s, f in w.figs.items()}
        rec.clear()
        w.temperature = 0.5
    kinds = []
    for _, data, bufs in rec.messages:
        state = data.get("state", {})
        if "image" in state:
            kinds.append("switch")
        elif bufs and bytes(bufs[0]).startswith(b"data:image/png;base64,"):
            kinds.append("png")  # (bytes travel as binary buffers)
        elif "seq_len=" in str(state.get("value", "")):
            kinds.append("summary")
        else:
            kinds.append("other")
    changed = ("weights", "outputs", "concat", "focus")  # what a temperature step changes
    assert kinds.count("png") == kinds.count("switch") == len(changed), kinds
    first_switch = kinds.index("switch")
    assert "png" not in kinds[first_switch:], kinds  # every image was sent before any switch
    assert kinds[first_switch:first_switch + len(changed)] == ["switch"] * len(changed), kinds
    assert kinds.index("summary") > first_switch + len(changed) - 1, kinds
    assert len(buffers) == 2 * len(w.figs) and len(marks) == len(w.figs)
    for stage in changed:
        assert_image_shows(w.figs[stage])  # each mark shows its figure's new PNG
    assert_display_matches(w)


def test_shown_together_defers_switches_but_not_new_layouts():
    fig = plots.PanelFigure("aw-test", signed=False)
    panels = [plots.Panel(np.full((3, 3), 0.25 * (i + 1))) for i in range(2)]
    fig.update(panels, ncols=2)
    shown = fig.image.image
    with plots.shown_together([fig]):
        fig.update([plots.Panel(p.array / 2) for p in panels], ncols=2)
        assert fig.image.image is shown  # filled the other buffer, not switched yet
        fig.update([plots.Panel(p.array / 3) for p in panels], ncols=2)  # again: same buffer
        assert fig.image.image is shown
    assert fig.image.image is not shown  # switched on leaving, to the latest image
    assert_image_shows(fig)
    np.testing.assert_allclose(fig.displayed()[1], panels[1].array / 3, atol=1 / 252)
    before = fig.image.image
    with plots.shown_together([fig]):
        fig.update(panels, ncols=1)  # a new layout: axes and image switch together, at once
        assert fig.image.image is not before
    assert_image_shows(fig)


def test_axes_learn_new_tick_labels_before_anything_moves_their_ticks():
    """Every message that makes bqplot redraw an axis's ticks (new tick values, or a new
    extent of its scale) finds the axis already holding the final label of every final tick.

    bqplot redraws ticks in a transition that keeps the labels the axis had when it was
    scheduled; before this order, a 31-token sentence after a 25-word one showed X's rows as
    the numbers 4, 6, ..., 34 in JupyterLab, Notebook 7 and Voila alike (found in Chromium;
    the browser tests now type that sequence).  Checked here message by message, as the
    front end would apply them, over texts of many lengths."""
    from attention_widget.plots import _key

    texts = [" ".join(f"w{i}" for i in range(n)) for n in (25, 31, 2, 40, 12, 13, 64, 1)]
    texts.insert(2, "<img src=x onerror=alert(1)> <script>alert(2)</script> a b c d e f g h")
    with record_comm_messages() as rec:
        w = Detailed(TEXT, d_model=32, n_heads=4)
        axes = [a for f in w.figs.values() for a in (f.x_axis, f.y_axis)]
        seen = {id(a): dict(a.tick_labels or {}) for a in axes}  # labels the browser holds
        for text in texts:
            rec.clear()
            w.text = text
            order = [(cid, msg["state"]) for cid, msg in rec.sent if msg.get("method") == "update"]
            for axis in axes:
                final = {_key(v): axis.tick_labels[_key(v)] for v in axis.tick_values}
                labels = seen[id(axis)]
                for comm_id, state in order:
                    redraws = (comm_id == axis.comm.comm_id and "tick_values" in state) or (
                        comm_id == axis.scale.comm.comm_id and {"min", "max"} & set(state))
                    if redraws:
                        missing = {k: (labels.get(k), v) for k, v in final.items()
                                   if labels.get(k) != v}
                        assert not missing, (text[:20], axis.side, missing)
                    if comm_id == axis.comm.comm_id and "tick_labels" in state:
                        labels = dict(state["tick_labels"])
                assert labels == axis.tick_labels  # the browser ends with the kernel's labels
                seen[id(axis)] = labels


def test_feature_columns_are_numbered_within_each_panel():
    """Q, K and V (and every head's output) number their columns from 0, as their features
    are: before, the axis counted across the whole grid and K's first column read 68."""
    from attention_widget.plots import NUMBER_PX

    w = Detailed(TEXT, d_model=64, n_heads=4, n_kv_heads=2)
    for stage, n_panels in (("qkv", 3), ("outputs", 4), ("x", 1)):
        fig = w.figs[stage]
        labels = {float(v): fig.x_axis.tick_labels[str(int(v))] for v in fig.x_axis.tick_values}
        offsets = [x0 for x0, _ in fig.panel_offsets()]
        assert len(offsets) == n_panels
        widths = [b - a for a, b in zip(offsets, [*offsets[1:], fig._size[1] + 2], strict=True)]
        for x0, width in zip(offsets, widths, strict=True):
            mine = {v - x0: text for v, text in labels.items() if x0 <= v < x0 + width - 2}
            assert mine[0.0] == "0", (stage, x0)
            assert all(text == str(int(j)) for j, text in mine.items()), (stage, mine)
            steps = np.diff(sorted(mine))
            assert len(set(steps)) <= 1 and all(int(s) & (int(s) - 1) == 0 for s in steps)
            # numbers at least NUMBER_PX apart on a PLOT_WIDTH_PX-wide plot (the figures are
            # as wide as the notebook)
            px = plots.PLOT_WIDTH_PX / fig._size[1]
            assert all(s * px >= NUMBER_PX for s in steps), (stage, steps, px)

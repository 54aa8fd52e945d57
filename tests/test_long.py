"""The block-wise path for long inputs against the full trace and plain NumPy references."""

from __future__ import annotations

import math
import threading
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attention_widget.long as long_module
import attention_widget.long_blocks as blocks_module
from attention_widget import AttentionTrace, init_params, multi_head_attention
from attention_widget.engine import attend
from attention_widget.long import (
    AttentionCancelled,
    LongTrace,
    attention_trace,
    estimate_long_memory,
    long_attention,
    long_with_temperature,
    overview_tile,
)

# (mask, window, n_heads, n_kv_heads, temperature)
CASES = [
    (None, None, 4, 4, 1.0),
    ("causal", None, 4, 4, 1.0),
    ("sliding", 300, 4, 4, 1.0),
    ("causal", None, 4, 2, 1.0),  # grouped-query attention
    ("causal", None, 4, 1, 0.25),  # multi-query, sharp
    ("sliding", 37, 4, 2, 3.0),
]


def layer(seq_len, d_model=64, n_heads=4, n_kv=None, seed=0, bias=False):
    x = np.random.default_rng(seed).standard_normal((seq_len, d_model))
    return x, init_params(d_model, n_heads, n_kv, seed=seed, bias=bias)


def tile_reference(values, visible, tile, reduce):
    """Reduce every tile x tile square of one head's cells over its visible cells (NaN if none).

    Masked cells become NaN, the square is padded with NaN to whole tiles, and each tile's
    cells are laid out along a last axis for ``reduce``.
    """
    n = values.shape[0]
    side = math.ceil(n / tile)
    cells = np.full((side * tile, side * tile), np.nan)
    cells[:n, :n] = np.where(visible, values, np.nan)
    cells = cells.reshape(side, tile, side, tile).transpose(0, 2, 1, 3).reshape(side, side, -1)
    return reduce(cells)


def tile_max(cells):
    return np.fmax.reduce(cells, axis=-1)  # ignores NaN; NaN when every cell is NaN


def largest_magnitude(cells):
    pick = np.argmax(np.nan_to_num(np.abs(cells), nan=-1.0), axis=-1)[..., None]
    return np.take_along_axis(cells, pick, axis=-1)[..., 0]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}/{c[3]}-T{c[4]}")
def pair(request):
    """The full float64 trace and the block-wise float64 one of a 2,048-token layer."""
    mask, window, n_heads, n_kv, temperature = request.param
    x, params = layer(2048, n_heads=n_heads, n_kv=n_kv, bias=True)
    kwargs = dict(n_heads=n_heads, n_kv_heads=n_kv, mask=mask, window=window,
                  temperature=temperature)
    full = multi_head_attention(x, params, **kwargs)
    blocks = long_attention(x, params, dtype=np.float64, **kwargs)
    return full, blocks, params


def test_block_wise_weights_equal_the_full_trace(pair):
    full, blocks, _ = pair
    assert blocks.tile == 4 and blocks.weights_overview.shape == (full.n_heads, 512, 512)
    for h in range(full.n_heads):
        np.testing.assert_allclose(blocks.head_weights(h), full.weights[h], rtol=0, atol=1e-10)
    for name in ("x", "q", "k", "v", "head_outputs", "concat", "output", "entropy"):
        np.testing.assert_allclose(getattr(blocks, name), getattr(full, name), rtol=0,
                                   atol=1e-10, err_msg=name)
    assert blocks.seq_len == 2048 and blocks.n_kv_heads == full.n_kv_heads
    np.testing.assert_allclose(blocks.head_entropy, full.head_entropy, atol=1e-10)


def test_overviews_are_tile_extremes_of_the_exact_cells(pair):
    full, blocks, _ = pair
    visible = full.mask
    for h in (0, full.n_heads - 1):
        expected = tile_reference(full.weights[h], visible, 4, tile_max)
        np.testing.assert_array_equal(np.isnan(blocks.weights_overview[h]), np.isnan(expected))
        np.testing.assert_allclose(blocks.weights_overview[h], expected, rtol=0, atol=1e-12)
        expected = tile_reference(full.scores[h], visible, 4, largest_magnitude)
        np.testing.assert_allclose(blocks.scores_overview[h], expected, rtol=0, atol=1e-12)
    assert np.array_equal(blocks.overview_visible, ~np.isnan(expected))


def test_zoom_lens_and_top_keys_are_exact(pair):
    full, blocks, _ = pair
    h = full.n_heads - 1
    rows, cols = slice(1000, 1064), slice(900, 964)
    np.testing.assert_allclose(blocks.block(h, rows, cols), full.weights[h, rows, cols],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(blocks.block(h, rows, cols, stage="scores"),
                               full.scores[h, rows, cols], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(blocks.visible(rows, cols), full.mask[rows, cols])
    picked = np.array([5, 2047, 17])
    np.testing.assert_allclose(blocks.block(0, picked, picked), full.weights[0][np.ix_(picked,
                               picked)], rtol=0, atol=1e-12)
    for query in (0, 3, 1500):
        row = blocks.row(h, query)
        np.testing.assert_allclose(row, full.weights[h, query], rtol=0, atol=1e-12)
        top = blocks.top_keys(h, query, k=10)
        seen = np.flatnonzero(full.mask[query])
        order = seen[np.argsort(-full.weights[h, query, seen], kind="stable")][:10]
        np.testing.assert_array_equal(top.positions, order)
        np.testing.assert_allclose(top.weights, full.weights[h, query, order], atol=1e-12)


def test_temperature_step_equals_the_full_trace_at_that_temperature(pair):
    full, blocks, params = pair
    kwargs = dict(n_heads=full.n_heads, n_kv_heads=full.n_kv_heads, window=blocks.window,
                  mask=None if blocks.mask_kind == "none" else blocks.mask_kind)
    hotter = multi_head_attention(full.x, params, temperature=2.5, **kwargs)
    stepped = long_with_temperature(blocks, params, 2.5)
    assert stepped.temperature == 2.5 and blocks.temperature == full.temperature
    assert stepped.scores_overview is blocks.scores_overview and stepped.q is blocks.q
    np.testing.assert_allclose(stepped.head_weights(1), hotter.weights[1], rtol=0, atol=1e-10)
    for name in ("head_outputs", "output", "entropy"):
        np.testing.assert_allclose(getattr(stepped, name), getattr(hotter, name), rtol=0,
                                   atol=1e-10, err_msg=name)
    expected = tile_reference(hotter.weights[1], hotter.mask, 4, tile_max)
    np.testing.assert_allclose(stepped.weights_overview[1], expected, rtol=0, atol=1e-12)


def test_a_temperature_step_computes_the_outputs_once_when_first_read(monkeypatch):
    """No view of a long trace draws the head outputs: a temperature step computes weights
    only, and the outputs (another pass) when first read, once, equal to a full pass's."""
    x, params = layer(700, n_heads=4, n_kv=2)
    trace = long_attention(x, params, n_heads=4, n_kv_heads=2, mask="causal", dtype=np.float64)
    with_values = []

    def counted_attend(q, k, v, **kwargs):
        with_values.append(v is not None)
        return attend(q, k, v, **kwargs)

    monkeypatch.setattr(blocks_module, "attend", counted_attend)
    stepped = long_with_temperature(trace, params, 0.6)
    assert with_values and not any(with_values)  # every block: the weights alone
    with_values.clear()
    full = long_attention(x, params, n_heads=4, n_kv_heads=2, mask="causal", temperature=0.6,
                          dtype=np.float64)
    assert with_values and all(with_values)
    with_values.clear()
    for name in ("output", "concat", "head_outputs", "output"):
        np.testing.assert_array_equal(getattr(stepped, name), getattr(full, name))
    assert len(with_values) == 4 * -(-700 // long_module.BLOCK_ROWS)  # one pass, every head


def test_float32_is_close_to_float64_and_stays_float32():
    x, params = layer(1200, n_kv=2)
    full = multi_head_attention(x, params, n_heads=4, n_kv_heads=2, mask="causal")
    blocks = long_attention(x, params, n_heads=4, n_kv_heads=2, mask="causal")
    assert blocks.dtype == np.float32 and blocks.tile == 3
    assert blocks.weights_overview.dtype == np.float32 and blocks.output.dtype == np.float32
    weights = blocks.head_weights(2)
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, full.weights[2], rtol=0, atol=2e-6)
    np.testing.assert_allclose(blocks.output, full.output, rtol=0, atol=2e-5)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)


def test_overview_tile_keeps_the_overview_within_512():
    assert [overview_tile(n) for n in (1, 512, 513, 2048, 5000, 8192, 32768)] == [
        1, 1, 2, 4, 10, 16, 64]
    for n in (513, 1000, 4097, 5000, 32767, 100_000):
        t = overview_tile(n)
        assert math.ceil(n / t) <= 512 < math.ceil(n / (t - 1)) if t > 1 else True
    with pytest.raises(ValueError, match="seq_len"):
        overview_tile(0)


# ---- properties -------------------------------------------------------------------------
@st.composite
def small_layers(draw):
    n_heads, n_kv = draw(st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 2), (3, 3)]))
    d_model = n_heads * draw(st.integers(1, 4))
    seq_len = draw(st.integers(1, 60))
    mask = draw(st.sampled_from([None, "causal", "sliding"]))
    window = draw(st.integers(1, 70)) if mask == "sliding" else None
    x = np.random.default_rng(draw(st.integers(0, 2**16))).normal(
        0, draw(st.sampled_from([0.1, 1.0, 4.0])), (seq_len, d_model))
    params = init_params(d_model, n_heads, n_kv, seed=draw(st.integers(0, 99)))
    return x, params, dict(n_heads=n_heads, n_kv_heads=n_kv, mask=mask, window=window,
                           temperature=draw(st.sampled_from([0.05, 0.5, 1.0, 7.0])))


def plain_weights(x, params, n_heads, n_kv_heads, mask, window, temperature):
    """softmax(Q K^T / sqrt(d_head) / T) per head, written out with NumPy alone."""
    n, d_model = x.shape
    d_head = d_model // n_heads
    q = (x @ params.w_q).reshape(n, n_heads, d_head).transpose(1, 0, 2)
    k = (x @ params.w_k).reshape(n, n_kv_heads, d_head).transpose(1, 0, 2)
    k = np.repeat(k, n_heads // n_kv_heads, axis=0)
    z = q @ k.transpose(0, 2, 1) / math.sqrt(d_head) / temperature
    i, j = np.indices((n, n))
    visible = {None: i >= 0, "causal": j <= i, "sliding": (j <= i) & (i - j < (window or 1))}
    z = np.where(visible[mask], z, -np.inf)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True), visible[mask]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_layers(), st.integers(1, 9), st.integers(1, 12))
def test_small_blocks_and_tiles_match_plain_numpy(problem, max_px, block_rows):
    """Many blocks and partial tiles on short inputs: rows sum to 1, masked keys exactly 0."""
    x, params, kwargs = problem
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(long_module, "OVERVIEW_MAX_PX", max_px)
        patch.setattr(long_module, "BLOCK_ROWS", block_rows)
        trace = long_attention(x, params, dtype=np.float64, **kwargs)
    expected, visible = plain_weights(x, params, **kwargs)
    tile = overview_tile(x.shape[0], max_px)
    assert trace.tile == tile
    for h in range(kwargs["n_heads"]):
        weights = trace.head_weights(h)
        np.testing.assert_allclose(weights, expected[h], rtol=0, atol=1e-12)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        assert (weights[~visible] == 0).all()
        reference = tile_reference(weights, visible, tile, tile_max)
        np.testing.assert_array_equal(np.isnan(trace.weights_overview[h]), np.isnan(reference))
        np.testing.assert_allclose(trace.weights_overview[h], reference, rtol=0, atol=1e-12)


# ---- memory --------------------------------------------------------------------------------
def test_estimate_is_an_upper_bound_of_what_is_allocated():
    x, params = layer(3000, d_model=128, n_heads=8, n_kv=2)
    tracemalloc.start()
    try:
        trace = long_attention(x, params, n_heads=8, n_kv_heads=2, mask="causal")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert trace.seq_len == 3000
    assert peak <= estimate_long_memory(3000, 128, 8, 2, np.float32)


def test_a_refusal_is_clear_allocates_nothing_and_changes_nothing(monkeypatch):
    x, params = layer(2000, d_model=32, n_heads=2)
    trace = long_attention(x, params, n_heads=2, mask="causal")
    kept = {name: getattr(trace, name).copy() for name in ("weights_overview", "lse", "output")}
    monkeypatch.setattr(long_module, "LONG_MEMORY_LIMIT_BYTES", 2**20)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"LONG_MEMORY_LIMIT_BYTES = 0\.00 GiB"):
            long_attention(x, params, n_heads=2, mask="causal")
        with pytest.raises(ValueError, match="temperature step at seq_len=2000"):
            long_with_temperature(trace, params, 0.5)
        with pytest.raises(ValueError, match="weights of one head at seq_len=2000"):
            trace.head_weights(0)
        with pytest.raises(ValueError, match="a block of 2000 x 2000"):
            trace.block(0, slice(None), slice(None))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**18  # nothing of the sizes refused was allocated
    for name, value in kept.items():
        np.testing.assert_array_equal(getattr(trace, name), value)
    assert trace.block(0, slice(0, 8), slice(0, 8)).shape == (8, 8)  # small asks still work


def test_head_weights_writes_into_out():
    x, params = layer(700, d_model=32, n_heads=2)
    trace = long_attention(x, params, n_heads=2, mask="sliding", window=50, dtype=np.float64)
    out = np.full((700, 700), np.nan)
    assert trace.head_weights(1, out=out) is out
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match=r"out must be an array of shape \(700, 700\)"):
        trace.head_weights(1, out=np.empty((700, 699)))


# ---- progress and cancellation -------------------------------------------------------------
def test_progress_rises_to_one_with_messages():
    x, params = layer(2000, d_model=32, n_heads=2)
    seen = []
    trace = long_attention(x, params, n_heads=2, mask="causal",
                           progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == pytest.approx(1.0)
    assert fractions == sorted(fractions) and len(seen) > 10
    assert seen[-1][1] == "attention: rows 2,000 of 2,000"
    seen.clear()
    long_with_temperature(trace, params, 2.0, progress=lambda f, m: seen.append((f, m)))
    assert seen[-1] == (pytest.approx(1.0), "temperature 2: rows 2,000 of 2,000")


class Token:
    cancelled = False


@pytest.mark.parametrize("make_token", [threading.Event, Token])
def test_cancelling_from_progress_stops_between_blocks(make_token, monkeypatch):
    x, params = layer(4000, d_model=32, n_heads=2)  # 32 blocks of 128 rows, 2 heads each
    token, calls, after_cancel = make_token(), [], []

    def counted_attend(*args, **kwargs):
        if token.is_set() if isinstance(token, threading.Event) else token.cancelled:
            after_cancel.append(1)
        return attend(*args, **kwargs)

    monkeypatch.setattr(blocks_module, "attend", counted_attend)

    def progress(fraction, message):
        calls.append(fraction)
        if len(calls) == 3:  # the projections and two blocks are done
            token.set() if isinstance(token, threading.Event) else setattr(token, "cancelled", 1)

    with pytest.raises(AttentionCancelled, match="attention: cancelled"):
        long_attention(x, params, n_heads=2, mask="causal", progress=progress, cancel=token)
    assert len(calls) == 3 and calls[-1] < 0.1  # no block was reported after the cancel
    # only the blocks already running (one per thread, two heads each) go on after the cancel
    assert len(after_cancel) <= 2 * 2


def test_a_newer_change_cancels_work_in_a_thread_and_the_old_trace_stays():
    x, params = layer(6000, d_model=64, n_heads=8)
    trace = long_attention(x, params, n_heads=8, mask="causal")
    before = trace.weights_overview.copy(), trace.output.copy()
    started, token, outcome = threading.Event(), threading.Event(), []

    def work():
        try:
            outcome.append(long_with_temperature(
                trace, params, 0.3, cancel=token, progress=lambda f, m: started.set()))
        except AttentionCancelled as err:
            outcome.append(err)

    worker = threading.Thread(target=work)
    worker.start()
    assert started.wait(60)
    token.set()
    worker.join(60)
    assert not worker.is_alive() and isinstance(outcome[0], AttentionCancelled)
    np.testing.assert_array_equal(trace.weights_overview, before[0])
    np.testing.assert_array_equal(trace.output, before[1])
    assert trace.temperature == 1.0


def test_already_cancelled_raises_before_any_block():
    x, params = layer(1000, d_model=32, n_heads=2)
    seen = []
    token = threading.Event()
    token.set()
    with pytest.raises(AttentionCancelled):
        long_attention(x, params, n_heads=2, cancel=token, progress=lambda f, m: seen.append(f))
    assert seen == [0.0]
    with pytest.raises(AttentionCancelled):
        attention_trace(x[:100], params, n_heads=2, cancel=token)


# ---- choosing the path and bad arguments -----------------------------------------------------
def test_attention_trace_chooses_by_length():
    x, params = layer(600, d_model=32, n_heads=2)
    short = attention_trace(x[:512], params, n_heads=2, mask="causal")
    assert isinstance(short, AttentionTrace) and short.weights.dtype == np.float64
    assert short.seq_len == long_module.LONG_THRESHOLD
    longer = attention_trace(x, params, n_heads=2, mask="causal")
    assert isinstance(longer, LongTrace) and longer.dtype == np.float32 and longer.tile == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(mask=np.ones((50, 50), bool)), TypeError, "for long inputs .* got ndarray"),
        (dict(mask="sliding"), ValueError, "needs window"),
        (dict(mask="sliding", window=0), ValueError, "window must be >= 1"),
        (dict(temperature=0.0), ValueError, "temperature must be a finite number > 0"),
        (dict(n_heads=3), ValueError, "not divisible by n_heads=3"),
        (dict(dtype=np.int32), TypeError, "dtype must be float32 or float64"),
        (dict(progress="yes"), TypeError, "progress must be a function"),
        (dict(cancel=1), TypeError, "cancel must be None, a threading.Event"),
        (dict(x=np.zeros(32)), ValueError, r"x must be a \(seq_len, d_model\) array"),
        (dict(x=np.zeros((50, 31))), ValueError, "x has width 31"),
        (dict(x=np.full((50, 32), np.inf)), ValueError, "x contains NaN or infinity"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    x, params = layer(50, d_model=32, n_heads=2)
    kwargs = {"x": x, "n_heads": 2, **kwargs}
    with pytest.raises(error, match=match):
        long_attention(params=params, **kwargs)


def test_bad_cell_requests_are_named():
    x, params = layer(50, d_model=32, n_heads=2)
    trace = long_attention(x, params, n_heads=2)
    with pytest.raises(ValueError, match="head must be < n_heads=2"):
        trace.row(2, 0)
    with pytest.raises(ValueError, match="query must be < seq_len=50"):
        trace.row(0, 50)
    with pytest.raises(ValueError, match=r"rows must select positions of 0\.\.49"):
        trace.block(0, slice(60, 70), slice(None))
    with pytest.raises(ValueError, match='stage must be "weights" or "scores"'):
        trace.block(0, 1, 1, stage="output")
    with pytest.raises(TypeError, match="k must be an integer"):
        trace.top_keys(0, 0, k=2.5)
    with pytest.raises(TypeError, match="trace must be a LongTrace"):
        long_with_temperature(object(), params, 1.0)


# ---- the step alone, on ready-made queries, keys and values ----------------------------------
@pytest.mark.parametrize(("mask", "window", "scale"), [("causal", None, 0.05),
                                                       ("sliding", 40, None), (None, None, 0.3)])
def test_long_attend_equals_attend_with_a_scale(mask, window, scale):
    rng = np.random.default_rng(7)
    n = 700
    q = rng.standard_normal((4, n, 16))
    k, v = rng.standard_normal((2, n, 16)), rng.standard_normal((2, n, 8))  # d_v != d_head
    i, j = np.indices((n, n))
    visible = {None: i >= 0, "causal": j <= i, "sliding": (j <= i) & (i - j < (window or 1))}
    full = attend(q, k, v, mask=visible[mask], temperature=0.7, scale=scale)
    got = long_module.long_attend(q, k, v, scale=scale, temperature=0.7, mask=mask,
                                  window=window)
    np.testing.assert_allclose(got.head_outputs, full.head_outputs, rtol=0, atol=1e-10)
    np.testing.assert_allclose(got.entropy, full.entropy, rtol=0, atol=1e-10)
    assert got.tile == 2 and got.weights_overview.shape == (4, 350, 350)
    for h in (0, 3):
        expected = tile_reference(full.weights[h], visible[mask], 2, tile_max)
        np.testing.assert_allclose(got.weights_overview[h], expected, rtol=0, atol=1e-12)
        expected = tile_reference(full.scores[h], visible[mask], 2, largest_magnitude)
        np.testing.assert_allclose(got.scores_overview[h], expected, rtol=0, atol=1e-12)
    # a LongTrace holding the scale gives the same exact cells
    trace = LongTrace(x=np.zeros((n, 1)), q=q, k=k, v=v,
                      outputs=lambda: (got.head_outputs, None, None), entropy=got.entropy,
                      lse=got.lse, weights_overview=got.weights_overview, scores_overview=None,
                      tile=got.tile,
                      mask_kind=mask or "none", window=window, temperature=0.7, scale=scale)
    np.testing.assert_allclose(trace.block(3, slice(600, 700), slice(500, 700)),
                               full.weights[3, 600:, 500:], rtol=0, atol=1e-12)
    np.testing.assert_allclose(trace.block(1, slice(0, 9), slice(0, 9), stage="scores"),
                               full.scores[1, :9, :9], rtol=0, atol=1e-12)
    without = long_module.long_attend(q, k, v, scale=scale, temperature=0.7, mask=mask,
                                      window=window, scores_overview=False)
    assert without.scores_overview is None
    np.testing.assert_array_equal(without.weights_overview, got.weights_overview)


def test_long_attend_names_bad_arguments():
    q, k = np.zeros((4, 10, 8)), np.zeros((2, 10, 8))
    with pytest.raises(ValueError, match=r"q, k, v must have shapes .* got \[\(4, 10, 8\), "):
        long_module.long_attend(q, k, np.zeros((2, 9, 8)))
    with pytest.raises(ValueError, match="n_kv_heads dividing n_heads"):
        long_module.long_attend(q, np.zeros((3, 10, 8)), np.zeros((3, 10, 8)))
    with pytest.raises(TypeError, match="share one dtype"):
        long_module.long_attend(q, k, k.astype(np.float32))
    with pytest.raises(ValueError, match='mask must be None, "none", "causal" or "sliding"'):
        long_module.long_attend(q, k, k, mask="future")
    with pytest.raises(TypeError, match="window must be an integer"):
        long_module.long_attend(q, k, k, mask="sliding")

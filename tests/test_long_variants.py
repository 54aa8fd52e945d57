"""The block-wise path with the engine's variants (sinks, soft-cap, ALiBi) against the full trace.

The reference is :func:`~attention_widget.engine.multi_head_attention` (and ``attend``) on the
same inputs in float64, itself checked against torch and transformers elsewhere
(test_variants_reference.py): every cell the block-wise path gives on demand, its overviews,
sink weights, entropies and outputs must equal it to 1e-10, for each variant alone and all of
them together, under causal and sliding masks, with blocks of several sizes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from test_long import largest_magnitude, tile_max, tile_reference

import attention_widget.long as long_module
from attention_widget import init_params, multi_head_attention, with_temperature
from attention_widget.engine import attend, causal_mask, sliding_window_mask
from attention_widget.long import long_attend, long_attention, long_with_temperature
from attention_widget.variants import alibi_bias

N, D_MODEL, HEADS, KV_HEADS = 600, 32, 4, 2  # 600 tokens: overview tiles of 2 x 2 cells
#: one sink far above the usual scores: its head gives most of each row to the sink
SINKS = np.array([0.5, -2.0, 6.0, 1.5])
VARIANTS = {
    "sinks": {"sinks": SINKS},
    "softcap": {"softcap": 2.5},
    "alibi": {"alibi": True},
    "all": {"alibi": True, "softcap": 2.5, "sinks": SINKS},
}
MASKS = {"causal": ("causal", None), "sliding": ("sliding", 50)}
TOL = {"rtol": 0, "atol": 1e-10}


def layer(seed=0):
    x = 1.5 * np.random.default_rng(seed).standard_normal((N, D_MODEL))  # sharp enough heads
    return x, init_params(D_MODEL, HEADS, KV_HEADS, seed=seed, bias=True)


@pytest.fixture(scope="module", params=[(v, m, rows) for v in VARIANTS for m in MASKS
                                        for rows in (16, 128, 1024)],
                ids=lambda p: f"{p[0]}-{p[1]}-rows{p[2]}")
def pair(request):
    """The full float64 trace and the block-wise float64 one, blocks of ``rows`` query rows."""
    variant, mask, rows = request.param
    kind, window = MASKS[mask]
    x, params = layer()
    kwargs = dict(n_heads=HEADS, n_kv_heads=KV_HEADS, mask=kind, window=window,
                  **VARIANTS[variant])
    full = multi_head_attention(x, params, **kwargs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(long_module, "BLOCK_ROWS", rows)
        blocks = long_attention(x, params, dtype=np.float64, **kwargs)
        warmer = long_with_temperature(blocks, params, 2.0)
    return full, blocks, warmer, params


def test_every_cell_equals_the_full_trace(pair):
    full, blocks, _, _ = pair
    assert (blocks.alibi, blocks.softcap) == (full.alibi, full.softcap)
    for h in range(HEADS):
        np.testing.assert_allclose(blocks.head_weights(h), full.weights[h], **TOL)
        zoom = (slice(200, 260), slice(180, 270))
        np.testing.assert_allclose(blocks.block(h, *zoom, stage="scores"),
                                   full.scores[h][zoom], **TOL)
        np.testing.assert_allclose(blocks.block(h, *zoom), full.weights[h][zoom], **TOL)
        np.testing.assert_allclose(blocks.row(h, 599), full.weights[h, 599], **TOL)
        top = blocks.top_keys(h, 420)
        np.testing.assert_array_equal(top.positions,
                                      np.argsort(-full.weights[h, 420], kind="stable")[:10])
    for name in ("head_outputs", "entropy", "concat", "output"):
        np.testing.assert_allclose(getattr(blocks, name), getattr(full, name), **TOL)


def test_sink_weights_are_recorded_and_rows_fall_short_of_one(pair):
    full, blocks, _, _ = pair
    if full.sinks is None:
        assert blocks.sinks is None and blocks.sink_weights is None
        return
    np.testing.assert_array_equal(blocks.sinks, SINKS)
    assert blocks.sink_weights.shape == (HEADS, N)
    np.testing.assert_allclose(blocks.sink_weights, full.sink_weights, **TOL)
    rows = np.stack([blocks.head_weights(h).sum(axis=1) for h in range(HEADS)])
    np.testing.assert_allclose(rows + blocks.sink_weights, 1.0, rtol=0, atol=1e-12)
    # the sink outweighs every key in some rows: the normaliser is read from the sink there
    assert (blocks.sink_weights > full.weights.max(axis=2)).any()


def test_overviews_are_tile_extremes_of_the_full_trace(pair):
    full, blocks, _, _ = pair
    assert blocks.tile == 2
    for h in range(HEADS):
        expected = tile_reference(full.weights[h], full.mask, 2, tile_max)
        np.testing.assert_allclose(blocks.weights_overview[h], expected, **TOL)
        expected = tile_reference(full.scores[h], full.mask, 2, largest_magnitude)
        np.testing.assert_allclose(blocks.scores_overview[h], expected, **TOL)


def test_a_temperature_step_equals_the_full_one(pair):
    full, _, warmer, params = pair
    full = with_temperature(full, params, 2.0)
    assert warmer.temperature == 2.0
    for h in (0, 2):
        np.testing.assert_allclose(warmer.head_weights(h), full.weights[h], **TOL)
    for name in ("entropy", "output", "sink_weights"):
        expected = getattr(full, name)
        if expected is None:
            assert getattr(warmer, name) is None
        else:
            np.testing.assert_allclose(getattr(warmer, name), expected, **TOL)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("mask", sorted(MASKS))
def test_long_attend_equals_attend(variant, mask):
    """On ready-made q, k, v (as a pretrained family calls it), against ``attend``."""
    rng = np.random.default_rng(1)
    q, k, v = (2.0 * rng.standard_normal((h, N, 8)) for h in (HEADS, KV_HEADS, KV_HEADS))
    kind, window = MASKS[mask]
    arrays = {"causal": causal_mask(N), "sliding": sliding_window_mask(N, window or 1)}[mask]
    options = dict(VARIANTS[variant])
    scale = 0.3
    got = long_attend(q, k, v, scale=scale, temperature=0.7, mask=kind, window=window,
                      **options)
    if options.pop("alibi", False):
        options["bias"] = alibi_bias(HEADS, np.arange(N))  # (heads, n, n): the reference's
    ref = attend(q, k, v, mask=arrays, temperature=0.7, scale=scale, **options)
    np.testing.assert_allclose(got.head_outputs, ref.head_outputs, **TOL)
    np.testing.assert_allclose(got.entropy, ref.entropy, **TOL)
    if ref.sink_weights is None:
        assert got.sink_weights is None
    else:
        np.testing.assert_allclose(got.sink_weights, ref.sink_weights, **TOL)
    overview = tile_reference(ref.weights[1], arrays, got.tile, tile_max)
    np.testing.assert_allclose(got.weights_overview[1], overview, **TOL)


@pytest.mark.parametrize(("options", "message"), [
    ({"sinks": np.zeros(3)}, "sinks must hold one logit per head"),
    ({"softcap": 0.0}, "softcap"),
    ({"softcap": float("nan")}, "softcap"),
    ({"alibi": "yes"}, "alibi"),
])
def test_bad_variants_are_named(options, message):
    q = np.zeros((HEADS, N, 8))
    k = v = np.zeros((KV_HEADS, N, 8))
    with pytest.raises((TypeError, ValueError), match=message):
        long_attend(q, k, v, mask="causal", **options)
    x, params = layer()
    with pytest.raises((TypeError, ValueError), match=message):
        long_attention(x, params, n_heads=HEADS, n_kv_heads=KV_HEADS, mask="causal", **options)


def test_the_log_normaliser_counts_the_sink_also_when_it_takes_everything():
    """``lse`` is ``log(sum_j exp(s_ij) + exp(sink_h))``, written out below in float64, also in
    float32 where a sink of 120 leaves every key a weight that rounds to 0."""
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((h, N, 8)).astype(np.float32)
               for h in (HEADS, KV_HEADS, KV_HEADS))
    sinks = np.array([0.0, 120.0, -1.0, 3.0])
    got = long_attend(q, k, v, mask="causal", sinks=sinks)
    keys = np.repeat(k.astype(np.float64), HEADS // KV_HEADS, axis=0)  # (heads, n, 8)
    scores = q.astype(np.float64) @ keys.transpose(0, 2, 1) / np.sqrt(8)  # (heads, n, n)
    scores[:, ~causal_mask(N)] = -np.inf
    top = scores.max(axis=2, keepdims=True)
    over_keys = top[..., 0] + np.log(np.exp(scores - top).sum(axis=2))  # (heads, n)
    expected = np.logaddexp(over_keys, sinks[:, None])
    np.testing.assert_allclose(got.lse, expected, rtol=1e-6, atol=0)
    assert got.sink_weights[1].min() == 1.0  # (in float32)


def top_by_first_feature(k):
    """A selector: each query keeps the ``k`` visible keys of largest first feature (ties to
    the earlier key), a stand-in for DeepSeek's lightning indexer."""
    def select(rows, keys, visible, *, features):
        score = np.where(visible, features[keys][None, :], -np.inf)  # [rows, keys]
        order = np.argsort(-score, axis=1, kind="stable")[:, :k]
        kept = np.zeros(visible.shape, dtype=bool)
        np.put_along_axis(kept, order, True, axis=1)
        return kept & visible
    return select


@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("rows", [16, 128])
def test_a_selector_equals_attend_with_its_keys_as_a_mask(mask, rows, monkeypatch):
    """Each query keeps 7 keys: the same as ``attend`` with those keys as the mask (whose
    (n, n) array the block-wise path never makes), on demand and after a temperature step."""
    rng = np.random.default_rng(3)
    q, k, v = (2.0 * rng.standard_normal((h, N, 8)) for h in (HEADS, KV_HEADS, KV_HEADS))
    kind, window = MASKS[mask]
    visible = {"causal": causal_mask(N), "sliding": sliding_window_mask(N, window or 1)}[mask]
    features = rng.standard_normal(N)
    choose = top_by_first_feature(7)

    def select(rows_, keys, seen):
        return choose(rows_, keys, seen, features=features)

    kept = select(np.arange(N), np.arange(N), visible)  # (n, n): the reference's mask
    assert (kept.sum(axis=1) == np.minimum(visible.sum(axis=1), 7)).all()
    monkeypatch.setattr(long_module, "BLOCK_ROWS", rows)
    got = long_attend(q, k, v, mask=kind, window=window, sinks=SINKS, select=select)
    ref = attend(q, k, v, mask=kept, sinks=SINKS)
    for name in ("head_outputs", "entropy", "sink_weights"):
        np.testing.assert_allclose(getattr(got, name), getattr(ref, name), **TOL)
    np.testing.assert_allclose(got.weights_overview[2],
                               tile_reference(ref.weights[2], visible, got.tile, tile_max), **TOL)
    # scores are shown for every visible key, kept or not
    np.testing.assert_allclose(got.scores_overview[2], tile_reference(
        ref.scores[2], visible, got.tile, largest_magnitude), **TOL)
    # on demand: a trace of the same layer
    x, params = layer()
    trace = long_attention(x, params, n_heads=HEADS, n_kv_heads=KV_HEADS, mask=kind,
                           window=window, dtype=np.float64)
    selected = long_with_temperature(replace(trace, select=select), params, 0.5)
    full = multi_head_attention(x, params, n_heads=HEADS, n_kv_heads=KV_HEADS, mask=kind,
                                window=window)
    ref = attend(full.q, full.k, full.v, mask=kept, temperature=0.5)
    for h in (0, 3):
        np.testing.assert_allclose(selected.head_weights(h), ref.weights[h], **TOL)
        zoom = (slice(300, 340), slice(250, 330))
        np.testing.assert_allclose(selected.block(h, *zoom), ref.weights[h][zoom], **TOL)
    np.testing.assert_allclose(selected.head_outputs, ref.head_outputs, **TOL)
    # which visible keys the selector kept, for any rows and keys (the zoom shades the others)
    rows, cols = np.array([5, 300, 301, N - 1]), slice(250, 330)
    np.testing.assert_array_equal(selected.kept(rows, cols), kept[rows, 250:330])
    assert trace.kept(rows, cols) is None

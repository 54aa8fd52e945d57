"""Invariants of the attention variants: hypothesis properties and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attention_widget import (
    alibi_bias,
    alibi_slopes,
    cross_attention,
    init_latent_params,
    init_params,
    kv_cache_per_token,
    latent_attention,
    multi_head_attention,
    rope,
    softcap,
    top_k_keep,
)
from attention_widget.engine import attend

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LAYOUTS = [(1, 1), (2, 1), (2, 2), (3, 3), (4, 2), (4, 1), (6, 3)]
finite = st.floats(-3.0, 3.0, allow_nan=False, width=64)


@st.composite
def layers(draw):
    """A random layer, input, mask (a key in every row) and any combination of variants."""
    n_heads, n_kv = draw(st.sampled_from(LAYOUTS))
    d_head = 2 * draw(st.integers(1, 3))
    d_model = n_heads * d_head
    seq_len = draw(st.integers(1, 9))
    x = draw(arrays(np.float64, (seq_len, d_model), elements=finite))
    kind = draw(st.sampled_from(["none", "causal", "random"]))
    mask = {"none": None, "causal": "causal"}.get(kind)
    if kind == "random":
        mask = draw(arrays(np.bool_, (seq_len, seq_len)))
        mask[np.arange(seq_len), draw(arrays(np.int64, seq_len,
                                             elements=st.integers(0, seq_len - 1)))] = True
    options = {}
    if draw(st.booleans()):
        options["rope"] = draw(st.sampled_from([10.0, 10000.0]))
    if draw(st.booleans()):
        options["alibi"] = True
    if draw(st.booleans()):
        options["softcap"] = draw(st.floats(0.1, 30.0))
    if draw(st.booleans()):
        options["sinks"] = draw(arrays(np.float64, n_heads, elements=st.floats(-20, 20)))
    if draw(st.booleans()):
        options["top_k"] = draw(st.integers(1, 10))
    params = init_params(d_model, n_heads, n_kv, seed=draw(st.integers(0, 2**16)),
                         bias=draw(st.booleans()))
    kwargs = {"n_heads": n_heads, "n_kv_heads": n_kv, "mask": mask, **options}
    return x, params, kwargs


temperatures = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(layers(), temperatures)
def test_rows_sum_to_one_less_the_sink_and_dropped_keys_get_zero(layer, temperature):
    x, params, kwargs = layer
    trace = multi_head_attention(x, params, temperature=temperature, **kwargs)
    w = trace.weights
    assert np.isfinite(w).all() and np.isfinite(trace.output).all()
    assert (w >= 0).all()
    sink = 0.0 if trace.sink_weights is None else trace.sink_weights
    np.testing.assert_allclose(w.sum(-1) + sink, 1.0, rtol=0, atol=1e-12)
    assert (trace.sink_weights is None) == ("sinks" not in kwargs)
    if trace.sink_weights is not None:
        assert ((trace.sink_weights >= 0) & (trace.sink_weights <= 1)).all()
    # masked keys, and keys top-k dropped, get exactly 0
    assert (w[:, ~trace.mask] == 0).all()
    if "top_k" in kwargs:
        kept = trace.kept
        assert kept.shape == w.shape and (w[~kept] == 0).all()
        assert not (kept & ~trace.mask).any()  # never a masked key
        allowed = trace.mask.sum(-1)  # [seq]
        want = np.broadcast_to(np.minimum(allowed, kwargs["top_k"]), kept.shape[:2])
        np.testing.assert_array_equal(kept.sum(-1), want)
    else:
        assert trace.kept is None
    assert (trace.entropy >= 0).all()


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 6), st.integers(1, 3), st.floats(1.0, 1e5),
       st.integers(-1000, 1000), st.integers(0, 2**16))
def test_rope_scores_depend_on_relative_positions_only(h, n, half, theta, shift, seed):
    """Moving every position by the same amount changes no score."""
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, h, n, 2 * half))
    positions = rng.integers(0, 500, n)
    scores = rope(q, theta, positions) @ rope(k, theta, positions).transpose(0, 2, 1)
    shifted = (rope(q, theta, positions + shift)
               @ rope(k, theta, positions + shift).transpose(0, 2, 1))
    np.testing.assert_allclose(shifted, scores, rtol=0, atol=1e-9 * (1 + np.abs(scores).max()))


@SETTINGS
@given(st.integers(1, 8), st.integers(1, 3), st.floats(1.0, 1e5), st.integers(0, 2**16))
def test_rope_is_a_rotation(n, half, theta, seed):
    """Lengths are kept; turning back by the same angles gives the vectors again."""
    x = np.random.default_rng(seed).standard_normal((3, n, 2 * half))
    turned = rope(x, theta)
    np.testing.assert_allclose(np.linalg.norm(turned, axis=-1), np.linalg.norm(x, axis=-1),
                               rtol=1e-12)
    np.testing.assert_allclose(rope(turned, theta, -np.arange(n)), x, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(turned[:, 0], x[:, 0])  # position 0 is not turned


def test_rope_first_pair_by_hand():
    """d = 2, theta irrelevant for pair 0 (frequency 1): position p turns by p radians."""
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    got = rope(x, 10000.0)
    want = [[1.0, 0.0], [math.cos(1), math.sin(1)], [-2 * math.sin(2), 2 * math.cos(2)]]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


@SETTINGS
@given(arrays(np.int64, st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 8)),
              elements=st.integers(-2, 2)), st.integers(1, 9), st.data())
def test_top_k_keeps_the_best_and_breaks_ties_toward_the_earlier_key(scores, k, data):
    """Small integer scores tie often; the kept keys are those of a stable sort."""
    n_q, n_k = scores.shape[1:]
    mask = data.draw(st.none() | arrays(np.bool_, (n_q, n_k)))
    if mask is not None:
        mask[np.arange(n_q), 0] = True
    kept = top_k_keep(scores.astype(float), k, mask)
    allowed = np.ones((n_q, n_k), bool) if mask is None else mask
    for h, i in np.ndindex(scores.shape[:2]):
        keys = [j for j in np.argsort(-scores[h, i], kind="stable") if allowed[i, j]][:k]
        np.testing.assert_array_equal(np.flatnonzero(kept[h, i]), sorted(keys))


def test_top_k_by_hand():
    scores = np.array([[[3.0, 1.0, 3.0, 2.0, 3.0]]])
    assert top_k_keep(scores, 2).tolist() == [[[True, False, True, False, False]]]
    assert top_k_keep(scores, 4).tolist() == [[[True, False, True, True, True]]]
    mask = np.array([[False, True, True, True, True]])
    assert top_k_keep(scores, 2, mask).tolist() == [[[False, False, True, False, True]]]
    assert top_k_keep(scores, 9, mask).tolist() == [mask.tolist()]


def test_alibi_by_hand():
    """Four heads: 1/4, 1/16, 1/64, 1/256.  Three: those of two heads, 1/16 and 1/256, then the
    first of four's, 1/4."""
    np.testing.assert_allclose(alibi_slopes(4), [1 / 4, 1 / 16, 1 / 64, 1 / 256], rtol=1e-15)
    np.testing.assert_allclose(alibi_slopes(3), [1 / 16, 1 / 256, 1 / 4], rtol=1e-15)
    np.testing.assert_allclose(alibi_slopes(8), 2.0 ** -np.arange(1, 9), rtol=1e-15)
    bias = alibi_bias([0.5], [0, 1, 2])
    np.testing.assert_allclose(bias[0], [[0, 0.5, 1], [-0.5, 0, 0.5], [-1, -0.5, 0]])
    # two heads (slopes 1/16, 1/256), a query at position 5, keys at 3 and 5
    np.testing.assert_allclose(alibi_bias(2, [5], [3, 5]), [[[-2 / 16, 0.0]], [[-2 / 256, 0.0]]])


@SETTINGS
@given(st.integers(1, 300))
def test_alibi_slopes_are_distinct_and_between_zero_and_one(n):
    m = alibi_slopes(n)
    assert m.shape == (n,) and ((m > 0) & (m < 1)).all()
    assert len(set(m.tolist())) == n


@SETTINGS
@given(arrays(np.float64, st.integers(1, 20), elements=st.floats(-1e6, 1e6)),
       st.floats(1e-3, 1e3))
def test_softcap_bounds_and_keeps_order(scores, cap):
    capped = softcap(scores, cap)
    assert (np.abs(capped) <= cap).all()
    order = np.argsort(scores, kind="stable")
    assert (np.diff(capped[order]) >= 0).all()
    small = np.abs(scores) < 1e-3 * cap  # small scores pass almost unchanged
    np.testing.assert_allclose(capped[small], scores[small], rtol=1e-6, atol=1e-300)


@SETTINGS
@given(st.sampled_from(LAYOUTS), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**16))
def test_cross_attention_of_a_sequence_with_itself_is_self_attention(layout, d_head, n, seed):
    h, kv = layout
    params = init_params(h * d_head, h, kv, seed=seed, bias=seed % 2 == 0)
    x = np.random.default_rng(seed).standard_normal((n, h * d_head))
    sinks = np.linspace(-1, 1, h)
    cross = cross_attention(x, x, params, n_heads=h, n_kv_heads=kv, sinks=sinks, top_k=2)
    self_ = multi_head_attention(x, params, n_heads=h, n_kv_heads=kv, sinks=sinks, top_k=2)
    for name in ("scores", "weights", "output", "sink_weights", "kept"):
        np.testing.assert_allclose(getattr(cross, name), getattr(self_, name), rtol=0,
                                   atol=1e-12, err_msg=name)


def test_cross_attention_weights_belong_to_the_source():
    """Each query's weights spread over the source tokens; a padded source token gets none."""
    params = init_params(8, 2, seed=0)
    rng = np.random.default_rng(0)
    mask = np.ones((3, 5), dtype=bool)
    mask[:, 4] = False  # the last source token is padding
    trace = cross_attention(rng.standard_normal((3, 8)), rng.standard_normal((5, 8)), params,
                            n_heads=2, mask=mask)
    assert trace.weights.shape == (2, 3, 5) and (trace.weights[..., 4] == 0).all()
    np.testing.assert_allclose(trace.weights.sum(-1), 1.0)


def test_latent_attention_keeps_its_latent_and_grows_without_redrawing():
    p = init_latent_params(16, 4, 6, rope_dim=4, seed=1)
    x = np.random.default_rng(1).standard_normal((5, 16))
    trace = latent_attention(x, p, n_heads=4, mask="causal")
    np.testing.assert_allclose(trace.latent, x @ p.w_dkv, rtol=0, atol=1e-14)
    assert trace.q.shape == trace.k.shape == (4, 5, 4 + 4) and trace.v.shape == (4, 5, 4)
    # every head shares the one rotary key
    np.testing.assert_array_equal(trace.k[:, :, 4:], np.broadcast_to(trace.k[0, :, 4:], (4, 5, 4)))
    wider = init_latent_params(16, 4, 9, rope_dim=4, seed=1)  # a wider latent, same seed
    np.testing.assert_array_equal(wider.w_dkv[:, :6], p.w_dkv)
    # the same draws, scaled by 1 / sqrt(kv_rank) (the rows they multiply)
    np.testing.assert_allclose(wider.w_uk[:6] * math.sqrt(9), p.w_uk * math.sqrt(6), rtol=1e-15)


def test_latent_attention_without_rope_parts_is_plain_attention_of_its_keys():
    p = init_latent_params(12, 3, 5, seed=2)
    x = np.random.default_rng(2).standard_normal((4, 12))
    trace = latent_attention(x, p, n_heads=3)
    q = (x @ p.w_q).reshape(4, 3, 4).transpose(1, 0, 2)
    k = (x @ p.w_dkv @ p.w_uk).reshape(4, 3, 4).transpose(1, 0, 2)
    np.testing.assert_allclose(trace.scores, q @ k.transpose(0, 2, 1) / 2.0, rtol=0, atol=1e-12)
    assert trace.rope is None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({"n_heads": 32, "d_head": 128}, 8192),  # Llama 2 7B: multi-head
     ({"n_heads": 32, "d_head": 128, "n_kv_heads": 8}, 2048),  # Llama 3 8B: grouped-query
     ({"n_heads": 8, "d_head": 64, "n_kv_heads": 1}, 128),  # multi-query
     ({"n_heads": 128, "d_head": 128, "kv_rank": 512, "rope_dim": 64}, 576)],  # DeepSeek-V3
)
def test_kv_cache_per_token(kwargs, expected):
    assert kv_cache_per_token(**kwargs) == expected


@SETTINGS
@given(st.sampled_from(LAYOUTS), st.integers(1, 8), st.integers(1, 9), st.integers(0, 2**16))
def test_attend_with_sinks_of_minus_a_lot_is_plain_attention(layout, d_head, n, seed):
    """A sink far below every score gets (almost) nothing: the sink adds to the softmax only."""
    h, kv = layout
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((h, n, d_head)), *rng.standard_normal((2, kv, n, d_head))
    plain = attend(q, k, v)
    sunk = attend(q, k, v, sinks=np.full(h, -800.0))
    np.testing.assert_allclose(sunk.weights, plain.weights, rtol=0, atol=1e-12)
    assert (sunk.sink_weights < 1e-300).all()

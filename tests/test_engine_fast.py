"""The fast path (:mod:`attention_widget.fast`) gives the reference path's result.

Both functions are called directly, so both paths run at every size, small ones included;
a layer large enough to be split into several blocks per head is checked as well.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attention_widget import (
    cross_attention,
    fast,
    init_latent_params,
    init_params,
    latent_attention,
    multi_head_attention,
    sliding_window_mask,
)
from attention_widget.engine import attend

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LAYOUTS = [(1, 1), (2, 1), (2, 2), (3, 3), (4, 2), (4, 1), (6, 3), (8, 2)]
TEMPERATURES = st.sampled_from([1.0, 0.37, 2.5, 0.05, 0.002, 40.0])


def masks(draw, n_q: int, n_k: int) -> np.ndarray | None:
    """None, causal, sliding or random boolean, with a key in every row."""
    kind = draw(st.sampled_from(["none", "causal", "sliding", "random"]))
    if kind == "none":
        return None
    if kind == "causal":  # the queries are the last n_q of the n_k positions
        mask = np.tri(n_q, n_k, k=n_k - n_q, dtype=bool)
        mask[:, 0] = True  # (more queries than keys: the first ones see key 0)
        return mask
    if kind == "sliding" and n_q == n_k:
        return sliding_window_mask(n_q, draw(st.integers(1, n_q)))
    mask = draw(arrays(np.bool_, (n_q, n_k)))
    mask[np.arange(n_q), draw(arrays(np.int64, n_q, elements=st.integers(0, n_k - 1)))] = True
    return mask


@st.composite
def problems(draw):
    """Queries, keys and values of any head layout, square or not, and a mask."""
    n_heads, n_kv = draw(st.sampled_from(LAYOUTS))
    d_head = draw(st.integers(1, 8))
    n_q = draw(st.integers(1, 40))
    n_k = draw(st.sampled_from([n_q, draw(st.integers(1, 40))]))
    d_v = draw(st.sampled_from([d_head, draw(st.integers(1, 8))]))
    scale = draw(st.sampled_from([1.0, 3.0]))
    elements = st.floats(-scale, scale, allow_nan=False, width=64)
    q = draw(arrays(np.float64, (n_heads, n_q, d_head), elements=elements))
    k = draw(arrays(np.float64, (n_kv, n_k, d_head), elements=elements))
    v = draw(arrays(np.float64, (n_kv, n_k, d_v), elements=elements))
    return q, k, v, masks(draw, n_q, n_k)


def assert_same(got, want, atol=1e-12):
    for name in want._fields:
        g, w = getattr(got, name), getattr(want, name)
        if w is None:  # (sink_weights and kept: only with those variants)
            assert g is None, name
            continue
        assert g.dtype == w.dtype and g.shape == w.shape, name
        np.testing.assert_allclose(g, w, rtol=0, atol=atol, err_msg=name)


@SETTINGS
@given(problems(), TEMPERATURES, st.sampled_from([None, 0.5]))
def test_fast_attend_is_the_reference(problem, temperature, scale):
    q, k, v, mask = problem
    want = attend(q, k, v, mask=mask, temperature=temperature, scale=scale)
    got = fast.attend(q, k, v, mask=mask, temperature=temperature, scale=scale)
    assert_same(got, want)
    if mask is not None:
        assert (got.weights[:, ~mask] == 0).all()


@SETTINGS
@given(problems(), TEMPERATURES)
def test_fast_attend_in_float32(problem, temperature):
    q, k, v, mask = (a if a is None or a.dtype == bool else a.astype(np.float32)
                     for a in problem)
    want = attend(q, k, v, mask=mask, temperature=temperature)
    got = fast.attend(q, k, v, mask=mask, temperature=temperature)
    assert_same(got, want, atol=1e-5)


@pytest.mark.parametrize("mask", [None, "causal", "sliding", "random"])
@pytest.mark.parametrize(
    ("n_q", "n_k", "n_heads", "n_kv"),
    [
        (1300, 1500, 2, 2),  # long rows of keys: each head cut into several runs of rows
        (1300, 1500, 4, 1),  # ... also where four query heads read one key/value head
        (500, 500, 16, 8),  # short rows: whole groups of query heads per block, several blocks
        (360, 360, 12, 4),
    ],
)
def test_large_inputs_in_many_blocks(mask, n_q, n_k, n_heads, n_kv):
    """Inputs large enough to be cut into many blocks give the reference's result."""
    assert n_heads * n_q * n_k * 8 > 2 * 2**22  # several 4 MiB blocks of float64 scores
    rng = np.random.default_rng(3)
    d = 8
    q = rng.standard_normal((n_heads, n_q, d))
    k, v = rng.standard_normal((2, n_kv, n_k, d))
    i, j = np.indices((n_q, n_k))
    m = {None: None, "causal": j <= i + n_k - n_q, "sliding": (j <= i + n_k - n_q) & (j > i - 50),
         "random": rng.random((n_q, n_k)) < 0.3}[mask]
    if m is not None:
        m[np.arange(n_q), rng.integers(0, n_k, n_q)] = True
    for temperature in (1.0, 0.01):
        assert_same(fast.attend(q, k, v, mask=m, temperature=temperature),
                    attend(q, k, v, mask=m, temperature=temperature))


def layer(min_scores: float, *args, kind=multi_head_attention, **kwargs):
    """A layer (``multi_head_attention`` or ``kind``) with the fast path taken from
    ``min_scores`` scores on."""
    saved, fast.MIN_SCORES = fast.MIN_SCORES, min_scores
    try:
        return kind(*args, **kwargs)
    finally:
        fast.MIN_SCORES = saved


TRACE_FIELDS = ("x", "q", "k", "v", "scores", "weights", "head_outputs", "concat", "output", "mask",
                "entropy", "sink_weights", "kept", "x_kv", "latent")


def assert_same_traces(got, want) -> None:
    for name in TRACE_FIELDS:
        g, w = getattr(got, name), getattr(want, name)
        assert (g is None) == (w is None), name
        if w is not None:
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-12, err_msg=name)


@SETTINGS
@given(st.sampled_from(LAYOUTS), st.integers(1, 4), st.integers(1, 30), st.booleans(),
       st.sampled_from([None, "causal", "sliding"]), TEMPERATURES, st.integers(0, 2**16))
def test_layers_through_either_path_are_equal(layout, d_head, seq_len, bias, mask, temperature,
                                               seed):
    """Whole traces: a layer through the fast path equals the layer through the reference."""
    n_heads, n_kv = layout
    d_model = n_heads * d_head
    params = init_params(d_model, n_heads, n_kv, seed=seed, bias=bias)
    x = np.random.default_rng(seed).standard_normal((seq_len, d_model))
    kwargs = {"n_heads": n_heads, "n_kv_heads": n_kv, "temperature": temperature,
              "mask": mask, "window": 3}
    got = layer(0, x, params, **kwargs)  # every layer takes the fast path
    want = layer(float("inf"), x, params, **kwargs)  # none does
    assert_same_traces(got, want)


def test_without_threadpoolctl_the_fast_path_still_works():
    """Without threadpoolctl the reference runs, on the calling thread: same result."""
    probe = """
import sys, threading
sys.modules["threadpoolctl"] = None  # import threadpoolctl now fails
import numpy as np
from attention_widget import fast
from attention_widget.engine import attend
rng = np.random.default_rng(0)
q, k, v = rng.standard_normal((3, 4, 300, 8))
mask = np.tri(300, dtype=bool)
got = fast.attend(q, k, v, mask=mask, temperature=0.5)
want = attend(q, k, v, mask=mask, temperature=0.5)
assert all(np.abs(g - w).max() <= 1e-12 for g, w in zip(got[:4], want[:4]))  # (no variants)
assert threading.active_count() == 1, threading.enumerate()
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=False)
    assert out.stdout.strip() == "ok", out.stderr


def _large_layer_output_sum(seed: int) -> float:
    params = init_params(32, 8, seed=seed)
    x = np.random.default_rng(seed).standard_normal((400, 32))
    assert 8 * 400**2 >= fast.MIN_SCORES
    return float(multi_head_attention(x, params, n_heads=8, mask="causal").output.sum())


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this platform")
def test_a_forked_child_runs_large_layers():
    """A child forked after the pool was made gets a pool of its own (not the parent's
    threads, which it does not have), and computes what the parent computes."""
    import multiprocessing

    expected = _large_layer_output_sum(1)  # the parent's pool exists from here on
    with multiprocessing.get_context("fork").Pool(1) as child:
        got = child.apply_async(_large_layer_output_sum, (1,)).get(timeout=60)
    assert got == pytest.approx(expected, abs=1e-9)


# ---- the variants (RoPE, ALiBi, soft-cap, sinks, top-k) on both paths -------------------------
@st.composite
def variants(draw, n_heads: int, alibi: bool = True) -> dict:
    """Any combination of the keyword arguments of the score variants (of attend: no ALiBi)."""
    options = {}
    if alibi and draw(st.booleans()):
        options["alibi"] = True
    if draw(st.booleans()):
        options["softcap"] = draw(st.sampled_from([0.3, 2.0, 50.0]))
    if draw(st.booleans()):
        options["sinks"] = draw(arrays(np.float64, n_heads, elements=st.floats(-5, 5)))
    if draw(st.booleans()):
        options["top_k"] = draw(st.integers(1, 12))
    return options


@SETTINGS
@given(problems(), TEMPERATURES, st.data())
def test_fast_attend_with_variants_is_the_reference(problem, temperature, data):
    q, k, v, mask = problem
    options = data.draw(variants(q.shape[0], alibi=False))
    if data.draw(st.booleans()):  # a bias of any broadcastable shape, e.g. ALiBi's
        shape = data.draw(st.sampled_from([(q.shape[0], q.shape[1], k.shape[1]),
                                           (q.shape[1], k.shape[1]), (q.shape[0], 1, 1)]))
        options["bias"] = data.draw(arrays(np.float64, shape, elements=st.floats(-3, 3)))
    want = attend(q, k, v, mask=mask, temperature=temperature, **options)
    got = fast.attend(q, k, v, mask=mask, temperature=temperature, **options)
    assert_same(got, want)


@SETTINGS
@given(st.sampled_from(LAYOUTS), st.integers(1, 3), st.integers(1, 30), st.booleans(),
       st.sampled_from([None, "causal", "sliding"]), TEMPERATURES, st.integers(0, 2**16),
       st.data())
def test_layers_with_variants_through_either_path_are_equal(layout, half, seq_len, bias, mask,
                                                            temperature, seed, data):
    n_heads, n_kv = layout
    d_model = n_heads * 2 * half
    params = init_params(d_model, n_heads, n_kv, seed=seed, bias=bias)
    x = np.random.default_rng(seed).standard_normal((seq_len, d_model))
    options = data.draw(variants(n_heads))
    if data.draw(st.booleans()):
        options["rope"] = data.draw(st.sampled_from([10.0, 10000.0]))
    kwargs = {"n_heads": n_heads, "n_kv_heads": n_kv, "temperature": temperature,
              "mask": mask, "window": 3, **options}
    got = layer(0, x, params, **kwargs)  # every layer takes the fast path
    want = layer(float("inf"), x, params, **kwargs)  # none does
    assert_same_traces(got, want)
    for name in ("rope", "alibi", "softcap", "top_k"):
        assert getattr(got, name) == getattr(want, name), name


@pytest.mark.parametrize("n_heads", [2, 6])
def test_variants_in_many_blocks(n_heads):
    """A layer cut into many blocks of rows: ALiBi's bias, the sinks and top-k per block."""
    rng = np.random.default_rng(4)
    n, d_head = 1100, 4
    params = init_params(n_heads * d_head, n_heads, n_heads // 2, seed=4)
    x = rng.standard_normal((n, n_heads * d_head))
    kwargs = {"n_heads": n_heads, "n_kv_heads": n_heads // 2, "mask": "causal", "rope": 1e4,
              "alibi": True, "softcap": 3.0, "sinks": rng.standard_normal(n_heads), "top_k": 40}
    got = layer(0, x, params, **kwargs)
    want = layer(float("inf"), x, params, **kwargs)
    for name in ("scores", "weights", "output", "sink_weights", "kept"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=0, atol=1e-12,
                                   err_msg=name)


@SETTINGS
@given(st.sampled_from(LAYOUTS), st.integers(1, 4), st.integers(1, 20), st.integers(1, 20),
       st.booleans(), TEMPERATURES, st.integers(0, 2**16), st.data())
def test_cross_attention_through_either_path_is_equal(layout, d_head, n_q, n_kv, bias,
                                                      temperature, seed, data):
    """Cross-attention's products and attention step on the pool give the plain steps' trace."""
    n_heads, n_kv_heads = layout
    params = init_params(n_heads * d_head, n_heads, n_kv_heads, seed=seed, bias=bias)
    rng = np.random.default_rng(seed)
    x_q = rng.standard_normal((n_q, params.d_model))
    x_kv = rng.standard_normal((n_kv, params.d_model))
    options = data.draw(variants(n_heads, alibi=False))
    if data.draw(st.booleans()):  # e.g. the padding of the source
        options["mask"] = masks(data.draw, n_q, n_kv)
    kwargs = {"n_heads": n_heads, "n_kv_heads": n_kv_heads, "temperature": temperature, **options}
    assert_same_traces(layer(0, x_q, x_kv, params, kind=cross_attention, **kwargs),
                       layer(float("inf"), x_q, x_kv, params, kind=cross_attention, **kwargs))


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 6), st.sampled_from([None, 3]),
       st.sampled_from([0, 2, 4]), st.integers(1, 20), st.sampled_from([None, "causal"]),
       TEMPERATURES, st.integers(0, 2**16))
def test_latent_attention_through_either_path_is_equal(n_heads, d_head, kv_rank, q_rank, rope_dim,
                                                       seq_len, mask, temperature, seed):
    """Latent attention's products and attention step on the pool give the plain steps' trace."""
    d_model = 8
    params = init_latent_params(d_model, n_heads, kv_rank, d_head=d_head, q_rank=q_rank,
                                rope_dim=rope_dim, seed=seed)
    x = np.random.default_rng(seed).standard_normal((seq_len, d_model))
    kwargs = {"n_heads": n_heads, "temperature": temperature, "mask": mask}
    got = layer(0, x, params, kind=latent_attention, **kwargs)
    assert_same_traces(got, layer(float("inf"), x, params, kind=latent_attention, **kwargs))
    assert got.latent.shape == (seq_len, kv_rank)


def test_large_cross_and_latent_layers_take_the_fast_path(monkeypatch):
    """At their default size limit, large layers of both kinds run their products on the pool."""
    calls = []
    monkeypatch.setattr(fast, "linear", lambda *a: calls.append(a[1].shape) or fast._product(*a))
    params = init_params(16, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((600, 16))
    assert 4 * 600**2 >= fast.MIN_SCORES
    cross_attention(x, x[:2], params, n_heads=4)  # 4 x 600 x 2 scores: small
    assert calls == []
    cross_attention(x, x, params, n_heads=4)
    assert calls == [(16, 16)] * 4  # q, k, v and the output
    calls.clear()
    latent_attention(x, init_latent_params(16, 4, 8, rope_dim=2, seed=0), n_heads=4)
    assert len(calls) == 7  # c_kv, k, v, q, q_rope, k_rope, and the output

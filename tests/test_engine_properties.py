"""Invariants of the engine: hypothesis property tests; teaching invariants of the weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attention_widget import AttentionParams, init_params, multi_head_attention
from attention_widget.engine import softmax

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# head layouts (n_heads, n_kv_heads) for a d_head of 1 to 4
LAYOUTS = [(1, 1), (2, 1), (2, 2), (3, 3), (4, 2), (4, 1), (6, 3)]
finite = st.floats(-3.0, 3.0, allow_nan=False, width=64)


@st.composite
def problems(draw, masks=True):
    """A random layer, input and (optionally) mask with at least one key per row."""
    n_heads, n_kv = draw(st.sampled_from(LAYOUTS))
    d_head = draw(st.integers(1, 4))
    d_model = n_heads * d_head
    seq_len = draw(st.integers(1, 9))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    x = draw(arrays(np.float64, (seq_len, d_model), elements=finite))
    mask = None
    if masks:
        kind = draw(st.sampled_from(["none", "causal", "random"]))
        if kind == "causal":
            mask = "causal"
        elif kind == "random":
            mask = draw(arrays(np.bool_, (seq_len, seq_len)))
            mask[np.arange(seq_len), draw(
                arrays(np.int64, seq_len, elements=st.integers(0, seq_len - 1)))] = True
    params = init_params(d_model, n_heads, n_kv, seed=seed, bias=bias)
    return x, params, n_heads, n_kv, mask


def run(problem, **kwargs):
    x, params, n_heads, n_kv, mask = problem
    return multi_head_attention(x, params, n_heads=n_heads, n_kv_heads=n_kv, mask=mask, **kwargs)


temperatures = st.floats(1e-4, 1e4, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(problems(), temperatures)
def test_rows_are_distributions_and_masked_entries_are_zero(problem, temperature):
    trace = run(problem, temperature=temperature)
    w = trace.weights
    assert np.isfinite(w).all() and np.isfinite(trace.output).all()
    assert (w >= 0).all()
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    blocked = np.broadcast_to(~trace.mask, w.shape)
    assert (w[blocked] == 0.0).all()  # exactly zero, not just small


@SETTINGS
@given(problems())
def test_entropy_between_zero_and_log_allowed(problem):
    trace = run(problem)
    allowed = trace.mask.sum(axis=1)  # keys each query may see
    assert (trace.entropy >= 0).all()
    assert (trace.entropy <= np.log(allowed) + 1e-12).all()
    w = trace.weights
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(w > 0, w * np.log(w), 0.0)
    np.testing.assert_allclose(trace.entropy, -plogp.sum(axis=-1), rtol=0, atol=1e-10)
    np.testing.assert_allclose(trace.head_entropy, trace.entropy.mean(axis=1))


@SETTINGS
@given(problems())
def test_low_temperature_gives_one_hot_rows(problem):
    trace = run(problem, temperature=1e-4)
    assert np.isfinite(trace.weights).all()
    # Where the best allowed key leads the runner-up by 0.01, the weight of every other key is
    # below exp(-0.01 / 1e-4) = exp(-100): the row is one-hot at the arg-max.
    scores = np.where(trace.mask, trace.scores, -np.inf)
    top2 = -np.sort(-scores, axis=-1)[..., :2] if scores.shape[-1] > 1 else None
    best = scores.argmax(axis=-1)
    picked = np.take_along_axis(trace.weights, best[..., None], axis=-1)[..., 0]
    clear = np.ones(best.shape, bool) if top2 is None else (top2[..., 0] - top2[..., 1] > 0.01)
    np.testing.assert_allclose(picked[clear], 1.0, rtol=0, atol=1e-14)
    assert (trace.weights.max(axis=-1) >= 1.0 / trace.mask.sum(axis=1) - 1e-15).all()


@SETTINGS
@given(problems())
def test_high_temperature_gives_uniform_rows(problem):
    temperature = 1e4
    trace = run(problem, temperature=temperature)
    allowed = trace.mask.sum(axis=1)  # [seq]
    scores = np.where(trace.mask, trace.scores, np.nan)
    # every weight is exp(s_j / T) / sum_k exp(s_k / T), so with spread D = (max - min) / T it
    # lies in [exp(-D) / k, exp(D) / k] for k allowed keys: D -> 0 as T -> infinity
    spread = (np.nanmax(scores, axis=-1) - np.nanmin(scores, axis=-1)) / temperature
    uniform = np.broadcast_to(1.0 / allowed[:, None], trace.weights.shape)
    lo = np.exp(-spread)[..., None] * uniform - 1e-15
    hi = np.exp(spread)[..., None] * uniform + 1e-15
    w = trace.weights
    inside = np.broadcast_to(trace.mask, w.shape)
    assert ((w >= lo) & (w <= hi))[inside].all()
    assert (spread < 1e-2).all()  # i.e. uniform to within 1 %


@SETTINGS
@given(problems(masks=False), st.randoms(use_true_random=False))
def test_permuting_tokens_permutes_the_output(problem, rnd):
    x, params, n_heads, n_kv, _ = problem
    perm = np.array(rnd.sample(range(x.shape[0]), x.shape[0]))
    a = multi_head_attention(x, params, n_heads=n_heads, n_kv_heads=n_kv)
    b = multi_head_attention(x[perm], params, n_heads=n_heads, n_kv_heads=n_kv)
    np.testing.assert_allclose(b.output, a.output[perm], rtol=0, atol=1e-12)
    np.testing.assert_allclose(b.weights, a.weights[:, perm][:, :, perm], rtol=0, atol=1e-12)


@SETTINGS
@given(
    arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
           elements=st.floats(-50, 50)),
    st.floats(-1e3, 1e3),
    st.integers(0, 5),
    temperatures,
)
def test_softmax_ignores_a_constant_added_to_a_row(scores, constant, row, temperature):
    row = row % scores.shape[1]
    shifted = scores.copy()
    shifted[:, row] += constant
    a = softmax(scores, temperature=temperature)
    b = softmax(shifted, temperature=temperature)
    # storing s + c rounds it by up to eps * |s + c|, an error that dividing by T magnifies
    eps = np.finfo(np.float64).eps
    tol = 1e-12 + 8 * eps * (abs(constant) + np.abs(scores).max()) / temperature
    np.testing.assert_allclose(b, a, rtol=0, atol=tol)
    # and the softmax itself, written out directly
    z = scores / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(a, e / e.sum(axis=-1, keepdims=True), rtol=0, atol=tol)


@SETTINGS
@given(
    arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
           elements=st.floats(-50, 50)),
    st.data(),
    temperatures,
)
def test_softmax_with_a_mask_is_the_formula(scores, data, temperature):
    rows, keys = scores.shape[1:]
    mask = data.draw(arrays(np.bool_, (rows, keys)))
    mask[np.arange(rows), data.draw(arrays(np.int64, rows, elements=st.integers(0, keys - 1)))] = 1
    w = softmax(scores, temperature=temperature, mask=mask)
    z = np.where(mask, scores / temperature, -np.inf)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(w, e / e.sum(axis=-1, keepdims=True), rtol=0,
                               atol=1e-12 + 1e-15 * np.abs(scores).max() / temperature)
    assert (w[np.broadcast_to(~mask, w.shape)] == 0).all()


@SETTINGS
@given(problems(), finite)
def test_key_bias_shift_changes_scores_not_weights(problem, delta):
    """Changing b_k adds q_i . delta to every score of row i: a constant per row."""
    x, params, n_heads, n_kv, mask = problem
    assume(params.has_bias)
    shifted = AttentionParams(params.w_q, params.w_k, params.w_v, params.w_o, params.b_q,
                              params.b_k + delta, params.b_v, params.b_o)
    a = multi_head_attention(x, params, n_heads=n_heads, n_kv_heads=n_kv, mask=mask)
    b = multi_head_attention(x, shifted, n_heads=n_heads, n_kv_heads=n_kv, mask=mask)
    np.testing.assert_allclose(b.weights, a.weights, rtol=0, atol=1e-9)


@SETTINGS
@given(problems(), st.floats(0.1, 10.0))
def test_float32_within_1e_4_of_float64(problem, temperature):
    a = run(problem, temperature=temperature)
    b = run(problem, temperature=temperature, dtype=np.float32)
    for name in ("q", "scores", "weights", "head_outputs", "output", "entropy"):
        got = getattr(b, name)
        assert got.dtype == np.float32, name
        np.testing.assert_allclose(got, getattr(a, name), rtol=0, atol=1e-4, err_msg=name)


def test_long_sequences_match_a_plain_formula():
    """Sizes that take the fast path (its blocks, its threads): the same maths."""
    from attention_widget import fast

    rng = np.random.default_rng(7)
    for seq_len, d_model, n_heads, n_kv, mask in [
        (600, 16, 4, 2, "causal"),  # several blocks of rows per head
        (520, 8, 4, 1, None),
        (1100, 8, 4, 2, "causal"),
    ]:
        assert n_heads * seq_len**2 >= fast.MIN_SCORES
        params = init_params(d_model, n_heads, n_kv, seed=3, bias=True)
        x = rng.standard_normal((seq_len, d_model))
        trace = multi_head_attention(x, params, n_heads=n_heads, n_kv_heads=n_kv, mask=mask,
                                     temperature=0.7)
        d_head = d_model // n_heads
        q = (x @ params.w_q + params.b_q).reshape(seq_len, n_heads, d_head).transpose(1, 0, 2)
        k = (x @ params.w_k + params.b_k).reshape(seq_len, n_kv, d_head).transpose(1, 0, 2)
        v = (x @ params.w_v + params.b_v).reshape(seq_len, n_kv, d_head).transpose(1, 0, 2)
        k, v = np.repeat(k, n_heads // n_kv, axis=0), np.repeat(v, n_heads // n_kv, axis=0)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d_head)
        z = s / 0.7
        if mask == "causal":
            z = np.where(np.tri(seq_len, dtype=bool), z, -np.inf)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        w = e / e.sum(axis=-1, keepdims=True)
        out = (w @ v).transpose(1, 0, 2).reshape(seq_len, d_model) @ params.w_o + params.b_o
        np.testing.assert_allclose(trace.scores, s, rtol=0, atol=1e-12)
        np.testing.assert_allclose(trace.weights, w, rtol=0, atol=1e-12)
        np.testing.assert_allclose(trace.output, out, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# teaching invariants of the parameters
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d_model", [12, 24, 96])
def test_n_heads_does_not_change_the_weights(d_model):
    base = init_params(d_model, 1, seed=5)
    for n_heads in [h for h in range(1, d_model + 1) if d_model % h == 0]:
        p = init_params(d_model, n_heads, seed=5)
        for name in ("w_q", "w_k", "w_v", "w_o"):
            np.testing.assert_array_equal(getattr(p, name), getattr(base, name), err_msg=name)


@pytest.mark.parametrize(("d_model", "n_heads", "n_kv"), [(12, 6, 2), (12, 6, 3), (64, 8, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_kv_head_g_is_query_head_g_times_group(d_model, n_heads, n_kv, bias):
    full = init_params(d_model, n_heads, seed=2, bias=bias)
    gqa = init_params(d_model, n_heads, n_kv, seed=2, bias=bias)
    d_head, group = d_model // n_heads, n_heads // n_kv
    assert gqa.w_k.shape == gqa.w_v.shape == (d_model, n_kv * d_head)
    np.testing.assert_array_equal(gqa.w_q, full.w_q)
    np.testing.assert_array_equal(gqa.w_o, full.w_o)
    for g in range(n_kv):
        mine = slice(g * d_head, (g + 1) * d_head)
        source = slice(g * group * d_head, (g * group + 1) * d_head)
        np.testing.assert_array_equal(gqa.w_k[:, mine], full.w_k[:, source])
        np.testing.assert_array_equal(gqa.w_v[:, mine], full.w_v[:, source])
        if bias:
            np.testing.assert_array_equal(gqa.b_k[mine], full.b_k[source])
            np.testing.assert_array_equal(gqa.b_v[mine], full.b_v[source])


@pytest.mark.parametrize(("small", "large"), [(8, 16), (32, 96), (64, 128), (100, 130)])
def test_d_model_change_keeps_the_leading_block(small, large):
    a = init_params(small, 1, seed=9, bias=True)
    b = init_params(large, 1, seed=9, bias=True)
    ratio = math.sqrt(large / small)  # both are scaled by 1 / sqrt(d_model)
    for name in ("w_q", "w_k", "w_v", "w_o"):
        np.testing.assert_allclose(getattr(b, name)[:small, :small] * ratio, getattr(a, name),
                                   rtol=1e-14, atol=0, err_msg=name)
    for name in ("b_q", "b_k", "b_v", "b_o"):
        np.testing.assert_array_equal(getattr(b, name)[:small], getattr(a, name), err_msg=name)


def test_weights_scale_keeps_the_variance():
    p = init_params(256, 8, seed=0)
    # standard normal entries / sqrt(d_model): each column has unit norm on average
    assert np.mean(p.w_q**2) * 256 == pytest.approx(1.0, rel=0.05)


def test_params_are_deterministic_and_seed_dependent():
    a, b = init_params(24, 4, 2, seed=11, bias=True), init_params(24, 4, 2, seed=11, bias=True)
    c = init_params(24, 4, 2, seed=12, bias=True)
    for name in ("w_q", "w_k", "w_v", "w_o", "b_q", "b_k", "b_v", "b_o"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(getattr(a, name), getattr(c, name))
    assert init_params(24, 4).b_q is None


def test_params_are_read_only_copies():
    w = np.eye(2)
    p = AttentionParams(w, w, w, w)
    w[0, 0] = 5.0
    assert p.w_q[0, 0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        p.w_q[0, 0] = 3.0


def test_runs_are_deterministic_and_do_not_touch_inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 12))
    x_before = x.copy()
    p = init_params(12, 3, seed=1, bias=True)
    a = multi_head_attention(x, p, n_heads=3, mask="causal", temperature=0.5)
    b = multi_head_attention(x, p, n_heads=3, mask="causal", temperature=0.5)
    np.testing.assert_array_equal(x, x_before)
    for name in ("scores", "weights", "head_outputs", "output", "entropy"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.temperature == 0.5 and a.seq_len == 7 and a.d_model == 12
    assert a.n_heads == 3 and a.n_kv_heads == 3 and a.d_head == 4


def test_trace_shapes_with_grouped_heads():
    p = init_params(24, 6, 2, seed=0)
    t = multi_head_attention(np.ones((5, 24)), p, n_heads=6, n_kv_heads=2)
    assert t.q.shape == (6, 5, 4) and t.k.shape == t.v.shape == (2, 5, 4)
    assert t.scores.shape == t.weights.shape == (6, 5, 5)
    assert t.head_outputs.shape == (6, 5, 4)
    assert t.concat.shape == t.output.shape == (5, 24)
    assert t.mask.shape == (5, 5) and t.mask.all() and t.entropy.shape == (6, 5)
    assert [t.kv_head(h) for h in range(6)] == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(t.concat[:, 4:8], t.head_outputs[1])


# --------------------------------------------------------------------------------------------
# large layers: the work is shared out between threads
# --------------------------------------------------------------------------------------------
def blas_threads() -> list[int] | None:
    """BLAS's thread count(s) now, or None without threadpoolctl."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return [info["num_threads"] for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"]


def reference_path(monkeypatch) -> None:
    """From here on every layer takes the plain steps of the engine."""
    from attention_widget import fast

    monkeypatch.setattr(fast, "MIN_SCORES", float("inf"))


@pytest.mark.parametrize(
    ("seq_len", "d_model", "n_heads", "n_kv", "dtype"),
    [(370, 32, 8, 4, np.float64), (400, 24, 8, 8, np.float64), (370, 32, 8, 2, np.float32)],
)
def test_threaded_layer_matches_and_restores_blas_threads(
    monkeypatch, seq_len, d_model, n_heads, n_kv, dtype
):
    """Large layers, run from several threads at once, give what the plain path gives; and
    afterwards BLAS's thread count is what it was."""
    from concurrent.futures import ThreadPoolExecutor

    from attention_widget import fast

    assert n_heads * seq_len**2 >= fast.MIN_SCORES  # large enough for the fast path
    rng = np.random.default_rng(1)
    params = init_params(d_model, n_heads, n_kv, seed=4, bias=True)
    xs = [rng.standard_normal((seq_len, d_model)) for _ in range(4)]
    before = blas_threads()
    kwargs = {"n_heads": n_heads, "n_kv_heads": n_kv, "mask": "causal", "temperature": 0.8,
              "dtype": dtype}
    tol = 1e-12 if dtype == np.float64 else 1e-5
    with ThreadPoolExecutor(4) as pool:
        traces = list(pool.map(lambda x: multi_head_attention(x, params, **kwargs), xs))
    assert blas_threads() == before
    reference_path(monkeypatch)
    for x, trace in zip(xs, traces, strict=True):
        plain = multi_head_attention(x, params, **kwargs)
        for name in ("q", "k", "v", "scores", "weights", "head_outputs", "entropy", "concat",
                     "output", "mask"):
            assert getattr(trace, name).dtype == getattr(plain, name).dtype, name
            np.testing.assert_allclose(getattr(trace, name), getattr(plain, name), rtol=0,
                                       atol=tol, err_msg=name)
        # causal: token 0 sees only itself, so its output is that of a one-token sequence
        one = multi_head_attention(x[:1], params, **kwargs)
        np.testing.assert_allclose(trace.output[:1], one.output, rtol=0, atol=tol)


def test_a_kept_trace_keeps_its_values():
    """Every array of a live trace, and a view kept from a dropped trace, keeps its values
    while more layers of the same size run."""
    params = init_params(32, 8, seed=2)
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((370, 32)) for _ in range(4)]
    kept = multi_head_attention(xs[0], params, n_heads=8)
    copies = {name: getattr(kept, name).copy() for name in
              ("q", "k", "v", "scores", "weights", "head_outputs", "entropy", "concat", "output")}
    row = multi_head_attention(xs[1], params, n_heads=8).weights[3, 7:9]  # trace dropped
    row_copy = row.copy()
    for x in xs[2:] * 3:
        multi_head_attention(x, params, n_heads=8, temperature=0.3)
    for name, value in copies.items():
        np.testing.assert_array_equal(getattr(kept, name), value, err_msg=name)
    np.testing.assert_array_equal(row, row_copy)


@pytest.mark.parametrize("temperature", [1.0, 1e-3, 1e3])
@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_large_layer_safe_with_large_scores(monkeypatch, temperature, scale):
    """Large inputs or a tiny T give scores / T far outside exp's range: the fast path stays
    finite, its rows sum to 1 and it gives the plain path's weights."""
    params = init_params(32, 8, seed=3)
    x = scale * np.random.default_rng(8).standard_normal((370, 32))
    kwargs = {"n_heads": 8, "temperature": temperature, "mask": "causal"}
    threaded = multi_head_attention(x, params, **kwargs)
    reference_path(monkeypatch)
    plain = multi_head_attention(x, params, **kwargs)
    assert np.isfinite(threaded.weights).all() and np.isfinite(threaded.entropy).all()
    np.testing.assert_allclose(threaded.weights.sum(-1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(threaded.weights, plain.weights, rtol=0, atol=1e-12)
    np.testing.assert_allclose(threaded.entropy, plain.entropy, rtol=0, atol=1e-9)


@SETTINGS
@given(problems(), temperatures, temperatures, st.sampled_from([np.float64, np.float32]))
def test_with_temperature_equals_a_fresh_run_and_shares_the_earlier_stages(
        problem, t_first, t_then, dtype):
    """A temperature step from a trace gives what a fresh run at that temperature gives."""
    from attention_widget import with_temperature

    params = problem[1]
    first = run(problem, temperature=t_first, dtype=dtype)
    stepped = with_temperature(first, params, t_then)
    fresh = run(problem, temperature=t_then, dtype=dtype)
    tol = 1e-12 if dtype is np.float64 else 1e-5
    assert stepped.temperature == t_then
    for name in ("weights", "head_outputs", "concat", "output", "entropy"):
        got, want = getattr(stepped, name), getattr(fresh, name)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * max(1.0, np.abs(want).max()),
                                   err_msg=name)
    for name in ("x", "q", "k", "v", "scores", "mask"):
        assert getattr(stepped, name) is getattr(first, name), name
    assert np.array_equal(stepped.mask, fresh.mask)
    assert (stepped.weights[:, ~stepped.mask] == 0).all()


def test_with_temperature_names_a_bad_argument():
    from attention_widget import with_temperature

    params = init_params(8, 2, seed=0)
    trace = multi_head_attention(np.ones((3, 8)), params, n_heads=2)
    with pytest.raises(TypeError, match="trace must be an AttentionTrace"):
        with_temperature("trace", params, 1.0)
    with pytest.raises(TypeError, match="params must be an AttentionParams"):
        with_temperature(trace, {"w_o": params.w_o}, 1.0)
    with pytest.raises(ValueError, match="d_model=16 but the trace has d_model=8"):
        with_temperature(trace, init_params(16, 2), 1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            with_temperature(trace, params, bad)

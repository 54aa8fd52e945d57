"""Every invalid argument raises ValueError or TypeError naming the argument and its value."""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import pytest

from attention_widget import (
    MEMORY_LIMIT_BYTES,
    AttentionParams,
    causal_mask,
    estimate_memory,
    init_params,
    multi_head_attention,
    sliding_window_mask,
)
from attention_widget.engine import softmax

P = init_params(8, 2, seed=0)
X = np.random.default_rng(0).standard_normal((3, 8))


def mha(x=X, params=P, **kwargs):
    kwargs.setdefault("n_heads", 2)
    return multi_head_attention(x, params, **kwargs)


# ---- init_params ----------------------------------------------------------------------------
def test_d_model_not_divisible_by_n_heads():
    with pytest.raises(ValueError, match=r"d_model=10 is not divisible by n_heads=3") as err:
        init_params(10, 3)
    assert "[1, 2, 5, 10]" in str(err.value)  # what would be accepted


def test_n_heads_not_divisible_by_n_kv_heads():
    with pytest.raises(ValueError, match=r"n_heads=6 is not divisible by n_kv_heads=4"):
        init_params(12, 6, 4)
    with pytest.raises(ValueError, match=r"n_heads=2 is not divisible by n_kv_heads=4"):
        init_params(12, 2, 4)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"d_model": 0, "n_heads": 1}, ValueError, r"d_model must be >= 1, got 0"),
        ({"d_model": -4, "n_heads": 1}, ValueError, r"d_model must be >= 1, got -4"),
        ({"d_model": 8.0, "n_heads": 1}, TypeError, r"d_model must be an integer, got 8\.0"),
        ({"d_model": "8", "n_heads": 1}, TypeError, r"d_model must be an integer, got '8'"),
        ({"d_model": True, "n_heads": 1}, TypeError, r"d_model must be an integer, got True"),
        ({"d_model": 8, "n_heads": 0}, ValueError, r"n_heads must be >= 1, got 0"),
        ({"d_model": 8, "n_heads": 2.5}, TypeError, r"n_heads must be an integer, got 2\.5"),
        ({"d_model": 8, "n_heads": 2, "n_kv_heads": 0}, ValueError, r"n_kv_heads must be >= 1"),
        ({"d_model": 8, "n_heads": 2, "seed": -1}, ValueError, r"seed must be >= 0, got -1"),
        ({"d_model": 8, "n_heads": 2, "seed": 1.5}, TypeError, r"seed must be an integer"),
        ({"d_model": 8, "n_heads": 2, "bias": "yes"}, TypeError, r"bias must be True or False"),
    ],
)
def test_init_params_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        init_params(**kwargs)


# ---- temperature ----------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 0.0, -1.0, -1e-300])
def test_temperature_not_positive(value):
    expected = f"temperature must be a finite number > 0, got {float(value)!r}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        mha(temperature=value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.float64("nan")])
def test_temperature_not_finite(value):
    with pytest.raises(ValueError, match=r"temperature must be .* > 0, got (nan|inf|-inf)"):
        mha(temperature=value)


@pytest.mark.parametrize("value", ["1.0", None, [1.0], True, 1j])
def test_temperature_not_a_number(value):
    with pytest.raises(TypeError, match=r"temperature must be a real number, got "):
        mha(temperature=value)


def test_temperature_accepts_numpy_and_int():
    assert mha(temperature=np.float32(2.0)).temperature == 2.0
    assert mha(temperature=3).temperature == 3.0


# ---- x --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_x_not_finite(bad):
    x = X.copy()
    x[1, 4] = bad
    with pytest.raises(ValueError, match=r"x contains NaN or infinity \(x\[1, 4\] = "):
        mha(x)


def test_x_huge_but_finite_is_accepted():
    x = np.full((2, 8), 1e307)  # the sum overflows; the values are still finite
    p = AttentionParams(*(np.eye(8) * 1e-300 for _ in range(4)))
    assert np.isfinite(multi_head_attention(x, p, n_heads=2).output).all()


@pytest.mark.parametrize(
    ("x", "pattern"),
    [
        (np.ones(8), r"x must be 2-D \(seq_len, d_model\), got 1-D shape \(8,\)"),
        (np.ones((1, 3, 8)), r"x must be 2-D \(seq_len, d_model\), got 3-D shape \(1, 3, 8\)"),
        (np.float64(1.0), r"x must be 2-D .* got 0-D"),
    ],
)
def test_x_wrong_rank(x, pattern):
    with pytest.raises(ValueError, match=pattern):
        mha(x)


def test_x_wrong_width():
    with pytest.raises(ValueError, match=r"x has width 5 but params expect d_model=8"):
        mha(np.ones((3, 5)))


@pytest.mark.parametrize("x", [np.ones((0, 8)), np.ones((0, 0)), [], [[]]])
def test_x_empty(x):
    with pytest.raises(ValueError, match=r"x is empty \(shape \((0|1),.*at least one token"):
        mha(x)


@pytest.mark.parametrize(
    ("x", "dtype"),
    [
        ([["a", "b", "c", "d", "e", "f", "g", "h"]], "<U1"),
        (np.array([[object()] * 8]), "object"),
        (np.ones((2, 8), dtype=complex), "complex128"),
        (np.array([["1"] * 8]), "<U1"),
    ],
)
def test_x_not_numeric(x, dtype):
    with pytest.raises(TypeError, match=rf"x must hold real numbers, got .* dtype {dtype}"):
        mha(x)


def test_x_as_nested_lists_and_ints_is_accepted():
    a = mha([[1, 0, 0, 0, 0, 0, 0, 2], [0, 1, 0, 0, 0, 0, 0, 0]])
    b = mha(np.array([[1.0, 0, 0, 0, 0, 0, 0, 2], [0, 1, 0, 0, 0, 0, 0, 0]]))
    np.testing.assert_array_equal(a.output, b.output)


# ---- params ---------------------------------------------------------------------------------
def test_params_not_attention_params():
    with pytest.raises(TypeError, match=r"params must be an AttentionParams .* got <class 'dict'>"):
        multi_head_attention(X, {"w_q": np.eye(8)}, n_heads=2)


def test_params_do_not_match_n_heads():
    gqa = init_params(8, 4, 2)  # w_k has 2 * 2 = 4 columns
    with pytest.raises(ValueError, match=r"params do not match n_heads=4, n_kv_heads=4: w_k has "
                                         r"4 columns but n_kv_heads \* d_head = 4 \* 2 = 8"):
        mha(params=gqa, n_heads=4)
    with pytest.raises(ValueError, match=r"params do not match n_heads=2, n_kv_heads=1"):
        mha(n_heads=2, n_kv_heads=1)  # P was made for 2 K/V heads


def test_n_heads_bad_for_the_params():
    with pytest.raises(ValueError, match=r"d_model=8 is not divisible by n_heads=3"):
        mha(n_heads=3)
    with pytest.raises(TypeError, match=r"n_heads must be an integer, got '2'"):
        mha(n_heads="2")
    with pytest.raises(ValueError, match=r"n_heads=2 is not divisible by n_kv_heads=3"):
        mha(n_kv_heads=3)


@pytest.mark.parametrize(
    ("fields", "error", "pattern"),
    [
        ({"w_q": np.ones((8, 4))}, ValueError, r"params\.w_q must be a square .* got \(8, 4\)"),
        ({"w_k": np.ones((7, 8))}, ValueError, r"params\.w_k must have shape \(d_model=8"),
        ({"w_v": np.ones((8, 4))}, ValueError, r"params\.w_v must have shape \(8, 8\), got \(8, 4"),
        ({"w_o": np.ones((8, 9))}, ValueError, r"params\.w_o must have shape \(8, 8\), got \(8, 9"),
        ({"w_q": np.full((8, 8), np.nan)}, ValueError, r"params\.w_q contains NaN or infinity"),
        ({"w_o": np.full((8, 8), "x")}, TypeError, r"params\.w_o must hold real numbers.*<U1"),
        ({"w_q": None}, TypeError, r"params\.w_q must be an array, got None"),
        ({"b_q": np.ones(7), "b_k": np.ones(8), "b_v": np.ones(8)}, ValueError,
         r"params\.b_q must have shape \(8,\), got \(7,\)"),
        ({"b_q": np.ones(8)}, ValueError, r"b_q, b_k and b_v come together .* got only b_q"),
        ({"b_k": np.ones(8), "b_v": np.ones(8)}, ValueError, r"got only b_k, b_v"),
    ],
)
def test_attention_params_checks(fields, error, pattern):
    eye = np.eye(8)
    args = {"w_q": eye, "w_k": eye, "w_v": eye, "w_o": eye, **fields}
    with pytest.raises(error, match=pattern):
        AttentionParams(**args)


@pytest.mark.parametrize(("dtype", "size"), [(np.float32, 1e20), (np.float64, 1e160)])
@pytest.mark.parametrize("seq_len", [3, 800])  # the reference path; the fast path
def test_overflowing_scores_are_an_error_not_nan(dtype, size, seq_len):
    from attention_widget import fast

    assert (2 * seq_len**2 >= fast.MIN_SCORES) == (seq_len > 3)
    x = np.full((seq_len, 8), size)  # finite, and so are the weights: their products are not
    with pytest.raises(ValueError, match=r"the scores overflowed \(values too large for "):
        multi_head_attention(x, init_params(8, 2), n_heads=2, dtype=dtype)


# ---- dtype ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int64, np.float16, "complex128", "banana"])
def test_dtype(dtype):
    with pytest.raises(TypeError, match=r"dtype must be float32 or float64, got "):
        mha(dtype=dtype)


# ---- masks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Causal", "future", ""])
def test_unknown_mask_name(name):
    with pytest.raises(ValueError, match=rf"mask must be None, \"none\", \"causal\", \"sliding\" "
                                         rf"or a boolean array, got '{name}'"):
        mha(mask=name)


def test_sliding_mask_needs_window():
    with pytest.raises(ValueError, match=r'mask="sliding" needs window=.*got window=None'):
        mha(mask="sliding")
    with pytest.raises(ValueError, match=r"window must be >= 1, got 0"):
        mha(mask="sliding", window=0)


@pytest.mark.parametrize("shape", [(3, 4), (4, 3), (3,), (1, 3, 3)])
def test_mask_wrong_shape(shape):
    expected = f"mask must have shape (seq_len, seq_len) = (3, 3), got {shape}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        mha(mask=np.ones(shape, dtype=bool))


@pytest.mark.parametrize("mask", [np.ones((3, 3)), np.ones((3, 3), dtype=int), [[1, 0, 0]] * 3])
def test_mask_not_boolean(mask):
    with pytest.raises(TypeError, match=r"mask array must be boolean \(True = may attend\), got"):
        mha(mask=mask)


def test_mask_row_without_keys():
    mask = np.tri(3, dtype=bool)
    mask[2] = False
    with pytest.raises(ValueError, match=r"mask row 2 allows no key"):
        mha(mask=mask)


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: causal_mask(0), ValueError, r"seq_len must be >= 1, got 0"),
        (lambda: causal_mask(2.0), TypeError, r"seq_len must be an integer, got 2\.0"),
        (lambda: sliding_window_mask(4, 0), ValueError, r"window must be >= 1, got 0"),
        (lambda: sliding_window_mask(4, None), TypeError, r"window must be an integer, got None"),
    ],
)
def test_mask_helpers(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


# ---- the standalone softmax -----------------------------------------------------------------
def test_softmax_bad_input():
    with pytest.raises(ValueError, match=r"scores contains NaN or infinity"):
        softmax(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got 0\.0"):
        softmax(np.zeros((2, 2)), temperature=0.0)
    with pytest.raises(ValueError, match=r"mask row 0 allows no key"):
        softmax(np.zeros((2, 2)), mask=np.array([[False, False], [True, True]]))


# ---- memory ---------------------------------------------------------------------------------
def test_memory_limit_raises_before_allocating():
    seq_len, d_model = 200_000, 64
    assert estimate_memory(seq_len, d_model, 8) > MEMORY_LIMIT_BYTES
    # a (200000, 64) input that takes no memory: every row is the same view
    x = np.broadcast_to(np.ones((1, d_model)), (seq_len, d_model))
    params = init_params(d_model, 8)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"seq_len=200000 with n_heads=8 would need about "
                                             r"[0-9.]+ GiB \(limit MEMORY_LIMIT_BYTES = 4\.0"):
            multi_head_attention(x, params, n_heads=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # less than 1 MiB: nothing of the 2.3 TiB was attempted


def test_memory_estimate_covers_the_arrays():
    trace = multi_head_attention(np.ones((50, 16)), init_params(16, 4), n_heads=4)
    held = sum(getattr(trace, f).nbytes for f in
               ("x", "q", "k", "v", "scores", "weights", "head_outputs", "concat", "output"))
    assert held <= estimate_memory(50, 16, 4) <= 3 * held
    assert estimate_memory(50, 16, 4, dtype=np.float32) * 2 == pytest.approx(
        estimate_memory(50, 16, 4), rel=0.05)


@pytest.mark.parametrize("args, kwargs, error, pattern", [
    ((-1, 16, 4), {}, ValueError, r"seq_len must be >= 1, got -1"),
    ((8, 0, 4), {}, ValueError, r"d_model must be >= 1"),
    ((8, 16, 3), {}, ValueError, r"d_model=16 is not divisible by n_heads=3"),
    ((8, 16, 4, 3), {}, ValueError, r"n_heads=4 is not divisible by n_kv_heads=3"),
    ((8.0, 16, 4), {}, TypeError, r"seq_len must be an integer"),
])
def test_memory_estimate_bad_sizes(args, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        estimate_memory(*args, **kwargs)

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

from attention_widget import fast, init_params, multi_head_attention, sliding_window_mask
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


def layer(min_scores: float, *args, **kwargs):
    """``multi_head_attention`` with the fast path taken from ``min_scores`` scores on."""
    saved, fast.MIN_SCORES = fast.MIN_SCORES, min_scores
    try:
        return multi_head_attention(*args, **kwargs)
    finally:
        fast.MIN_SCORES = saved


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
    for name in ("x", "q", "k", "v", "scores", "weights", "head_outputs", "concat", "output",
                 "mask", "entropy"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=0, atol=1e-12,
                                   err_msg=name)


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
assert all(np.abs(g - w).max() <= 1e-12 for g, w in zip(got, want))
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

"""Every bad value of a variant raises ValueError or TypeError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest

from attention_widget import (
    LatentParams,
    alibi_bias,
    cross_attention,
    init_latent_params,
    init_params,
    kv_cache_per_token,
    latent_attention,
    multi_head_attention,
    rope,
    softcap,
    top_k_keep,
    with_sinks,
    with_temperature,
)
from attention_widget.engine import attend
from attention_widget.fast import attend as fast_attend

P = init_params(8, 2, seed=0)
X = np.random.default_rng(0).standard_normal((3, 8))


def mha(**kwargs):
    return multi_head_attention(X, P, n_heads=2, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"top_k": -1}, ValueError, r"top_k must be >= 1, got -1"),
        ({"top_k": 0}, ValueError, r"top_k must be >= 1, got 0"),
        ({"top_k": 1.5}, TypeError, r"top_k must be an integer, got 1\.5"),
        ({"top_k": True}, TypeError, r"top_k must be an integer, got True"),
        ({"softcap": 0.0}, ValueError, r"softcap must be a finite number > 0, got 0\.0"),
        ({"softcap": -3}, ValueError, r"softcap must be a finite number > 0, got -3\.0"),
        ({"softcap": float("nan")}, ValueError, r"softcap must be a finite number > 0, got nan"),
        ({"softcap": float("inf")}, ValueError, r"softcap must be a finite number > 0, got inf"),
        ({"softcap": "50"}, TypeError, r"softcap must be a real number, got '50'"),
        ({"rope": 0.0}, ValueError, r"rope must be a finite number > 0, got 0\.0"),
        ({"rope": float("inf")}, ValueError, r"rope must be a finite number > 0, got inf"),
        ({"rope": "10000"}, TypeError, r"rope must be a real number"),
        ({"alibi": "yes"}, TypeError, r"alibi must be True or False, got 'yes'"),
        ({"alibi": 1}, TypeError, r"alibi must be True or False, got 1"),
        ({"alibi": None}, TypeError, r"alibi must be True or False, got None"),
        ({"sinks": np.zeros(3)}, ValueError,
         r"sinks must hold one logit per head: shape \(n_heads,\) = \(2,\), got shape \(3,\)"),
        ({"sinks": np.zeros((2, 1))}, ValueError, r"sinks must hold one logit per head"),
        ({"sinks": 0.5}, ValueError, r"sinks must hold one logit per head"),
        ({"sinks": [0.0, np.nan]}, ValueError, r"sinks contains NaN or infinity"),
        ({"sinks": [0.0, -np.inf]}, ValueError, r"sinks contains NaN or infinity"),
        ({"sinks": ["a", "b"]}, TypeError, r"sinks must hold real numbers"),
    ],
)
def test_multi_head_attention_bad_variants(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        mha(**kwargs)


@pytest.mark.parametrize("kwargs", [{"top_k": -1}, {"softcap": 0.0}, {"sinks": np.zeros(5)}])
def test_the_large_path_checks_too(kwargs):
    """A layer large enough for the fast path refuses the same values."""
    x = np.random.default_rng(1).standard_normal((400, 16))
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        multi_head_attention(x, init_params(16, 8), n_heads=8, **kwargs)


def test_rope_needs_an_even_head_width():
    params = init_params(6, 2)  # d_head = 3
    with pytest.raises(ValueError, match=r"rope turns pairs of features: it needs an even "
                                         r"d_head, got d_head=3"):
        multi_head_attention(np.ones((2, 6)), params, n_heads=2, rope=10000.0)
    with pytest.raises(ValueError, match=r"head width must be even, got 3"):
        rope(np.ones((2, 3)), 10000.0)
    with pytest.raises(ValueError, match=r"positions must have shape \(2,\), got \(3,\)"):
        rope(np.ones((2, 4)), 10000.0, positions=[0, 1, 2])


def test_variant_functions_name_their_arguments():
    with pytest.raises(ValueError, match=r"softcap must be a finite number > 0, got -1\.0"):
        softcap(np.ones(3), -1.0)
    with pytest.raises(ValueError, match=r"top_k must be >= 1, got 0"):
        top_k_keep(np.ones((1, 2, 2)), 0)
    with pytest.raises(ValueError, match=r"sinks must hold one logit per head: shape "
                                         r"\(n_heads,\) = \(2,\)"):
        with_sinks(np.ones((2, 3, 3)), np.ones(4))
    with pytest.raises(ValueError, match=r"query_positions contains NaN"):
        alibi_bias(2, [0.0, np.nan])
    with pytest.raises(ValueError, match=r"slopes contains NaN or infinity"):
        alibi_bias([np.inf], [0, 1])


@pytest.mark.parametrize("step", [attend, fast_attend])
def test_attend_bad_variants(step):
    rng = np.random.default_rng(2)
    q, k, v = rng.standard_normal((3, 2, 4, 2))
    with pytest.raises(ValueError, match=r"sinks must hold one logit per head: shape "
                                         r"\(n_heads,\) = \(2,\), got shape \(3,\)"):
        step(q, k, v, sinks=np.zeros(3))
    with pytest.raises(ValueError, match=r"bias must broadcast to the scores' shape \(n_heads, "
                                         r"n_q, n_k\) = \(2, 4, 4\), got shape \(3, 4, 4\)"):
        step(q, k, v, bias=np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match=r"bias contains NaN or infinity"):
        step(q, k, v, bias=np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match=r"softcap must be a finite number > 0, got 0\.0"):
        step(q, k, v, softcap=0.0)
    with pytest.raises(ValueError, match=r"top_k must be >= 1, got -2"):
        step(q, k, v, top_k=-2)


# ---- cross-attention -------------------------------------------------------------------------
@pytest.mark.parametrize("mask", ["causal", "sliding", "upper"])
def test_cross_attention_refuses_a_mask_of_one_sequence(mask):
    with pytest.raises(ValueError, match=rf"mask='{mask}' is for one sequence .* cross-attention"
                                         r"'s come from two, x_q and x_kv: pass mask=None or a "
                                         r"boolean \(3, 5\) array"):
        cross_attention(X, np.ones((5, 8)), P, n_heads=2, mask=mask)


def test_cross_attention_names_its_inputs():
    with pytest.raises(ValueError, match=r"x_kv has width 6 but params expect d_model=8"):
        cross_attention(X, np.ones((5, 6)), P, n_heads=2)
    with pytest.raises(ValueError, match=r"x_q contains NaN or infinity \(x_q\[0, 0\]"):
        cross_attention(np.full((2, 8), np.nan), X, P, n_heads=2)
    with pytest.raises(ValueError, match=r"x_kv is empty"):
        cross_attention(X, np.ones((0, 8)), P, n_heads=2)
    with pytest.raises(ValueError, match=r"mask must have shape .* = \(3, 5\), got \(3, 3\)"):
        cross_attention(X, np.ones((5, 8)), P, n_heads=2, mask=np.ones((3, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"top_k must be >= 1, got 0"):
        cross_attention(X, np.ones((5, 8)), P, n_heads=2, top_k=0)
    with pytest.raises(TypeError, match=r"params must be an AttentionParams"):
        cross_attention(X, X, {"w_q": P.w_q}, n_heads=2)


# ---- latent attention ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"kv_rank": 9}, ValueError, r"kv_rank=9 is larger than d_model=8: a latent compresses, "
                                     r"so kv_rank must be between 1 and d_model"),
        ({"kv_rank": 0}, ValueError, r"kv_rank must be >= 1, got 0"),
        ({"kv_rank": 2.0}, TypeError, r"kv_rank must be an integer"),
        ({"q_rank": 12}, ValueError, r"q_rank=12 is larger than d_model=8"),
        ({"q_rank": 0}, ValueError, r"q_rank must be >= 1, got 0"),
        ({"rope_dim": 3}, ValueError, r"rope_dim must be even \(RoPE turns pairs of features\), "
                                      r"got 3"),
        ({"rope_dim": -2}, ValueError, r"rope_dim must be >= 0, got -2"),
        ({"d_head": 0}, ValueError, r"d_head must be >= 1, got 0"),
        ({"n_heads": 3}, ValueError, r"d_model=8 is not divisible by n_heads=3"),
        ({"seed": -1}, ValueError, r"seed must be >= 0, got -1"),
    ],
)
def test_init_latent_params_bad_arguments(kwargs, error, pattern):
    args = {"d_model": 8, "n_heads": 2, "kv_rank": 4, **kwargs}
    with pytest.raises(error, match=pattern):
        init_latent_params(**args)


def test_latent_attention_bad_arguments():
    p = init_latent_params(8, 2, 4, rope_dim=2)
    x = np.ones((3, 8))
    with pytest.raises(ValueError, match=r"params do not fit n_heads=3"):
        latent_attention(x, p, n_heads=3)
    with pytest.raises(ValueError, match=r"params do not fit n_heads=4"):  # w_qr: 2 * 2 columns
        latent_attention(x, p, n_heads=4)
    with pytest.raises(ValueError, match=r"rope must be a finite number > 0, got -1\.0"):
        latent_attention(x, p, n_heads=2, rope=-1.0)
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0"):
        latent_attention(x, p, n_heads=2, temperature=0)
    with pytest.raises(ValueError, match=r"x has width 6 but params expect d_model=8"):
        latent_attention(np.ones((3, 6)), p, n_heads=2)
    with pytest.raises(TypeError, match=r"params must be a LatentParams"):
        latent_attention(x, P, n_heads=2)
    with pytest.raises(ValueError, match=r"params need w_q, or w_dq and w_uq"):
        LatentParams(p.w_dkv, p.w_uk, p.w_uv, p.w_o)
    with pytest.raises(ValueError, match=r"params.w_uv must have shape \(4, 8\), got \(4, 6\)"):
        LatentParams(p.w_dkv, p.w_uk, p.w_uv[:, :6], p.w_o, w_q=p.w_q)
    with pytest.raises(ValueError, match=r"params.w_qr and w_kr come together"):
        LatentParams(p.w_dkv, p.w_uk, p.w_uv, p.w_o, w_q=p.w_q, w_qr=p.w_qr)
    with pytest.raises(ValueError, match=r"params.w_dkv contains NaN or infinity"):
        LatentParams(np.full((8, 4), np.inf), p.w_uk, p.w_uv, p.w_o, w_q=p.w_q)


def test_kv_cache_per_token_bad_arguments():
    with pytest.raises(ValueError, match=r"n_kv_heads must be >= 1, got 0"):
        kv_cache_per_token(4, 8, 0)
    with pytest.raises(TypeError, match=r"d_head must be an integer"):
        kv_cache_per_token(4, 8.5)
    with pytest.raises(ValueError, match=r"rope_dim must be >= 0, got -1"):
        kv_cache_per_token(4, 8, kv_rank=16, rope_dim=-1)


def test_with_temperature_takes_latent_params_and_refuses_others():
    p = init_latent_params(8, 2, 4, rope_dim=2)
    trace = latent_attention(np.ones((3, 8)), p, n_heads=2)
    assert with_temperature(trace, p, 0.5).temperature == 0.5
    with pytest.raises(TypeError, match=r"params must be an AttentionParams \(see init_params\), "
                                        r"or the LatentParams of a latent trace"):
        with_temperature(trace, {"w_o": None}, 0.5)

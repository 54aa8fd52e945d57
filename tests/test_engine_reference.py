"""The engine against independent references.

1. PyTorch in float64 (``scaled_dot_product_attention`` and ``nn.MultiheadAttention``), to 1e-10,
   over a grid of sizes, head layouts, temperatures, masks and biases.
2. Tiny cases computed by hand from the formula, with every number written out: they double as
   documentation of the maths.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attention_widget import (
    AttentionParams,
    causal_mask,
    init_params,
    multi_head_attention,
    sliding_window_mask,
)

TOL = 1e-10

# (d_model, n_heads, n_kv_heads): plain multi-head, grouped-query and multi-query layouts
LAYOUTS = [
    (2, 1, 1),
    (4, 2, 1),
    (4, 2, 2),
    (12, 3, 3),
    (12, 6, 2),
    (24, 4, 1),
    (24, 8, 4),
    (64, 8, 8),
    (64, 4, 2),
]
SEQ_LENS = [1, 3, 16]
MASKS = ["none", "causal", "sliding", "random"]
# 0.002 makes |scores / T| exceed 600: the engine's max-subtracting (safe) softmax path
TEMPERATURES = [1.0, 0.37, 2.5, 0.002]
WINDOW = 3


def expected_mask(kind: str, seq_len: int, rng: np.random.Generator) -> np.ndarray:
    """The boolean mask (True = may attend), built here independently of the engine."""
    i, j = np.indices((seq_len, seq_len))
    if kind == "none":
        return np.ones((seq_len, seq_len), dtype=bool)
    if kind == "causal":
        return j <= i
    if kind == "sliding":
        return (j <= i) & (i - j < WINDOW)
    mask = rng.random((seq_len, seq_len)) < 0.5
    mask[np.arange(seq_len), rng.integers(0, seq_len, seq_len)] = True  # no empty row
    return mask


def engine_mask_arg(kind: str, mask: np.ndarray) -> object:
    """What a user passes to the engine for this mask kind."""
    return {"none": None, "causal": "causal", "sliding": "sliding"}.get(kind, mask)


def grid() -> list:
    """Every case as a list (parametrize takes a list, not a generator)."""
    return [
        pytest.param(d, h, kv, n, kind, bias, TEMPERATURES[case % len(TEMPERATURES)], case,
                     id=f"d{d}-h{h}-kv{kv}-n{n}-{kind}-{'bias' if bias else 'nobias'}")
        for case, ((d, h, kv), n, kind, bias) in enumerate(
            itertools.product(LAYOUTS, SEQ_LENS, MASKS, [False, True]))
    ]


def run_case(d, h, kv, n, kind, bias, temperature, case):
    rng = np.random.default_rng(case)
    params = init_params(d, h, kv, seed=case, bias=bias)
    x = rng.standard_normal((n, d))
    mask = expected_mask(kind, n, rng)
    trace = multi_head_attention(
        x, params, n_heads=h, n_kv_heads=kv, temperature=temperature,
        mask=engine_mask_arg(kind, mask), window=WINDOW,
    )
    return params, x, mask, trace


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float64))  # a writable copy


def split_heads(a: torch.Tensor, heads: int) -> torch.Tensor:
    """[seq, heads * d_head] -> [1, heads, seq, d_head]."""
    n = a.shape[0]
    return a.reshape(n, heads, -1).transpose(0, 1)[None]


@pytest.mark.parametrize(("d", "h", "kv", "n", "kind", "bias", "temperature", "case"), grid())
def test_matches_torch_sdpa(d, h, kv, n, kind, bias, temperature, case):
    params, x, mask, trace = run_case(d, h, kv, n, kind, bias, temperature, case)
    d_head = d // h
    X = t64(x)

    def proj(w, b):
        return X @ t64(w) + (t64(b) if b is not None else 0.0)

    q = split_heads(proj(params.w_q, params.b_q), h)
    k = split_heads(proj(params.w_k, params.b_k), kv)
    v = split_heads(proj(params.w_v, params.b_v), kv)
    scale = 1.0 / (math.sqrt(d_head) * temperature)
    attn_mask = torch.from_numpy(mask)
    heads = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, scale=scale, enable_gqa=kv != h
    )
    # With V = identity, attention returns its own weights: weights @ I = weights.
    eye = torch.eye(n, dtype=torch.float64).expand(1, kv, n, n)
    weights = F.scaled_dot_product_attention(
        q, k, eye, attn_mask=attn_mask, scale=scale, enable_gqa=kv != h
    )
    concat = heads[0].transpose(0, 1).reshape(n, d)
    output = concat @ t64(params.w_o) + (t64(params.b_o) if bias else 0.0)

    np.testing.assert_allclose(trace.q, q[0].numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(trace.k, k[0].numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(trace.v, v[0].numpy(), rtol=0, atol=TOL)
    group = h // kv
    k_per_head = k[0].repeat_interleave(group, dim=0)
    scores = q[0] @ k_per_head.transpose(1, 2) / math.sqrt(d_head)
    np.testing.assert_allclose(trace.scores, scores.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(trace.weights, weights[0].numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(trace.head_outputs, heads[0].numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(trace.concat, concat.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(trace.output, output.numpy(), rtol=0, atol=TOL)
    np.testing.assert_array_equal(trace.mask, mask)


def torch_mha(params: AttentionParams, h: int, kv: int, temperature: float):
    """nn.MultiheadAttention carrying our weights.

    It has no temperature and no grouped heads, so both are folded into the weights: dividing
    w_q (and b_q) by T divides every score by T, and repeating each key/value head's columns
    ``group`` times gives every query head its own copy of the shared K/V head.
    """
    d = params.d_model
    d_head = d // h
    group = h // kv
    cols = np.concatenate(
        [np.arange(g * d_head, (g + 1) * d_head) for g in range(kv) for _ in range(group)]
    )
    w_in = np.concatenate([params.w_q / temperature, params.w_k[:, cols], params.w_v[:, cols]],
                          axis=1)
    mha = torch.nn.MultiheadAttention(d, h, bias=params.has_bias, batch_first=True,
                                      dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(t64(w_in.T))
        mha.out_proj.weight.copy_(t64(params.w_o.T))
        if params.has_bias:
            b_in = np.concatenate([params.b_q / temperature, params.b_k[cols], params.b_v[cols]])
            mha.in_proj_bias.copy_(t64(b_in))
            mha.out_proj.bias.copy_(t64(params.b_o))
    return mha.eval()


@pytest.mark.parametrize(("d", "h", "kv", "n", "kind", "bias", "temperature", "case"), grid())
def test_matches_torch_multihead_attention(d, h, kv, n, kind, bias, temperature, case):
    params, x, mask, trace = run_case(d, h, kv, n, kind, bias, temperature, case)
    mha = torch_mha(params, h, kv, temperature)
    X = t64(x)[None]
    with torch.no_grad():
        # torch's boolean attn_mask is the opposite convention: True = NOT allowed to attend
        out, weights = mha(X, X, X, attn_mask=torch.from_numpy(~mask), need_weights=True,
                           average_attn_weights=False)
    np.testing.assert_allclose(trace.weights, weights[0].numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(trace.output, out[0].numpy(), rtol=0, atol=TOL)


def test_torch_comparison_is_sensitive():
    """The reference test can fail: a wrong temperature is far outside the tolerance."""
    params, x, mask, trace = run_case(12, 3, 3, 16, "causal", True, 1.0, 0)
    mha = torch_mha(params, 3, 3, temperature=1.1)
    X = t64(x)[None]
    with torch.no_grad():
        _, weights = mha(X, X, X, attn_mask=torch.from_numpy(~mask),
                         average_attn_weights=False)
    assert np.abs(trace.weights - weights[0].numpy()).max() > 1e-4


# --------------------------------------------------------------------------------------------
# hand-computed cases
# --------------------------------------------------------------------------------------------
def identity_params(d: int) -> AttentionParams:
    eye = np.eye(d)
    return AttentionParams(w_q=eye, w_k=eye, w_v=eye, w_o=eye)


def test_hand_two_tokens_one_head():
    """d_model = 2, one head, every projection the identity, so Q = K = V = X.

    x = [[1, 0],        scores = Q K^T / sqrt(2) = [[1/sqrt2, 0      ],
         [0, 2]]                                    [0,       4/sqrt2]]

    Row 0: softmax([0.70710678, 0]):  e^0.70710678 = 2.02811498, e^0 = 1,
           sum = 3.02811498  ->  weights [0.66976155, 0.33023845]
    Row 1: softmax([0, 2.82842712]):  1, e^2.82842712 = 16.91882868,
           sum = 17.91882868 ->  weights [0.05580722, 0.94419278]
    head output = weights @ V:  row 0 = [0.66976155, 2 * 0.33023845] = [0.66976155, 0.66047690]
                                row 1 = [0.05580722, 2 * 0.94419278] = [0.05580722, 1.88838556]
    With w_o = I, output = head output.
    """
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    trace = multi_head_attention(x, identity_params(2), n_heads=1)
    np.testing.assert_allclose(trace.scores[0], [[0.70710678, 0.0], [0.0, 2.82842712]], atol=1e-8)
    np.testing.assert_allclose(
        trace.weights[0], [[0.66976155, 0.33023845], [0.05580722, 0.94419278]], atol=1e-8
    )
    np.testing.assert_allclose(
        trace.output, [[0.66976155, 0.66047690], [0.05580722, 1.88838556]], atol=1e-8
    )
    # entropy of row 0: -(p log p + q log q)
    p, q = 0.66976155, 0.33023845
    assert trace.entropy[0, 0] == pytest.approx(-(p * math.log(p) + q * math.log(q)), abs=1e-8)


def test_hand_causal_three_tokens():
    """Causal mask, three tokens, d_model = 2, identity projections.

    x = [[1, 1], [2, 0], [0, 0]]: scores = x x^T / sqrt2 = [[2, 2, 0], [2, 4, 0], [0, 0, 0]] / sqrt2

    Token 0 sees only itself: weights [1, 0, 0], output = x_0 = [1, 1].
    Token 1 sees keys 0, 1 with scores [sqrt2, 2 sqrt2] = [1.41421356, 2.82842712]:
        softmax = [1, e^1.41421356] / (1 + 4.11325038) = [0.19557032, 0.80442968]
        output = 0.19557032 * [1, 1] + 0.80442968 * [2, 0] = [1.80442968, 0.19557032]
    Token 2 has all-zero scores on keys 0, 1, 2: uniform 1/3 each,
        output = ([1, 1] + [2, 0] + [0, 0]) / 3 = [1, 1/3].
    The masked weights are exactly 0, not just small.
    """
    x = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    trace = multi_head_attention(x, identity_params(2), n_heads=1, mask="causal")
    expected = [[1.0, 0.0, 0.0], [0.19557032, 0.80442968, 0.0], [1 / 3, 1 / 3, 1 / 3]]
    np.testing.assert_allclose(trace.weights[0], expected, atol=1e-8)
    assert trace.weights[0, 0, 1] == 0.0 and trace.weights[0, 0, 2] == 0.0
    assert trace.weights[0, 1, 2] == 0.0
    np.testing.assert_allclose(
        trace.output, [[1.0, 1.0], [1.80442968, 0.19557032], [1.0, 1 / 3]], atol=1e-8
    )
    np.testing.assert_allclose(trace.entropy[0], [0.0, 0.49419992, math.log(3)], atol=1e-8)


def test_hand_two_heads_with_temperature():
    """d_model = 4 split into 2 heads of width 2; temperature 2 halves every score.

    Identity projections: head 0 reads columns 0-1, head 1 reads columns 2-3.
    x = [[2, 0, 0, 0],     head 0: q = k = [[2, 0], [0, 0]]  scores = [[4, 0], [0, 0]] / sqrt2
         [0, 0, 0, 2]]     head 1: q = k = [[0, 0], [0, 2]]  scores = [[0, 0], [0, 4]] / sqrt2
    Divided by T = 2: the top score becomes 2 / sqrt2 = sqrt2 = 1.41421356.
    Head 0, row 0: softmax([1.41421356, 0]) = [4.11325038, 1] / 5.11325038
                                            = [0.80442968, 0.19557032]
    Head 0, row 1: softmax([0, 0]) = [0.5, 0.5]
    Head 1 is the mirror image: row 0 uniform, row 1 = [0.19557032, 0.80442968].
    Head outputs: weights @ v, e.g. head 0 row 0 = 0.80442968 * [2, 0] = [1.60885936, 0].
    concat puts head 0 in columns 0-1 and head 1 in columns 2-3.
    """
    x = np.array([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]])
    trace = multi_head_attention(x, identity_params(4), n_heads=2, temperature=2.0)
    np.testing.assert_allclose(trace.scores[0], [[2.82842712, 0], [0, 0]], atol=1e-8)
    np.testing.assert_allclose(trace.weights[0], [[0.80442968, 0.19557032], [0.5, 0.5]], atol=1e-8)
    np.testing.assert_allclose(trace.weights[1], [[0.5, 0.5], [0.19557032, 0.80442968]], atol=1e-8)
    np.testing.assert_allclose(trace.head_outputs[0], [[1.60885936, 0.0], [1.0, 0.0]], atol=1e-8)
    np.testing.assert_allclose(trace.head_outputs[1], [[0.0, 1.0], [0.0, 1.60885936]], atol=1e-8)
    np.testing.assert_allclose(
        trace.concat, [[1.60885936, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.60885936]], atol=1e-8
    )


def test_hand_multi_query_and_output_projection():
    """Two query heads (d_head = 1) share one key/value head (multi-query attention).

    d_model = 2, x = [[1, 0], [0, 1]], bias-free, d_head = 1 so scores are not rescaled.
    w_q = [[1, 0], [0, 3]]: head 0 queries q0 = [1, 0], head 1 queries q1 = [0, 3].
    w_k = [[0], [1]]  ->  k = [0, 1] (token 0 has key 0, token 1 key 1);  w_v = [[10], [20]].
    Head 0: q = X w_q[:, 0] = [1, 0], scores q_i k_j = [[0, 1], [0, 0]].
        row 0 softmax([0, 1]) = [1, e] / (1 + e) = [0.26894142, 0.73105858]
            -> 10 * 0.26894142 + 20 * 0.73105858 = 17.31058579;  row 1 uniform -> 15.
    Head 1: q = X w_q[:, 1] = [0, 3], scores = [[0, 0], [0, 3]].
        row 0 uniform -> 15;  row 1 softmax([0, 3]) = [1, e^3] / (1 + 20.08553692)
            = [0.04742587, 0.95257413] -> 10 * 0.04742587 + 20 * 0.95257413 = 19.52574127.
    concat = [[17.31058579, 15], [15, 19.52574127]]; w_o = [[1, 1], [0, -1]] gives
    output columns (head 0, head 0 - head 1) = [[17.31058579, 2.31058579], [15, -4.52574127]].
    """
    params = AttentionParams(
        w_q=np.array([[1.0, 0.0], [0.0, 3.0]]),
        w_k=np.array([[0.0], [1.0]]),
        w_v=np.array([[10.0], [20.0]]),
        w_o=np.array([[1.0, 1.0], [0.0, -1.0]]),
    )
    x = np.eye(2)
    trace = multi_head_attention(x, params, n_heads=2, n_kv_heads=1)
    np.testing.assert_allclose(trace.scores[0], [[0.0, 1.0], [0.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(trace.weights[0], [[0.26894142, 0.73105858], [0.5, 0.5]],
                               atol=1e-8)
    np.testing.assert_allclose(trace.weights[1], [[0.5, 0.5], [0.04742587, 0.95257413]],
                               atol=1e-8)
    np.testing.assert_allclose(trace.concat, [[17.31058579, 15.0], [15.0, 19.52574127]], atol=1e-7)
    np.testing.assert_allclose(trace.output, [[17.31058579, 2.31058579], [15.0, -4.52574127]],
                               atol=1e-7)
    assert trace.kv_head(0) == trace.kv_head(1) == 0


def test_mask_helpers_by_hand():
    np.testing.assert_array_equal(
        causal_mask(3), [[True, False, False], [True, True, False], [True, True, True]]
    )
    np.testing.assert_array_equal(
        sliding_window_mask(4, 2),
        [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]],
    )
    np.testing.assert_array_equal(sliding_window_mask(3, 5), causal_mask(3))

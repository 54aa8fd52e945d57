"""The attention variants against independent references.

1. Small PyTorch versions written here from the definitions (float64, to 1e-10): RoPE, ALiBi,
   soft-capping, sinks and top-k, alone, in every pair and all together, over head layouts
   (grouped-query included), sequence lengths, masks, temperatures and biases; cross-attention;
   latent attention as a direct transcription of its formulas.
2. The code of transformers run on the same weights: Llama's ``apply_rotary_pos_emb`` and
   ``LlamaAttention``, BLOOM's ``build_alibi_tensor`` and ``BloomAttention``, Gemma 2's and
   gpt-oss's ``eager_attention_forward``, BART's ``BartAttention``.  Where transformers
   computes the softmax (or the ALiBi slopes) in float32, the tolerance is float32's.
"""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_engine_reference import WINDOW, expected_mask  # masks built without the engine

from attention_widget import (
    alibi_bias,
    alibi_slopes,
    cross_attention,
    init_latent_params,
    init_params,
    latent_attention,
    multi_head_attention,
    rope,
    sliding_window_mask,
    with_temperature,
)
from attention_widget.engine import attend

TOL = 1e-10
F32 = 2e-6  # where transformers runs the softmax in float32
OPTIONS = ("rope", "alibi", "softcap", "sinks", "top_k")
SUBSETS = [(), *((o,) for o in OPTIONS), *itertools.combinations(OPTIONS, 2), OPTIONS]
# (d_model, n_heads, n_kv_heads), every d_head even (RoPE turns pairs); 3, 6 and 12 heads are
# not powers of two (ALiBi's slopes then interleave)
LAYOUTS = [(4, 2, 1), (12, 3, 3), (12, 6, 2), (24, 4, 1), (16, 4, 4), (24, 6, 3), (24, 12, 4),
           (32, 8, 2)]
MASKS = ["none", "causal", "sliding", "random"]
TEMPERATURES = [1.0, 0.37, 2.5, 0.05]


def t64(a) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# the references, written from the definitions
# --------------------------------------------------------------------------------------------
def torch_heads(a: torch.Tensor, n: int) -> torch.Tensor:
    """[seq, n * d] -> [n, seq, d]."""
    return a.reshape(a.shape[0], n, -1).transpose(0, 1)


def torch_rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x [..., seq, d]: x cos + rotate_half(x) sin, angle p * theta^(-2i/d) for pair i."""
    n, d = x.shape[-2:]
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(n, dtype=torch.float64)[:, None] * inv_freq[None, :]
    emb = torch.cat([angles, angles], dim=-1)
    half = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], dim=-1)
    return x * emb.cos() + half * emb.sin()


def paper_slopes(n: int) -> list[float]:
    """ALiBi's slopes as the authors' code computes them (github.com/ofirpress)."""

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    p = 2 ** math.floor(math.log2(n))
    return power_of_2(p) + paper_slopes(2 * p)[0::2][: n - p]


def torch_top_k(s: torch.Tensor, k: int, allowed: torch.Tensor) -> torch.Tensor:
    """The ``k`` best allowed keys of each row, ties to the earlier key (a stable sort)."""
    order = torch.sort(s.masked_fill(~allowed, -math.inf), dim=-1, descending=True,
                       stable=True).indices[..., :k]
    return torch.zeros_like(s, dtype=torch.bool).scatter(-1, order, True) & allowed


def torch_softmax(s, allowed, temperature, sinks):
    """softmax over [scores | sink] / T; returns the weights, the sink's and the entropy."""
    logits = s.masked_fill(~allowed, -math.inf) / temperature
    if sinks is not None:
        column = (t64(sinks) / temperature)[:, None, None].expand(*logits.shape[:-1], 1)
        logits = torch.cat([logits, column], dim=-1)
    p = torch.softmax(logits, dim=-1)
    entropy = -torch.where(p > 0, p * p.log(), 0.0).sum(-1)
    n_k = s.shape[-1]
    return p[..., :n_k], (p[..., n_k] if sinks is not None else None), entropy


def torch_layer(x, params, h, kv, temperature, mask, *, rope=None, alibi=False, softcap=None,
                sinks=None, top_k=None):
    """One self-attention layer with the variants, step by step."""
    X, n = t64(x), x.shape[0]
    d_head = params.d_model // h

    def proj(w, b):
        return X @ t64(w) + (t64(b) if b is not None else 0.0)

    q = torch_heads(proj(params.w_q, params.b_q), h)
    k = torch_heads(proj(params.w_k, params.b_k), kv)
    v = torch_heads(proj(params.w_v, params.b_v), kv)
    if rope is not None:
        q, k = torch_rope(q, rope), torch_rope(k, rope)
    kh, vh = k.repeat_interleave(h // kv, 0), v.repeat_interleave(h // kv, 0)
    s = q @ kh.transpose(1, 2) / math.sqrt(d_head)
    if alibi:
        i = torch.arange(n, dtype=torch.float64)
        s = s - t64(paper_slopes(h))[:, None, None] * (i[:, None] - i[None, :])
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    allowed = torch.from_numpy(mask).expand(h, n, n)
    kept = torch_top_k(s, top_k, allowed) if top_k is not None else None
    w, sink_w, entropy = torch_softmax(s, allowed if kept is None else kept, temperature, sinks)
    heads = w @ vh
    concat = heads.transpose(0, 1).reshape(n, -1)
    output = concat @ t64(params.w_o) + (t64(params.b_o) if params.b_o is not None else 0.0)
    return dict(q=q, k=k, v=v, scores=s, weights=w, head_outputs=heads, concat=concat,
                output=output, entropy=entropy, sink_weights=sink_w, kept=kept)


def assert_matches(trace, want: dict, tol: float = TOL) -> None:
    for name, value in want.items():
        got = getattr(trace, name)
        if value is None:
            assert got is None, name
        elif value.dtype == torch.bool:
            np.testing.assert_array_equal(got, value.numpy(), err_msg=name)
        else:
            np.testing.assert_allclose(got, value.numpy(), rtol=0, atol=tol, err_msg=name)


# --------------------------------------------------------------------------------------------
# every variant, alone, in pairs and all five, against the reference
# --------------------------------------------------------------------------------------------
def cases():
    for case, (subset, kind) in enumerate(itertools.product(SUBSETS, MASKS)):
        for shift in (0, 5):
            c = case + shift
            yield pytest.param(subset, kind, LAYOUTS[c % len(LAYOUTS)], [1, 5, 13][c % 3],
                               TEMPERATURES[c % 4], bool(c % 2), c,
                               id=f"{'+'.join(subset) or 'plain'}-{kind}-{c}")


def variant_values(subset, n_heads: int, rng: np.random.Generator) -> dict:
    values = {"rope": float(rng.choice([10000.0, 100.0, 500000.0])), "alibi": True,
              "softcap": float(rng.choice([0.5, 3.0, 50.0])),
              "sinks": rng.standard_normal(n_heads) * 2, "top_k": int(rng.choice([1, 2, 5]))}
    return {name: values[name] for name in subset}


@pytest.mark.parametrize(("subset", "kind", "layout", "n", "temperature", "bias", "case"),
                         list(cases()))
def test_variants_match_torch(subset, kind, layout, n, temperature, bias, case):
    d, h, kv = layout
    rng = np.random.default_rng(case)
    params = init_params(d, h, kv, seed=case, bias=bias)
    x = rng.standard_normal((n, d))
    mask = expected_mask(kind, n, rng)
    options = variant_values(subset, h, rng)
    trace = multi_head_attention(x, params, n_heads=h, n_kv_heads=kv, temperature=temperature,
                                 mask={"none": None, "causal": "causal",
                                       "sliding": "sliding"}.get(kind, mask),
                                 window=WINDOW, **options)
    assert_matches(trace, torch_layer(x, params, h, kv, temperature, mask, **options))
    np.testing.assert_array_equal(trace.mask, mask)
    for name in OPTIONS:  # the trace says which variants it used
        used = getattr(trace, name)
        assert (used is not None and used is not False) == (name in options), name
    # a temperature step keeps every variant: equal to the layer computed at that temperature
    again = multi_head_attention(x, params, n_heads=h, n_kv_heads=kv, temperature=0.6,
                                 mask=trace.mask, **options)
    step = with_temperature(trace, params, 0.6)
    for name in ("weights", "head_outputs", "output", "entropy", "sink_weights", "kept"):
        a, b = getattr(step, name), getattr(again, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, err_msg=name)


def test_the_reference_comparison_can_fail():
    """A variant left out, or applied in another order, is far outside the tolerance."""
    d, h, kv = 16, 4, 2
    rng = np.random.default_rng(1)
    params = init_params(d, h, kv, seed=1)
    x = rng.standard_normal((9, d)) * 3
    mask = expected_mask("causal", 9, rng)
    trace = multi_head_attention(x, params, n_heads=h, n_kv_heads=kv, mask="causal",
                                 softcap=1.0, alibi=True, top_k=3, sinks=np.ones(h))
    for dropped in ("softcap", "alibi", "top_k", "sinks"):
        options = {"softcap": 1.0, "alibi": True, "top_k": 3, "sinks": np.ones(h)}
        del options[dropped]
        want = torch_layer(x, params, h, kv, 1.0, mask, **options)
        assert np.abs(trace.output - want["output"].numpy()).max() > 1e-4, dropped
    # the cap after the bias, not before
    biased_after = torch_layer(x, params, h, kv, 1.0, mask, softcap=1.0)["scores"].numpy()
    slopes = np.array(paper_slopes(h))[:, None, None]
    i = np.arange(9)
    assert np.abs(trace.scores - (biased_after - slopes * (i[:, None] - i[None, :]))).max() > 0.1


# --------------------------------------------------------------------------------------------
# cross-attention and latent attention
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", range(24))
def test_cross_attention_matches_torch(case):
    d, h, kv = LAYOUTS[case % len(LAYOUTS)]
    rng = np.random.default_rng(100 + case)
    n_q, n_kv = [(1, 1), (3, 7), (8, 2), (6, 6)][case % 4]
    params = init_params(d, h, kv, seed=case, bias=bool(case % 2))
    x_q, x_kv = rng.standard_normal((n_q, d)), rng.standard_normal((n_kv, d))
    mask = np.ones((n_q, n_kv), dtype=bool)
    if case % 3:  # padding of the source, or a random pattern
        mask = rng.random((n_q, n_kv)) < 0.6 if case % 3 == 1 else np.arange(n_kv) < n_kv - 1
        mask = np.broadcast_to(mask, (n_q, n_kv)).copy()
        mask[np.arange(n_q), rng.integers(0, n_kv, n_q)] = True
    options = variant_values([("softcap",), ("sinks",), ("top_k",), ("softcap", "sinks", "top_k"),
                              ()][case % 5], h, rng)
    temperature = TEMPERATURES[case % 4]
    trace = cross_attention(x_q, x_kv, params, n_heads=h, n_kv_heads=kv, temperature=temperature,
                            mask=None if mask.all() else mask, **options)

    # the reference: queries from x_q, keys and values from x_kv
    def proj(x, w, b, n):
        return torch_heads(t64(x) @ t64(w) + (t64(b) if b is not None else 0.0), n)

    q, k = proj(x_q, params.w_q, params.b_q, h), proj(x_kv, params.w_k, params.b_k, kv)
    v = proj(x_kv, params.w_v, params.b_v, kv)
    s = q @ k.repeat_interleave(h // kv, 0).transpose(1, 2) / math.sqrt(d // h)
    if "softcap" in options:
        s = options["softcap"] * torch.tanh(s / options["softcap"])
    allowed = torch.from_numpy(mask).expand(h, n_q, n_kv)
    kept = torch_top_k(s, options["top_k"], allowed) if "top_k" in options else None
    w, sink_w, entropy = torch_softmax(s, allowed if kept is None else kept, temperature,
                                       options.get("sinks"))
    heads = w @ v.repeat_interleave(h // kv, 0)
    concat = heads.transpose(0, 1).reshape(n_q, -1)
    output = concat @ t64(params.w_o) + (t64(params.b_o) if params.b_o is not None else 0.0)
    assert_matches(trace, dict(q=q, k=k, v=v, scores=s, weights=w, head_outputs=heads,
                               concat=concat, output=output, entropy=entropy,
                               sink_weights=sink_w, kept=kept))
    np.testing.assert_array_equal(trace.x_kv, x_kv)
    assert trace.weights.shape == (h, n_q, n_kv)


def latent_cases():
    # (d_model, n_heads, kv_rank, d_head, q_rank, rope_dim)
    shapes = [(16, 4, 4, None, None, 0), (16, 4, 6, None, 8, 4), (24, 3, 8, 6, None, 2),
              (32, 8, 12, 4, 16, 8), (12, 2, 12, 10, 12, 6), (8, 1, 1, None, None, 2)]
    for c, (shape, kind) in enumerate(itertools.product(shapes, ["none", "causal", "random"])):
        yield pytest.param(*shape, kind, TEMPERATURES[c % 4], [10000.0, None, 50.0][c % 3], c,
                           id=f"{shape}-{kind}")


@pytest.mark.parametrize(("d", "h", "kv_rank", "d_head", "q_rank", "rope_dim", "kind",
                          "temperature", "theta", "case"), list(latent_cases()))
def test_latent_attention_matches_its_formulas(d, h, kv_rank, d_head, q_rank, rope_dim, kind,
                                               temperature, theta, case):
    rng = np.random.default_rng(200 + case)
    p = init_latent_params(d, h, kv_rank, d_head=d_head, q_rank=q_rank, rope_dim=rope_dim,
                           seed=case)
    n = [1, 4, 11][case % 3]
    x = rng.standard_normal((n, d))
    mask = expected_mask(kind, n, rng)
    trace = latent_attention(x, p, n_heads=h, temperature=temperature,
                             mask=None if kind == "none" else mask, rope=theta)

    # the formulas of the specification, transcribed
    X = t64(x)
    c_kv = X @ t64(p.w_dkv)  # [n, kv_rank]
    k_nope = torch_heads(c_kv @ t64(p.w_uk), h)
    v = torch_heads(c_kv @ t64(p.w_uv), h)
    q_nope = torch_heads(X @ t64(p.w_q) if q_rank is None else (X @ t64(p.w_dq)) @ t64(p.w_uq), h)
    width = k_nope.shape[-1]
    scores = q_nope @ k_nope.transpose(1, 2)
    if rope_dim:
        q_rope = torch_heads(X @ t64(p.w_qr), h)
        k_rope = X @ t64(p.w_kr)  # [n, rope_dim], one key for every head
        if theta is not None:
            q_rope, k_rope = torch_rope(q_rope, theta), torch_rope(k_rope, theta)
        scores = scores + q_rope @ k_rope.T
    scores = scores / math.sqrt(width + rope_dim)
    w, _, entropy = torch_softmax(scores, torch.from_numpy(mask).expand(h, n, n), temperature,
                                  None)
    heads = w @ v
    concat = heads.transpose(0, 1).reshape(n, -1)
    assert_matches(trace, dict(latent=c_kv, v=v, scores=scores, weights=w, head_outputs=heads,
                               concat=concat, output=concat @ t64(p.w_o), entropy=entropy))
    np.testing.assert_allclose(trace.q[..., :width], q_nope.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(trace.k[..., :width], k_nope.numpy(), rtol=0, atol=TOL)
    if rope_dim:
        np.testing.assert_allclose(trace.q[..., width:], q_rope.numpy(), rtol=0, atol=TOL)
        np.testing.assert_allclose(trace.k[..., width:],
                                   np.broadcast_to(k_rope.numpy(), (h, n, rope_dim)),
                                   rtol=0, atol=TOL)


# --------------------------------------------------------------------------------------------
# transformers' own code on the same weights
# --------------------------------------------------------------------------------------------
def additive(mask: np.ndarray) -> torch.Tensor:
    """A boolean mask (True = may attend) as transformers' additive (1, 1, n_q, n_k) mask."""
    allowed = torch.from_numpy(np.array(mask))  # (a writable copy)
    return torch.where(allowed, 0.0, -math.inf).to(torch.float64)[None, None]


@pytest.mark.parametrize(("h", "kv", "d_head", "theta"),
                         [(4, 2, 8, 10000.0), (3, 1, 6, 500000.0), (2, 2, 2, 100.0)])
def test_rope_matches_llama(h, kv, d_head, theta):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import (
        LlamaAttention,
        LlamaRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    rng = np.random.default_rng(h * d_head)
    n, d = 9, h * d_head
    q, k = rng.standard_normal((1, h, n, d_head)), rng.standard_normal((1, kv, n, d_head))
    # cos and sin in float64, as Llama's rotary embedding computes them (there in float32)
    inv_freq = 1.0 / theta ** (np.arange(0, d_head, 2) / d_head)
    emb = np.concatenate([np.outer(np.arange(n), inv_freq)] * 2, axis=-1)
    cos, sin = t64(np.cos(emb))[None], t64(np.sin(emb))[None]
    q_hf, k_hf = apply_rotary_pos_emb(t64(q), t64(k), cos, sin)
    np.testing.assert_allclose(rope(q[0], theta), q_hf[0].numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(rope(k[0], theta), k_hf[0].numpy(), rtol=0, atol=1e-12)

    config = LlamaConfig(hidden_size=d, num_attention_heads=h, num_key_value_heads=kv,
                         head_dim=d_head, rope_theta=theta, attention_bias=False,
                         max_position_embeddings=64)
    config._attn_implementation = "eager"
    rotary = LlamaRotaryEmbedding(config)
    cos32, sin32 = rotary(t64(q), torch.arange(n)[None])
    np.testing.assert_allclose(cos32[0].numpy(), cos[0].numpy(), rtol=0, atol=F32 * n)
    np.testing.assert_allclose(sin32[0].numpy(), sin[0].numpy(), rtol=0, atol=F32 * n)

    params = init_params(d, h, kv, seed=3)
    x = rng.standard_normal((n, d))
    layer = LlamaAttention(config, layer_idx=0).double().eval()
    with torch.no_grad():
        for name in ("q", "k", "v", "o"):
            getattr(layer, f"{name}_proj").weight.copy_(t64(getattr(params, f"w_{name}").T))
        out, weights = layer(t64(x)[None], position_embeddings=(cos, sin),
                             attention_mask=additive(np.tri(n, dtype=bool)))
    trace = multi_head_attention(x, params, n_heads=h, n_kv_heads=kv, mask="causal", rope=theta)
    np.testing.assert_allclose(trace.weights, weights[0].numpy(), rtol=0, atol=F32)
    np.testing.assert_allclose(trace.output, out[0].numpy(), rtol=0, atol=F32 * 10)


@pytest.mark.parametrize("n_heads", [*range(1, 18), 24, 32, 40, 64])
def test_alibi_slopes_match_bloom(n_heads):
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    ours = alibi_slopes(n_heads)
    np.testing.assert_allclose(ours, paper_slopes(n_heads), rtol=1e-14, atol=0)
    np.testing.assert_allclose(ours, _get_alibi_slopes(n_heads, "cpu").double().numpy(),
                               rtol=1e-6, atol=0)  # BLOOM's are float32


@pytest.mark.parametrize(("d", "h"), [(16, 4), (24, 6), (20, 5)])
def test_alibi_layer_matches_bloom(d, h):
    from transformers import BloomConfig
    from transformers.models.bloom.modeling_bloom import BloomAttention, build_alibi_tensor

    n, d_head = 11, d // h
    rng = np.random.default_rng(d + h)
    params = init_params(d, h, seed=h, bias=True)
    x = rng.standard_normal((n, d))
    # BLOOM's bias m_h * j differs from -m_h (i - j) by m_h * i: a constant along each row
    theirs = build_alibi_tensor(torch.ones(1, n), h, torch.float64).reshape(h, 1, n).numpy()
    difference = alibi_bias(h, np.arange(n)) - theirs
    np.testing.assert_allclose(difference, difference[..., :1].repeat(n, -1), rtol=0, atol=1e-5)

    layer = BloomAttention(BloomConfig(hidden_size=d, n_head=h, attention_dropout=0.0,
                                       hidden_dropout=0.0), layer_idx=0).double().eval()
    fused_w = np.empty((h, 3, d_head, d))  # BLOOM's fused layout: head, then q/k/v
    fused_b = np.empty((h, 3, d_head))
    for part, name in enumerate("qkv"):
        w, b = getattr(params, f"w_{name}"), getattr(params, f"b_{name}")
        fused_w[:, part] = w.T.reshape(h, d_head, d)
        fused_b[:, part] = b.reshape(h, d_head)
    with torch.no_grad():
        layer.query_key_value.weight.copy_(t64(fused_w.reshape(3 * d, d)))
        layer.query_key_value.bias.copy_(t64(fused_b.reshape(3 * d)))
        layer.dense.weight.copy_(t64(params.w_o.T))
        layer.dense.bias.copy_(t64(params.b_o))
        alibi = build_alibi_tensor(torch.ones(1, n), h, torch.float64)
        out, probs = layer(t64(x)[None], torch.zeros(1, n, d, dtype=torch.float64), alibi,
                           additive(np.tri(n, dtype=bool)))
    trace = multi_head_attention(x, params, n_heads=h, mask="causal", alibi=True)
    np.testing.assert_allclose(trace.weights, probs[0].numpy(), rtol=0, atol=F32)
    np.testing.assert_allclose(trace.output, out[0].numpy(), rtol=0, atol=F32 * 10)


def _qkv(rng, h, kv, n_q, n_k, d_head, scale=1.0):
    return (rng.standard_normal((h, n_q, d_head)) * scale, rng.standard_normal((kv, n_k, d_head)),
            rng.standard_normal((kv, n_k, d_head)))


@pytest.mark.parametrize(("h", "kv", "cap", "kind"),
                         [(4, 2, 50.0, "causal"), (2, 1, 1.0, "random"), (3, 3, 0.3, "none"),
                          (8, 2, 5.0, "sliding")])
def test_softcap_matches_gemma2(h, kv, cap, kind):
    from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward

    rng = np.random.default_rng(h + kv)
    n, d_head = 10, 8
    q, k, v = _qkv(rng, h, kv, n, n, d_head, scale=4.0)  # large scores: the cap matters
    mask = expected_mask(kind, n, rng)
    module = SimpleNamespace(num_key_value_groups=h // kv, head_dim=d_head, training=False)
    out, weights = eager_attention_forward(module, t64(q)[None], t64(k)[None], t64(v)[None],
                                           additive(mask), dropout=0.0,
                                           scaling=d_head**-0.5, softcap=cap)
    att = attend(q, k, v, mask=None if mask.all() else mask, softcap=cap)
    assert np.abs(att.scores).max() <= cap  # (tanh rounds to 1 for large scores)
    np.testing.assert_allclose(att.weights, weights[0].numpy(), rtol=0, atol=F32)
    np.testing.assert_allclose(att.head_outputs, out[0].transpose(0, 1).numpy(), rtol=0,
                               atol=F32 * 10)


@pytest.mark.parametrize(("h", "kv", "kind", "scale"),
                         [(4, 2, "causal", 1.0), (2, 1, "random", 3.0), (3, 3, "none", 0.1),
                          (8, 2, "sliding", 1.0), (1, 1, "causal", 10.0)])
def test_sinks_match_gpt_oss(h, kv, kind, scale):
    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    rng = np.random.default_rng(h * 7 + kv)
    n, d_head = 9, 4
    q, k, v = _qkv(rng, h, kv, n, n, d_head, scale=scale)
    sinks = rng.standard_normal(h) * 3
    mask = expected_mask(kind, n, rng)
    module = SimpleNamespace(num_key_value_groups=h // kv, training=False, sinks=t64(sinks))
    out, weights = eager_attention_forward(module, t64(q)[None], t64(k)[None], t64(v)[None],
                                           additive(mask), scaling=d_head**-0.5, dropout=0.0)
    att = attend(q, k, v, mask=None if mask.all() else mask, sinks=sinks)
    np.testing.assert_allclose(att.weights, weights[0].numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(att.head_outputs, out[0].transpose(0, 1).numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(att.weights.sum(-1) + att.sink_weights, 1.0, rtol=0, atol=1e-12)
    assert (att.sink_weights > 0).all()


@pytest.mark.parametrize(("d", "h", "n_q", "n_kv"), [(16, 4, 5, 7), (12, 3, 1, 9), (8, 1, 6, 2)])
def test_cross_attention_matches_bart(d, h, n_q, n_kv):
    from transformers import BartConfig
    from transformers.models.bart.modeling_bart import BartAttention

    rng = np.random.default_rng(d * n_q)
    params = init_params(d, h, seed=n_kv, bias=True)
    x_q, x_kv = rng.standard_normal((n_q, d)), rng.standard_normal((n_kv, d))
    padding = np.broadcast_to(np.arange(n_kv) < max(1, n_kv - 2), (n_q, n_kv))  # source padding
    config = BartConfig(d_model=d, decoder_attention_heads=h, attention_dropout=0.0)
    config._attn_implementation = "eager"
    layer = BartAttention(d, h, is_decoder=True, bias=True, config=config,
                          layer_idx=0).double().eval()
    with torch.no_grad():
        for name, proj in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj")):
            getattr(layer, proj).weight.copy_(t64(getattr(params, f"w_{name}").T))
            getattr(layer, proj).bias.copy_(t64(getattr(params, f"b_{name}")))
        out, weights = layer(t64(x_q)[None], key_value_states=t64(x_kv)[None],
                             attention_mask=additive(padding))
    trace = cross_attention(x_q, x_kv, params, n_heads=h,
                            mask=None if padding.all() else padding.copy())
    np.testing.assert_allclose(trace.weights, weights[0].numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(trace.output, out[0].numpy(), rtol=0, atol=TOL)


def test_sliding_window_and_variants_agree_with_an_explicit_mask():
    """mask="sliding" with the variants is the same layer as its explicit boolean mask."""
    params = init_params(16, 4, 2, seed=5)
    x = np.random.default_rng(5).standard_normal((12, 16))
    options = {"rope": 10000.0, "alibi": True, "softcap": 2.0, "sinks": np.zeros(4), "top_k": 2}
    a = multi_head_attention(x, params, n_heads=4, n_kv_heads=2, mask="sliding", window=4,
                             **options)
    b = multi_head_attention(x, params, n_heads=4, n_kv_heads=2,
                             mask=sliding_window_mask(12, 4), **options)
    np.testing.assert_array_equal(a.weights, b.weights)
